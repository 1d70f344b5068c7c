"""Near-duplicate benchmark: quality per edit family against hash peers, cold/warm scan speed, grouping at scale,
uniform collections, and the approximate index's recall.

    python benchmarks/neardup.py                       # everything (about 10 minutes on 2 cores)
    python benchmarks/neardup.py --parts quality --split dev
    python benchmarks/neardup.py --parts keep-pool         # which file is kept, on pool photos (no model)
    python benchmarks/neardup.py --parts speed --large-count 200
    python benchmarks/neardup.py --parts grouping uniform --baseline 7fbe625   # before/after a change
    python benchmarks/neardup.py --parts uniform --neighbors 50 100 200
    python benchmarks/neardup.py --parts ivf --nprobe 8 16 32 --nlist 1788 900

Quality: real photos of ``../shared/data/photos`` with one copy per edit family and distinct distractors (see
``model_training/neardup_set.py``). Pair precision/recall/F1 over all pairs of files, where two files are true
duplicates when they derive from the same photo; a tool predicts a pair when it puts both files in one group
(dedup-app, Czkawka) or, for the bare hashes, when their distance is within the documented default. Per family,
recall counts (original, copy) pairs and precision counts the predicted pairs that involve a copy of that family.
The quality part also measures which file each rule keeps (``keep_scores``): in every dedup-app group that holds an
original, whether the kept file is that original, for the default rule (the likeliest original,
``dedup_app.core.keep``) and the rule before it (highest resolution); and the same for the PDQ sample edits
(``../shared/data/neardup/pdq_bridge_mods``). The set writes each original before its copies, so every file's
modification time is set to a random time (seeded) first: no rule can find the original by its age.

Speed: a cold scan (empty cache) of large JPEGs with dedup-app against imagehash pHash over the same files in the
same run, then a warm rescan. Grouping: 100k synthetic embeddings (with planted near-duplicate clusters), time and
peak resident memory, against a blocked NumPy all-pairs search in the same run (and, with ``--baseline REF``, the
``dedup_app`` of an earlier git commit). Uniform: 100k near-uniform embeddings (every pair above the floor) through
``DuplicateFinder.search`` + ``groups``, per bound on neighbours; the earlier commit only at sizes it can hold.
IVF: recall of the approximate index against the exact search on 200k clustered embeddings, per number of lists
and of probed lists. The synthetic embeddings are described in ``benchmarks/synthetic.py``.

Results go to ``benchmarks/results/neardup-<part>.json`` and the tables in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_training.edits import EDIT_FAMILIES  # noqa: E402
from model_training.metrics import PairScores, pairs_of_groups, pairs_of_labels, prf  # noqa: E402
from model_training.neardup_set import SetItem, build_neardup_set  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


# ------------------------------------------------------------------------------------------------- the tools


#: The keep rules the quality part compares: the default (the likeliest original) and the one before it.
KEEP_RULES = ("best", "resolution")


def dedup_app_groups(
    folder: Path, files: list[str], threshold: float | None = None, model: Path | None = None, check: bool = True
) -> list[tuple[list[int], list[int], dict[str, int]]]:
    """Groups found by dedup-app's scan pipeline (the given or default model at its calibrated threshold, with or
    without the geometric check of look-alike pairs), as indices, each with the part the window marks by itself
    with its default rule (the kept file and the files ticked for removal, see marking.mark_group), and the file
    each of :data:`KEEP_RULES` keeps."""
    from dedup_app.core.duplicates import scan_and_search
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.marking import DEFAULT_RULE, SURE_SIMILARITY, choose_keep, mark_group
    from dedup_app.core.progress import drive

    embedder = Embedder(load_checkpoint(model), "auto")
    t = embedder.threshold if threshold is None else threshold
    finder = drive(scan_and_search([folder], embedder, ":memory:", floor=t, threshold=t, check=check))
    groups = finder.groups(t)
    index = {str(folder / f): k for k, f in enumerate(files)}
    out = []
    for g in groups:
        marks = mark_group(g, DEFAULT_RULE, sure=SURE_SIMILARITY)
        images = [m.image for m in g.members]
        kept = {rule: index[choose_keep(images, rule).path] for rule in KEEP_RULES}
        out.append(([index[m.image.path] for m in g.members], [index[p] for p in (marks.keep, *marks.marked)], kept))
    return out


def shuffle_mtimes(folder: Path, seed: int = 0) -> None:
    """Give every file in ``folder`` a random modification time (2015-2025, seeded): the set is written originals
    first, and their age must not tell them apart from their copies."""
    rng = np.random.default_rng(seed)
    for path in sorted(folder.iterdir()):
        when = int(rng.integers(1_420_070_400, 1_735_689_600)) * 1_000_000_000
        os.utime(path, ns=(when, when))


def _same_photo(a: SetItem, b: SetItem) -> bool:
    return a.source is not None and a.source == b.source


def keep_scores(groups: Sequence[tuple[list[int], list[int], dict[str, int]]], items: Sequence[SetItem]) -> dict:
    """For each rule of :data:`KEEP_RULES`: in how many groups holding an original the kept file is that original,
    and of which family the kept file is where it is not. Also what the window ticks by itself with its default
    rule: how many files, and how many of them are not copies of the kept file's photo."""
    with_original = [g for g in groups if any(items[k].family == "orig" for k in g[0])]
    ticked = [(auto[0], k) for _, auto, _ in groups for k in auto[1:]]
    out: dict[str, Any] = {
        "groups": len(groups),
        "groups_with_original": len(with_original),
        "copies": sum(1 for it in items if it.source is not None and it.family != "orig"),
        "ticked": len(ticked),
        "ticked_wrongly": sum(1 for keep, k in ticked if not _same_photo(items[k], items[keep])),
        "rules": {},
    }
    for rule in KEEP_RULES:
        kept = [items[g[2][rule]].family for g in with_original]
        missed: dict[str, int] = {}
        for family in kept:
            if family != "orig":
                missed[family] = missed.get(family, 0) + 1
        ok = kept.count("orig")
        out["rules"][rule] = {
            "kept_original": ok,
            "share": ok / len(with_original) if with_original else 1.0,
            "kept_instead": dict(sorted(missed.items(), key=lambda kv: (-kv[1], kv[0]))),
        }
    return out


