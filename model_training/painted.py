"""Training triples from the change masks the user painted in the window's Changes tab.

Each stored label names a before and an after raster by path and content hash. A triple is read the way the change
pipeline reads a pair (:func:`~dedup_app.core.change.raster.read_raster`, :func:`~dedup_app.core.change.align.align`
onto the before image's grid, and by default the same histogram matching), so a head learns from what it will see.
Labels whose files are gone, were changed since the painting, or cannot be read any more are skipped and listed
with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from dedup_app.core.change.align import AlignmentError, align
from dedup_app.core.change.normalize import match_histograms
from dedup_app.core.change.painted import missing_files, raster_hash
from dedup_app.core.change.raster import RasterError, read_raster
from dedup_app.core.labels import ChangeMaskLabel, DamagedMaskError, LabelStore


class PaintedTriple(NamedTuple):
    """One painted pair, ready to train on: unpacks as ``before, after, label``."""

    before: np.ndarray  # H x W x 3 uint8 RGB
    after: np.ndarray  # H x W x 3 uint8 RGB, aligned on the before image's grid
    label: np.ndarray  # H x W uint8, 255 changed, 0 unchanged


@dataclass(frozen=True)
class SkippedLabel:
    """A painted label that gave no triple, and why (in words, naming the file)."""

    before: str
    after: str
    reason: str


def triple_of(stored: ChangeMaskLabel, normalise: bool = True) -> PaintedTriple:
    """Read one stored label's images as the pipeline does. Raises ``ValueError`` (why, naming the file) when
    its files are gone or changed, cannot be read or aligned, or its mask is damaged or of another size."""
    for side in (stored.before, stored.after):
        gone = missing_files(side.path)
        if gone:
            raise ValueError(f"{', '.join(gone)}: file not found (moved or deleted since the painting)")
        try:
            now = raster_hash(side.path)
        except OSError as exc:
            raise ValueError(f"{side.path}: cannot be read ({exc})") from None
        if now != side.content_hash:
            raise ValueError(f"{side.path}: the file has changed since the label was painted")
    try:
        label = stored.mask()
        a = read_raster(stored.before.path)
        b = read_raster(stored.after.path)
        after, valid, _alignment = align(a, b)
    except (RasterError, AlignmentError, DamagedMaskError) as exc:
        raise ValueError(str(exc)) from None
    if a.shape != label.shape:
        raise ValueError(f"{stored.before.path}: the image is {a.shape[1]} x {a.shape[0]} but the label "
                         f"{label.shape[1]} x {label.shape[0]}")  # fmt: skip
    if normalise:
        after = match_histograms(after, a.pixels, valid, out=after)  # B's array (or its warped copy) is ours alone
    return PaintedTriple(a.pixels, after, label)


def iter_painted(store: LabelStore, normalise: bool = True) -> Iterator[PaintedTriple | SkippedLabel]:
    """Each stored painted label, oldest first, as a triple or as the reason it was skipped (one image pair in
    memory at a time)."""
    for stored in store.change_masks():
        try:
            yield triple_of(stored, normalise)
        except ValueError as exc:
            yield SkippedLabel(stored.before.path, stored.after.path, str(exc))


def painted_triples(store: LabelStore, normalise: bool = True) -> tuple[list[PaintedTriple], list[SkippedLabel]]:
    """Every painted label of ``store`` as ``(before, after, label)`` triples, and the labels skipped (files gone,
    changed or unreadable), each with its paths and the reason."""
    triples: list[PaintedTriple] = []
    skipped: list[SkippedLabel] = []
    for item in iter_painted(store, normalise):
        if isinstance(item, SkippedLabel):
            skipped.append(item)
        else:
            triples.append(item)
    return triples, skipped
