"""Verification: are these two images copies of one picture, and how sure is the model?

The Siamese model's second job next to grouping a folder: embed both images as the scan does (EXIF orientation
applied, the cache's float16 vectors renormalised, so the verdict is the one ``scan`` would give), their similarity,
the calibrated probability stored in the model file (:mod:`dedup_app.core.calibration`), the verdict at the
model's threshold, and what the aligned comparison finds (:func:`dedup_app.core.compare.difference`): the turn and
mirror that line B up with A, where B lies on A when it is a crop, and the share of pixels that differ. A pair at
the threshold but under :data:`~dedup_app.core.pair_check.VERIFY_BELOW` is checked geometrically as the scan checks
it, and is no duplicate when its keypoints do not map onto each other (the probability stays the similarity's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from dedup_app.core.calibration import calibration_of
from dedup_app.core.index import SIMILARITY_TOLERANCE, unit_rows

#: A box covering at least this share of A's width and height is the whole picture, not a crop.
WHOLE = 0.98


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` finds for a pair; :meth:`to_json` is the command's JSON."""

    a: str
    b: str
    similarity: float
    probability: float | None  # None when the model file carries no calibration
    duplicate: bool
    threshold: float
    model: str
    mirror: bool
    quarter_turns: int  # B (mirrored first if ``mirror``) turned this many quarter turns anticlockwise lines up with A
    crop_box: tuple[int, int, int, int] | None  # where B lies on A, in A's pixels (x0, y0, x1, y1); None: all of A
    differs: float  # share of A's pixels that differ once B is aligned (of the crop box's, for a crop)
    aligned: bool  # whether the fine alignment converged (else crop_box is None)
    #: keypoint matches one homography explains (:mod:`dedup_app.core.pair_check`); None where the check did not run
    #: (similarity under the threshold or at/above VERIFY_BELOW), negative where it could not judge
    matching_points: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "similarity": round(self.similarity, 6),
            "probability": None if self.probability is None else round(self.probability, 6),
            "duplicate": self.duplicate,
            "threshold": self.threshold,
            "model": self.model,
            "transform": {
                "mirror": self.mirror,
                "quarter_turns": self.quarter_turns,
                "crop_box": None if self.crop_box is None else list(self.crop_box),
                "aligned": self.aligned,
            },  # fmt: skip
            "differs": round(self.differs, 6),
            "geometric_check": self._geometric_check(),
        }

    def _geometric_check(self) -> dict[str, Any] | None:
        from dedup_app.core.pair_check import is_copy

        if self.matching_points is None:
            return None
        return {"matching_points": max(self.matching_points, 0), "same_picture": is_copy(self.matching_points)}


def _turns(transform: str) -> tuple[bool, int]:
    """``"mirror+rot270"`` -> (True, 3); ``"identity"`` -> (False, 0)."""
    mirror = transform.startswith("mirror")
    rot = transform.rsplit("rot", 1)
    return mirror, (int(rot[1]) // 90 if len(rot) == 2 and rot[1].isdigit() else 0)


def verify_pair(embedder: Any, a: str | os.PathLike[str], b: str | os.PathLike[str], threshold: float | None = None,
                max_pixels: int | None = None) -> Verdict:  # fmt: skip
    """Compare two image files with ``embedder``'s model, at ``threshold`` (default: the model's own). Raises
    :class:`~dedup_app.core.imageio.ImageLoadError` naming the file that cannot be read."""
    from dedup_app.core import pair_check
    from dedup_app.core.compare import difference
    from dedup_app.core.imageio import DEFAULT_MAX_PIXELS, ImageLoadError, decode, read_bytes, resize_square

    limit = max_pixels or DEFAULT_MAX_PIXELS
    paths = (os.fspath(a), os.fspath(b))
    pixels, full = [], []
    for path in paths:
        try:
            data = read_bytes(path)  # read once; decoded as the scan does (reduced) and in full for the alignment
            pixels.append(resize_square(decode(data, embedder.input_size, limit)[0], embedder.input_size))
            full.append(np.asarray(decode(data, None, limit)[0]))
        except ImageLoadError as exc:
            raise ImageLoadError(f"{path}: {exc}", exc.transient) from None
    x = unit_rows(embedder.embed(pixels))  # as the scan's finder compares them
    similarity = float(x[0] @ x[1])
    checkpoint = embedder.checkpoint
    threshold = checkpoint.threshold if threshold is None else threshold
    calibration = calibration_of(checkpoint.metrics)
    diff = difference(full[0], full[1])
    mirror, turns = _turns(diff.transform)
    box = None
    differs = diff.changed_fraction
    if diff.box is not None:
        x0, y0, x1, y1 = diff.box
        if (x1 - x0) < WHOLE or (y1 - y0) < WHOLE:
            h, w = full[0].shape[:2]
            box = (round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h))
            mh, mw = diff.mask.shape
            inside = diff.mask[round(y0 * mh) : round(y1 * mh), round(x0 * mw) : round(x1 * mw)]
            differs = float(inside.mean()) if inside.size else differs  # a crop: the part of A that B shows
    duplicate = similarity >= threshold - SIMILARITY_TOLERANCE
    points = None
    if duplicate and similarity < pair_check.VERIFY_BELOW:  # the scan's geometric check of look-alike pairs
        points = pair_check.check_image_pair(*paths)
        duplicate = pair_check.is_copy(points) is not False
    return Verdict(
        a=paths[0], b=paths[1], similarity=similarity,
        probability=None if calibration is None else calibration.probability(similarity),
        duplicate=duplicate, threshold=threshold, model=checkpoint.model_id,
        mirror=mirror, quarter_turns=turns, crop_box=box, differs=differs, aligned=diff.aligned,
        matching_points=points,
    )  # fmt: skip
