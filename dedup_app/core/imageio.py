"""Reading images the way a duplicate finder needs them: small, upright, RGB, and never crashing.

:func:`load_for_embedding` reads a file once, hashes its bytes, and decodes it at the smallest size that still
covers the model's input: JPEGs are decoded with DCT scaling (``Image.draft``), so a 12-megapixel photo costs a
1/8-scale decode. EXIF orientation is applied; CMYK, 16-bit, palette, alpha and float images become 8-bit RGB
(high bit depths in strips of rows, never as one full-size float array). Multi-page files (TIFF, GIF, WebP, ...)
are read by their first page, and :attr:`ImageInfo.frames` says how many there are. Anything that goes wrong
becomes an :class:`ImageLoadError` whose message names the reason; data Pillow finds broken is reported as damaged,
not handed to the OpenCV fallback (which would decode garbage without complaint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from dedup_app.core.files import describe_os_error
from dedup_app.core.keep import KeepEvidence, measure

log = logging.getLogger(__name__)

#: Images with more pixels than this are refused as decompression bombs (Pillow's own hard limit).
DEFAULT_MAX_PIXELS = 2 * 89_478_485

#: Pillow modes with more than 8 bits per sample, scaled to 8 bits by :func:`to_rgb8`.
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")

#: Pixels per strip when scaling high bit depths (float64 temporaries of about 8 MB).
_STRIP_PIXELS = 1 << 20

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


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """Facts about an image file: upright full-resolution size, format and a few EXIF fields.

    ``frames`` is the number of pages or frames (multi-page TIFF, animated GIF/WebP/PNG, multi-image HEIF); the
    embedding shows only the first, so a file with ``frames > 1`` is more than its picture: its other pages may
    exist nowhere else, and it must not be offered for removal as a copy of a single-page image.

    ``evidence`` is what the file shows about being an original or a copy (:mod:`dedup_app.core.keep`), measured
    when it is read for embedding; None for files cached before it was measured.
    """

    width: int
    height: int
    format: str
    exif_datetime: str | None = None
    camera: str | None = None
    frames: int = 1
    evidence: KeepEvidence | None = None


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


def _strip_rows(width: int) -> int:
    return max(1, _STRIP_PIXELS // max(1, width))


def _scaled_to_uint8(arr: np.ndarray, offset: float, divisor: float, factor: float = 1.0) -> np.ndarray:
    """``floor((arr - offset) / divisor * factor)`` clipped to 0..255 (NaN: 0), computed in float64 one strip of
    rows at a time, so a 13000 x 13000 16-bit image needs no 1.3 GB float copy of itself."""
    out = np.empty(arr.shape, dtype=np.uint8)
    rows = _strip_rows(int(np.prod(arr.shape[1:])))
    for top in range(0, arr.shape[0], rows):
        strip = arr[top : top + rows].astype(np.float64)
        if offset:
            strip -= offset
        if divisor != 1.0:
            strip /= divisor
        if factor != 1.0:
            strip *= factor
        np.nan_to_num(strip, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(strip, 0, 255, out=strip)
        out[top : top + rows] = strip  # truncates, as astype(np.uint8) does
    return out


def _grey8(im: Image.Image) -> Image.Image:
    """A high-bit-depth single-channel image (modes ``I``, ``I;16*``, ``F``) as 8-bit ``L``.

    Integers above 255 are taken as 16-bit and divided by 257; floats are stretched from their minimum to their
    maximum. Read strip by strip from Pillow's buffer: the only full-size arrays are the source and the result.
    """
    width, height = im.size
    rows = _strip_rows(width)
    boxes = [(0, top, width, min(height, top + rows)) for top in range(0, height, rows)]
    lo, hi = np.inf, -np.inf
    for box in boxes:  # pass 1: the range (getextrema does not know every 16-bit mode)
        strip = np.asarray(im.crop(box))
        if strip.size:
            lo, hi = min(lo, float(np.nanmin(strip))), max(hi, float(np.nanmax(strip)))
    if not np.isfinite(lo) or not np.isfinite(hi):
        lo = hi = 0.0
    if im.mode == "F":
        offset, divisor, factor = (lo, hi - lo, 255.0) if hi > lo else (0.0, 1.0, 0.0)
    else:
        offset, divisor, factor = 0.0, (257.0 if hi > 255 else 1.0), 1.0
    grey = np.empty((height, width), dtype=np.uint8)
    for box in boxes:  # pass 2: scale
        grey[box[1] : box[3]] = _scaled_to_uint8(np.asarray(im.crop(box)), offset, divisor, factor)
    return Image.fromarray(grey, "L")


def _reduced(im: Image.Image, target: int) -> Image.Image:
    """Shrink by the largest whole factor that keeps both sides at least ``target`` (box average)."""
    factor = min(im.width // target, im.height // target)
    return im.reduce(factor) if factor >= 2 else im


def to_rgb8(im: Image.Image, target: int | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha composited on white, high bit depths scaled, not clipped.

    With ``target``, a high-bit-depth image is also reduced (both sides staying at least ``target``) before it
    becomes RGB, so a huge 16-bit scan never exists as a full-size RGB copy.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _HIGH_BIT_MODES:
        grey = _grey8(im)
        if target is not None:
            grey = _reduced(grey, target)
        return grey.convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _cv2_to_uint8(arr: np.ndarray) -> np.ndarray:
    """OpenCV's decoded samples as uint8: floats in [0, 1] (the usual convention) times 255; other floats and
    integers above 255 scaled by their maximum; NaN as 0."""
    if arr.dtype == np.uint8:
        return arr
    if arr.size == 0:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        lo = float(arr[finite].min()) if finite.any() else 0.0
        hi = float(arr[finite].max()) if finite.any() else 0.0
        if lo >= 0.0 and hi <= 1.0:
            return _scaled_to_uint8(arr, 0.0, 1.0, 255.0)
    else:
        hi = float(arr.max())
    return _scaled_to_uint8(arr, 0.0, hi / 255.0 if hi > 255 else 1.0)


def _cv2_decode(data: bytes) -> np.ndarray:
    """Fallback decoder (OpenCV) for what Pillow cannot open, e.g. float or multi-sample TIFFs."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None:
        raise ImageLoadError("not a recognised image")
    arr = _cv2_to_uint8(arr)
    if arr.ndim == 2:
        return np.stack([arr] * 3, axis=-1)
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        rgb = arr[..., :3].astype(np.float32)
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    else:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr[..., ::-1])  # BGR -> RGB


