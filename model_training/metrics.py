"""Pair metrics and threshold calibration for near-duplicate detection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np


@dataclass(frozen=True)
class PairScores:
    """Pair precision, recall and F1 with the counts they come from."""

    precision: float
    recall: float
    f1: float
    true_positives: int
    predicted: int
    actual: int


def prf(predicted: set[tuple[int, int]], actual: set[tuple[int, int]]) -> PairScores:
    """Precision/recall/F1 of a predicted set of unordered pairs (i < j) against the true set.

    With nothing predicted precision is 1.0 (no false positive was made); with nothing to find recall is 1.0.
    """
    tp = len(predicted & actual)
    p = tp / len(predicted) if predicted else 1.0
    r = tp / len(actual) if actual else 1.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return PairScores(p, r, f1, tp, len(predicted), len(actual))


def pairs_of_groups(groups: Iterable[Sequence[int]]) -> set[tuple[int, int]]:
    """Every unordered pair (i < j) inside each group."""
    out: set[tuple[int, int]] = set()
    for group in groups:
        for a, b in combinations(sorted(group), 2):
            out.add((a, b))
    return out


def pairs_of_labels(labels: Sequence[object]) -> set[tuple[int, int]]:
    """Pairs of items that share a label; ``None`` labels pair with nothing."""
    by_label: dict[object, list[int]] = {}
    for k, label in enumerate(labels):
        if label is not None:
            by_label.setdefault(label, []).append(k)
    return pairs_of_groups(by_label.values())


def calibrate_threshold(similarities: np.ndarray, is_duplicate: np.ndarray, target_precision: float = 0.99) -> float:
    """The lowest threshold whose pairs at or above it keep ``target_precision``; highest recall under that bound.

    ``similarities`` and ``is_duplicate`` describe labelled pairs. If no threshold reaches the target, the
    highest similarity is returned (nothing below the top pair is called a duplicate).
    """
    s = np.asarray(similarities, dtype=np.float64)
    y = np.asarray(is_duplicate, dtype=bool)
    if s.size == 0:
        raise ValueError("no pairs to calibrate on")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    precision = tp / np.arange(1, len(s) + 1)
    # Only cut between distinct values: all pairs with the same similarity fall on the same side.
    last_of_value = np.r_[s[1:] != s[:-1], True]
    ok = np.flatnonzero((precision >= target_precision) & last_of_value)
    if ok.size == 0:
        return float(s[0])
    return float(s[ok[-1]])


def threshold_scores(similarities: np.ndarray, is_duplicate: np.ndarray, threshold: float) -> PairScores:
    """Pair scores when every pair at or above ``threshold`` is called a duplicate."""
    s = np.asarray(similarities)
    y = np.asarray(is_duplicate, dtype=bool)
    pred = s >= threshold
    tp = int((pred & y).sum())
    p = tp / int(pred.sum()) if pred.any() else 1.0
    r = tp / int(y.sum()) if y.any() else 1.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return PairScores(p, r, f1, tp, int(pred.sum()), int(y.sum()))
