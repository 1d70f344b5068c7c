"""Putting the after image on the before image's grid, and measuring how far it had to move.

Georeferenced pairs are first placed by their transforms (reprojected when the CRS differ); other pairs of
different sizes are resized when their aspect ratios agree. A residual shift is then found on downscaled grey
images by phase correlation and refined with OpenCV's ECC (rigid: shift + rotation), which MODELS.md found
reliable on large tiles where feature matching with RANSAC was not.

A pair that can be paired (same size, same aspect ratio, or overlapping georeferencing) is always put on one grid.
When the registration is doubtful (the images hardly correlate even after the best shift, or the shift found is too
large to be a registration error), the images are kept as they are (or as their georeferencing places them) and the
alignment says it is not verified, with why: a place that changed almost entirely (bare land that became a
neighbourhood) correlates as weakly as two different places, and it is the pair with the most change to map.
Only pairs that cannot be paired at all raise :class:`AlignmentError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dedup_app.core.change.raster import Raster
from dedup_app.core.ecc import find_transform_ecc

WORK_SIZE = 1024
MIN_CORRELATION = 0.15  # below this, the images' placement is not verified (they are still compared)
MAX_SHIFT_FRACTION = 0.1  # a residual shift over this fraction of the shorter side is change, not misregistration
MAX_ANGLE_DEG = 5.0  # likewise for a rotation
NOT_VERIFIED = "not verified"


class AlignmentError(Exception):
    """The two images cannot be paired at all (different shapes without georeferencing, or georeferenced footprints
    that do not overlap); the message names both files and says why."""


@dataclass(frozen=True)
class Alignment:
    """How B was moved onto A: shift in A's pixels (B content moved by +dx, +dy), rotation, and the evidence.

    ``verified`` False: the registration could not be confirmed (see ``note``); B was left as it is, or where its
    georeferencing puts it, and ``correlation`` is that placement's."""

    dx: float
    dy: float
    angle_deg: float
    method: str
    correlation: float
    resized: bool = False
    verified: bool = True
    note: str = ""

    @property
    def shift_px(self) -> float:
        """Length of the shift, in A's pixels."""
        return math.hypot(self.dx, self.dy)


