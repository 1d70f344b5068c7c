"""Reading images the way a duplicate finder needs them: small, upright, RGB, and never crashing.

:func:`load_for_embedding` reads a file once, hashes its bytes, and decodes it at the smallest size that still
covers the model's input: JPEGs are decoded with DCT scaling (``Image.draft``), so a 12-megapixel photo costs a
1/8-scale decode. EXIF orientation is applied; CMYK, 16-bit, palette, alpha and float images become 8-bit RGB.
Anything that goes wrong becomes an :class:`ImageLoadError` whose message names the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from dedup_app.core.files import describe_os_error

#: Images with more pixels than this are refused as decompression bombs (Pillow's own hard limit).
DEFAULT_MAX_PIXELS = 2 * 89_478_485

# EXIF tags read for display: orientation, camera make/model, and the date the picture was taken.
_TAG_ORIENTATION = 0x0112
_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110
_TAG_DATETIME = 0x0132
_TAG_EXIF_IFD = 0x8769
_TAG_DATETIME_ORIGINAL = 0x9003

_heif_registered = False


class ImageLoadError(Exception):
    """A file that cannot be used as an image; ``str(exc)`` is the reason, for the user.

    ``transient`` marks failures that say nothing about the file's content (permission denied, a disk error):
    they are not cached, so the next scan tries again.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class ImageInfo:
    """Facts about an image file: upright full-resolution size, format and a few EXIF fields."""

    width: int
    height: int
    format: str
    exif_datetime: str | None = None
    camera: str | None = None


@dataclass(frozen=True)
class LoadedImage:
    """An image decoded for embedding: upright RGB pixels (uint8, H x W x 3) at reduced size, plus file facts."""

    pixels: np.ndarray
    info: ImageInfo
    content_hash: str


def content_hash(data: bytes) -> str:
    """The content hash used for exact duplicates and label keys (BLAKE2b, 128 bits, hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def hash_file(path: str, chunk_size: int = 1 << 20) -> str:
    """:func:`content_hash` of a file's bytes, read in chunks. Raises ``OSError``."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _ensure_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # optional: HEIC files then fail with a clear 'not a recognised image'
            pass
        _heif_registered = True


def read_bytes(path: str) -> bytes:
    """Read a whole file, turning ``OSError`` into :class:`ImageLoadError` with a readable reason."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise ImageLoadError("is a folder, not a file", transient=True) from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read file: {describe_os_error(exc)}", transient=True) from None
    if not data:
        raise ImageLoadError("empty file (0 bytes)")
    return data


def _exif_facts(im: Image.Image) -> tuple[int, str | None, str | None]:
    """Orientation (1-8), capture date and camera from EXIF; defaults when the EXIF block is broken."""
    try:
        exif = im.getexif()
    except Exception:  # malformed EXIF must not cost the image
        return 1, None, None
    orientation = exif.get(_TAG_ORIENTATION, 1)
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    when = None
    with contextlib.suppress(Exception):  # a broken sub-IFD only costs the date
        when = exif.get_ifd(_TAG_EXIF_IFD).get(_TAG_DATETIME_ORIGINAL)
    when = when or exif.get(_TAG_DATETIME)
    make, model = exif.get(_TAG_MAKE), exif.get(_TAG_MODEL)
    camera = " ".join(str(s).strip("\x00 ") for s in (make, model) if s) or None
    if camera and make and model and str(model).startswith(str(make).strip("\x00 ")):
        camera = str(model).strip("\x00 ")
    return orientation, (str(when).strip("\x00 ") or None) if when else None, camera


def _apply_orientation(im: Image.Image, orientation: int) -> Image.Image:
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return im.transpose(method) if method is not None else im


def to_rgb8(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha composited on white, high bit depths scaled, not clipped."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        if mode == "F":
            lo = float(arr.min()) if arr.size else 0.0
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        elif hi > 255:
            arr = arr / 257.0  # 16-bit range to 8-bit
        grey = np.clip(arr, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _cv2_decode(data: bytes) -> np.ndarray:
    """Fallback decoder (OpenCV) for what Pillow refuses, e.g. some 16-bit or multi-sample TIFFs."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None:
        raise ImageLoadError("not a recognised image")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        arr = (arr / (hi / 255.0 if hi > 255 else 1.0)).clip(0, 255).astype(np.uint8)
    if arr.ndim == 2:
        return np.stack([arr] * 3, axis=-1)
    if arr.shape[2] == 4:
        rgb = arr[..., :3].astype(np.float32)
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    else:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr[..., ::-1])  # BGR -> RGB


