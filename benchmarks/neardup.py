"""Near-duplicate benchmark: quality per edit family against hash peers, cold/warm scan speed, grouping at scale.

    python benchmarks/neardup.py                       # everything: quality (test split), speed, grouping
    python benchmarks/neardup.py --parts quality --split dev
    python benchmarks/neardup.py --parts speed --large-count 200

Quality: real photos of ``../shared/data/photos`` with one copy per edit family and distinct distractors (see
``model_training/neardup_set.py``). Pair precision/recall/F1 over all pairs of files, where two files are true
duplicates when they derive from the same photo; a tool predicts a pair when it puts both files in one group
(dedup-app, Czkawka) or, for the bare hashes, when their distance is within the documented default. Per family,
recall counts (original, copy) pairs and precision counts the predicted pairs that involve a copy of that family.

Speed: a cold scan (empty cache) of large JPEGs with dedup-app against imagehash pHash over the same files in the
same run, then a warm rescan. Grouping: 100k synthetic embeddings (with planted near-duplicate clusters), time and
peak resident memory, against a blocked NumPy all-pairs search in the same run.

Results go to ``benchmarks/results/neardup-<part>.json`` and the tables in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_training.edits import EDIT_FAMILIES  # noqa: E402
from model_training.metrics import PairScores, pairs_of_groups, pairs_of_labels, prf  # noqa: E402
from model_training.neardup_set import SetItem, build_neardup_set  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


# ------------------------------------------------------------------------------------------------- the tools


def dedup_app_groups(
    folder: Path, files: list[str], threshold: float | None = None, model: Path | None = None
) -> list[tuple[list[int], list[int]]]:
    """Groups found by dedup-app (the given or default model at its calibrated threshold), as indices, each with
    the part the window marks by itself: the kept file and the files ticked for removal (see marking.mark_group)."""
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.duplicates import find_groups
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.marking import SURE_SIMILARITY, mark_group
    from dedup_app.core.progress import drive
    from dedup_app.core.scan import scan

    embedder = Embedder(load_checkpoint(model), "auto")
    with EmbeddingCache(":memory:") as cache:
        result = drive(scan([folder], embedder, cache))
    groups = drive(find_groups(result, threshold))
    index = {str(folder / f): k for k, f in enumerate(files)}
    out = []
    for g in groups:
        marks = mark_group(g, "resolution", sure=SURE_SIMILARITY)
        out.append(([index[m.image.path] for m in g.members], [index[p] for p in (marks.keep, *marks.marked)]))
    return out


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
        files = [it.file for it in items]
        truth = pairs_of_labels([it.source for it in items])
        found: list[list[tuple[list[int], list[int]]]] = []

        def ours(auto_marked_only: bool) -> set[tuple[int, int]]:
            if not found:  # one scan serves both rows
                found.append(dedup_app_groups(folder, files, model=model))
            return pairs_of_groups([auto if auto_marked_only else group for group, auto in found[0]])

        tools: dict[str, Callable[[], set[tuple[int, int]]]] = {
            "dedup-app": lambda: ours(False),
            "dedup-app, auto-marked only (>= 0.95)": lambda: ours(True),
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
    return report


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


def _timed_scan(folder: Path, cache_path: Path) -> tuple[float, dict[str, int]]:
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.duplicates import find_groups
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.progress import drive
    from dedup_app.core.scan import scan

    started = time.perf_counter()
    embedder = Embedder(load_checkpoint(), "auto")
    with EmbeddingCache(cache_path) as cache:
        result = drive(scan([folder], embedder, cache))
    drive(find_groups(result))
    return time.perf_counter() - started, {"decoded": result.stats.decoded, "cached": result.stats.cached}


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
        cache = Path(tmp) / "cache.sqlite3"
        t_cold, cold_stats = _timed_scan(folder, cache)
        t_warm, warm_stats = _timed_scan(folder, cache)
    report = {
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
sys.path.insert(0, sys.argv[1])

def peak_mb():
    # VmHWM is this process's own peak; ru_maxrss on Linux carries the parent's peak over fork + exec.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

n, dim, method, threshold = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
rng = np.random.default_rng(0)
x = rng.standard_normal((n, dim)).astype(np.float32)
# plant near-duplicate clusters: 2% of the vectors are noisy copies of others
k = n // 50
src = rng.choice(n, size=k, replace=False)
dst = rng.choice(np.setdiff1d(np.arange(n), src), size=k, replace=False)
x[dst] = x[src] + 0.25 * rng.standard_normal((k, dim)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
base_rss = peak_mb()
started = time.perf_counter()
if method == "dedup-app":
    from dedup_app.core.grouping import clique_groups
    from dedup_app.core.index import similarity_graph
    from dedup_app.core.progress import drive
    graph = drive(similarity_graph(x, threshold))
    groups = clique_groups(graph)
    edges = len(graph.s)
else:  # blocked NumPy all-pairs, the straightforward way
    edges = 0
    for a in range(0, n, 4096):
        s = x[a:a + 4096] @ x.T
        r, c = np.nonzero(s >= threshold)
        edges += int(((r + a) < c).sum())
    groups = []
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "edges": edges, "groups": len(groups),
                  "peak_rss_mb": peak_mb(), "rss_before_mb": base_rss}))
"""


