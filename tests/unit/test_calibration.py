"""The similarity-to-probability calibration: fitting, the error measure, and the copy stored in the shipped model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dedup_app.core.calibration import Calibration, calibration_of, expected_calibration_error, fit_platt


def synthetic_pairs(n: int, seed: int, a: float = 40.0, b: float = -32.0) -> tuple[np.ndarray, np.ndarray]:
    """Similarities and labels drawn so that P(copy | s) is exactly the logistic a * s + b."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.5, 1.0, n)
    y = rng.random(n) < 1 / (1 + np.exp(-(a * s + b)))
    return s, y


def test_platt_scaling_recovers_a_known_curve_and_is_calibrated_on_new_pairs() -> None:
    s, y = synthetic_pairs(20000, 0)
    cal = fit_platt(s, y, "synthetic")
    assert cal.a == pytest.approx(40.0, rel=0.1) and cal.b == pytest.approx(-32.0, rel=0.1)
    assert cal.pairs == 20000 and cal.positives == int(y.sum())
    s2, y2 = synthetic_pairs(20000, 1)
    assert expected_calibration_error(cal.probability(s2), y2) < 0.02
    # a map that is off is measured as such
    assert expected_calibration_error(Calibration(40.0, -28.0, 0, 0).probability(s2), y2) > 0.1
    assert cal.probability(0.8) == pytest.approx(float(cal.probability(np.array([0.8]))[0]))


def test_expected_calibration_error_by_hand() -> None:
    assert expected_calibration_error(np.full(10, 0.9), np.ones(10)) == pytest.approx(0.1)
    # two bins: 0.2 said, half copies (gap 0.3), and 0.8 said, all copies (gap 0.2), equal shares
    p = np.array([0.2, 0.2, 0.8, 0.8])
    assert expected_calibration_error(p, np.array([1, 0, 1, 1])) == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)


def test_fitting_needs_both_kinds_of_pair_and_bad_entries_are_ignored() -> None:
    with pytest.raises(ValueError, match="copies and different pictures"):
        fit_platt(np.array([0.9, 0.95]), np.array([1, 1]))
    assert calibration_of({}) is None
    for bad in ({"method": "isotonic"}, {"method": "platt", "a": "x", "b": 0}, {"method": "platt", "a": -1, "b": 0},
                {"method": "platt", "a": float("nan"), "b": 0}, "platt"):  # fmt: skip
        assert calibration_of({"calibration": bad}) is None
    cal = Calibration(70.0, -58.0, 10, 4, "here", 0.01, 5)
    assert calibration_of({"calibration": cal.to_dict()}) == cal


def test_the_shipped_model_carries_its_calibration_and_it_keeps_the_model_id(tmp_path: Path) -> None:
    from dedup_app.core.model_files import read_checkpoint, write_checkpoint
    from dedup_app.core.resources import default_model_path

    shipped = read_checkpoint(default_model_path())
    cal = calibration_of(shipped.metrics)
    assert cal is not None and cal.pairs > 100_000 and cal.positives > 1000
    assert cal.ece is not None and cal.ece <= 0.05  # measured on the test split's pairs near the threshold
    # at the model's threshold the odds are about even; far below it a copy is unlikely, far above it sure
    assert 0.2 < cal.probability(shipped.threshold) < 0.8
    assert cal.probability(0.6) < 0.01 and cal.probability(0.95) > 0.99
    assert shipped.model_id == "default-v1-c6e342ef09f3"  # the calibration is not part of the weights
    copy = tmp_path / "m.pt"
    write_checkpoint(shipped, copy)
    again = read_checkpoint(copy)
    assert calibration_of(again.metrics) == cal and again.model_id == shipped.model_id