def _open(data: bytes, max_pixels: int) -> Image.Image:
    _ensure_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"refused as a decompression bomb: {exc}") from None
    pixels = im.width * im.height
    if pixels > max_pixels:
        raise ImageLoadError(
            f"refused as a decompression bomb: {im.width} x {im.height} = {pixels:,} pixels (limit {max_pixels:,})"
        )
    if im.width <= 0 or im.height <= 0:
        raise ImageLoadError("image has no pixels")
    return im


def decode(
    data: bytes, target: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, ImageInfo]:
    """Decode image bytes to an upright RGB Pillow image.

    With ``target`` set, JPEGs are decoded with DCT scaling to the smallest scale whose sides are both at least
    ``target`` pixels (or the full size when smaller); other formats are decoded in full. ``ImageInfo`` always
    reports the full-resolution upright size. Raises :class:`ImageLoadError`.
    """
    try:
        im = _open(data, max_pixels)
    except UnidentifiedImageError:
        im = None
    except ImageLoadError:
        raise
    except Exception as exc:  # Pillow plugins raise a zoo of types on hostile headers
        raise ImageLoadError(f"not a recognised image ({exc})") from None

    if im is None:
        try:
            arr = _cv2_decode(data)
        except ImageLoadError:
            raise ImageLoadError("not a recognised image format, or the file is damaged") from None
        h, w = arr.shape[:2]
        if w * h > max_pixels:
            raise ImageLoadError(f"refused as a decompression bomb: {w} x {h} pixels")
        return Image.fromarray(arr, "RGB"), ImageInfo(w, h, "unknown")

    fmt = im.format or "unknown"
    width, height = im.size
    orientation, when, camera = _exif_facts(im)
    try:
        if target is not None and fmt == "JPEG":
            im.draft("RGB", (target, target))
        im.load()
        rgb = to_rgb8(im)
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"refused as a decompression bomb: {exc}") from None
    except OSError as exc:
        message = str(exc)
        if "truncated" in message:
            raise ImageLoadError("truncated file: the image data ends early") from None
        try:  # e.g. 16-bit RGB TIFF modes Pillow cannot unpack
            rgb = Image.fromarray(_cv2_decode(data), "RGB")
        except ImageLoadError:
            raise ImageLoadError(f"damaged image data ({message})") from None
    except (ValueError, SyntaxError, EOFError, MemoryError, struct.error) as exc:
        raise ImageLoadError(f"damaged image data ({exc})") from None

    rgb = _apply_orientation(rgb, orientation)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return rgb, ImageInfo(width, height, fmt, when, camera)


def resize_square(im: Image.Image, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (aspect ratio not kept: every pixel of the picture stays in view)."""
    out = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(out, dtype=np.uint8)


def load_for_embedding(path: str, target: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read ``path`` once: hash its bytes and decode it to ``target`` x ``target`` RGB. Raises ImageLoadError."""
    data = read_bytes(path)
    digest = content_hash(data)
    rgb, info = decode(data, target, max_pixels)
    return LoadedImage(resize_square(rgb, target), info, digest)


def open_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open a file at full resolution as upright RGB, for viewing and comparison. Raises ImageLoadError."""
    rgb, _ = decode(read_bytes(os.fspath(path)), None, max_pixels)
    return rgb
