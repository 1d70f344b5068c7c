"""Writing change maps: mask PNG, colour overlay, heatmap, GeoTIFF mask, GeoJSON regions, and the summary."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dedup_app.core.change.raster import GeoInfo
from dedup_app.core.change.regions import Region


def write_png(path: Path, array: np.ndarray) -> None:
    """Write uint8 grey or RGB with OpenCV (fast, and fine for 10,000 x 10,000)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    data = array if array.ndim == 2 else np.ascontiguousarray(array[..., ::-1])
    if not cv2.imwrite(str(path), data):
        raise OSError(f"{path}: could not write the image")


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Binary mask PNG: 255 changed, 0 unchanged, the before image's size."""
    write_png(path, (mask > 0).astype(np.uint8) * 255)


def write_overlay(
    path: Path, before: np.ndarray, mask: np.ndarray, alpha: float = 0.45, in_place: bool = False
) -> None:
    """The before image (RGB) with changed regions tinted red and outlined, written as PNG.

    Built in OpenCV's BGR order directly; with ``in_place`` the before array itself is drawn on (the caller is
    done with it), so a 10,000 x 10,000 raster costs no copy at all.
    """
    import cv2

    out = cv2.cvtColor(before, cv2.COLOR_RGB2BGR, dst=before if in_place else None)
    sel = mask.view(bool) if mask.dtype == np.uint8 and mask.max() <= 1 else mask > 0
    red_bgr = np.array([40, 40, 255], np.float32)
    out[sel] = (out[sel].astype(np.float32) * (1 - alpha) + red_bgr * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 230, 255), max(1, min(mask.shape) // 500))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), out):
        raise OSError(f"{path}: could not write the image")


def write_heatmap(path: Path, prob_full: np.ndarray) -> None:
    """The probability (uint8 0-255) as a colour map PNG (turbo: blue unchanged, red changed)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.applyColorMap(prob_full, cv2.COLORMAP_TURBO)):
        raise OSError(f"{path}: could not write the image")


def write_geotiff(path: Path, mask: np.ndarray, geo: GeoInfo) -> None:
    """Single-band uint8 GeoTIFF mask (255 changed) with the before raster's CRS and transform."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", height=mask.shape[0], width=mask.shape[1], count=1, dtype="uint8",
        crs=CRS.from_wkt(geo.crs), transform=Affine(*geo.transform), compress="deflate", nodata=None,
    ) as dst:  # fmt: skip
        dst.write((mask > 0).astype(np.uint8) * 255, 1)


def geojson(regions: Sequence[Region], geo: GeoInfo | None, properties: dict[str, Any]) -> dict[str, Any]:
    """Regions as a FeatureCollection: map coordinates when georeferenced, pixel coordinates otherwise."""
    features = []
    for r in regions:
        xs = np.array([p[0] for p in r.polygon] + [r.polygon[0][0]])
        ys = np.array([p[1] for p in r.polygon] + [r.polygon[0][1]])
        if geo is not None:
            xs, ys = geo.to_map(xs, ys)
        ring = [[float(x), float(y)] for x, y in zip(xs, ys, strict=True)]
        features.append(
            {
                "type": "Feature",
                "id": r.id,
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "id": r.id,
                    "area_px": r.area_px,
                    "area_m2": None if r.area_m2 is None else round(r.area_m2, 2),
                    "mean_probability": round(r.mean_probability, 4),
                    "bbox_px": list(r.bbox),
                },
            }
        )
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features, "properties": properties}
    if geo is not None:
        collection["crs_wkt"] = geo.crs  # GeoJSON (RFC 7946) assumes WGS 84; the source CRS is named here
    else:
        collection["coordinates"] = "pixels of the before image (x right, y down)"
    return collection


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON, atomically (a temporary file beside it, then renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=True) + "\n")
    os.replace(tmp, path)


SUMMARY_COLUMNS = (
    "before", "after", "changed_fraction", "regions", "changed_px", "changed_m2", "largest_region_px",
    "shift_x_px", "shift_y_px", "alignment_verified", "threshold", "error",
)  # fmt: skip


def write_summary_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One row per pair with the SUMMARY_COLUMNS, written atomically (a temporary file beside it, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    os.replace(tmp, path)
