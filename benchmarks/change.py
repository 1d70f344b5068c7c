"""Change-detection benchmark: quality on LEVIR-CD tiles against classic peers, and a large pair's time and memory.

    python benchmarks/change.py                       # quality on ../shared/data/change/levir_samples + large pair
    python benchmarks/change.py --parts quality --levir DIR   # another LEVIR-CD-style folder (A/, B/, label/)
    python benchmarks/change.py --parts large --size 10000
    python benchmarks/change.py --calibrate          # print the distance centre/scale of the training-free map
    python benchmarks/change.py --parts heads --heads A.pt B.pt   # trained heads on every source's held-out tiles
    python benchmarks/change.py --parts large --model A.pt        # the large pair through a trained head

Quality: F1 and IoU of changed pixels over all tiles (pixels pooled), for dedup-app (training-free feature
difference, or a trained head with --model), and in the same run absolute difference + Otsu and change-vector
analysis (histogram-matched) + Otsu. Large: a before/after pair of --size x --size pixels made from the shared
demo pair, run through `dedup-app change` in a fresh process; wall time and peak resident memory (VmHWM).
Heads: pooled pixel F1 on the held-out (test) tiles of each shared labelled source (the splits of
`model_training.change_data`; pixels labelled neither way left out), for the training-free `features` map and each
head file given, in the same run: the detector as the app runs it (512-px tiles, Hann-blended, the after image
histogram-matched to the before one; the tiles are co-registered, so no alignment), thresholded at each method's
own threshold; plus, to tell ranking from calibration, each source's F1 at its own best threshold (an oracle).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.neardup import RESULTS, machine, write_doc  # noqa: E402


def _otsu8(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``values`` scaled to 0-255 by their 99.9th percentile, and the lowest level Otsu's threshold keeps."""
    import cv2

    v8 = np.clip(values / (np.percentile(values, 99.9) + 1e-9) * 255, 0, 255).astype(np.uint8)
    level, _ = cv2.threshold(v8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return v8, int(level) + 1  # cv2's mask is ``v8 > level``


def _otsu(values: np.ndarray) -> np.ndarray:
    v8, level = _otsu8(values)
    return v8 >= level


def peer_absdiff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _otsu(np.abs(a.astype(np.float32) - b.astype(np.float32)).sum(-1))


def peer_cva(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from dedup_app.core.change.normalize import match_histograms

    bm = match_histograms(b, a)
    return _otsu(np.sqrt(((a.astype(np.float32) - bm.astype(np.float32)) ** 2).sum(-1)))


def run_quality(levir: Path, model: Path | None) -> dict[str, object]:
    from PIL import Image

    from dedup_app.core.change.detect import ChangeDetector, load_change_head
    from dedup_app.core.change.pipeline import run_change
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.progress import drive

    detector = ChangeDetector(Embedder(load_checkpoint(), "auto"), load_change_head(model) if model else None)
    names = sorted(p.name for p in (levir / "label").glob("*.png"))
    counts = {k: np.zeros(3, np.int64) for k in ("dedup-app", "abs diff + Otsu", "CVA + Otsu")}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        summaries = drive(run_change(levir / "A", levir / "B", out, detector))
        seconds = time.perf_counter() - started
        by_name = {s["name"]: s for s in summaries}
        for name in names:
            label = np.asarray(Image.open(levir / "label" / name).convert("L")) > 127
            a = np.asarray(Image.open(levir / "A" / name).convert("RGB"))
            b = np.asarray(Image.open(levir / "B" / name).convert("RGB"))
            preds = {
                "dedup-app": np.asarray(Image.open(by_name[Path(name).stem]["files"]["mask"])) > 0,
                "abs diff + Otsu": peer_absdiff(a, b),
                "CVA + Otsu": peer_cva(a, b),
            }
            for tool, pred in preds.items():
                counts[tool] += [(pred & label).sum(), (pred & ~label).sum(), (~pred & label).sum()]
    report: dict[str, object] = {"tiles": len(names), "model": detector.model_name, "dedup_app_seconds": seconds}
    for tool, (tp, fp, fn) in counts.items():
        p = tp / max(tp + fp, 1)
        r = tp / max(tp + fn, 1)
        report[tool] = {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-9),
                        "iou": tp / max(tp + fp + fn, 1)}  # fmt: skip
        print(f"{tool:18s} F1 {report[tool]['f1']:.3f} IoU {report[tool]['iou']:.3f} "  # type: ignore[index]
              f"P {p:.3f} R {r:.3f}")  # fmt: skip
    return report


def run_heads(data: Path, heads: list[Path], device: str) -> dict[str, object]:
    """Per source and method: pooled precision/recall/F1/IoU at the method's threshold, the oracle F1, and seconds
    per megapixel. The classic peers (absolute difference and CVA, each + Otsu per tile) are scored the same way: the
    oracle then is the best single level of their scaled difference."""
    from dedup_app.core.change.detect import ChangeDetector, load_change_head
    from dedup_app.core.change.normalize import match_histograms
    from dedup_app.core.change.regions import upsample
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.progress import drive
    from model_training.change_data import CHANGED, UNCHANGED, shared_pairs, split_counts

    embedder = Embedder(load_checkpoint(), device)
    detectors = {"features": ChangeDetector(embedder)}
    for path in heads:
        ckpt = load_change_head(path)
        detectors[f"{ckpt.name} ({path.name})"] = ChangeDetector(embedder, ckpt)
    pairs = [p for p in shared_pairs(data / "change") if p.split == "test"]
    megapixels = sum(p.label.size for p in pairs) / 1e6

    def scored(det: ChangeDetector):  # type: ignore[no-untyped-def]
        thr = int(round(det.config.threshold * 255))
        return lambda a, b, shape: (upsample(drive(det.probability(a, match_histograms(b, a))), shape), thr)

    methods = {name: scored(det) for name, det in detectors.items()}
    methods["abs diff + Otsu"] = lambda a, b, shape: _otsu8(np.abs(a.astype(np.float32) - b.astype(np.float32)).sum(-1))
    methods["CVA + Otsu"] = lambda a, b, shape: _otsu8(
        np.sqrt(((a.astype(np.float32) - match_histograms(b, a).astype(np.float32)) ** 2).sum(-1))
    )
    report: dict[str, object] = {"tiles": split_counts(pairs), "names": [p.key for p in pairs], "methods": {},
                                 "megapixels": megapixels}  # fmt: skip
    for name, method in methods.items():
        hist: dict[str, np.ndarray] = {}
        counts: dict[str, np.ndarray] = {}
        thresholds = []
        started = time.perf_counter()
        for p in pairs:
            score, thr = method(p.before, p.after, p.label.shape)
            thresholds.append(thr / 255)
            labelled = (p.label == CHANGED) | (p.label == UNCHANGED)
            pred, truth = score >= thr, p.label == CHANGED
            counts.setdefault(p.source, np.zeros(3, np.int64))
            counts[p.source] += [(pred & truth).sum(), (pred & ~truth & labelled).sum(), (~pred & truth).sum()]
            for cls, row in ((CHANGED, 0), (UNCHANGED, 1)):
                hist.setdefault(p.source, np.zeros((2, 256), np.int64))[row] += np.bincount(
                    score[p.label == cls], minlength=256
                )
        seconds = time.perf_counter() - started
        per_source = {}
        for source, h in hist.items():
            pos, neg = h[0][::-1].cumsum()[::-1], h[1][::-1].cumsum()[::-1]  # pixels at or above each level
            f1_at = 2 * pos / np.maximum(pos + neg + h[0].sum(), 1)
            tp, fp, fn = (int(c) for c in counts[source])
            per_source[source] = {"f1": 2 * tp / max(2 * tp + fp + fn, 1), "iou": tp / max(tp + fp + fn, 1),
                                  "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
                                  "oracle_f1": float(f1_at.max()), "oracle_threshold": int(f1_at.argmax()) / 255,
                                  "changed_px": int(h[0].sum()), "labelled_px": int(h.sum())}  # fmt: skip
        mean = float(np.mean([v["f1"] for v in per_source.values()]))
        threshold = thresholds[0] if len(set(thresholds)) == 1 else None  # Otsu: one per tile
        report["methods"][name] = {"threshold": threshold, "sources": per_source, "mean_f1": mean,  # type: ignore[index]
                                   "seconds": seconds, "seconds_per_mp": seconds / megapixels}  # fmt: skip
        scores = ", ".join(f"{s} {v['f1']:.3f} (oracle {v['oracle_f1']:.3f})" for s, v in per_source.items())
        at = "per-tile Otsu" if threshold is None else f"{threshold:.2f}"
        print(f"{name}: mean F1 {mean:.3f} at {at}, {seconds / megapixels:.2f} s/MP; {scores}")
    return report


def heads_table(report: dict[str, object]) -> str:
    methods: dict[str, dict[str, object]] = report["methods"]  # type: ignore[assignment]
    sources = list(next(iter(methods.values()))["sources"])  # type: ignore[call-overload]
    tiles = report["tiles"]
    head = "| method | threshold | " + " | ".join(f"{s} ({sum(tiles[s].values())})" for s in sources)  # type: ignore[index]
    lines = [head + " | mean | s/MP |", "|---|---|" + "---|" * (len(sources) + 2)]
    for name, m in methods.items():
        cells = [f"{m['sources'][s]['f1']:.3f} ({m['sources'][s]['oracle_f1']:.3f})" for s in sources]  # type: ignore[index]
        thr = "Otsu per tile" if m["threshold"] is None else f"{m['threshold']:.2f}"
        tail = f" | {m['mean_f1']:.3f} | {m['seconds_per_mp']:.2f} |"
        lines.append(f"| {name} | {thr} | " + " | ".join(cells) + tail)
    return "\n".join(lines)


def make_large_pair(data: Path, size: int, folder: Path) -> tuple[Path, Path]:
    """A size x size pair made by tiling the demo pair (mirrored so tiles join without seams)."""
    import cv2

    out = []
    for side in ("A", "B"):
        path = folder / f"large_{side}_{size}.png"
        if not path.exists():
            tile = cv2.imread(str(data / "change" / "demo_pair" / side / "demo.png"))
            block = np.concatenate([tile, tile[:, ::-1]], 1)  # mirrored copies join without seams
            block = np.concatenate([block, block[::-1]], 0)
            reps = -(-size // block.shape[0])
            big = np.tile(block, (reps, reps, 1))[:size, :size]
            cv2.imwrite(str(path), big, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            del big
        out.append(path)
    return out[0], out[1]


_CHILD = r"""
import json, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen([sys.executable, "-m", "dedup_app", "change", sys.argv[1], sys.argv[2], "--out", sys.argv[3],
                         "--no-progress", "--device", sys.argv[4]] + (["--model", sys.argv[5]] if sys.argv[5:] else []))
peak = 0
while proc.poll() is None:
    try:
        for line in open(f"/proc/{proc.pid}/status"):
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    except OSError:
        pass
    time.sleep(0.2)
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mb": peak / 1024, "rc": proc.returncode}))
"""


def run_large(data: Path, size: int, device: str, model: Path | None = None) -> dict[str, object]:
    folder = Path(tempfile.gettempdir()) / "dedup-app-bench"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"preparing a {size} x {size} pair ...", file=sys.stderr)
    a, b = make_large_pair(data, size, folder)
    with tempfile.TemporaryDirectory() as out:
        extra = [str(model)] if model else []
        res = subprocess.run([sys.executable, "-c", _CHILD, str(a), str(b), out, device, *extra],
                             capture_output=True, text=True, check=True, cwd=ROOT)  # fmt: skip
        report = json.loads(res.stdout.strip().splitlines()[-1])
        summary = json.loads((Path(out) / "summary.json").read_text())["pairs"][0]
    report.update({"size": size, "changed_fraction": summary.get("changed_fraction"), "error": summary.get("error"),
                   "model": summary.get("model") or str(model)})  # fmt: skip
    print(report)
    return report


def calibrate(levir: Path) -> None:
    """Print the F1-best cosine distance (centre) and a quarter of the distances' spread (scale) on ``levir``."""
    import dataclasses

    import cv2
    from PIL import Image

    from dedup_app.core.change.align import align
    from dedup_app.core.change.detect import ChangeDetector
    from dedup_app.core.change.normalize import match_histograms
    from dedup_app.core.change.raster import read_raster
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.progress import drive

    det = ChangeDetector(Embedder(load_checkpoint(), "auto"))
    det.config = dataclasses.replace(det.config, center=0.0, scale=1.0)  # the map is then sigmoid(distance)
    ds, ls = [], []
    for label_path in sorted((levir / "label").glob("*.png")):
        a = read_raster(levir / "A" / label_path.name)
        b = read_raster(levir / "B" / label_path.name)
        bp, valid, _ = align(a, b)
        p = drive(det.probability(a.pixels, match_histograms(bp, a.pixels, valid)))
        d = np.log(p / (1 - p))
        ds.append(cv2.resize(d, (a.shape[1], a.shape[0])).ravel())
        ls.append((np.asarray(Image.open(label_path).convert("L")) > 127).ravel())
    d, y = np.concatenate(ds), np.concatenate(ls)
    best = (0.0, 0.0)
    for t in np.quantile(d, np.linspace(0.5, 0.995, 200)):
        pred = d >= t
        f1 = 2 * float((pred & y).sum()) / float(pred.sum() + y.sum())
        best = max(best, (f1, float(t)))
    print(f"center {best[1]:.4f} (F1 {best[0]:.3f}), scale {d.std() / 4:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--levir", type=Path, help="LEVIR-CD-style folder (default: the shared samples)")
    parser.add_argument("--parts", nargs="+", default=["quality", "large"], choices=["quality", "large", "heads"])
    parser.add_argument("--heads", type=Path, nargs="+", default=[], metavar="FILE", help="heads part: head files")
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", type=Path, help="a trained change head to measure")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    levir = args.levir or args.data / "change" / "levir_samples"
    if args.calibrate:
        calibrate(levir)
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp, where = time.strftime("%Y-%m-%d"), machine()
    sections = {}
    if "quality" in args.parts:
        q = run_quality(levir, args.model)
        q["date"], q["machine"], q["levir"] = stamp, where, str(levir)
        (RESULTS / "change-quality.json").write_text(json.dumps(q, indent=1))
        rows = "\n".join(
            f"| {tool} | {q[tool]['f1']:.3f} | {q[tool]['iou']:.3f} | {q[tool]['precision']:.3f} | "  # type: ignore[index]
            f"{q[tool]['recall']:.3f} |"  # type: ignore[index]
            for tool in ("dedup-app", "abs diff + Otsu", "CVA + Otsu")
        )
        sections["change-quality"] = (
            f"Measured {stamp} on {where}: {q['tiles']} LEVIR-CD tiles from `{levir.name}` (pixels pooled); "
            f"dedup-app = {q['model']}.\n\n| method | F1 | IoU | precision | recall |\n|---|---|---|---|---|\n{rows}"
        )
    if "large" in args.parts:
        r = run_large(args.data, args.size, args.device, args.model)
        r["date"], r["machine"] = stamp, where
        key = "change-large" if args.model is None else "change-large-head"  # a head's run beside the default's
        (RESULTS / f"{key}.json").write_text(json.dumps(r, indent=1))
        with_model = "" if args.model is None else f" with the change head `{args.model.name}` ({r['model']})"
        sections[key] = (
            f"Measured {stamp} on {where}: `dedup-app change`{with_model} on a {args.size:,} x {args.size:,} RGB "
            f"pair (PNG, built from the demo pair), all outputs written.\n\n| measure | result |\n|---|---|\n"
            f"| wall time | {r['seconds']:.0f} s |\n| peak resident memory | {r['peak_rss_mb']:,.0f} MB |"
        )
    if "heads" in args.parts:
        h = run_heads(args.data, args.heads, args.device)
        h["date"], h["machine"] = stamp, where
        (RESULTS / "change-heads.json").write_text(json.dumps(h, indent=1))
        sections["change-heads"] = (
            f"Measured {stamp} on {where}: pooled pixel F1 on the held-out tiles of each source (tiles in brackets; "
            "in brackets after each F1: the F1 at that source's own best threshold, an oracle).\n\n" + heads_table(h)
        )
    if args.model is not None:
        sections.pop("change-quality", None)  # the doc's quality table is the default model's
    if sections and not args.no_doc:
        write_doc(sections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
