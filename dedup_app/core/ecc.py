"""Enhanced-correlation alignment (OpenCV's ``findTransformECC``), shared by the compare view and change detection."""

from __future__ import annotations

from typing import Any

import numpy as np


def find_transform_ecc(
    template: np.ndarray,
    image: np.ndarray,
    warp: np.ndarray,
    motion: int,
    criteria: tuple[int, int, float],
    mask: np.ndarray | None,
    gauss_size: int,
) -> tuple[float, np.ndarray]:
    """``cv2.findTransformECC``: the correlation reached and the refined warp. Raises ``cv2.error`` when it does not
    converge. (OpenCV's type stubs have no overload that takes no mask together with the Gaussian filter size,
    which the function itself accepts; this wrapper gives the call one typed signature.)"""
    import cv2

    ecc: Any = cv2.findTransformECC
    correlation, refined = ecc(template, image, warp, motion, criteria, mask, gauss_size)
    return float(correlation), np.asarray(refined)
