"""Where two near-duplicate images differ: align the second onto the first, then diff.

Used by the compare view's "show differences" overlay. Alignment first tries the eight turns and mirrors of the
second image (a rotated or mirrored copy is still a copy), keeps the one that correlates best, then refines with
OpenCV's ECC (affine) so crops, borders and small rotations line up. The difference is computed on blurred
colour channels, each mean/std-normalised, so a global colour or brightness change does not light up the whole
picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dedup_app.core.ecc import find_transform_ecc

WORK_SIZE = 384


@dataclass(frozen=True)
class Difference:
    """The aligned difference of B against A, at A's aspect ratio and at most ``WORK_SIZE`` pixels wide."""

    heat: np.ndarray  # float32 in [0, 1], H x W
    mask: np.ndarray  # bool, H x W: where the images differ
    changed_fraction: float
    transform: str  # the turn/mirror applied to B, e.g. "rot90" or "mirror+rot180"
    aligned: bool  # whether ECC refinement converged
    #: where B (turned and mirrored) lies on A, as fractions of A's width and height (x0, y0, x1, y1), from the
    #: refinement; None when it did not converge
    box: tuple[float, float, float, float] | None = None


def _small(rgb: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The picture at the working size: (grey, colour) as float32, grey for alignment, colour for the diff."""
    import cv2

    colour = rgb if rgb.ndim == 3 else np.stack([rgb] * 3, axis=-1)
    colour = cv2.resize(colour, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    grey = cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)
    return grey, colour


def _standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, per channel for colour images."""
    axes = (0, 1)
    return (x - x.mean(axis=axes)) / (x.std(axis=axes) + 1e-6)


def _dihedral(img: np.ndarray) -> list[tuple[str, np.ndarray]]:
    out = []
    for mirror in (False, True):
        base = img[:, ::-1] if mirror else img
        for k in range(4):
            name = ("mirror+" if mirror else "") + (f"rot{90 * k}" if k else "identity")
            out.append((name.replace("mirror+identity", "mirror"), np.ascontiguousarray(np.rot90(base, k))))
    return out


def _feature_warp(a_grey: np.ndarray, b_grey: np.ndarray, min_inliers: int = 12) -> np.ndarray | None:
    """The affine map from A's pixels to B's found by ORB features matched across the two and RANSAC, or None
    when too few agree: a start for ECC that survives crops, borders and rescaling."""
    import cv2

    def u8(x: np.ndarray) -> np.ndarray:
        return cv2.normalize(x, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)  # type: ignore[call-overload]

    orb = cv2.ORB.create(1500)
    ka, da = orb.detectAndCompute(u8(a_grey), None)
    kb, db = orb.detectAndCompute(u8(b_grey), None)
    if da is None or db is None or len(ka) < min_inliers or len(kb) < min_inliers:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(da, db)
    if len(matches) < min_inliers:
        return None
    pa = np.array([ka[m.queryIdx].pt for m in matches], np.float32)
    pb = np.array([kb[m.trainIdx].pt for m in matches], np.float32)
    warp, inliers = cv2.estimateAffine2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if warp is None or inliers is None or int(inliers.sum()) < min_inliers:
        return None
    return warp.astype(np.float32)


def difference(a_rgb: np.ndarray, b_rgb: np.ndarray, sensitivity: float = 2.5) -> Difference:
    """Align ``b_rgb`` onto ``a_rgb`` and return where they differ (``sensitivity`` in standard deviations).

    Each colour channel is standardised on its own, so a global brightness or colour shift cancels out while a
    local change of colour (a pasted object, a logo) stands out even where its brightness matches.
    """
    import cv2

    h0, w0 = a_rgb.shape[:2]
    scale = min(1.0, WORK_SIZE / max(h0, w0))
    width, height = max(8, round(w0 * scale)), max(8, round(h0 * scale))
    a_grey, a_colour = _small(a_rgb, width, height)
    a_grey = _standardise(a_grey)

    best: tuple[float, str, np.ndarray, np.ndarray] | None = None
    for name, candidate in _dihedral(b_rgb):
        grey, colour = _small(candidate, width, height)
        grey = _standardise(grey)
        score = float((a_grey * grey).mean())
        if best is None or score > best[0]:
            best = (score, name, grey, colour)
    assert best is not None
    _, best_name, b_grey, b_colour = best

    start = _feature_warp(a_grey, b_grey)  # a crop or a border moves the picture further than ECC reaches alone
    warp = np.eye(2, 3, dtype=np.float32) if start is None else start
    aligned = True
    try:
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
        _, warp = find_transform_ecc(a_grey, b_grey, warp.copy(), cv2.MOTION_AFFINE, criteria, None, 5)
    except cv2.error:  # warp is still the feature match's, if there was one
        aligned = start is not None
    if aligned:
        b_colour = cv2.warpAffine(
            b_colour, warp, (width, height), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )  # fmt: skip
    box = None
    if aligned:  # the warp maps A's pixels to B's: B's frame, mapped back, is where B lies on A
        inverse = cv2.invertAffineTransform(warp)
        corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float32)
        xy = corners @ inverse.T
        x0, y0 = np.clip(xy.min(axis=0) / (width, height), 0, 1)
        x1, y1 = np.clip(xy.max(axis=0) / (width, height), 0, 1)
        box = (float(x0), float(y0), float(x1), float(y1))

    blur = max(3, (width // 64) | 1)
    a_s = cv2.GaussianBlur(_standardise(a_colour), (blur, blur), 0)
    b_s = cv2.GaussianBlur(_standardise(b_colour), (blur, blur), 0)
    diff = np.abs(a_s - b_s).max(axis=2)
    heat = np.clip(diff / (sensitivity * 1.5), 0, 1).astype(np.float32)
    mask = diff > sensitivity * 0.5
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
    return Difference(heat, mask, float(mask.mean()), best_name, aligned, box)