def run_grouping(n: int, dim: int = 256, threshold: float = 0.8) -> dict[str, object]:
    """Time and peak RSS of grouping ``n`` synthetic embeddings, each tool in a fresh process."""
    report: dict[str, object] = {"vectors": n, "dim": dim, "threshold": threshold}
    for method in ("dedup-app", "numpy-blocked"):
        out = subprocess.run(
            [sys.executable, "-c", _GROUPING_CHILD, str(ROOT), str(n), str(dim), method, str(threshold)],
            capture_output=True,
            text=True,
            check=True,
        )
        report[method] = json.loads(out.stdout.strip().splitlines()[-1])
        print(method, report[method])
    report["speed_ratio_vs_numpy"] = report["numpy-blocked"]["seconds"] / report["dedup-app"]["seconds"]  # type: ignore[index]
    return report


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
    parser.add_argument(
        "--parts", nargs="+", default=["quality", "speed", "grouping"], choices=["quality", "speed", "grouping"]
    )
    parser.add_argument("--large-count", type=int, default=200, help="12 MP JPEGs for the speed part")
    parser.add_argument("--vectors", type=int, default=100_000, help="synthetic embeddings for the grouping part")
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
            f"| dedup-app cold scan (empty cache) | {rep['cold_seconds']:.1f} | "
            f"{rep['images'] / rep['cold_seconds']:.1f} | {rep['cold_vs_phash_speed_ratio']:.2f}x pHash |\n"
            f"| dedup-app warm rescan | {rep['warm_seconds']:.2f} | {rep['images'] / rep['warm_seconds']:.0f} | "
            f"{rep['warm_speedup_over_cold']:.0f}x cold |"
        )
    if "grouping" in args.parts:
        rep = run_grouping(args.vectors)
        rep["date"], rep["machine"] = stamp, machine()
        (RESULTS / "neardup-grouping.json").write_text(json.dumps(rep, indent=1))
        d, npb = rep["dedup-app"], rep["numpy-blocked"]  # type: ignore[index]
        sections["neardup-grouping"] = (
            f"Measured {stamp} on {rep['machine']}: {rep['vectors']:,} synthetic {rep['dim']}-d embeddings, "
            f"threshold {rep['threshold']}.\n\n"
            "| method | seconds | peak RSS (MB) | pairs found |\n|---|---|---|---|\n"
            f"| dedup-app (FAISS range search + clique grouping) | {d['seconds']:.1f} | {d['peak_rss_mb']:.0f} | "
            f"{d['edges']:,} |\n"
            f"| NumPy blocked all-pairs (peer, no grouping) | {npb['seconds']:.1f} | {npb['peak_rss_mb']:.0f} | "
            f"{npb['edges']:,} |"
        )
    if sections and not args.no_doc and args.model is None:
        write_doc(sections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
