"""How sure the model is that two images are copies: a similarity turned into a calibrated probability.

A model's file may carry, in ``metrics["calibration"]``, a logistic map fitted on held-out labelled pairs (Platt
scaling: ``p = 1 / (1 + exp(-(a * similarity + b)))``, Platt 1999, with his smoothed targets so a few hundred
pairs do not give probabilities of exactly 0 or 1). One increasing curve per model: it cannot reorder pairs, so
it changes nothing about which pairs the threshold groups; it says how often pairs at that similarity were copies
on the data it was fitted on. ``expected_calibration_error`` measures that on other pairs.

NumPy only: the model's weights are not needed to read or apply it, and its model id does not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

CALIBRATION_KEY = "calibration"


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of the similarity, with what it was fitted on and how well it held on other pairs."""

    a: float
    b: float
    pairs: int  # labelled pairs it was fitted on
    positives: int  # of which copies
    fitted_on: str = ""  # in words: which data
    ece: float | None = None  # expected calibration error on held-out pairs, when measured
    ece_pairs: int = 0

    def probability(self, similarity: float | np.ndarray) -> Any:
        """The probability that a pair at ``similarity`` is a copy (a float for a float, an array for an array)."""
        z = np.clip(self.a * np.asarray(similarity, dtype=np.float64) + self.b, -50.0, 50.0)
        p = 1.0 / (1.0 + np.exp(-z))
        return float(p) if np.ndim(p) == 0 else p

    def to_dict(self) -> dict[str, Any]:
        """The plain structure stored in a model file's metrics."""
        return {"method": "platt", "a": self.a, "b": self.b, "pairs": self.pairs, "positives": self.positives,
                "fitted_on": self.fitted_on, "ece": self.ece, "ece_pairs": self.ece_pairs}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any) -> Calibration | None:
        """The calibration in ``data`` (see :meth:`to_dict`), or None when it is missing or malformed."""
        if not isinstance(data, dict) or data.get("method") != "platt":
            return None
        try:
            a, b = float(data["a"]), float(data["b"])
            ece = data.get("ece")
            cal = cls(a, b, int(data.get("pairs", 0)), int(data.get("positives", 0)), str(data.get("fitted_on", "")),
                      None if ece is None else float(ece), int(data.get("ece_pairs", 0)))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None
        return cal if math.isfinite(a) and math.isfinite(b) and a > 0 else None


def calibration_of(metrics: dict[str, Any]) -> Calibration | None:
    """The calibration stored in a model's metrics, if any."""
    return Calibration.from_dict(metrics.get(CALIBRATION_KEY))


def fit_platt(similarities: np.ndarray, labels: np.ndarray, fitted_on: str = "", iterations: int = 100) -> Calibration:
    """Fit Platt scaling to labelled pairs (``labels`` 1 for copies, 0 for different pictures) by Newton's method on
    the log-loss, with Platt's smoothed targets. Raises ValueError without both kinds of pair."""
    s = np.asarray(similarities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError("one label per similarity")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"need copies and different pictures to fit on ({n_pos} and {n_neg})")
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    x = np.stack([s, np.ones_like(s)], axis=1)
    w = np.array([1.0, -math.log((n_neg + 1.0) / (n_pos + 1.0))])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -50.0, 50.0)))
        grad = x.T @ (p - t)
        hess = (x * (p * (1.0 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return Calibration(float(w[0]), float(w[1]), int(len(s)), n_pos, fitted_on)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """The expected calibration error: over ``bins`` equal-width probability bins, the share of pairs in each bin
    times the gap between its mean probability and its share of copies."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if len(p) == 0:
        return 0.0
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for k in range(bins):
        inside = which == k
        if inside.any():
            total += inside.mean() * abs(p[inside].mean() - y[inside].mean())
    return float(total)
