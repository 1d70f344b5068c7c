"""Pair metrics and threshold calibration against hand-computed values; the edit families behave as named."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model_training.edits import EDIT_FAMILIES, apply_edit
from model_training.metrics import calibrate_threshold, pairs_of_groups, pairs_of_labels, prf, threshold_scores
from tests.conftest import noise_image


def test_prf_hand_computed() -> None:
    truth = {(0, 1), (0, 2), (1, 2), (3, 4)}
    pred = {(0, 1), (3, 4), (2, 5)}
    s = prf(pred, truth)
    assert (s.precision, s.recall) == (pytest.approx(2 / 3), pytest.approx(2 / 4))
    assert s.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert prf(set(), truth).precision == 1.0 and prf(set(), truth).recall == 0.0


def test_pairs_of_groups_and_labels() -> None:
    assert pairs_of_groups([[2, 0, 1], [5]]) == {(0, 1), (0, 2), (1, 2)}
    assert pairs_of_labels(["a", None, "a", "b", None, "b"]) == {(0, 2), (3, 5)}


def test_calibrate_threshold_hand_computed() -> None:
    sims = np.array([0.99, 0.95, 0.90, 0.85, 0.80, 0.70])
    dup = np.array([1, 1, 0, 1, 1, 0], dtype=bool)
    # precision at each cut: 1, 1, 2/3, 3/4, 4/5, 4/6
    assert calibrate_threshold(sims, dup, 0.99) == pytest.approx(0.95)
    assert calibrate_threshold(sims, dup, 0.75) == pytest.approx(0.80)
    assert calibrate_threshold(sims, dup, 0.5) == pytest.approx(0.70)
    # ties: both pairs at 0.9 fall on the same side
    tied = calibrate_threshold(np.array([0.9, 0.9, 0.8]), np.array([1, 0, 1], bool), 0.99)
    assert tied == pytest.approx(0.9)  # nothing reaches 0.99: the top value, nothing below it
    s = threshold_scores(sims, dup, 0.80)
    assert (s.precision, s.recall) == (pytest.approx(0.8), pytest.approx(1.0))


@pytest.mark.parametrize("family", list(EDIT_FAMILIES))
def test_every_edit_family_produces_a_readable_changed_copy(family: str) -> None:
    src = noise_image(11, (300, 200))
    edited = apply_edit(family, src, np.random.default_rng(0))
    data = edited.to_bytes()
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == edited.format
    out = edited.decoded()
    assert out.mode == "RGB"
    if family in ("png",):
        assert np.array_equal(np.asarray(out), np.asarray(src))
    elif family == "exif_rotated":
        assert out.size == src.size  # upright again once the tag is applied
        with Image.open(io.BytesIO(data)) as raw:
            assert raw.size != src.size or raw.getexif().get(0x0112) == 3
    elif family == "mirror":
        assert np.abs(np.asarray(out, float)[:, ::-1] - np.asarray(src, float)).mean() < 4
    else:
        assert out.size != src.size or np.abs(np.asarray(out, float) - np.asarray(src, float)).mean() > 0.5


def test_edits_are_deterministic() -> None:
    src = noise_image(12)
    a = apply_edit("social", src, np.random.default_rng(3)).to_bytes()
    b = apply_edit("social", src, np.random.default_rng(3)).to_bytes()
    assert a == b
    with pytest.raises(ValueError, match="unknown edit family"):
        apply_edit("sepia", src, np.random.default_rng(0))
