"""Fit a duplicate model's probability calibration on held-out labelled pairs and store it in the model file.

    python -m model_training.calibrate --model resources/models/dedup-default-v1.pt --data ../shared/data

The pairs are every pair of files of the near-duplicate set (``model_training.neardup_set``): two files derived from
one photo are a copy, any other two are not. The calibration is fitted on the ``dev`` split (the split the shipped
threshold was chosen on) and measured on the ``test`` split: the expected calibration error over all its pairs, and
over the pairs at similarity 0.75 or more (where the question is a real one; far apart pairs are easy). The result is
written into the model's ``metrics["calibration"]``; the weights, and so the model id, are unchanged.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dedup_app.core.calibration import CALIBRATION_KEY, Calibration, expected_calibration_error, fit_platt

#: Pairs below this similarity are easy (almost all the pairs of a set, and none of them copies); the error is also
#: reported over the pairs at or above it, about half of them copies for the shipped model.
HARD_SIMILARITY = 0.75


def labelled_pairs(data: Path, split: str, model: Path | None, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Similarities and labels (copy or not) of every pair of files of the near-duplicate set's ``split``, as the
    scan embeds them (the cache's float16 vectors, renormalised)."""
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.index import unit_rows
    from dedup_app.core.progress import drive
    from dedup_app.core.scan import scan
    from model_training.neardup_set import build_neardup_set

    items = build_neardup_set(data, folder, split)
    source = {str(folder / it.file): it.source for it in items}
    with EmbeddingCache(":memory:") as cache:
        result = drive(scan([folder], Embedder(load_checkpoint(model), "auto"), cache))
    x = unit_rows(result.embeddings)
    sources = [source[img.path] for img in result.images]
    i, j = np.triu_indices(len(x), k=1)
    sims = np.einsum("ij,ij->i", x[i], x[j])
    labels = np.array([sources[a] is not None and sources[a] == sources[b] for a, b in zip(i, j, strict=True)])
    return sims, labels


def calibrate(model: Path, data: Path) -> tuple[Calibration, dict[str, Any]]:
    """Fit on dev, measure on test; returns the calibration (with its test error) and a report."""
    with tempfile.TemporaryDirectory() as tmp:
        dev_s, dev_y = labelled_pairs(data, "dev", model, Path(tmp) / "dev")
        test_s, test_y = labelled_pairs(data, "test", model, Path(tmp) / "test")
    fitted = fit_platt(dev_s, dev_y, fitted_on="all pairs of the near-duplicate set's dev split")
    p = fitted.probability(test_s)
    hard = test_s >= HARD_SIMILARITY
    report = {
        "dev_pairs": len(dev_s), "dev_copies": int(dev_y.sum()),
        "test_pairs": len(test_s), "test_copies": int(test_y.sum()),
        "ece_test": expected_calibration_error(p, test_y),
        "ece_test_hard": expected_calibration_error(p[hard], test_y[hard]), "hard_pairs": int(hard.sum()),
        "hard_similarity": HARD_SIMILARITY, "a": fitted.a, "b": fitted.b,
    }  # fmt: skip
    cal = Calibration(fitted.a, fitted.b, fitted.pairs, fitted.positives, fitted.fitted_on,
                      report["ece_test_hard"], int(hard.sum()))  # fmt: skip
    return cal, report


def main(argv: list[str] | None = None) -> int:
    from dedup_app.core.model_files import read_checkpoint, write_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the model file to calibrate (rewritten)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args(argv)
    checkpoint = read_checkpoint(args.model)
    before = checkpoint.model_id
    cal, report = calibrate(args.model, args.data)
    checkpoint.metrics[CALIBRATION_KEY] = cal.to_dict()
    checkpoint.metrics["calibration_report"] = report
    write_checkpoint(checkpoint, args.model)
    assert read_checkpoint(args.model).model_id == before  # the weights are untouched
    print(f"p = 1 / (1 + exp(-({cal.a:.3f} * s + {cal.b:.3f}))); fitted on {report['dev_pairs']:,} dev pairs "
          f"({report['dev_copies']:,} copies)")  # fmt: skip
    print(f"test: {report['test_pairs']:,} pairs ({report['test_copies']:,} copies); expected calibration error "
          f"{report['ece_test']:.4f} over all, {report['ece_test_hard']:.4f} over the {report['hard_pairs']:,} at "
          f"similarity >= {HARD_SIMILARITY}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
