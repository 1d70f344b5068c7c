"""From a probability map to changed regions: threshold, morphological clean-up, minimum area, polygons."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dedup_app.core.change.raster import GeoInfo


@dataclass(frozen=True)
class Region:
    """One changed region: outline in pixel coordinates of the before image, areas, bounding box, confidence."""

    id: int
    polygon: list[tuple[float, float]]
    area_px: int
    area_m2: float | None
    bbox: tuple[int, int, int, int]  # x, y, width, height
    centroid: tuple[float, float]
    mean_probability: float


def upsample(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A low-resolution probability map at full size, as uint8 (0-255) to keep big rasters small."""
    import cv2

    h, w = shape
    p8 = np.clip(prob * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.resize(p8, (w, h), interpolation=cv2.INTER_LINEAR)


def change_mask(
    prob_full: np.ndarray,
    threshold: float,
    min_area_px: int = 64,
    valid: np.ndarray | None = None,
    smooth_px: int | None = None,
) -> np.ndarray:
    """Binary mask (uint8 0/1) at full size: threshold, open/close with a kernel scaled to the image, small
    components removed, pixels outside the overlap of the two images never changed."""
    import cv2

    h, w = prob_full.shape
    mask: np.ndarray = (prob_full >= int(round(threshold * 255))).astype(np.uint8)
    if valid is not None:
        mask &= valid.astype(np.uint8)
    k = smooth_px if smooth_px is not None else max(3, (min(h, w) // 256) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    if min_area_px > 1:
        # by outlines rather than a label image: a 10,000 x 10,000 label image alone would take 400 MB
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        small = [c for c in contours if cv2.contourArea(c) + 0.5 * cv2.arcLength(c, True) < min_area_px]
        if small:
            cv2.drawContours(mask, small, -1, 0, thickness=-1)
    return mask


def find_regions(mask: np.ndarray, prob_full: np.ndarray, geo: GeoInfo | None = None) -> list[Region]:
    """Outline every connected changed region (outer boundary, simplified to within a pixel)."""
    import cv2

    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    regions = []
    for k, contour in enumerate(sorted(contours, key=cv2.contourArea, reverse=True), 1):
        x, y, w, h = cv2.boundingRect(contour)
        sub = np.zeros((h, w), np.uint8)
        cv2.drawContours(sub, [contour - [x, y]], -1, 1, thickness=-1)
        sub &= mask[y : y + h, x : x + w]
        area = int(sub.sum())
        if area == 0:
            continue
        ys, xs = np.nonzero(sub)
        approx = cv2.approxPolyDP(contour, 1.0, True).reshape(-1, 2)
        if len(approx) < 3:
            approx = contour.reshape(-1, 2)
        polygon = [(float(px), float(py)) for px, py in approx]
        mean_p = float(prob_full[y : y + h, x : x + w][sub.astype(bool)].mean()) / 255.0
        cy, cx = float(ys.mean() + y), float(xs.mean() + x)
        area_m2 = area * geo.pixel_area_m2(cy) if geo is not None else None
        regions.append(Region(k, polygon, area, area_m2, (x, y, w, h), (cx, cy), mean_p))
    return regions