def _frame_count(im: Image.Image) -> int:
    """Pages or frames in the file (1 for single images), leaving ``im`` at the first.

    The extra images of an MPO (the JPEG variant of cameras and phones) are previews or the other eye's view of
    the same picture, not other content: such a file counts as one.
    """
    if im.format == "MPO":
        return 1
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # a damaged chain of pages: count those seen, then go back to the first
        seen = max(1, im.tell() + 1)
        try:
            im.seek(0)
        except Exception as exc:
            raise ImageLoadError(f"damaged image data ({exc})") from None
        return seen


def _is_broken_data(exc: OSError) -> bool:
    """Whether Pillow's error says the image data is broken (a decoder failing on it), as opposed to a format or
    feature Pillow cannot handle (a missing decoder, an unknown mode), which the OpenCV fallback may read."""
    message = str(exc)
    return message.endswith("when reading image file") and not any(
        s in message for s in ("bad configuration", "out of memory")
    )


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
    ``target`` pixels (or the full size when smaller), and high-bit-depth images are reduced likewise after
    decoding; other formats come back in full. ``ImageInfo`` always reports the full-resolution upright size and
    the number of frames. Raises :class:`ImageLoadError`.
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
        frames = _frame_count(im)
        if target is not None and fmt == "JPEG":
            im.draft("RGB", (target, target))
        im.load()
        rgb = to_rgb8(im, target)
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"refused as a decompression bomb: {exc}") from None
    except OSError as exc:
        message = str(exc)
        if "truncated" in message:
            raise ImageLoadError("truncated file: the image data ends early") from None
        if _is_broken_data(exc):  # OpenCV would decode such data into garbage without complaint
            raise ImageLoadError(f"damaged image data ({message})") from None
        try:  # a mode or compression Pillow cannot unpack
            rgb = Image.fromarray(_cv2_decode(data), "RGB")
        except ImageLoadError:
            raise ImageLoadError(f"damaged image data ({message})") from None
    except (ValueError, SyntaxError, EOFError, MemoryError, struct.error) as exc:
        raise ImageLoadError(f"damaged image data ({exc})") from None

    rgb = _apply_orientation(rgb, orientation)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return rgb, ImageInfo(width, height, fmt, when, camera, frames)


def resize_square(im: Image.Image, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size`` (aspect ratio not kept: every pixel of the picture stays in view)."""
    out = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(out, dtype=np.uint8)


def load_for_embedding(path: str, target: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read ``path`` once: hash its bytes, decode it to ``target`` x ``target`` RGB, and measure the keep evidence
    (:func:`dedup_app.core.keep.measure`) from the same decode. Raises ImageLoadError."""
    data = read_bytes(path)
    digest = content_hash(data)
    rgb, info = decode(data, target, max_pixels)
    square = resize_square(rgb, target)
    try:
        evidence = measure(data, info.format, rgb, square, info.width)
    except Exception:  # evidence is a hint for the keep suggestion: never worth the image
        log.debug("no keep evidence for %s", path, exc_info=True)
        evidence = None
    return LoadedImage(square, dataclasses.replace(info, evidence=evidence), digest)


def open_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open a file at full resolution as upright RGB, for viewing and comparison. Raises ImageLoadError."""
    rgb, _ = decode(read_bytes(os.fspath(path)), None, max_pixels)
    return rgb