def run_keep_pdq(data: Path, model: Path | None = None) -> dict[str, Any]:
    """The PDQ sample (one photo, 11 edits of it: blur, sharpen, contrast, saturation, shrink, square crops, all at
    one JPEG quality and the same size but the shrinks and crops): the group of ``aaa-orig.jpg`` and the file each
    rule keeps there. Scanned from a copy whose modification times are shuffled."""
    source = data / "neardup" / "pdq_bridge_mods"
    with tempfile.TemporaryDirectory(prefix="pdq-") as tmp:
        folder = Path(tmp)
        files = sorted(p.name for p in source.glob("*.jpg"))
        for name in files:
            shutil.copyfile(source / name, folder / name)
        shuffle_mtimes(folder)
        groups = dedup_app_groups(folder, files, model=model)
    group = next((g for g in groups if files.index("aaa-orig.jpg") in g[0]), None)
    if group is None:
        return {"files": len(files), "group": [], "kept": {}}
    return {
        "files": len(files),
        "group": sorted(files[k] for k in group[0]),
        "kept": {rule: files[k] for rule, k in group[2].items()},
    }


def hash_pairs(
    folder: Path, files: list[str], hasher: Callable[[Path], np.ndarray], max_distance: int
) -> set[tuple[int, int]]:
    """Pairs whose bit hashes are within ``max_distance`` (Hamming)."""
    bits = np.stack([hasher(folder / f) for f in files]).astype(np.uint8)
    dist = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    i, j = np.nonzero(np.triu(dist <= max_distance, 1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def phash_bits(path: Path) -> np.ndarray:
    import imagehash
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(imagehash.phash(im).hash).ravel()


def dhash_bits(path: Path) -> np.ndarray:
    import imagehash
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(imagehash.dhash(im).hash).ravel()


def pdq_bits(path: Path) -> np.ndarray:
    import pdqhash
    from PIL import Image

    with Image.open(path) as im:
        bits, _quality = pdqhash.compute(np.asarray(im.convert("RGB")))
    return np.asarray(bits)


def czkawka_groups(folder: Path, files: list[str]) -> list[list[int]]:
    """Groups found by Czkawka's image similarity at its default setting."""
    import czkawka

    finder = czkawka.ImageSimilarity()
    finder.set_directories([folder])
    index = {f: k for k, f in enumerate(files)}
    return [[index[p.name] for p in group if p.name in index] for group in finder.find_similar()]


# ------------------------------------------------------------------------------------------------- quality


def family_scores(
    predicted: set[tuple[int, int]], items: Sequence[SetItem], truth: set[tuple[int, int]]
) -> dict[str, PairScores]:
    """Per edit family: recall over (original, copy) pairs, precision over predicted pairs touching a copy."""
    orig = {it.source: k for k, it in enumerate(items) if it.family == "orig"}
    out: dict[str, PairScores] = {}
    for family in EDIT_FAMILIES:
        members = {k for k, it in enumerate(items) if it.family == family}
        actual = {tuple(sorted((orig[items[k].source], k))) for k in members}  # type: ignore[index]
        touching = {p for p in predicted if p[0] in members or p[1] in members}
        tp_touch = len(touching & truth)
        found = len(actual & predicted)
        p = tp_touch / len(touching) if touching else 1.0
        r = found / len(actual) if actual else 1.0
        out[family] = PairScores(p, r, 2 * p * r / (p + r) if p + r else 0.0, found, len(touching), len(actual))
    return out


def run_quality(data: Path, split: str, model: Path | None = None, peers: bool = True) -> dict[str, object]:
    """Build the set for ``split`` and score every tool on it."""
    with tempfile.TemporaryDirectory(prefix="neardup-") as tmp:
        folder = Path(tmp)
        items = build_neardup_set(data, folder, split)
        shuffle_mtimes(folder)
        files = [it.file for it in items]
        truth = pairs_of_labels([it.source for it in items])
        found: list[list[tuple[list[int], list[int], dict[str, int]]]] = []

        def ours(auto_marked_only: bool) -> set[tuple[int, int]]:
            if not found:  # one scan serves both rows and the keep scores
                found.append(dedup_app_groups(folder, files, model=model))
            return pairs_of_groups([auto if auto_marked_only else group for group, auto, _ in found[0]])

        def unchecked() -> set[tuple[int, int]]:
            return pairs_of_groups([group for group, _, _ in dedup_app_groups(folder, files, model=model, check=False)])

        tools: dict[str, Callable[[], set[tuple[int, int]]]] = {
            "dedup-app": lambda: ours(False),
            "dedup-app, auto-marked only (>= 0.95)": lambda: ours(True),
            "dedup-app, no geometric check": unchecked,
            "pHash (d<=10)": lambda: hash_pairs(folder, files, phash_bits, 10),
            "dHash (d<=10)": lambda: hash_pairs(folder, files, dhash_bits, 10),
            "PDQ (d<=31)": lambda: hash_pairs(folder, files, pdq_bits, 31),
            "Czkawka (default)": lambda: pairs_of_groups(czkawka_groups(folder, files)),
        }
        if not peers:
            tools = {k: v for k, v in tools.items() if k.startswith("dedup-app")}
        report: dict[str, object] = {
            "split": split,
            "model": str(model) if model else "default",
            "files": len(items),
            "sources": sum(1 for it in items if it.family == "orig"),
            "distractors": sum(1 for it in items if it.family == "distractor"),
            "true_pairs": len(truth),
            "tools": {},
        }
        for name, run in tools.items():
            started = time.perf_counter()
            try:
                predicted = run()
            except Exception as exc:  # a peer that fails is reported, not fatal
                report["tools"][name] = {"error": repr(exc)}  # type: ignore[index]
                print(f"{name}: failed: {exc!r}", file=sys.stderr)
                continue
            seconds = time.perf_counter() - started
            overall = prf(predicted, truth)
            fam = family_scores(predicted, items, truth)
            report["tools"][name] = {  # type: ignore[index]
                "precision": overall.precision,
                "recall": overall.recall,
                "f1": overall.f1,
                "predicted_pairs": overall.predicted,
                "false_pairs": len(predicted - truth),
                "seconds": seconds,
                "families": {f: {"precision": s.precision, "recall": s.recall} for f, s in fam.items()},
            }
            print(f"{name:20s} P {overall.precision:.3f} R {overall.recall:.3f} F1 {overall.f1:.3f} ({seconds:.1f}s)")
        if found:
            report["keep"] = keep_scores(found[0], items)
            print("kept file is the original:", json.dumps(report["keep"]))
    report["keep_pdq"] = run_keep_pdq(data, model)
    print("PDQ sample:", json.dumps(report["keep_pdq"]))
    return report


# ------------------------------------------------------------------------------------------------- keep (pool)


def _pool_group(folder: Path, name: str, source: bytes, img: Any, rng: np.random.Generator) -> list[Path]:
    """Write ``source`` as ``name__orig`` and one copy of ``img`` per edit family; the paths, original first."""
    from model_training.edits import apply_edit

    files = [folder / f"{name}__orig.jpg"]
    files[0].write_bytes(source)
    for family in EDIT_FAMILIES:
        edited = apply_edit(family, img, rng)
        files.append(folder / f"{name}__{family}{edited.suffix}")
        files[-1].write_bytes(edited.to_bytes())
    return files


def run_lookalikes(data: Path) -> dict[str, Any]:
    """The pool's 1,961 photos, deduplicated, so every pair a tool groups is a false pair (one subject, one scene,
    one product line): dedup-app's scan with and without the geometric check, and what the check costs."""
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.duplicates import scan_and_search
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.progress import drive
    from model_training.pool_training import split_of

    folder = data / "photos" / "pool"
    embedder = Embedder(load_checkpoint(), "auto")
    t = embedder.threshold
    with EmbeddingCache(":memory:") as cache:
        started = time.perf_counter()
        finder = drive(scan_and_search([folder], embedder, cache, floor=t, threshold=t, check=False))
        t_scan = time.perf_counter() - started
        before = finder.graph.at(t)  # type: ignore[union-attr]
        grouped_before = sum(len(g.members) for g in finder.groups(t))
        started = time.perf_counter()
        drive(finder.check_geometry(t, cache))
        t_check = time.perf_counter() - started
    after = finder.graph.at(t)  # type: ignore[union-attr]
    names = [Path(finder.result.images[c[0]].path).name for c in finder.contents]

    def counts(graph: Any) -> dict[str, int]:
        both_test = [split_of(names[i]) == "test" == split_of(names[j]) for i, j in zip(graph.i, graph.j, strict=True)]
        return {"false_pairs": len(graph.s), "false_pairs_test_split": int(sum(both_test))}

    unchecked = {**counts(before), "photos_in_groups": grouped_before}
    checked = {**counts(after), "photos_in_groups": sum(len(g.members) for g in finder.groups(t))}
    report = {"photos": len(names), "threshold": t, "scan_seconds": t_scan, "check_seconds": t_check,
              "pairs_in_band": int(np.count_nonzero(before.s < 0.92)), "unchecked": unchecked,
              "checked": checked}  # fmt: skip
    print(json.dumps(report, indent=1))
    return report


def lookalike_table(rep: dict[str, Any]) -> str:
    u, c = rep["unchecked"], rep["checked"]
    return (
        "| grouping | false pairs (all pool photos) | false pairs (both in the test split) | photos put in a group "
        "| seconds |\n|---|---|---|---|---|\n"
        f"| similarity alone (`--no-geometric-check`) | {u['false_pairs']} | {u['false_pairs_test_split']} | "
        f"{u['photos_in_groups']} | {rep['scan_seconds']:.0f} (scan) |\n"
        f"| **with the geometric check** (default) | **{c['false_pairs']}** | **{c['false_pairs_test_split']}** | "
        f"**{c['photos_in_groups']}** | +{rep['check_seconds']:.0f} ({rep['pairs_in_band']} pairs under 0.92) |"
    )


def run_keep_pool(data: Path, count: int = 100) -> dict[str, Any]:
    """The keep rules on photos of ``photos/pool`` (not in the benchmark set, where the rule was designed), each
    group being an original and one copy per edit family, grouped by truth (no model; random modification times):

    * ``q92``: ``count`` pool photos (evenly spaced), the original saved as JPEG q92 as in the benchmark set;
    * ``framed``: the same, for every pool photo with bars or a uniform band of its own (``keep.content_box``);
    * ``higher-quality copies``: the pool file itself (JPEG q88) is the original, and the edits write their copies at
      q90, higher than their source.

    For each: the share of groups whose kept file is the original, per rule, and for the default rule the pairs
    (original, one copy) where the copy is kept, per family."""
    from PIL import Image

    from dedup_app.core.imageio import decode, load_for_embedding, read_bytes
    from dedup_app.core.keep import content_box
    from dedup_app.core.marking import RULES
    from dedup_app.core.scan import ImageRecord
    from model_training.edits import EditedImage

    pool = sorted((data / "photos" / "pool").glob("*.jpg"))
    spaced = pool[1 :: max(1, len(pool) // count)][:count]
    framed = []
    for path in pool:
        x0, y0, x1, y1 = content_box(np.asarray(decode(read_bytes(str(path)), 160)[0]))
        if (x1 - x0) * (y1 - y0) < 0.97:
            framed.append(path)
    cases = {"q92": (spaced, True), "framed": (framed, True), "higher-quality copies": (spaced, False)}
    report: dict[str, Any] = {"pool_photos": len(pool), "cases": {}}
    stamp = np.random.default_rng(0)
    for case, (photos, resave) in cases.items():
        kept = dict.fromkeys(KEEP_RULES, 0)
        pair_misses: dict[str, int] = {}
        with tempfile.TemporaryDirectory(prefix="keep-pool-") as tmp:
            for k, photo in enumerate(photos):
                raw = photo.read_bytes()
                with Image.open(photo) as im:
                    img = im.convert("RGB")
                source = EditedImage(img, "JPEG", {"quality": 92}).to_bytes() if resave else raw
                files = _pool_group(Path(tmp), f"p{k}", source, img, np.random.default_rng(k))
                records = []
                for f in files:
                    when = int(stamp.integers(1_420_070_400, 1_735_689_600)) * 1_000_000_000
                    info = load_for_embedding(str(f), 160).info
                    records.append(ImageRecord(str(f), f.stat().st_size, when, f.name, info))
                for rule in KEEP_RULES:
                    kept[rule] += RULES[rule][1](records)[0] == 0
                rank = RULES[KEEP_RULES[0]][1]
                for j, family in enumerate(EDIT_FAMILIES, 1):
                    if rank([records[0], records[j]])[0] != 0:
                        pair_misses[family] = pair_misses.get(family, 0) + 1
                for f in files:
                    f.unlink()
        report["cases"][case] = {
            "groups": len(photos),
            "kept_original": kept,
            "pair_misses": dict(sorted(pair_misses.items(), key=lambda kv: (-kv[1], kv[0]))),
        }
        print(case, json.dumps(report["cases"][case]), flush=True)
    return report


def keep_pool_table(rep: dict[str, Any]) -> str:
    lines = [
        "| case | groups | kept file is the original: default rule | rule before | pairs where the copy is kept "
        "(default rule; family: pairs) |",
        "|---|---|---|---|---|",
    ]
    best, before = KEEP_RULES
    for case, r in rep["cases"].items():
        n = r["groups"]
        shares = [
            f"{r['kept_original'][rule]} ({100 * r['kept_original'][rule] / max(1, n):.0f} %)"
            for rule in (best, before)
        ]
        misses = ", ".join(f"{f}: {m}" for f, m in r["pair_misses"].items()) or "none"
        lines.append(f"| {case} | {n} | {shares[0]} | {shares[1]} | {misses} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- speed


def make_large_jpegs(data: Path, folder: Path, count: int, size: tuple[int, int] = (4032, 3024)) -> list[Path]:
    """``count`` 12-megapixel JPEGs made from the shared photos (upscaled, with sensor-like noise, quality 92)."""
    from PIL import Image

    from model_training.neardup_set import list_photos

    photos = list_photos(data)
    rng = np.random.default_rng(0)
    out = []
    for k in range(count):
        with Image.open(photos[k % len(photos)]) as im:
            img = im.convert("RGB")
        w, h = size if img.width >= img.height else size[::-1]
        big = np.asarray(img.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
        big = big + rng.normal(0, 4, big.shape).astype(np.int16)
        path = folder / f"large_{k:04d}.jpg"
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path, quality=92)
        out.append(path)
    return out


class _NoEncoder:
    """A measuring device, not a model: the encoder's interface at no cost (random unit vectors), so a scan with it
    times everything but the network: the bound that no faster encoder can beat."""

    backend = "none"
    device = "cpu"
    model_id = "bench-no-encoder"
    threshold = 0.999
    input_size = 160
    dim = 256

    def __init__(self) -> None:
        self.checkpoint = self
        self.metrics: dict[str, Any] = {}
        self._rng = np.random.default_rng(0)

    def prepare(self) -> None:
        pass

    def embed(self, images: Any) -> np.ndarray:
        v = self._rng.normal(size=(len(images), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _timed_scan(folder: Path, cache_path: Path, backend: str | None = None) -> tuple[float, dict[str, int]]:
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.duplicates import scan_and_search
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.progress import drive

    started = time.perf_counter()
    embedder: Any = _NoEncoder() if backend == "none" else Embedder(load_checkpoint(), "auto", backend=backend)
    with EmbeddingCache(cache_path) as cache:  # the command line's pipeline: scan, search, geometric check
        finder = drive(scan_and_search([folder], embedder, cache, floor=embedder.threshold))
    finder.groups(embedder.threshold)
    stats = finder.result.stats
    return time.perf_counter() - started, {"decoded": stats.decoded, "cached": stats.cached,
                                           "backend": embedder.backend}  # type: ignore[dict-item]  # fmt: skip


def _start_up(empty: Path, backend: str | None, runs: int = 3) -> float:
    """Median wall time of ``dedup-app scan EMPTY`` in a fresh process (start-up: imports and the model)."""
    env = {**os.environ, **({"DEDUP_APP_BACKEND": backend} if backend else {})}
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dedup_app", "scan", str(empty), "--cache", ":memory:", "--no-progress"],
                       check=True, capture_output=True, env=env)  # fmt: skip
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def run_speed(data: Path, count: int) -> dict[str, object]:
    """Cold scan vs imagehash pHash over the same large JPEGs, then a warm rescan."""
    # The photos are deterministic: keep them between runs (writing 200 of them takes minutes).
    folder = Path(tempfile.gettempdir()) / "dedup-app-bench" / f"large-{count}"
    files = sorted(folder.glob("large_*.jpg"))
    if len(files) != count or not (folder / "complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        print(f"writing {count} large JPEGs to {folder} ...", file=sys.stderr)
        files = make_large_jpegs(data, folder, count)
        (folder / "complete").touch()
    with tempfile.TemporaryDirectory(prefix="large-") as tmp:
        megapixels = 4032 * 3024 / 1e6
        avg_bytes = sum(f.stat().st_size for f in files) / len(files)
        for f in files:  # both tools then read from the page cache, not the disk
            f.read_bytes()
        started = time.perf_counter()
        for f in files:
            phash_bits(f)
        t_phash = time.perf_counter() - started
        from dedup_app.core.embedder import Embedder, load_checkpoint
        from dedup_app.core.onnx_encoder import find_export

        checkpoint = load_checkpoint()
        exported = find_export(checkpoint.model_id) is not None
        started = time.perf_counter()
        Embedder(checkpoint, "auto").prepare()  # a first run exports the model to ONNX once: not timed
        t_prepare = None if exported else time.perf_counter() - started
        started = time.perf_counter()
        try:
            czkawka_groups(folder, [f.name for f in files])
            t_czkawka: float | None = time.perf_counter() - started
        except Exception as exc:  # a peer that fails is reported, not fatal
            print(f"Czkawka failed: {exc!r}", file=sys.stderr)
            t_czkawka = None
        cache = Path(tmp) / "cache.sqlite3"
        t_cold, cold_stats = _timed_scan(folder, cache)
        t_warm, warm_stats = _timed_scan(folder, cache)
        t_torch, torch_stats = _timed_scan(folder, Path(tmp) / "torch.sqlite3", backend="torch")
        t_bound, _ = _timed_scan(folder, Path(tmp) / "none.sqlite3", backend="none")
        empty = Path(tmp) / "empty"
        empty.mkdir()
        start_auto, start_torch = _start_up(empty, None), _start_up(empty, "torch")
    report = {
        "czkawka_seconds": t_czkawka,
        "cold_vs_czkawka_speed_ratio": t_czkawka / t_cold if t_czkawka else None,
        "start_up_seconds": start_auto,
        "start_up_torch_seconds": start_torch,
        "prepare_seconds": t_prepare,
        "torch_cold_seconds": t_torch,
        # the same scan with an encoder that costs nothing: what decoding, hashing and the cache take alone
        "no_encoder_cold_seconds": t_bound,
        "no_encoder_vs_phash_speed_ratio": t_phash / t_bound,
        "no_encoder_vs_czkawka_speed_ratio": t_czkawka / t_bound if t_czkawka else None,
        "torch_stats": torch_stats,
        "cold_vs_torch_speed_ratio": t_torch / t_cold,
        "images": count,
        "megapixels": megapixels,
        "avg_file_mb": avg_bytes / 1e6,
        "phash_seconds": t_phash,
        "cold_seconds": t_cold,
        "warm_seconds": t_warm,
        "cold_vs_phash_speed_ratio": t_phash / t_cold,
        "warm_speedup_over_cold": t_cold / t_warm,
        "cold_stats": cold_stats,
        "warm_stats": warm_stats,
    }
    print(json.dumps(report, indent=1))
    return report


# ------------------------------------------------------------------------------------------------- grouping

_GROUPING_CHILD = r"""
import json, resource, sys, time
import numpy as np
code, bench_root = sys.argv[1], sys.argv[2]
sys.path[:0] = [code, bench_root]  # dedup_app from `code` (this tree or an earlier version), the data from here
from benchmarks.synthetic import clustered, near_uniform, planted

def peak_mb():
    # VmHWM is this process's own peak; ru_maxrss on Linux carries the parent's peak over fork + exec.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

n, method, threshold, data, neighbors = int(sys.argv[3]), sys.argv[4], float(sys.argv[5]), sys.argv[6], int(sys.argv[7])
out = {}
if data == "clustered":  # shaped like the model's embeddings, 10 % edited copies: how many of those are found
    pairs = []
    x, _ = clustered(n, planted_pairs=pairs)
    copy, original = pairs
    keep = np.einsum("ij,ij->i", x[copy], x[original]) >= threshold
    planted_keys = np.unique(np.minimum(copy[keep], original[keep]).astype(np.int64) * n
                             + np.maximum(copy[keep], original[keep]))
    del pairs, copy, original, keep
else:
    x = planted(n) if data == "planted" else near_uniform(n)
if method == "finder":  # a scan result as the app has it: float16 vectors, one record per file
    import dedup_app.core.index as index_module
    from dedup_app.core.duplicates import DuplicateFinder
    from dedup_app.core.imageio import ImageInfo
    from dedup_app.core.scan import ImageRecord, ScanResult
    if neighbors:
        index_module.MAX_NEIGHBORS = neighbors
    images = [ImageRecord(f"/p/{k}.png", 1000, 0, f"h{k}", ImageInfo(64, 64, "PNG")) for k in range(n)]
    result = ScanResult(["/p"], "synthetic", threshold, images, x.astype(np.float16), [])
    del x
import gc
gc.collect()
try:  # the peak from here on: making the data (clustered() goes through float64) is not the tool's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
base_rss = peak_mb()
started, cpu = time.perf_counter(), time.process_time()
if method == "dedup-app":
    from dedup_app.core.grouping import clique_groups
    from dedup_app.core.index import similarity_graph
    from dedup_app.core.progress import drive
    graph = drive(similarity_graph(x, threshold))
    out.update(search_seconds=time.perf_counter() - started, search_peak_rss_mb=peak_mb())
    groups = clique_groups(graph)
    out["edges"] = len(graph.s)
    out["largest_group"] = max((len(g) for g in groups), default=0)
    if data == "clustered":
        out["planted_pairs"] = len(planted_keys)
        out["planted_found"] = float(np.isin(planted_keys, graph.i.astype(np.int64) * n + graph.j).mean())
        member = np.full(n, -1, np.int64)
        for number, g in enumerate(groups):
            member[list(g)] = number
        a, b = planted_keys // n, planted_keys % n
        out["planted_grouped_together"] = float(((member[a] == member[b]) & (member[a] >= 0)).mean())
elif method == "finder":
    from dedup_app.core.progress import drive
    finder = DuplicateFinder(result)
    drive(finder.search(threshold))
    out.update(search_seconds=time.perf_counter() - started, search_peak_rss_mb=peak_mb())
    groups = finder.groups(threshold)
    out.update(edges=len(finder.graph.s), capped=getattr(finder.graph, "capped", None),
               max_neighbors=getattr(finder.graph, "max_neighbors", None),
               largest_group=max((len(g.members) for g in groups), default=0))
    if data == "clustered":  # every file its own content: the graph's nodes are the files
        out["planted_pairs"] = len(planted_keys)
        out["planted_found"] = float(np.isin(planted_keys, finder.graph.i * n + finder.graph.j).mean())
else:  # blocked NumPy all-pairs, the straightforward way
    edges = 0
    for a in range(0, n, 4096):
        s = x[a:a + 4096] @ x.T
        r, c = np.nonzero(s >= threshold)
        edges += int(((r + a) < c).sum())
    groups = []
    out["edges"] = edges
out.update(seconds=time.perf_counter() - started, cpu_seconds=time.process_time() - cpu, groups=len(groups),
           peak_rss_mb=peak_mb(), rss_before_mb=base_rss)
print(json.dumps(out))
"""

#: An earlier version on a uniform set keeps every pair: it runs under this address-space limit, not into the swap.
_BASELINE_MEMORY_LIMIT = 10 << 30


def _grouping_run(
    code: Path, n: int, method: str, threshold: float, data: str, neighbors: int = 0, limit: int | None = None
) -> dict[str, object]:
    """One measurement in a fresh process; ``{"error": ...}`` when it fails (out of memory under ``limit``)."""

    def cap_memory() -> None:
        if limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    args = [str(code), str(ROOT), str(n), method, str(threshold), data, str(neighbors)]
    out = subprocess.run(
        [sys.executable, "-c", _GROUPING_CHILD, *args], capture_output=True, text=True, preexec_fn=cap_memory
    )
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        result: dict[str, object] = {"error": tail}
    else:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    print(method, data, n, neighbors or "", result, flush=True)
    return result


def run_grouping(n: int, baseline: Path | None, threshold: float = 0.8) -> dict[str, object]:
    """Time and peak RSS of grouping ``n`` synthetic embeddings (2 % planted copies), each tool in a fresh process:
    this version, an earlier one (``baseline``, a folder holding its ``dedup_app``) and the NumPy peer."""
    report: dict[str, object] = {"vectors": n, "dim": 256, "threshold": threshold}
    report["dedup-app"] = _grouping_run(ROOT, n, "dedup-app", threshold, "planted")
    if baseline is not None:
        report["baseline"] = _grouping_run(baseline, n, "dedup-app", threshold, "planted")
    report["numpy-blocked"] = _grouping_run(ROOT, n, "numpy", threshold, "planted")
    report["speed_ratio_vs_numpy"] = report["numpy-blocked"]["seconds"] / report["dedup-app"]["seconds"]  # type: ignore[index]
    return report


def run_uniform(
    n: int, neighbors: Sequence[int], baseline: Path | None, small: Sequence[int] = (2_500, 5_000), floor: float = 0.7
) -> dict[str, object]:
    """A near-uniform collection (every pair above the floor) through DuplicateFinder.search + groups at the floor:
    ``n`` vectors with each bound in ``neighbors``; the ``small`` sizes also with the earlier version, which keeps
    every pair (it cannot run ``n``: that is n^2 / 2 pairs)."""
    from dedup_app.core.index import MAX_NEIGHBORS

    report: dict[str, object] = {"vectors": n, "dim": 256, "floor": floor, "default_max_neighbors": MAX_NEIGHBORS}
    runs = []
    for k in neighbors:
        runs.append({"version": "this", "vectors": n, **_grouping_run(ROOT, n, "finder", floor, "uniform", k)})
    for m in small:
        runs.append({"version": "this", "vectors": m, **_grouping_run(ROOT, m, "finder", floor, "uniform")})
        if baseline is not None:
            before = _grouping_run(baseline, m, "finder", floor, "uniform", limit=_BASELINE_MEMORY_LIMIT)
            runs.append({"version": "baseline", "vectors": m, **before})
    report["runs"] = runs
    return report


def run_ivf(
    n: int, nprobes: Sequence[int], nlists: Sequence[int] | None = None, floor: float = 0.8,
    thresholds: Sequence[float] = (0.8, 0.829, 0.9, 0.95),
) -> dict[str, object]:  # fmt: skip
    """Recall of the approximate index against the exact search on ``n`` clustered embeddings (see
    ``benchmarks/synthetic.py``), both searched at ``floor`` (the floor for collections of this size) and both with
    the same bound on neighbours: for each number of lists and of probed lists, the share of the exact pairs at each
    threshold that the index finds, and the time."""
    from benchmarks.synthetic import clustered
    from dedup_app.core.index import build_pair_index, pair_lists, pair_nprobe, similarity_graph
    from dedup_app.core.progress import drive

    x, _ = clustered(n)
    report: dict[str, object] = {"vectors": n, "dim": x.shape[1], "floor": floor, "default_nprobe": pair_nprobe(n)}
    started, cpu = time.perf_counter(), time.process_time()
    exact = drive(similarity_graph(x, floor, exact_max=n))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    pairs = {str(t): len(exact.at(t).s) for t in thresholds}
    report["exact"] = {"seconds": seconds, "cpu_seconds": cpu_seconds, "pairs": pairs, "capped": exact.capped}
    print("exact", report["exact"], flush=True)
    truth = {t: exact.at(t) for t in thresholds}
    runs = []
    for nlist in nlists or [pair_lists(n)]:
        started, cpu = time.perf_counter(), time.process_time()
        index = build_pair_index(x, nlist)
        build = (time.perf_counter() - started, time.process_time() - cpu)
        approx, ids = index.search(x[:4096], 20)  # how far the codes' scores are from the similarity
        error = np.abs(approx - np.einsum("ij,ikj->ik", x[:4096], x[np.maximum(ids, 0)]))[ids >= 0]
        for nprobe in nprobes:
            started, cpu = time.perf_counter(), time.process_time()
            graph = drive(similarity_graph(x, floor, exact_max=0, nprobe=nprobe, ivf_index=index))
            run = {"nlist": nlist, "nprobe": nprobe, "build_seconds": build[0], "build_cpu_seconds": build[1],
                   "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
                   "code_error_max": float(error.max()), "code_error_p999": float(np.quantile(error, 0.999)),
                   "capped": graph.capped, "recall": {}, "extra_pairs": 0}  # fmt: skip
            for t in thresholds:
                want, got = truth[t], graph.at(t)
                hit = np.isin(want.i * n + want.j, got.i * n + got.j)
                run["recall"][str(t)] = float(hit.mean()) if len(hit) else 1.0  # type: ignore[index]
            run["extra_pairs"] = int((~np.isin(graph.i * n + graph.j, exact.i * n + exact.j)).sum())
            runs.append(run)
            print(run, flush=True)
    report["runs"] = runs
    return report


@contextlib.contextmanager
def checked_out(ref: str | None) -> Iterator[Path | None]:
    """A temporary folder holding ``dedup_app`` as of git ``ref`` (None: nothing), for before/after measurements."""
    if ref is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="dedup-baseline-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "dedup_app"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp)


# ------------------------------------------------------------------------------------------------- tables


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def quality_table(report: dict[str, object]) -> str:
    tools = report["tools"]  # type: ignore[index]
    names = [n for n in tools if "error" not in tools[n]]  # type: ignore[operator]
    lines = [
        f"Split `{report['split']}`: {report['files']} files ({report['sources']} photos x "
        f"(original + {len(EDIT_FAMILIES)} edits), {report['distractors']} distractors), "
        f"{report['true_pairs']} true pairs.",
        "",
        "| tool | precision | recall | F1 | false pairs |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        t = tools[n]  # type: ignore[index]
        false = t.get("false_pairs", "")
        lines.append(f"| {n} | {t['precision']:.3f} | {t['recall']:.3f} | {t['f1']:.3f} | {false} |")
    lines += ["", "Recall per edit family (original, copy) pairs:", ""]
    lines.append("| family | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for f in EDIT_FAMILIES:
        lines.append(f"| {f} | " + " | ".join(f"{tools[n]['families'][f]['recall']:.2f}" for n in names) + " |")  # type: ignore[index]
    return "\n".join(lines)


def keep_table(report: dict[str, Any]) -> str:
    """The share of groups whose kept file is the original, per rule, and what the PDQ sample keeps."""
    keep, pdq = report["keep"], report["keep_pdq"]
    labels = {"best": "the original (best quality), default", "resolution": "highest resolution (before)"}
    lines = [
        f"Split `{report['split']}`: {keep['groups_with_original']} of dedup-app's {keep['groups']} groups hold an "
        "original (modification times shuffled).",
        "",
        "| rule | kept file is the original | kept instead (family: groups) |",
        "|---|---|---|",
    ]
    for rule, r in keep["rules"].items():
        instead = ", ".join(f"{f}: {n}" for f, n in r["kept_instead"].items()) or "none"
        share = f"{r['kept_original']} / {keep['groups_with_original']} ({100 * r['share']:.1f} %)"
        lines.append(f"| {labels.get(rule, rule)} | {share} | {instead} |")
    if "ticked" in keep:
        share = 100 * keep["ticked"] / max(1, keep["copies"])
        lines += ["", f"With the default rule the window ticks {keep['ticked']} of the {keep['copies']} copies by "
                  f"itself ({share:.0f} %; the others wait for review), {keep['ticked_wrongly']} of them wrongly "
                  "(another photo than the kept file)."]  # fmt: skip
    if pdq["group"]:
        kept = ", ".join(f"{labels.get(rule, rule)}: `{name}`" for rule, name in pdq["kept"].items())
        lines += ["", f"PDQ sample (`pdq_bridge_mods`, {len(pdq['group'])} of {pdq['files']} files in the group of "
                  f"`aaa-orig.jpg`): kept by {kept}."]  # fmt: skip
    return "\n".join(lines)


def grouping_table(rep: dict[str, Any]) -> str:
    rows = [("dedup-app (FAISS range search + clique grouping)", rep["dedup-app"])]
    if "baseline" in rep:
        rows.append((f"dedup-app before ({rep['baseline_ref']}), same run", rep["baseline"]))
    rows.append(("NumPy blocked all-pairs (peer, no grouping)", rep["numpy-blocked"]))
    lines = ["| method | seconds | CPU seconds | peak RSS (MB) | pairs found |", "|---|---|---|---|---|"]
    for name, r in rows:
        seconds, cpu, rss = f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}", f"{r['peak_rss_mb']:.0f}"
        lines.append(f"| {name} | {seconds} | {cpu} | {rss} | {r['edges']:,} |")
    return "\n".join(lines)


def uniform_table(rep: dict[str, Any]) -> str:
    lines = [
        "| version | vectors | K | search s | search + groups s | CPU s | peak RSS in search (MB) | peak RSS (MB) "
        "| pairs kept | images capped | groups | largest group |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rep["runs"]:
        version = "this" if r["version"] == "this" else f"before ({rep['baseline_ref']})"
        if "error" in r:
            lines.append(f"| {version} | {r['vectors']:,} | none | failed: {r['error']} | | | | | | | | |")
            continue
        k = r["max_neighbors"] if r.get("max_neighbors") is not None else "none"
        capped = f"{r['capped']:,}" if r.get("capped") is not None else "not counted"
        lines.append(
            f"| {version} | {r['vectors']:,} | {k} | {r['search_seconds']:.1f} | {r['seconds']:.1f} | "
            f"{r['cpu_seconds']:.1f} | {r['search_peak_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['edges']:,} | "
            f"{capped} | {r['groups']:,} | {r['largest_group']} |"
        )
    return "\n".join(lines)


def ivf_table(rep: dict[str, Any]) -> str:
    ex = rep["exact"]
    thresholds = list(ex["pairs"])
    lines = [
        f"Exact search (the reference): {ex['seconds']:.0f} s ({ex['cpu_seconds']:.0f} CPU s); pairs at or above "
        + ", ".join(f"{t}: {ex['pairs'][t]:,}" for t in thresholds)
        + ".",
        "",
        "| lists | probed | build s | search s | search CPU s | "
        + " | ".join(f"recall >= {t}" for t in thresholds)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(thresholds),
    ]
    for r in rep["runs"]:
        is_default = r["nprobe"] == rep["default_nprobe"] and r["nlist"] == rep.get("default_nlist")
        default = " (default)" if is_default else ""
        lines.append(
            f"| {r['nlist']:,} | {r['nprobe']}{default} | {r['build_seconds']:.0f} | {r['seconds']:.1f} | "
            f"{r['cpu_seconds']:.1f} | " + " | ".join(f"{r['recall'][t]:.4f}" for t in thresholds) + " |"
        )
    errors = max(r.get("code_error_max", r.get("sq8_error_max", 0.0)) for r in rep["runs"])
    lines += [
        "",
        f"The codes' scores are up to {errors:.3f} from the similarity (4,096 queries x 20 results); "
        "every candidate is re-scored exactly.",
    ]
    return "\n".join(lines)


def write_doc(sections: dict[str, str]) -> None:
    """Replace the marked sections of docs/benchmarks.md, keeping the rest of the page."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    for key, body in sections.items():
        start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
        block = f"{start}\n{body}\n{end}"
        if start in text and end in text:
            text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
        else:
            text = text.rstrip("\n") + f"\n\n{block}\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--split", default="test", choices=["dev", "test", "all"])
    parts = ["quality", "lookalikes", "keep-pool", "speed", "grouping", "uniform", "ivf"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts)
    parser.add_argument("--large-count", type=int, default=200, help="12 MP JPEGs for the speed part")
    parser.add_argument("--vectors", type=int, default=100_000, help="synthetic embeddings for the grouping part")
    parser.add_argument("--baseline", metavar="REF", help="grouping and uniform parts: also measure this git ref")
    parser.add_argument("--uniform-vectors", type=int, default=100_000, help="near-uniform embeddings")
    parser.add_argument("--neighbors", type=int, nargs="+", help="uniform part: bounds to measure (default: K)")
    parser.add_argument("--ivf-vectors", type=int, default=200_000, help="clustered embeddings for the ivf part")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64], help="ivf part: probed lists")
    parser.add_argument("--nlist", type=int, nargs="+", help="ivf part: numbers of lists (default: the app's)")
    parser.add_argument("--model", type=Path, help="checkpoint to measure instead of the shipped default")
    parser.add_argument("--no-peers", action="store_true", help="quality part: measure dedup-app only")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    sections: dict[str, str] = {}
    if "quality" in args.parts:
        rep = run_quality(args.data, args.split, args.model, peers=not args.no_peers)
        rep["date"], rep["machine"] = stamp, machine()
        tag = f"-{args.model.stem}" if args.model else ""
        (RESULTS / f"neardup-quality-{args.split}{tag}.json").write_text(json.dumps(rep, indent=1))
        sections[f"neardup-quality-{args.split}"] = f"Measured {stamp} on {rep['machine']}.\n\n" + quality_table(rep)
        if "keep" in rep:
            sections[f"neardup-keep-{args.split}"] = f"Measured {stamp} on {rep['machine']}.\n\n" + keep_table(rep)
    if "lookalikes" in args.parts:
        rep = run_lookalikes(args.data)
        rep["date"], rep["machine"] = stamp, machine()
        (RESULTS / "neardup-lookalikes.json").write_text(json.dumps(rep, indent=1))
        sections["neardup-lookalikes"] = (
            f"Measured {stamp} on {rep['machine']}: the {rep['photos']:,} deduplicated pool photos at the threshold "
            f"{rep['threshold']:.3f}; every grouped pair is a false one.\n\n" + lookalike_table(rep)
        )
    if "keep-pool" in args.parts:
        rep = run_keep_pool(args.data)
        rep["date"] = stamp
        (RESULTS / "neardup-keep-pool.json").write_text(json.dumps(rep, indent=1))
        sections["neardup-keep-pool"] = (
            f"Measured {stamp}: {rep['pool_photos']} pool photos, groups by truth (no model).\n\n"
            + keep_pool_table(rep)
        )
    if "speed" in args.parts:
        rep = run_speed(args.data, args.large_count)
        rep["date"], rep["machine"] = stamp, machine()
        (RESULTS / "neardup-speed.json").write_text(json.dumps(rep, indent=1))
        sections["neardup-speed"] = (
            f"Measured {stamp} on {rep['machine']}: {rep['images']} JPEGs of {rep['megapixels']:.1f} MP "
            f"({rep['avg_file_mb']:.1f} MB each).\n\n"
            "| run | seconds | images/s | ratio |\n|---|---|---|---|\n"
            f"| imagehash pHash (peer, one process) | {rep['phash_seconds']:.1f} | "
            f"{rep['images'] / rep['phash_seconds']:.1f} | 1.00 |\n"
            f"| dedup-app cold scan (empty cache, {rep['cold_stats'].get('backend', 'torch')}) | "
            f"{rep['cold_seconds']:.1f} | {rep['images'] / rep['cold_seconds']:.1f} | "
            f"{rep['cold_vs_phash_speed_ratio']:.2f}x pHash, {rep.get('cold_vs_torch_speed_ratio', 1):.2f}x torch |\n"
            f"| dedup-app cold scan, torch on the CPU | {rep.get('torch_cold_seconds', 0):.1f} | "
            f"{rep['images'] / rep.get('torch_cold_seconds', 1):.1f} | "
            f"{rep['phash_seconds'] / rep.get('torch_cold_seconds', 1):.2f}x pHash |\n"
            + (
                f"| the same scan with an encoder that costs nothing (the bound for any faster encoder) | "
                f"{rep['no_encoder_cold_seconds']:.1f} | {rep['images'] / rep['no_encoder_cold_seconds']:.1f} | "
                f"{rep['no_encoder_vs_phash_speed_ratio']:.2f}x pHash, "
                f"{rep['no_encoder_vs_czkawka_speed_ratio'] or 0:.2f}x Czkawka |\n"
                if rep.get("no_encoder_cold_seconds")
                else ""
            )
            + f"| dedup-app warm rescan | {rep['warm_seconds']:.2f} | {rep['images'] / rep['warm_seconds']:.0f} | "
            f"{rep['warm_speedup_over_cold']:.0f}x cold |\n"
            + (
                f"| Czkawka (Python bindings, default) | {rep['czkawka_seconds']:.1f} | "
                f"{rep['images'] / rep['czkawka_seconds']:.1f} | dedup-app cold is "
                f"{rep['cold_vs_czkawka_speed_ratio']:.2f}x Czkawka |\n"
                if rep.get("czkawka_seconds")
                else ""
            )
            + f"\n`dedup-app scan EMPTY_FOLDER` in a fresh process (start-up, median of 3): "
            f"**{rep.get('start_up_seconds', 0):.2f} s** (ONNX Runtime, torch not imported); with torch "
            f"{rep.get('start_up_torch_seconds', 0):.2f} s. The first run with a model exports it to ONNX once"
            + (f" ({rep['prepare_seconds']:.1f} s here)." if rep.get("prepare_seconds") else ".")
        )
    if "grouping" in args.parts:
        with checked_out(args.baseline) as baseline:
            rep = run_grouping(args.vectors, baseline)
        rep["date"], rep["machine"], rep["baseline_ref"] = stamp, machine(), args.baseline
        (RESULTS / "neardup-grouping.json").write_text(json.dumps(rep, indent=1))
        sections["neardup-grouping"] = (
            f"Measured {stamp} on {rep['machine']}: {rep['vectors']:,} synthetic {rep['dim']}-d embeddings, "
            f"threshold {rep['threshold']}.\n\n" + grouping_table(rep)
        )
    if "uniform" in args.parts:
        from dedup_app.core.index import MAX_NEIGHBORS

        with checked_out(args.baseline) as baseline:
            rep = run_uniform(args.uniform_vectors, args.neighbors or [MAX_NEIGHBORS], baseline)
        rep["date"], rep["machine"], rep["baseline_ref"] = stamp, machine(), args.baseline
        (RESULTS / "neardup-uniform.json").write_text(json.dumps(rep, indent=1))
        sections["neardup-uniform"] = (
            f"Measured {stamp} on {rep['machine']}: near-uniform 256-d embeddings (every pair above the floor), "
            f"float16 as in the cache, through `DuplicateFinder.search` + `groups` at the floor {rep['floor']}; "
            f"K = {rep['default_max_neighbors']} is the default.\n\n" + uniform_table(rep)
        )
    if "ivf" in args.parts:
        from dedup_app.core.index import pair_lists

        rep = run_ivf(args.ivf_vectors, args.nprobe, args.nlist)
        rep["date"], rep["machine"], rep["default_nlist"] = stamp, machine(), pair_lists(args.ivf_vectors)
        (RESULTS / "neardup-ivf.json").write_text(json.dumps(rep, indent=1))
        sections["neardup-ivf"] = (
            f"Measured {stamp} on {rep['machine']}: {rep['vectors']:,} clustered {rep['dim']}-d embeddings "
            f"(`benchmarks/synthetic.py`), searched at {rep['floor']}, at most K neighbours each on both paths.\n\n"
            + ivf_table(rep)
        )
    if sections and not args.no_doc and args.model is None:
        write_doc(sections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
