"""Radiometric normalisation: make the after image's colours follow the before image's, band by band.

Histogram matching removes global differences of season, sun angle, sensor and processing, which otherwise
dominate a change map (MODELS.md: CVA on a Landsat pair goes from F1 0.28 to 0.92 once the dates are matched).
"""

from __future__ import annotations

import numpy as np


def match_histograms(
    source: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """``source`` (H x W x C uint8) with each band's histogram matched to ``reference``'s (over ``mask``).

    ``out`` may be ``source`` itself (in place, band by band), which spares a copy of a large raster.
    """
    import cv2

    out = np.empty_like(source) if out is None else out
    # OpenCV's histogram reads the bands and the mask in place (np.bincount would widen a 100-megapixel band to
    # int64 first: 800 MB)
    mask8 = None if mask is None else np.ascontiguousarray(mask).view(np.uint8)
    for c in range(source.shape[-1]):
        src_hist = cv2.calcHist([source], [c], mask8, [256], [0, 256]).ravel().astype(np.float64)
        ref_hist = cv2.calcHist([reference], [c], mask8, [256], [0, 256]).ravel().astype(np.float64)
        if src_hist.sum() == 0 or ref_hist.sum() == 0:
            if out is not source:
                out[..., c] = source[..., c]
            continue
        src_cdf = np.cumsum(src_hist) / src_hist.sum()
        ref_cdf = np.cumsum(ref_hist) / ref_hist.sum()
        lut = np.clip(np.interp(src_cdf, ref_cdf, np.arange(256)) + 0.5, 0, 255).astype(np.uint8)
        out[..., c] = cv2.LUT(np.ascontiguousarray(source[..., c]), lut)
    return out
