"""Reading rasters for change detection: photos, PNG/JPEG/TIFF tiles, 16-bit and multiband GeoTIFFs, ENVI.

Everything becomes an 8-bit RGB array plus optional georeferencing. 16-bit and float bands are stretched
between their 2nd and 98th percentiles (satellite data rarely fills its range), multiband rasters use the bands
the caller chooses (1-based, as GDAL numbers them). Several single-band files joined by commas
(``B04.tif,B03.tif,B02.tif``) are stacked on the grid of the first. GeoTIFF and ENVI need the optional
``rasterio`` package (``pip install 'dedup-app[geo]'``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dedup_app.core.imageio import DEFAULT_MAX_PIXELS, ImageLoadError, decode, read_bytes

GEO_SUFFIXES = {".tif", ".tiff", ".gtiff", ".img", ".vrt", ".jp2"}


class RasterError(Exception):
    """A raster that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class GeoInfo:
    """Georeferencing: the CRS (WKT) and the affine transform (a, b, c, d, e, f) of pixel -> map coordinates."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    is_geographic: bool = False

    def to_map(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates of pixel positions (column x, row y; corners at integers)."""
        a, b, c, d, e, f = self.transform
        return a * np.asarray(x) + b * np.asarray(y) + c, d * np.asarray(x) + e * np.asarray(y) + f

    def pixel_area_m2(self, row: float = 0.0) -> float:
        """Ground area of one pixel in square metres (geographic CRS: spherical approximation at ``row``)."""
        a, b, _, d, e, f = self.transform
        area = abs(a * e - b * d)
        if not self.is_geographic:
            return area
        lat = math.radians(f + e * row)
        return area * (111_320.0 * math.cos(lat)) * 110_574.0


@dataclass
class Raster:
    """An image ready for comparison: ``pixels`` is H x W x 3 uint8 RGB."""

    path: str
    pixels: np.ndarray
    geo: GeoInfo | None = None
    source_bands: tuple[int, ...] = (1, 2, 3)
    bit_depth: int = 8

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


