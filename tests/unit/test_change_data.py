"""Labelled change pairs: splits by tile (never one tile on both sides), the recorded held-out choices, layouts,
synthetic triples and augmentations that move both dates and the label together."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_training.change_data import (
    IGNORE,
    OSCD_HELD_OUT_CITIES,
    OSCD_TEST_CITIES,
    OSCD_VAL_CITIES,
    ChangeDataError,
    ChangePair,
    folder_pairs,
    hash_split,
    held_out,
    pairs_from_triples,
    random_view,
    shared_pairs,
    split_counts,
)


@pytest.fixture(scope="module")
def shared(shared_data: Path) -> list[ChangePair]:
    return shared_pairs(shared_data / "change")


def test_every_shared_tile_is_on_exactly_one_side(shared: list[ChangePair]) -> None:
    keys = Counter(p.key for p in shared)
    assert keys and max(keys.values()) == 1
    counts = split_counts(shared)
    assert counts["houses_pk"] == {"train": 29, "val": 5, "test": 6}
    assert counts["egy_bcd"] == {"train": 4, "val": 3, "test": 2}
    assert counts["levir_samples"] == {"train": 3, "val": 0, "test": 1}
    assert counts["oscd_rgb"] == {"train": 9, "val": 1, "test": 3}
    split_of = {p.key: p.split for p in shared}
    assert {split_of[f"oscd_rgb/{c}"] for c in OSCD_TEST_CITIES} == {"test"}
    assert {split_of[f"oscd_rgb/{c}"] for c in OSCD_VAL_CITIES} == {"val"}
    assert split_of["levir_samples/val_27_0000_0256"] == "test"
    for p in shared:  # what the synthetic generator may not touch is exactly what is not trained on
        if p.source != "landsat_taizhou":
            assert held_out(p.source, p.name) == (p.split != "train"), p.key
    for p in shared:
        assert p.before.shape == p.after.shape and p.before.shape[:2] == p.label.shape and p.before.dtype == np.uint8
        assert set(np.unique(p.label)) <= {0, 1, IGNORE}


def test_taizhou_regions_do_not_overlap_and_keep_the_unlabelled_pixels_out(shared: list[ChangePair]) -> None:
    regions = [p for p in shared if p.source == "landsat_taizhou"]
    assert sorted(p.split for p in regions) == ["test", "train", "val"]
    assert sum(p.label.size for p in regions) == 400 * 400  # a partition of the one pair
    for p in regions:
        assert 0 < p.changed_px < p.labelled_px < p.label.size  # changed, unchanged and unlabelled pixels in each


def test_nothing_validated_or_measured_on_is_a_synthetic_source(shared_data: Path) -> None:
    from model_training.change_splits import labelled_tiles, oscd_cities

    assert set(OSCD_VAL_CITIES) | set(OSCD_TEST_CITIES) == OSCD_HELD_OUT_CITIES
    assert not set(OSCD_VAL_CITIES) & set(OSCD_TEST_CITIES)
    change = shared_data / "change"
    assert not set(oscd_cities(change)) & OSCD_HELD_OUT_CITIES
    for source in ("houses_pk", "egy_bcd", "levir_samples"):
        ours = {p.name for p in folder_pairs(change / source) if p.split == "train"}
        assert set(labelled_tiles(change, source, "train")) == ours, source


def _tile(root: Path, name: str, value: int, label_ext: str = ".png") -> None:
    for sub in ("A", "B", "label"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    img = np.full((64, 64, 3), value, np.uint8)
    Image.fromarray(img).save(root / "A" / f"{name}.png")
    Image.fromarray(255 - img).save(root / "B" / f"{name}.jpg")
    label = np.zeros((64, 64), np.uint8)
    label[:10] = 255
    Image.fromarray(label).save(root / "label" / f"{name}{label_ext}")


def test_folder_splits_by_csv_prefix_or_hash(tmp_path: Path) -> None:
    hashed = tmp_path / "hashed"
    names = [f"tile{k}" for k in range(12)]
    for k, n in enumerate(names):
        _tile(hashed, n, k)
    pairs = folder_pairs(hashed)
    assert [p.name for p in pairs] == sorted(names)
    assert {p.name: p.split for p in pairs} == {n: hash_split(n) for n in names} or any(p.split == "val" for p in pairs)
    assert {p.split for p in pairs} <= {"train", "val"} and any(p.split == "val" for p in pairs)
    assert folder_pairs(hashed) and [p.split for p in folder_pairs(hashed)] == [p.split for p in pairs]  # stable
    p0 = pairs[0]
    assert p0.label.max() == 1 and p0.changed_px == 640 and p0.before.shape == (64, 64, 3)

    prefixed = tmp_path / "prefixed"
    for n in ("train_1", "val_1", "test_1"):
        _tile(prefixed, n, 9)
    assert {p.name: p.split for p in folder_pairs(prefixed)} == {"train_1": "train", "val_1": "val",
                                                                 "test_1": "test"}  # fmt: skip
    (prefixed / "split.csv").write_text("name,split\ntrain_1,val\nval_1,train\ntest_1,test\n")
    assert {p.name: p.split for p in folder_pairs(prefixed)} == {"train_1": "val", "val_1": "train",
                                                                 "test_1": "test"}  # fmt: skip


def test_two_tiles_get_a_validation_tile_even_when_the_hash_gives_none(tmp_path: Path) -> None:
    names = [n for n in (f"x{k}" for k in range(100)) if hash_split(n) == "train"][:2]
    for n in names:
        _tile(tmp_path, n, 5)
    assert sorted(p.split for p in folder_pairs(tmp_path)) == ["train", "val"]


def test_bad_folders_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ChangeDataError, match="A/, B/ and label/"):
        folder_pairs(tmp_path)
    (tmp_path / "A").mkdir()
    with pytest.raises(ChangeDataError, match="no B/ folder"):
        folder_pairs(tmp_path)
    _tile(tmp_path / "x", "t", 3)
    (tmp_path / "x" / "split.csv").write_text("name,split\nt,training\n")
    with pytest.raises(ChangeDataError, match="unknown split"):
        folder_pairs(tmp_path / "x")


def test_synthetic_triples_become_training_pairs() -> None:
    rng = np.random.default_rng(0)
    label255 = np.zeros((32, 32), np.uint8)
    label255[4:8] = 255
    label01 = (label255 > 0).astype(np.uint8)
    img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    pairs = list(pairs_from_triples([(img, img, label255), (img, img, label01)], "synth"))
    assert [p.split for p in pairs] == ["train", "train"] and pairs[0].name != pairs[1].name
    assert all(p.changed_px == 4 * 32 for p in pairs)
    with pytest.raises(ChangeDataError, match="differ in size"):
        list(pairs_from_triples([(img, img[:16], label01)]))


def test_random_views_move_both_dates_and_the_label_together() -> None:
    rng = np.random.default_rng(1)
    h, w = 40, 50
    label = (rng.random((h, w)) > 0.7).astype(np.uint8)
    before = np.stack([label * 200, rng.integers(0, 255, (h, w)), np.zeros((h, w))], -1).astype(np.uint8)
    after = before[..., ::-1].copy()  # the label is in after's last channel
    pair = ChangePair("s", "n", "train", before, after, label)
    turns_seen = set()
    for _ in range(40):
        a, b, lab = random_view(pair, 32, rng)
        assert a.shape == (32, 32, 3) and lab.shape == (32, 32)
        assert np.array_equal(a[..., 0], lab * 200) and np.array_equal(b[..., 2], lab * 200)
        assert np.array_equal(a[..., 1], b[..., 1])
        turns_seen.add(a[..., 1].tobytes())
    assert len(turns_seen) > 10
    big, _, big_lab = random_view(pair, 64, rng)  # larger than the pair: padded, the padding unlabelled
    assert big.shape == (64, 64, 3) and (big_lab == IGNORE).sum() == 64 * 64 - h * w
