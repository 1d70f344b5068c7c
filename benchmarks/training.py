"""Fine-tuning benchmark: how long training on 500 labelled pairs takes, and whether held-out pairs improve.

    python benchmarks/training.py [--pairs 500] [--families overlay colour greyscale border] [--epochs 40]
    python benchmarks/training.py --photos pool --families greyscale --name training-greyscale  # one weak family

Labelled pairs are made from the dev photos (half duplicates: a photo and an edited copy of the chosen families,
half non-duplicates: two different photos), trained on with `model_training.fit` (frozen backbone, as the app
does), and evaluated before and after on pairs made the same way from the held-out test photos: ROC AUC, and
precision/recall at each model's own calibrated threshold.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.neardup import RESULTS, machine, write_doc  # noqa: E402


def make_pairs(photos: list[Path], families: list[str], n: int, folder: Path, seed: int) -> Path:
    """``n`` labelled pairs as files plus a CSV (half duplicates, half not)."""
    from PIL import Image

    from model_training.edits import EditedImage, apply_edit

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n):
        if k % 2 == 0:
            src = photos[k // 2 % len(photos)]
            with Image.open(src) as im:
                img = im.convert("RGB")
            a = folder / f"{src.stem}.jpg"
            if not a.exists():
                a.write_bytes(EditedImage(img, "JPEG", {"quality": 92}).to_bytes())
            family = families[k // 2 % len(families)]
            edited = apply_edit(family, img, rng)
            b = folder / f"{src.stem}__{family}_{k}{edited.suffix}"
            b.write_bytes(edited.to_bytes())
            rows.append((a.name, b.name, 1))
        else:
            i, j = rng.choice(len(photos), size=2, replace=False)
            names = []
            for idx in (i, j):
                with Image.open(photos[idx]) as im:
                    img = im.convert("RGB")
                p = folder / f"{photos[idx].stem}.jpg"
                if not p.exists():
                    p.write_bytes(EditedImage(img, "JPEG", {"quality": 92}).to_bytes())
                names.append(p.name)
            rows.append((names[0], names[1], 0))
    csv_path = folder / "pairs.csv"
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return csv_path


def pair_metrics(checkpoint, csv_path: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """ROC AUC and P/R at the model's threshold over the labelled pairs of a CSV."""
    from sklearn.metrics import roc_auc_score

    from dedup_app.core.embedder import Embedder
    from dedup_app.core.imageio import load_for_embedding
    from model_training.data import pairs_from_csv
    from model_training.metrics import threshold_scores

    emb = Embedder(checkpoint, "auto")
    pairs = pairs_from_csv(csv_path)
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
    vecs = {}
    for k in range(0, len(paths), 32):
        chunk = paths[k : k + 32]
        out = emb.embed([load_for_embedding(p, emb.input_size).pixels for p in chunk])
        vecs.update(zip(chunk, out, strict=True))
    sims = np.array([float(vecs[p.a] @ vecs[p.b]) for p in pairs])
    y = np.array([p.label == 1 for p in pairs])
    at = threshold_scores(sims, y, checkpoint.threshold)
    return {"auc": float(roc_auc_score(y, sims)), "threshold": checkpoint.threshold, "precision": at.precision,
            "recall": at.recall, "f1": at.f1}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--families", nargs="+", default=["overlay", "colour", "greyscale", "border"])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--photos", choices=["neardup", "pool"], default="neardup",
                        help="photos the pairs are made of: the near-duplicate set's dev (train) and test (held out) "
                        "photos, or the pool's train and test splits")  # fmt: skip
    parser.add_argument("--name", default="training",
                        help="results file benchmarks/results/NAME.json and docs/benchmarks.md section NAME "
                        "(e.g. training-greyscale for the one-family run)")  # fmt: skip
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)

    from dedup_app.core.model_files import read_checkpoint
    from dedup_app.core.progress import drive
    from dedup_app.core.resources import default_model_path
    from model_training.data import items_from_pairs, pairs_from_csv, split_by_class
    from model_training.neardup_set import list_photos, split_photos
    from model_training.train import TrainConfig, fit

    if args.photos == "pool":
        from model_training.pool_training import pool_photos

        train_photos, test_photos = pool_photos(args.data, "train"), pool_photos(args.data, "test")
    else:
        photos = list_photos(args.data)
        train_photos, test_photos = split_photos(photos, "dev"), split_photos(photos, "test")
    base = read_checkpoint(default_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        train_csv = make_pairs(train_photos, args.families, args.pairs, Path(tmp) / "dev", 0)
        test_csv = make_pairs(test_photos, args.families, args.pairs, Path(tmp) / "test", 1)
        started = time.perf_counter()
        items = items_from_pairs(pairs_from_csv(train_csv))
        train, val = split_by_class(items, 0.2)
        result = drive(fit(base, train, val, TrainConfig(epochs=args.epochs)))
        seconds = time.perf_counter() - started
        before = pair_metrics(base, test_csv)
        after = pair_metrics(result.checkpoint, test_csv)
    report = {"pairs": args.pairs, "families": args.families, "photos": args.photos, "improved": result.improved,
              "epochs": args.epochs, "train_seconds": seconds,
              "held_out_before": before, "held_out_after": after, "date": time.strftime("%Y-%m-%d"),
              "machine": machine()}  # fmt: skip
    print(json.dumps(report, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    if not args.no_doc:
        not_offered = "; validation did not improve, so the run is not offered and the model stays"
        held_out = "pool test split" if args.photos == "pool" else "test photos"
        rows = "\n".join(
            f"| {name} | {m['auc']:.4f} | {m['threshold']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} |"
            for name, m in (("before", before), ("after", after))
        )
        write_doc({args.name: (
            f"Measured {report['date']} on {report['machine']}: {args.pairs} labelled pairs from the "
            f"{'pool train split' if args.photos == 'pool' else 'dev photos'} "
            f"(edits: {', '.join(args.families)}), {args.epochs} epochs, frozen backbone: **{seconds:.0f} s** "
            f"including reading the images{'' if result.improved else not_offered}. "
            f"Held-out pairs made the same way from the {held_out}:\n\n"
            f"| model | ROC AUC | threshold | precision | recall |\n|---|---|---|---|---|\n{rows}"
        )})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
