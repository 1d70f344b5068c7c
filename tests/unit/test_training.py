"""The training module: losses against hand-computed values, balanced batches, data sources and splits,
a short fit that lowers the validation loss, cancel, the registry, and the train command."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps

from dedup_app.core.checkpoint import Checkpoint
from dedup_app.core.imageio import resize_square
from dedup_app.core.labels import DUPLICATE, NOT_DUPLICATE, LabelledFile, LabelStore
from dedup_app.core.model import build_encoder
from dedup_app.core.model_files import read_checkpoint
from dedup_app.core.progress import Cancelled, CancelToken, drive
from dedup_app.core.registry import DEFAULT, ModelRegistry
from dedup_app.core.resources import default_model_path
from model_training.data import (
    DataError,
    ItemSet,
    LabelledPair,
    items_from_pairs,
    merge,
    pairs_from_csv,
    pairs_from_store,
    resolve_conflicts,
    self_supervised_items,
    split_by_class,
)
from model_training.train import (
    BalancedBatchSampler,
    TrainConfig,
    TrainProgress,
    build_loss,
    fit,
    negative_pairs_in,
    pixels_of,
)


def test_triplet_loss_matches_hand_computed_value() -> None:
    loss, _ = build_loss(TrainConfig(loss="triplet", margin=0.1))
    # anchor a, positive p (cos 0.8 to a), negative n (cos 0.6 to a), unit vectors in 2-D
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.8, 0.6]])
    n = torch.tensor([[0.6, 0.8]])
    emb = torch.cat([a, p, n])
    labels = torch.tensor([0, 0, 1])
    # with cosine similarity the violation is s(a,n) - s(a,p) + margin; triplets (a,p,n) and (p,a,n):
    # (a,p,n): 0.6 - 0.8 + 0.1 = -0.1 -> 0 ; (p,a,n): s(p,n)=0.96 - 0.8 + 0.1 = 0.26 -> 0.26 ; mean over positive
    # triplets (pml averages the non-zero ones): 0.26
    value = float(loss(emb, labels, (torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 2]))))
    assert value == pytest.approx(0.26, abs=1e-5)


def test_contrastive_loss_matches_hand_computed_value() -> None:
    loss, _ = build_loss(TrainConfig(loss="contrastive", pos_margin=0.9, neg_margin=0.6))
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    labels = torch.tensor([0, 0, 1])
    # positive pair (0,1): 0.9 - 0.8 = 0.1 ; negative pairs (0,2): 0.6 - 0.6 = 0 -> 0, (1,2): 0.96 - 0.6 = 0.36
    # pml averages each part over its non-zero terms and sums: 0.1 + 0.36
    assert float(loss(emb, labels)) == pytest.approx(0.46, abs=1e-5)


def test_balanced_batches() -> None:
    labels = [c for c in range(10) for _ in range(5)] + [99]  # class 99 has one item: never usable as a positive
    sampler = BalancedBatchSampler(labels, classes_per_batch=4, per_class=3, seed=1)
    batches = list(sampler)
    assert batches == list(BalancedBatchSampler(labels, 4, 3, seed=1))  # deterministic
    for batch in batches:
        assert len(batch) == 12
        counts = np.bincount([labels[i] for i in batch])
        assert sorted(c for c in counts if c) == [3, 3, 3, 3]
        assert all(labels[i] != 99 for i in batch)
    with pytest.raises(ValueError, match="two classes"):
        BalancedBatchSampler([0, 0, 1], 2, 2)


def test_batches_hold_both_sides_of_every_labelled_negative_pair() -> None:
    """The user's "not duplicate" pairs are mostly two images without a duplicate: class-balanced batches alone never
    drew them. Every pair is in a batch in each epoch, and the batches stay deterministic."""
    labels = [c for c in range(6) for _ in range(4)] + list(range(100, 110))  # items 24..33 are singletons
    negatives = [(24, 25), (26, 27), (28, 29), (30, 31), (33, 32), (0, 24)]  # singleton pairs, one with a class
    sampler = BalancedBatchSampler(labels, classes_per_batch=3, per_class=2, seed=3, negatives=negatives)
    assert len(sampler) == 6  # one pair per batch (a quarter of 6 items, at least one): the epoch grows from 4
    for epoch in range(2):
        batches = list(sampler)
        assert len(batches) == 6
        for a, b in negatives:
            assert any(a in batch and b in batch for batch in batches), (epoch, a, b)
        for batch in batches:
            counts = np.bincount([labels[i] for i in batch[:6]])
            assert sorted(c for c in counts if c) == [2, 2, 2]  # the balanced part is as before
            first, second = negative_pairs_in(batch, {24: {25, 0}, 25: {24}, 0: {24}})  # where two of them are
            found = {frozenset((batch[i], batch[j])) for i, j in zip(first, second, strict=True)}
            assert found == {frozenset(p) for p in ((24, 25), (0, 24)) if set(p) <= set(batch)}
    one, two = (BalancedBatchSampler(labels, 3, 2, seed=3, negatives=negatives) for _ in range(2))
    assert [list(one), list(one)] == [list(two), list(two)]  # the same seed, the same epochs


def test_csv_and_label_store_sources(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (tmp_path / name).write_bytes(b"x")
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path_a", "path_b", "label"])
        w.writerows([["a.jpg", "b.jpg", 1], ["b.jpg", "c.jpg", 1], ["a.jpg", "d.jpg", 0]])
    pairs = pairs_from_csv(path)
    items = items_from_pairs(pairs)
    by_name = {Path(k).name: lab for k, lab in zip(items.keys, items.labels, strict=True)}
    assert by_name["a.jpg"] == by_name["b.jpg"] == by_name["c.jpg"] != by_name["d.jpg"]  # joined by duplicates
    assert len(items.negatives) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("a.jpg,b.jpg,maybe\n")
    with pytest.raises(DataError, match="bad.csv:1"):
        pairs_from_csv(bad)
    store = LabelStore(tmp_path / "labels.sqlite3")
    store.put_pair(LabelledFile("h1", str(tmp_path / "a.jpg")), LabelledFile("h2", str(tmp_path / "b.jpg")), DUPLICATE)
    store.put_pair(LabelledFile("h1", str(tmp_path / "a.jpg")), LabelledFile("h9", str(tmp_path / "gone.jpg")),
              NOT_DUPLICATE)  # fmt: skip
    got, missing = pairs_from_store(store)
    assert [(Path(p.a).name, Path(p.b).name, p.label) for p in got] == [("a.jpg", "b.jpg", 1)] and missing == 1


def groups_and_negatives(pairs: list[tuple[str, str, int]]) -> tuple[list[set[str]], set[frozenset[str]], int]:
    """items_from_pairs on hand-made pairs (oldest first): its classes of two or more, negatives and conflicts."""
    items = items_from_pairs([LabelledPair(a, b, lab) for a, b, lab in pairs])
    classes: dict[int, set[str]] = {}
    for key, lab in zip(items.keys, items.labels, strict=True):
        classes.setdefault(lab, set()).add(key)
    groups = sorted((c for c in classes.values() if len(c) > 1), key=sorted)
    negatives = {frozenset((items.keys[i], items.keys[j])) for i, j in items.negatives}
    assert all(items.labels[i] != items.labels[j] for i, j in items.negatives)
    return groups, negatives, items.conflicts


def test_the_latest_label_of_a_pair_wins_and_the_conflict_is_counted() -> None:
    # the same two files labelled both ways (a CSV, or two store rows whose paths coincide): order decides
    assert groups_and_negatives([("a", "b", 1), ("a", "b", 0)]) == ([], {frozenset("ab")}, 1)
    assert groups_and_negatives([("a", "b", 0), ("a", "b", 1)]) == ([{"a", "b"}], set(), 1)
    assert groups_and_negatives([("a", "b", 1), ("a", "b", 1), ("a", "c", 0)]) == ([{"a", "b"}], {frozenset("ac")}, 0)


def test_a_newer_not_duplicate_breaks_an_older_chain_of_duplicates() -> None:
    # a-b and b-c say a and c are duplicates; the newer a-c "not duplicate" wins over the older a-b
    assert groups_and_negatives([("a", "b", 1), ("b", "c", 1), ("a", "c", 0)]) == ([{"b", "c"}], {frozenset("ac")}, 1)
    # the other way round: the chain is newer, the "not duplicate" is ignored (it was dropped silently before)
    assert groups_and_negatives([("a", "c", 0), ("a", "b", 1), ("b", "c", 1)]) == ([{"a", "b", "c"}], set(), 1)


def test_a_duplicate_may_not_join_groups_a_newer_label_keeps_apart() -> None:
    # newest first: a|d apart, then c-d and a-b make two groups, then the oldest b-c would join them: ignored
    pairs = [("b", "c", 1), ("a", "b", 1), ("c", "d", 1), ("a", "d", 0)]
    assert groups_and_negatives(pairs) == ([{"a", "b"}, {"c", "d"}], {frozenset("ad")}, 1)
    # once the "not duplicate" is the oldest, it is the one that goes
    pairs = [("a", "d", 0), ("a", "b", 1), ("c", "d", 1), ("b", "c", 1)]
    assert groups_and_negatives(pairs) == ([{"a", "b", "c", "d"}], set(), 1)
    kept, ignored = resolve_conflicts([LabelledPair(a, b, lab) for a, b, lab in pairs])
    assert ignored == [LabelledPair("a", "d", 0)] and kept == [LabelledPair(a, b, 1) for a, b, _ in pairs[1:]]
    # with the "not duplicate" in between, the newer b-c and c-d stand and the oldest a-b goes
    pairs = [("a", "b", 1), ("a", "d", 0), ("c", "d", 1), ("b", "c", 1)]
    assert groups_and_negatives(pairs) == ([{"b", "c", "d"}], {frozenset("ad")}, 1)


def test_store_labels_are_resolved_by_time(tmp_path: Path) -> None:
    """Rows of the store come oldest first: a newer "not duplicate" between files a chain joins wins."""
    store = LabelStore(":memory:")
    f = {n: LabelledFile(f"h{n}", str(tmp_path / f"{n}.jpg")) for n in "abc"}
    for name in "abc":
        (tmp_path / f"{name}.jpg").write_bytes(b"x")
    store.put_pair(f["a"], f["b"], DUPLICATE)
    store.put_group([f["b"], f["c"]], DUPLICATE)
    store.put_pair(f["c"], f["a"], NOT_DUPLICATE)
    pairs, _ = pairs_from_store(store)
    items = items_from_pairs(pairs)
    assert items.conflicts == 1 and len(items.negatives) == 1
    store.close()


def test_train_command_says_how_many_labels_conflict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dedup_app.cli import main

    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    path = tmp_path / "pairs.csv"
    path.write_text("a.jpg,b.jpg,1\nb.jpg,c.jpg,1\na.jpg,c.jpg,0\nb.jpg,a.jpg,0\n")
    code = main(["train", "--labels", str(path), "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    # a-c and b-a "not duplicate" (the later rows) win over a-b; b-c stands
    assert f"{path}: 1 label conflicts with a newer one and is ignored (a later row wins)" in err
    assert code == 2  # and too little data to train on, which is said too


def test_split_keeps_every_class_on_one_side(shared_data: Path) -> None:
    paths = sorted(str(p) for p in (shared_data / "photos" / "kodak").glob("*.png"))[:10]
    items = self_supervised_items(paths, copies=3)
    train, val = split_by_class(items, 0.3, seed=0)
    assert len(train) + len(val) == len(items) == 40
    assert not set(train.labels) & set(val.labels)
    assert not {k.split("#")[0] for k in train.keys} & {k.split("#")[0] for k in val.keys}  # no image leaks
    copy = items.load(1)
    assert copy.mode == "RGB" and copy.size != (0, 0)


def test_split_keeps_both_sides_of_a_not_duplicate_pair_together() -> None:
    """A labelled negative between two images split apart would leave training and validation alike: the two
    classes go to the same side (found missing in the hardening review: about a third of such pairs were lost)."""
    pairs = [LabelledPair(f"/p/dup{k}_a.jpg", f"/p/dup{k}_b.jpg", 1) for k in range(12)]
    pairs += [LabelledPair(f"/p/single{k}_x.jpg", f"/p/single{k}_y.jpg", 0) for k in range(12)]
    items = items_from_pairs(pairs)
    assert len(items.negatives) == 12
    train, val = split_by_class(items, 0.3, seed=0)
    assert len(train.negatives) + len(val.negatives) == 12  # none lost to the split
    assert val.negatives and train.negatives
    assert len(train) + len(val) == len(items) and not set(train.keys) & set(val.keys)


def test_copies_and_split_do_not_depend_on_where_the_data_lives(shared_data: Path, tmp_path: Path) -> None:
    """CI mounts the data under another root: the same files must give the same edited copies and split there."""
    other = tmp_path / "elsewhere"
    other.symlink_to(shared_data / "photos" / "kodak", target_is_directory=True)
    names = sorted(p.name for p in (shared_data / "photos" / "kodak").glob("*.png"))[:6]

    def described(root: Path) -> tuple[list[str], list[str], bytes]:
        items = self_supervised_items([str(root / n) for n in names], copies=2)
        train, val = split_by_class(items, 0.35, seed=0)
        return [Path(k).name for k in train.keys], [Path(k).name for k in val.keys], items.load(1).tobytes()

    assert described(shared_data / "photos" / "kodak") == described(other)


@pytest.fixture()
def weak_base(tmp_path: Path) -> Checkpoint:
    """The shipped model with a collapsed head (one direction dominates every embedding, so unrelated images look
    alike): a short fit has clear room to improve."""
    base = read_checkpoint(default_model_path())
    gen = torch.Generator().manual_seed(0)
    head = dict(base.head_state)
    w = head["proj.weight"]
    u = torch.randn(w.shape[0], 1, generator=gen)
    head["proj.weight"] = w + 3.0 * (u / u.norm()) @ (torch.ones(1, w.shape[1]) / w.shape[1] ** 0.5)
    return Checkpoint(base.config, head, base.threshold, "weak")


def small_set(shared_data: Path):  # type: ignore[no-untyped-def]
    paths = sorted(str(p) for p in (shared_data / "photos" / "kodak").glob("*.png"))[:12]
    return split_by_class(self_supervised_items(paths, copies=3), 0.35, seed=0)


def test_one_epoch_lowers_validation_loss(weak_base: Checkpoint, shared_data: Path, tmp_path: Path) -> None:
    train, val = small_set(shared_data)
    out = tmp_path / "model.pt"
    reports = []
    config = TrainConfig(epochs=1, lr=3e-3, loss="triplet", classes_per_batch=4, per_class=4)
    result = drive(fit(weak_base, train, val, config, out), reports.append)
    assert result.history[1]["loss"] < 0.9 * result.history[0]["loss"]
    assert any(isinstance(r, TrainProgress) and r.loss is not None for r in reports)
    saved = read_checkpoint(out)
    assert saved.metrics["recipe"]["loss"] == "triplet" and "validation_after" in saved.metrics
    assert 0.0 < saved.threshold <= 1.0
    # the trained weights carry their own probability calibration, fitted on the same validation pairs
    from dedup_app.core.calibration import calibration_of

    cal = calibration_of(saved.metrics)
    assert cal is not None and cal.pairs == len(val.labels) * (len(val.labels) - 1) // 2
    assert cal.a > 0 and cal.probability(0.3) <= cal.probability(saved.threshold) < cal.probability(0.999)


def test_fit_pushes_a_labelled_not_duplicate_pair_apart(weak_base: Checkpoint, shared_data: Path) -> None:
    """A photo and a crop of it, labelled "not duplicate": two items without a duplicate of their own, which
    training never saw before. Validation holds the same pair, so the checkpoint kept is one that learnt it."""
    train, val = small_set(shared_data)
    photo_path = sorted(str(p) for p in (shared_data / "photos" / "kodak").glob("*.png"))[13]
    pair = self_supervised_items([photo_path], copies=1, families=["crop"])
    pair.labels, pair.negatives = [0, 1], [(0, 1)]

    def similarity(checkpoint: Checkpoint) -> float:
        encoder = build_encoder(checkpoint).eval()
        _, pixels, _ = drive(pixels_of(pair, encoder.config.input_size))
        with torch.no_grad():
            e = encoder(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0)
        return float(e[0] @ e[1])

    config = TrainConfig(epochs=1, lr=3e-3, loss="triplet", classes_per_batch=4, per_class=4)
    result = drive(fit(weak_base, merge(train, pair), merge(val, pair), config))
    before = similarity(weak_base)
    assert before > 0.99  # the collapsed head calls them duplicates
    assert similarity(result.checkpoint) < before - 0.03


def test_a_new_model_must_be_clearly_better_to_be_offered() -> None:
    from model_training.train import TrainResult

    before = {"f1": 0.0, "auc": 0.9747}
    noise = TrainResult(None, before, {"f1": 0.034, "auc": 0.9707})  # type: ignore[arg-type]
    assert not noise.improved  # the case seen in the window: F1 from 0 to 0.03 while ranking got worse
    assert TrainResult(None, before, {"f1": 0.30, "auc": 0.9750}).improved  # type: ignore[arg-type]
    assert not TrainResult(None, before, before).improved  # type: ignore[arg-type]


def test_cancel_leaves_the_active_model_alone(weak_base: Checkpoint, shared_data: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    before = registry.active_path()
    train, val = small_set(shared_data)
    token = CancelToken()
    out = tmp_path / "model.pt"
    gen = fit(weak_base, train, val, TrainConfig(epochs=3, classes_per_batch=4, per_class=4), out, token)
    with pytest.raises(Cancelled):
        for report in gen:
            if report.stage == "Training":
                token.cancel()
    assert not out.exists()
    assert registry.active_path() == before and registry.active_id is None


def test_registry_activate_and_roll_back(weak_base: Checkpoint, tmp_path: Path) -> None:
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.files import FileEntry
    from dedup_app.core.registry import drop_embeddings_of

    registry = ModelRegistry(tmp_path / "models")
    default_id = read_checkpoint(default_model_path()).model_id
    entry = registry.add(weak_base)
    assert [e.model_id for e in registry.entries()] == [entry.model_id]
    assert registry.active_id is None and registry.active_path() == default_model_path()
    cache_path = tmp_path / "cache.sqlite3"
    with EmbeddingCache(cache_path) as cache:
        f = FileEntry("/x.jpg", 1, 1)
        cache.put_file(f, "h")
        cache.put_embedding(f.path, default_id, np.ones(4))
        cache.put_embedding(f.path, entry.model_id, np.ones(4))
    old, new = registry.activate(entry.model_id)
    assert (old, new) == (default_id, entry.model_id)
    assert drop_embeddings_of(old, cache_path) == 1
    with EmbeddingCache(cache_path) as cache:
        assert cache.count(default_id) == 0 and cache.count(entry.model_id) == 1  # only the old model's rows go
    assert read_checkpoint(registry.active_path()).model_id == entry.model_id
    assert registry.rollback() == (entry.model_id, default_id)
    assert registry.active_id is None
    registry.activate(DEFAULT)
    with pytest.raises(ValueError, match="no model"):
        registry.activate("nonexistent")
    (registry.root / "registry.json").write_text("{broken")
    assert registry.active_path() == default_model_path()  # a damaged index falls back to the shipped model


def test_train_command(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dedup_app.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted((shared_data / "photos" / "kodak").glob("*.png"))[:8]:
        (folder / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "trained.pt"
    code = main(["train", "--images", str(folder), "--copies", "2", "--epochs", "1", "--out", str(out),
                 "--no-progress"])  # fmt: skip
    assert code == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "before: ROC AUC" in text and "after: ROC AUC" in text
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "1"])
    assert exc.value.code == 2


def test_embeddings_of_trained_model_are_unit_vectors(weak_base: Checkpoint) -> None:
    enc = build_encoder(weak_base)
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        out = enc(x)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(out, F.normalize(out + 1, dim=1))


def sketch(img: Image.Image) -> Image.Image:
    """A pencil-sketch filter (inverted edges), an edit family the shipped model misses: its copies score 0.44-0.61
    against their photos, far under the threshold."""
    return ImageOps.invert(img.convert("L").filter(ImageFilter.FIND_EDGES)).convert("RGB")


def sketch_items(paths: list[str]) -> ItemSet:
    """Each photo, a sketch of it and two ordinary copies form a class."""
    items = self_supervised_items(paths, copies=2, families=["resize", "colour"])
    extra = ItemSet()
    for cls, path in enumerate(paths):
        extra.add(f"{path}#sketch", cls, lambda path=path: sketch(Image.open(path).convert("RGB")))
    out = merge(items, extra)
    shift = max(items.labels) + 1  # merge shifted the sketches' classes; put each back with its photo
    out.labels = items.labels + [lab - shift for lab in out.labels[len(items) :]]
    return out


def test_fine_tuning_on_a_family_the_model_misses_raises_its_held_out_recall(shared_data: Path) -> None:
    """Training on sketches of the 24 Kodak photos teaches the family: on the 14 Set14 photos (another collection,
    never trained on) a sketch's similarity to its photo rises and sketches rank above different photos far more
    often. Sketches of different photos are alike (line drawings), so recall at a precision-calibrated threshold is
    not a stable measure on 14 photos; the ranking (ROC AUC of sketch pairs against every pair of different held-out
    images) is."""
    base = read_checkpoint(default_model_path())
    train_paths = sorted(str(p) for p in (shared_data / "photos" / "kodak").glob("*.png"))
    held_out = sorted(str(p) for p in (shared_data / "photos" / "set14").glob("*.png"))
    train, val = split_by_class(sketch_items(train_paths), 0.25, seed=0)
    images = [Image.open(p).convert("RGB") for p in held_out]
    pixels = np.stack([resize_square(im, 160) for im in images] + [resize_square(sketch(im), 160) for im in images])

    def held_out_scores(checkpoint: Checkpoint) -> tuple[float, float]:
        encoder = build_encoder(checkpoint).eval()
        with torch.no_grad():
            e = encoder(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0).numpy()
        n, sims = len(images), e @ e.T
        pos = np.array([sims[k, n + k] for k in range(n)])
        neg = np.array([sims[a, b] for a in range(2 * n) for b in range(a + 1, 2 * n) if a % n != b % n])
        auc = float((pos[:, None] > neg[None, :]).mean())
        return float(pos.mean()), auc

    mean_before, auc_before = held_out_scores(base)
    config = TrainConfig(epochs=12, lr=3e-3, loss="triplet", classes_per_batch=8, per_class=4)
    result = drive(fit(base, train, val, config))
    assert result.improved  # the run is offered to the user (validation F1 and AUC both better)
    mean_after, auc_after = held_out_scores(result.checkpoint)
    print(
        f"held-out sketches: mean similarity {mean_before:.3f} -> {mean_after:.3f}, AUC {auc_before:.3f} -> "
        f"{auc_after:.3f}"
    )
    assert mean_before < 0.6 and mean_after >= mean_before + 0.1
    assert auc_after >= auc_before + 0.1