def stretch_to_uint8(band: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """Scale one band to 0-255 between its 2nd and 98th percentiles (nodata ignored)."""
    values = band[np.isfinite(band)]
    if nodata is not None:
        values = values[values != nodata]
    if values.size == 0:
        return np.zeros(band.shape, np.uint8)
    sample = values if values.size <= 2_000_000 else values[:: values.size // 1_000_000]
    lo, hi = np.percentile(sample, [2, 98])
    if hi <= lo:
        hi = lo + 1
    return (np.clip((band.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def _to_rgb(bands: list[np.ndarray], nodata: float | None) -> tuple[np.ndarray, int]:
    depth = int(np.dtype(bands[0].dtype).itemsize * 8)
    stack = bands if bands[0].dtype == np.uint8 else [stretch_to_uint8(b, nodata) for b in bands]
    if len(stack) == 1:
        stack = stack * 3
    return np.ascontiguousarray(np.stack(stack[:3], axis=-1)), depth


def has_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def _is_geo_path(path: str) -> bool:
    p = Path(path)
    return (
        "," in path
        or p.suffix.lower() in GEO_SUFFIXES
        or p.suffix == ""
        or p.with_suffix(".hdr").exists()
        or (p.parent / (p.name + ".HDR")).exists()
    )


def read_raster(path: str | os.PathLike[str], bands: tuple[int, ...] | None = None) -> Raster:
    """Read ``path`` (or comma-joined band files) as RGB uint8 with georeferencing when there is any."""
    path = os.fspath(path)
    if _is_geo_path(path) and has_rasterio():
        return _read_with_rasterio(path, bands)
    if "," in path:
        raise RasterError(f"{path}: joining band files needs rasterio (pip install 'dedup-app[geo]')")
    if not os.path.exists(path):
        raise RasterError(f"{path}: file not found")
    direct = _read_with_opencv(path)
    if direct is not None:
        return direct
    try:
        data = read_bytes(path)
    except ImageLoadError as exc:
        raise RasterError(f"{path}: {exc}") from None
    arr = _read_high_bit_depth(data)
    if arr is not None:
        return Raster(path, arr, None, bands or (1, 2, 3), 16)
    try:
        img, _info = decode(data, None, DEFAULT_MAX_PIXELS)
    except ImageLoadError as exc:
        hint = " (GeoTIFF/ENVI need rasterio: pip install 'dedup-app[geo]')" if _is_geo_path(path) else ""
        raise RasterError(f"{path}: {exc}{hint}") from None
    return Raster(path, np.asarray(img, dtype=np.uint8).copy(), None)


def _read_with_opencv(path: str) -> Raster | None:
    """Read straight into one array (large PNG/TIFF/JPEG rasters: no second copy), EXIF orientation applied;
    ``None`` when OpenCV cannot read the file (the Pillow path then tries, and explains failures)."""
    import cv2

    if Path(path).suffix.lower() not in {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}:
        return None
    try:
        arr = cv2.imread(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error:
        return None
    if arr is None:
        return None
    depth = int(arr.dtype.itemsize * 8)
    if arr.dtype != np.uint8:
        bands = [arr] if arr.ndim == 2 else [arr[..., c] for c in range(min(3, arr.shape[2]))][::-1]
        rgb, _ = _to_rgb(bands, None)
        return Raster(path, rgb, None, (1, 2, 3), depth)
    if arr.ndim == 2:
        return Raster(path, cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB), None, (1,), depth)
    if arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR)
    cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)  # in place: a 10,000 x 10,000 raster is 300 MB
    return Raster(path, arr, None, (1, 2, 3), depth)


def _read_high_bit_depth(data: bytes) -> np.ndarray | None:
    """16-bit or float single/multi-channel images read by OpenCV, stretched; None for 8-bit images."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None or arr.dtype == np.uint8:
        return None
    bands = [arr] if arr.ndim == 2 else [arr[..., c] for c in range(min(3, arr.shape[2]))][::-1]  # BGR -> RGB
    rgb, _ = _to_rgb(bands, None)
    return rgb


def _read_with_rasterio(path: str, bands: tuple[int, ...] | None) -> Raster:
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError

    files = [p.strip() for p in path.split(",")] if "," in path else [path]
    arrays: list[np.ndarray] = []
    geo: GeoInfo | None = None
    nodata = None
    used: tuple[int, ...] = ()
    try:
        with rasterio.open(files[0]) as ref:
            height, width = ref.height, ref.width
            if ref.crs is not None and not ref.transform.is_identity:
                t = ref.transform
                geo = GeoInfo(ref.crs.to_wkt(), (t.a, t.b, t.c, t.d, t.e, t.f), bool(ref.crs.is_geographic))
            nodata = ref.nodata
            if len(files) == 1:
                count = ref.count
                used = bands or ((1, 2, 3) if count >= 3 else (1,))
                bad = [b for b in used if not 1 <= b <= count]
                if bad:
                    raise RasterError(f"{path}: has {count} bands; band(s) {bad} do not exist")
                arrays = [ref.read(b) for b in used]
        if len(files) > 1:
            used = tuple(range(1, len(files) + 1))
            for f in files:
                with rasterio.open(f) as src:
                    # bands of other resolutions (Sentinel-2 20/60 m) are resampled onto the first file's grid
                    arrays.append(src.read(1, out_shape=(height, width), resampling=Resampling.bilinear))
    except RasterioIOError as exc:
        raise RasterError(f"{path}: cannot read raster ({exc})") from None
    if height * width > DEFAULT_MAX_PIXELS * 4:
        raise RasterError(f"{path}: {width} x {height} pixels is larger than this version handles")
    rgb, depth = _to_rgb(arrays, nodata)
    return Raster(path, rgb, geo, used, depth)
