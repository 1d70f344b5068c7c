"""Change labels painted by the user: which files a before/after pair is (by content), and the proposed region
under a point that the fill tool takes into a label.

A pair's side is a raster as the change pipeline reads it: one file, or several band files joined by commas
(``B04.tif,B03.tif,B02.tif``). Its content hash is the file's (:func:`dedup_app.core.imageio.hash_file`), or for
joined bands a hash of the band files' hashes in order, so a painted label follows its images through renames
and moves, like the duplicate finder's pair labels.
"""

from __future__ import annotations

import os

import numpy as np

from dedup_app.core.imageio import content_hash, hash_file
from dedup_app.core.labels import LabelledFile


def raster_files(spec: str) -> list[str]:
    """The files a raster path stands for: itself, or its comma-joined band files (a file whose own name holds a
    comma counts as one file when it exists)."""
    if "," not in spec or os.path.exists(spec):
        return [spec]
    return [part.strip() for part in spec.split(",") if part.strip()]


def missing_files(spec: str) -> list[str]:
    """The files of ``spec`` that are not there (any more)."""
    return [f for f in raster_files(spec) if not os.path.isfile(f)]


def raster_hash(spec: str) -> str:
    """The content hash of a raster path (see the module's description). Raises ``OSError``."""
    files = raster_files(spec)
    if len(files) == 1:
        return hash_file(files[0])
    return content_hash("\n".join(hash_file(f) for f in files).encode())


def labelled_raster(spec: str) -> LabelledFile:
    """One side of a painted pair: its content hash and path. Raises ``OSError``."""
    return LabelledFile(raster_hash(spec), spec)


def region_at(mask: np.ndarray, x: int, y: int) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The connected region (8-connected, as the regions list outlines them) of the non-zero pixels of ``mask``
    that holds pixel (column ``x``, row ``y``): its boolean mask within its bounding box, and the box
    ``(x, y, width, height)``; ``None`` where the mask is empty or the point lies outside it."""
    import cv2

    h, w = mask.shape
    if not (0 <= x < w and 0 <= y < h) or not mask[y, x]:
        return None
    work = (mask != 0).astype(np.uint8)  # 1 inside, 0 outside; the region under the point becomes 2
    _, _, _, rect = cv2.floodFill(work, None, (int(x), int(y)), 2, flags=8)
    rx, ry, rw, rh = (int(v) for v in rect)
    return work[ry : ry + rh, rx : rx + rw] == 2, (rx, ry, rw, rh)


def region_in_box(mask: np.ndarray, bbox: tuple[int, int, int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The region of ``mask`` whose bounding box is ``bbox`` (a row of the regions list): found from the pixels on
    the box's top row, which the region touches. Raises ``ValueError`` when no region has that box."""
    x, y, w, h = bbox
    for col in np.flatnonzero(mask[y, x : x + w]):
        found = region_at(mask, x + int(col), y)
        if found is not None and found[1] == (x, y, w, h):
            return found
    raise ValueError(f"no region of the map has the box {bbox}")