def _grey_small(rgb: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale != 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    g = grey.astype(np.float32)
    return (g - g.mean()) / (g.std() + 1e-6)


def _correlation(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    if valid.sum() < 16:
        return 0.0
    x, y = a[valid], b[valid]
    x = (x - x.mean()) / (x.std() + 1e-6)
    y = (y - y.mean()) / (y.std() + 1e-6)
    return float((x * y).mean())


def _place_by_georeference(a: Raster, b: Raster) -> tuple[np.ndarray, np.ndarray]:
    """B resampled onto A's grid from the two transforms (reprojected if the CRS differ), and its footprint."""
    assert a.geo is not None and b.geo is not None
    h, w = a.shape
    with_ones = np.concatenate([b.pixels, np.full((*b.shape, 1), 255, np.uint8)], axis=-1)  # 4th band: coverage
    if a.geo.crs != b.geo.crs:
        try:
            from rasterio.crs import CRS
            from rasterio.transform import Affine
            from rasterio.warp import Resampling, reproject
        except ImportError:
            raise AlignmentError(
                "the two rasters use different coordinate systems; reprojecting needs rasterio"
            ) from None
        out: np.ndarray = np.zeros((h, w, 4), np.uint8)
        for c in range(4):
            reproject(
                np.ascontiguousarray(with_ones[..., c]), out[..., c],
                src_transform=Affine(*b.geo.transform), src_crs=CRS.from_wkt(b.geo.crs),
                dst_transform=Affine(*a.geo.transform), dst_crs=CRS.from_wkt(a.geo.crs),
                resampling=Resampling.bilinear if c < 3 else Resampling.nearest,
            )  # fmt: skip
    else:
        import cv2

        # for each pixel of A, the pixel of B at the same map position: inv(T_b) @ T_a
        ta = np.array([[*a.geo.transform[:3]], [*a.geo.transform[3:]], [0, 0, 1]])
        tb = np.array([[*b.geo.transform[:3]], [*b.geo.transform[3:]], [0, 0, 1]])
        m = (np.linalg.inv(tb) @ ta)[:2].astype(np.float32)
        out = cv2.warpAffine(
            with_ones, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )  # fmt: skip
    return np.ascontiguousarray(out[..., :3]), out[..., 3] > 127


def _overlaps(valid: np.ndarray) -> bool:
    """Whether B's footprint covers more of A than an edge: at least two rows and two columns."""
    return int(valid.any(axis=1).sum()) >= 2 and int(valid.any(axis=0).sum()) >= 2


def align(a: Raster, b: Raster) -> tuple[np.ndarray, np.ndarray, Alignment]:
    """B's pixels on A's grid, the mask of A's pixels that B covers, and the alignment that was applied.

    Never refuses a pair that can be paired: a doubtful registration keeps B unmoved (after the georeferenced
    placement or the resize) and comes back with ``verified`` False and the reason. Raises :class:`AlignmentError`
    naming both files when the shapes differ without georeferencing or the footprints do not overlap.
    """
    import cv2

    h, w = a.shape
    resized = False
    geo_placed = a.geo is not None and b.geo is not None
    if geo_placed:
        b_pix, valid = _place_by_georeference(a, b)
        if not _overlaps(valid):
            raise AlignmentError(
                f"{a.path} and {b.path} cannot be paired: their georeferenced footprints do not overlap"
            )
    else:
        bh, bw = b.shape
        if (bh, bw) != (h, w):
            if abs(bw / bh - w / h) > 0.05 * (w / h):
                raise AlignmentError(
                    f"{a.path} ({w} x {h}) and {b.path} ({bw} x {bh}) cannot be paired: their shapes differ "
                    "and they are not both georeferenced"
                )
            b_pix = cv2.resize(b.pixels, (w, h), interpolation=cv2.INTER_AREA if bw > w else cv2.INTER_LINEAR)
            resized = True
        else:
            b_pix = b.pixels
        valid = np.ones((h, w), bool)

    scale = min(1.0, WORK_SIZE / max(h, w))
    ga, gb = _grey_small(a.pixels, scale), _grey_small(b_pix, scale)
    sh, sw = ga.shape
    window = cv2.createHanningWindow((sw, sh), cv2.CV_32F)
    (px, py), response = cv2.phaseCorrelate(ga, gb, window)
    warp = np.array([[1, 0, px], [0, 1, py]], np.float32)
    method = "phase correlation"
    if min(sh, sw) >= 256:
        try:
            criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
            _, refined = find_transform_ecc(ga, gb, warp.copy(), cv2.MOTION_EUCLIDEAN, criteria, None, 5)
            if abs(refined[0, 2] - px) < 0.1 * sw and abs(refined[1, 2] - py) < 0.1 * sh:
                warp, method = refined, "phase correlation + ECC"
            else:
                method = "phase correlation (ECC disagreed)"
        except cv2.error:
            method = "phase correlation (ECC did not converge)"  # the phase-correlation shift is checked below
    small_valid = cv2.resize(valid.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST).astype(bool)
    gb_aligned = cv2.warpAffine(gb, warp, (sw, sh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    overlap = cv2.warpAffine(
        small_valid.astype(np.uint8), warp, (sw, sh), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    ).astype(bool)
    correlation = _correlation(ga, gb_aligned, overlap)
    unmoved = _correlation(ga, gb, small_valid)
    full = warp.copy()
    full[:, 2] /= scale
    angle = math.degrees(math.atan2(float(full[1, 0]), float(full[0, 0])))
    shift = math.hypot(float(full[0, 2]), float(full[1, 2]))
    as_placed = "kept as georeferenced" if geo_placed else "kept unmoved"
    note = ""
    if unmoved >= correlation - 0.02:
        # Already registered (a shift that barely improves the match is change pulling the estimate): keep as is.
        keep, correlation, method = True, unmoved, "none needed"
        if correlation < MIN_CORRELATION:
            note = (f"weak correlation ({correlation:.2f}) and no shift improves it: much of the scene changed, or "
                    f"these are different places; {as_placed}")  # fmt: skip
    elif shift > MAX_SHIFT_FRACTION * min(h, w) or abs(angle) > MAX_ANGLE_DEG:
        keep = True
        note = (
            f"the best match (shift {full[0, 2]:+.0f}, {full[1, 2]:+.0f} px"
            + (f", rotation {angle:+.1f} degrees" if abs(angle) > MAX_ANGLE_DEG else "")
            + f") is too far to be a misregistration; {as_placed} (correlation {unmoved:.2f})"
        )
        correlation = unmoved
    elif correlation < MIN_CORRELATION:
        keep = True
        note = (f"weak correlation ({correlation:.2f} after the best shift, {unmoved:.2f} without): much of the "
                f"scene changed, or these are different places; {as_placed}")  # fmt: skip
        correlation = unmoved
    else:
        keep = False
    verified = not note
    if keep:
        full = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
        angle = 0.0
        if not verified:
            method = NOT_VERIFIED
    if abs(full[0, 2]) > 0.25 or abs(full[1, 2]) > 0.25 or abs(angle) > 0.01:
        b_pix = cv2.warpAffine(
            b_pix, full, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
        )
        valid = cv2.warpAffine(
            valid.astype(np.uint8), full, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        ).astype(bool)
    if geo_placed:
        method = "georeference, " + method if not verified else "georeference + " + method
    alignment = Alignment(float(full[0, 2]), float(full[1, 2]), angle, method, correlation, resized, verified, note)
    return b_pix, valid, alignment
