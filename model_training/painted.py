"""Training triples from the change masks the user painted in the window's Changes tab.

Each stored label names a before and an after raster by path and content hash. A triple is read the way the change
pipeline reads a pair (:func:`~dedup_app.core.change.raster.read_raster`, :func:`~dedup_app.core.change.align.align`
onto the before image's grid, and by default the same histogram matching), so a head learns from what it will see.
Labels whose files are gone, were changed since the painting, or cannot be read any more are skipped and listed
with the reason. :func:`painted_pairs` turns them into training pairs split by pair into training and validation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dedup_app.core.change.align import AlignmentError, align
from dedup_app.core.change.normalize import match_histograms
from dedup_app.core.change.painted import missing_files, raster_hash
from dedup_app.core.change.raster import RasterError, read_raster
from dedup_app.core.labels import ChangeMaskLabel, DamagedMaskError, LabelStore
from model_training.change_data import ChangePair, hash_split

#: the source name of painted pairs (in the training summary and the head's recorded data)
PAINTED_SOURCE = "painted"


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


def painted_pairs(store: LabelStore, val_fraction: float = 0.2, normalise: bool = True
                  ) -> tuple[list[ChangePair], list[SkippedLabel]]:  # fmt: skip
    """The painted labels of ``store`` as training pairs (source :data:`PAINTED_SOURCE`), and the labels skipped.

    Split by pair, never by pixel: a fixed hash of the two files' content puts about ``val_fraction`` of the pairs
    on the validation side. With two or more pairs, at least one validation pair has changed pixels (the threshold
    is calibrated on it) and at least one pair is left to train on.
    """
    pairs: list[ChangePair] = []
    skipped: list[SkippedLabel] = []
    for stored in store.change_masks():
        try:
            before, after, label = triple_of(stored, normalise)
        except ValueError as exc:
            skipped.append(SkippedLabel(stored.before.path, stored.after.path, str(exc)))
            continue
        key = f"{stored.before.content_hash}:{stored.after.content_hash}"
        name = f"{Path(stored.before.path.split(',')[0]).stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        pairs.append(ChangePair(PAINTED_SOURCE, name, hash_split(key, val_fraction), before, after,
                                (label > 127).astype(np.uint8)))  # fmt: skip
    if len(pairs) >= 2:
        changed = sorted((p for p in pairs if p.changed_px), key=lambda p: p.name)
        if changed and not any(p.split == "val" for p in changed):
            changed[0].split = "val"
        if all(p.split == "val" for p in pairs):
            kept = changed[0] if changed else None
            next(p for p in sorted(pairs, key=lambda p: p.name) if p is not kept).split = "train"
    return pairs, skipped
