"""Which file of a duplicate group is the original: evidence read from each file at scan time, and the order of a
group it gives (the first file is the one to keep).

Keeping the file with the most pixels, then the most bytes, keeps what an edit made bigger: a sharpened copy (more
bytes), a framed copy (more pixels), a PNG conversion (more bytes). Edits leave other traces, and the scan reads
them from what it already has in hand (the file's bytes, its reduced decode and the embedding input), never from a
second decode (:func:`measure`, a few milliseconds a file; stored in the cache as :class:`KeepEvidence`):

* **content pixels**: the pixels less uniform frames and letterboxes (bands of one colour on two opposite sides,
  ending at a straight edge: :func:`content_box`);
* **JPEG quality**: the IJG quality whose standard tables best match the file's quantisation tables (read from the
  header); for a PNG, WebP, TIFF or BMP whose pixels still carry a JPEG's 8x8 quantisation, the quality of the
  JPEG it was decoded from: such a file is a conversion (:func:`jpeg_grid_quality`);
* **colour**: a greyscale copy of a colour photo cannot be its source;
* **camera data**: EXIF make or model present;
* **look**: sharpness, contrast, brightness and colourfulness inside the frame at the embedding size. Edits push
  some of them away from the original (sharpen, blur, contrast, saturation), in different directions, so among
  otherwise equal files the one closest to the median of the group is the least processed.

:func:`keep_ranking` orders a group by, in turn:

1. content pixels, most first, files within :data:`RESOLUTION_TOLERANCE` of each other counting as equal: a copy
   never shows more of the picture than its source (an upscaled copy would; nothing here sees that). Files of the
   same width and height count with the most content pixels among them (:func:`group_content_pixels`): a band of
   sky or a dark bar that an edit disturbed (noise, a logo) is not a frame of the file that kept it;
2. greyscale while another member has colour: last;
3. a frame added around the picture (the file has a frame, and another file of the same content pixels a smaller
   canvas): after the files without one. Adding a frame is a common edit; a source whose own letterbox a copy
   cropped away, keeping 97 % of the picture, loses here;
4. fidelity, highest first (:func:`fidelity`): the JPEG quality; a lossless file counts as quality 90 (below a
   camera JPEG, above what web sites and messengers write), a lossy WebP as 80, HEIF/AVIF as 95, a GIF as 50; a
   conversion of a JPEG as that JPEG less 5; camera data adds 5;
5. look: closest to the median of the files of the same content pixels (groups of 3 or more);
6. the oldest file, then the path.

Evidence a file lacks (cached before it was measured, or not measurable) is neutral: the whole picture is content,
no frame, no greyscale, the format's usual fidelity, no look. What it cannot see: an edit saved at a higher JPEG
quality than its source (mirrored, colour-graded, blurred) outranks the source unless the look of a larger group
tells them apart; finding double compression would need the full-size DCT coefficients, which the scan does not
decode. ``benchmarks/neardup.py`` (quality part) measures how often the kept file is the original.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from dedup_app.core.scan import ImageRecord

#: The frame is looked for on the decode reduced to at most this many pixels a side.
FRAME_SIDE = 384
#: Files whose content pixels are within this share of each other count as the same resolution: the estimate of a
#: frame is made on the reduced decode, and a source and its re-encodings must not be told apart by a pixel row.
RESOLUTION_TOLERANCE = 0.03
#: A file whose frame covers at least this share of its area shows a sign of an edit.
FRAME_SIGN = 0.03
#: Fidelity (JPEG quality scale) of files whose quality is not measured, by Pillow format name.
NOMINAL_QUALITY: dict[str, float] = {
    "PNG": 90.0,
    "BMP": 90.0,
    "TIFF": 90.0,
    "PPM": 90.0,
    "TGA": 90.0,
    "QOI": 90.0,
    "WEBP": 80.0,
    "HEIF": 95.0,
    "AVIF": 95.0,
    "GIF": 50.0,
}
#: Fidelity of a file of another format, and of a JPEG whose tables were not read (cached before they were).
UNKNOWN_QUALITY = 85.0
#: Fidelity subtracted from a file decoded from a JPEG and saved again (a PNG of a JPEG): it is never the source.
CONVERSION_PENALTY = 5.0
#: Fidelity added when the file holds the camera's EXIF make or model.
CAMERA_BONUS = 5.0
#: Colourfulness (:func:`look`) from which a file has colour: a greyscale copy of it shows a sign of an edit. Grey
#: photos with colour noise or a small coloured logo stay below it.
COLOUR_MIN = 6.0
#: Noise scale of each look statistic (log units): twice the standard deviation that re-encoding alone causes (JPEG
#: q90/q92, PNG, WebP, mirror and turns of the benchmark's dev photos); the least unit of :func:`look_deviation`.
LOOK_SCALE = np.array([0.05, 0.006, 0.002, 0.012])

# IJG (libjpeg) standard quantisation tables, natural order, for quality 50 (JPEG standard, Annex K).
_IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    np.float64,
)  # fmt: skip
_IJG_CHROMA = np.array(
    [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
     47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32,
    np.float64,
)  # fmt: skip


def _ijg_bank(base: np.ndarray) -> np.ndarray:
    """The table libjpeg writes for each quality 1-100 (row q - 1), as logarithms."""
    q = np.arange(1, 101, dtype=np.float64)[:, None]
    scale = np.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)
    return np.log(np.clip(np.floor((base[None, :] * scale + 50.0) / 100.0), 1, 255))


_LUMA_BANK = _ijg_bank(_IJG_LUMA)
_CHROMA_BANK = _ijg_bank(_IJG_CHROMA)


@dataclass(frozen=True, slots=True)
class KeepEvidence:
    """What a file shows about being an original or a copy (``None``: not known). See the module docstring."""

    #: JPEG quality (IJG scale, 1-100) of the file, or of the JPEG a non-JPEG file was decoded from
    quality: float | None = None
    #: whether a non-JPEG file carries a JPEG's quantisation (made from a JPEG); False for JPEGs
    converted: bool | None = None
    #: whether the picture has no colour
    grey: bool | None = None
    #: share of the area inside a uniform frame or letterbox (1.0: none)
    content: float | None = None
    #: mean absolute Laplacian of the luma at the embedding size
    sharpness: float | None = None
    #: standard deviation of the luma at the embedding size
    contrast: float | None = None
    #: mean luma at the embedding size
    brightness: float | None = None
    #: mean chroma magnitude at the embedding size
    colourfulness: float | None = None

    def look(self) -> tuple[float, float, float, float] | None:
        """Sharpness, contrast, brightness and colourfulness, or None if any is unknown."""
        values = (self.sharpness, self.contrast, self.brightness, self.colourfulness)
        return None if any(v is None for v in values) else values  # type: ignore[return-value]


# -- measuring ------------------------------------------------------------------------------------------------


def quality_from_tables(tables: Mapping[int, Sequence[int]] | None) -> float | None:
    """The IJG quality (1-100) whose standard tables are closest to ``tables`` (Pillow's ``im.quantization``:
    table 0 luma, table 1 chroma, natural order); exact for libjpeg-family encoders, the nearest equivalent for a
    camera's own tables. None without a 64-entry luma table."""
    if not tables:
        return None
    luma = tables.get(0)
    if luma is None or len(luma) != 64:
        return None
    err = np.abs(_LUMA_BANK - np.log(np.clip(np.asarray(luma, np.float64), 1, None))).mean(axis=1)
    chroma = tables.get(1)
    if chroma is not None and len(chroma) == 64:
        err += np.abs(_CHROMA_BANK - np.log(np.clip(np.asarray(chroma, np.float64), 1, None))).mean(axis=1)
    best = np.flatnonzero(err <= err.min() + 1e-9)  # tables that saturate at 1 fit several qualities: the middle
    return float(best.mean() + 1)


def _dct_matrix(n: int = 8) -> np.ndarray:
    k = np.arange(n)
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


_DCT = _dct_matrix()
#: Low-frequency luma coefficients whose quantisation step is looked for, and the steps tried.
_GRID_POSITIONS = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1))
_GRID_STEPS = np.arange(2, 41, dtype=np.float32)
_GRID_CROP = 256  # pixels a side of the centre crop searched
_GRID_MIN_SUPPORT = 40  # coefficients at or above half a step needed to judge a step
#: mean cos(2 pi c / step) above which the coefficients sit on multiples of the step: 0.4 finds 94 % of the pool's
#: JPEG q88 photos saved as PNG, and 3 of the 138 benchmark PNGs (Set14 frames with codec history of their own)
_GRID_PERIODICITY = 0.4


def _luma(rgb: np.ndarray) -> np.ndarray:
    """JFIF's Y of an RGB array, float32. Written out rather than as a matrix product: BLAS calls from the decode
    threads start OpenBLAS's own threads, which spin against the model's on a small machine."""
    a = rgb.astype(np.float32)
    return 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]  # type: ignore[no-any-return]


def _block_coefficients(rgb: np.ndarray, x0: int, y0: int) -> np.ndarray | None:
    """2-D DCT of the luma's 8x8 blocks in a centre crop of ``rgb`` on the grid starting at (x0, y0): (n, 8, 8)."""
    h, w = rgb.shape[:2]
    top = y0 + max(0, (h - y0 - _GRID_CROP) // 2) // 8 * 8
    left = x0 + max(0, (w - x0 - _GRID_CROP) // 2) // 8 * 8
    crop = rgb[top : top + _GRID_CROP, left : left + _GRID_CROP]
    bh, bw = crop.shape[0] // 8, crop.shape[1] // 8
    if bh * bw < 64:
        return None
    luma = _luma(crop[: bh * 8, : bw * 8])
    blocks = luma.reshape(bh, 8, bw, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
    return np.einsum("ij,njk,lk->nil", _DCT, blocks, _DCT)  # no BLAS: see _luma


def _quantisation_steps(coefficients: np.ndarray) -> list[float | None]:
    """For each of :data:`_GRID_POSITIONS`: the largest step whose multiples the coefficients sit on, or None."""
    out: list[float | None] = []
    steps = _GRID_STEPS[:, None]
    for u, v in _GRID_POSITIONS:
        c = coefficients[:, u, v][None, :]
        support = np.abs(c) >= steps / 2  # zeros say nothing about the step: every step has them
        count = support.sum(axis=1)
        periodic = (np.cos(2 * np.pi * c / steps) * support).sum(axis=1) / np.maximum(count, 1)
        ok = np.flatnonzero((count >= _GRID_MIN_SUPPORT) & (periodic >= _GRID_PERIODICITY))
        out.append(float(_GRID_STEPS[ok[-1]]) if len(ok) else None)
    return out


def jpeg_grid_quality(rgb: np.ndarray, size: tuple[int, int] | None = None) -> float | None:
    """The JPEG quality a decoded picture was saved at, if its pixels still carry JPEG quantisation; else None.

    A JPEG stores each 8x8 block's DCT coefficients as multiples of a step (the quantisation table), and decoding
    and saving losslessly (PNG, TIFF, BMP) keeps them there, up to rounding. In a centre crop of the luma, on the
    grid of each corner (an EXIF turn or flip moves the grid's origin), the step of a few low-frequency coefficients
    is found by periodicity, and matched to the IJG tables. Found for qualities up to about 90 (steps of 3 and
    more); a camera-original or never-compressed picture gives None.

    ``rgb`` is H x W x 3 uint8 at full size: the whole picture, or a part of it starting at a multiple of 8 pixels
    from its top left corner, the picture being ``size`` (width, height).
    """
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 64:
        return None
    w, h = size or (rgb.shape[1], rgb.shape[0])
    for x0 in sorted({0, w % 8}):
        for y0 in sorted({0, h % 8}):
            coefficients = _block_coefficients(rgb, x0, y0)
            if coefficients is None:
                return None
            steps = _quantisation_steps(coefficients)
            found = [(k, s) for k, s in enumerate(steps) if s is not None]
            if len(found) * 2 > len(steps):
                index = [8 * _GRID_POSITIONS[k][0] + _GRID_POSITIONS[k][1] for k, _ in found]
                err = np.abs(_LUMA_BANK[:, index] - np.log([s for _, s in found])).sum(axis=1)
                best = np.flatnonzero(err <= err.min() + 1e-9)
                return float(best.mean() + 1)
    return None


def _channel_max(a: np.ndarray) -> np.ndarray:
    """``a.max(axis=-1)`` for 3 channels, without NumPy's slow reduction over a short last axis."""
    return np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])  # type: ignore[no-any-return]


def _band(lines: np.ndarray, tolerance: float, ringing: int) -> int:
    """How many lines from the edge (``lines[0]``) belong to a uniform band (0 if none). ``lines``: (n, m, 3).

    The band is the run of lines of one colour; where it ends, compression ringing blurs the picture's edge over a
    few lines (JPEG blocks straddle it), so the edge is put where the lines' distance from the band's colour
    reaches half of the picture's, within ``ringing`` lines. A frame ends at a straight edge: the first line past
    it must differ from the band's colour over at least half its length, or the band is part of the picture."""
    dev = _channel_max(np.abs(lines - np.median(lines[0], axis=0).round().astype(lines.dtype)))
    uniform = (dev <= tolerance).mean(axis=1) >= 0.98
    n = int(np.argmin(uniform)) if not uniform.all() else len(uniform)
    if 0 < n < len(lines):
        end = min(len(lines), n + ringing)
        distance = dev[n : end + ringing].mean(axis=1)
        picture = float(np.median(distance[end - n :])) if end < len(lines) else float(distance[-1])
        while n < end and distance[0] < picture / 2:
            n, distance = n + 1, distance[1:]
        if n < len(lines) and (dev[n] > tolerance).mean() < 0.5:
            return 0  # no edge: a sky or a wall that fades into the picture, not a frame
    return n


def _edge_band(lines: np.ndarray, tolerance: float, ringing: int, least: int, inner: bool) -> tuple[int, np.ndarray]:
    """A band at the edge of ``lines`` (see :func:`_band`): its width and colour, (0, colour) if none. Inside a
    frame (``inner``), the band may start up to ``ringing`` lines in: those blend the two frames."""
    for skip in range(ringing + 1 if inner else 1):
        width = _band(lines[skip:], tolerance, ringing)
        if width >= least or width >= len(lines) - skip:
            return skip + width, np.median(lines[skip], axis=0)
    return 0, np.median(lines[0], axis=0)


def content_box(
    rgb: np.ndarray, tolerance: float = 8.0, min_band: float = 0.01, ringing: int = 8, levels: int = 3
) -> tuple[float, float, float, float]:
    """The picture inside uniform frames or letterboxes, as fractions of the width and height (x0, y0, x1, y1).

    A frame is a band of one colour on two opposite sides (the same colour on both), each at least ``min_band`` of
    the side and 2 pixels, at most half of it, ending at an edge (:func:`_band`). Frames inside frames count too (a
    border added around a letterboxed picture), up to ``levels`` deep. The whole picture when there is none, and for
    a picture of one colour. ``rgb``: H x W x 3 uint8 (the scan passes at most 384 pixels a side)."""
    a = rgb.astype(np.int16)
    h0, w0 = a.shape[:2]
    y0, y1, x0, x1 = 0, h0, 0, w0
    for level in range(levels):
        if min(y1 - y0, x1 - x0) <= 4 * ringing + 8:
            break
        box = a[y0:y1, x0:x1]
        cuts = []
        for side in (box, box.transpose(1, 0, 2)):  # top/bottom, then left/right
            n = side.shape[0]
            half = (n + 1) // 2
            least = max(2, math.ceil(min_band * n))
            first, c1 = _edge_band(side[:half], tolerance, ringing, least, level > 0)
            if first >= half:  # one colour down to the middle: not a frame
                return x0 / w0, y0 / h0, x1 / w0, y1 / h0
            second, c2 = _edge_band(side[: n - half - 1 : -1], tolerance, ringing, least, level > 0)
            ok = min(first, second) >= least and np.abs(c1 - c2).max() <= 2 * tolerance
            cuts.append((first, second) if ok else (0, 0))
        (top, bottom), (left, right) = cuts
        if top + bottom + left + right == 0:
            break
        y0, y1, x0, x1 = y0 + top, y1 - bottom, x0 + left, x1 - right
    return x0 / w0, y0 / h0, x1 / w0, y1 / h0


def _crop(a: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The part of ``a`` inside a box of fractions (at least 8 x 8 pixels, else all of it)."""
    h, w = a.shape[:2]
    x0, y0, x1, y1 = round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)
    return a[y0:y1, x0:x1] if y1 - y0 >= 8 and x1 - x0 >= 8 else a


def look(square: np.ndarray) -> tuple[float, float, float, float]:
    """Sharpness (mean absolute Laplacian), contrast (luma std), brightness (mean luma) and colourfulness (mean
    chroma magnitude) of the embedding input (``size`` x ``size`` x 3 uint8)."""
    a = square.astype(np.float32)
    y = _luma(square)
    lap = np.abs(4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:])
    chroma = np.hypot(a[..., 2] - y, a[..., 0] - y)
    return float(lap.mean()), float(y.std()), float(y.mean()), float(chroma.mean())


def is_grey(square: np.ndarray) -> bool:
    """Whether a picture (H x W x 3 uint8) has no colour: channels equal up to compression noise."""
    a = square.astype(np.int16)
    spread = _channel_max(a) + _channel_max(-a)
    return bool(spread.mean() < 2.0 and np.quantile(spread, 0.99) <= 8)


def measure(data: bytes, image_format: str, rgb: Image.Image, square: np.ndarray, width: int) -> KeepEvidence:
    """The evidence of one file from what the scan already holds: its bytes (only the header is parsed again, for
    the quantisation tables), its decode ``rgb`` (upright RGB, reduced for JPEGs, full size for other formats) of
    a picture ``width`` pixels wide at full size, and the embedding input ``square``. The frame is looked for at
    most :data:`FRAME_SIDE` pixels a side; colour and look are measured inside it, if there is one."""
    quality = None
    converted: bool | None = None
    if image_format in ("JPEG", "MPO"):
        quality = quality_from_tables(_quantisation_tables(data))
        converted = False
    else:  # a centre crop at full size, starting on the 8-pixel grid of the top left corner
        w, h = rgb.size
        left, top = max(0, (w - _GRID_CROP - 8) // 16 * 8), max(0, (h - _GRID_CROP - 8) // 16 * 8)
        part = np.asarray(rgb.crop((left, top, min(w, left + _GRID_CROP + 8), min(h, top + _GRID_CROP + 8))))
        quality = jpeg_grid_quality(part, (w, h))
        converted = quality is not None
    factor = math.ceil(max(rgb.size) / FRAME_SIDE)
    small = rgb.reduce(factor) if factor > 1 else rgb
    # JPEG ringing along a frame's inner edge reaches a chroma block (16 pixels) at full size
    box = content_box(np.asarray(small), ringing=max(2, math.ceil(16 * small.width / max(1, width))))
    picture = _crop(square, box)  # the frame's colour is not the picture's
    sharpness, contrast, brightness, colourfulness = look(picture)
    share = (box[2] - box[0]) * (box[3] - box[1])
    return KeepEvidence(quality, converted, is_grey(picture), share, sharpness, contrast, brightness, colourfulness)


def _quantisation_tables(data: bytes) -> dict[int, Any] | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            tables = getattr(im, "quantization", None)
            return dict(tables) if tables else None
    except Exception:  # the picture was decoded already: a header that reads differently costs only the quality
        return None


# -- ranking ----------------------------------------------------------------------------------------------------


def fidelity(image: ImageRecord) -> float:
    """How faithfully the file holds its picture, on the JPEG quality scale (see the module docstring)."""
    ev = image.info.evidence
    fmt = image.info.format.upper()
    nominal = NOMINAL_QUALITY.get(fmt, UNKNOWN_QUALITY)
    if ev is not None and ev.quality is not None:
        q = min(ev.quality, nominal) - CONVERSION_PENALTY if ev.converted else ev.quality
    else:
        q = nominal
    return q + (CAMERA_BONUS if image.info.camera else 0.0)


def content_pixels(image: ImageRecord) -> float:
    """Pixels less a uniform frame or letterbox (all pixels when unknown)."""
    ev = image.info.evidence
    share = ev.content if ev is not None and ev.content is not None else 1.0
    return image.pixels * share


def _colourful(image: ImageRecord) -> bool:
    ev = image.info.evidence
    return ev is not None and not ev.grey and ev.colourfulness is not None and ev.colourfulness >= COLOUR_MIN


def greyed(image: ImageRecord, colour_in_group: bool) -> bool:
    """Whether the file is a greyscale copy: no colour, while another member of the group has colour."""
    ev = image.info.evidence
    return ev is not None and bool(ev.grey) and colour_in_group


def framed(image: ImageRecord) -> bool:
    """Whether a uniform frame or letterbox covers at least :data:`FRAME_SIGN` of the file's area."""
    ev = image.info.evidence
    return ev is not None and ev.content is not None and ev.content < 1 - FRAME_SIGN


def group_content_pixels(images: Sequence[ImageRecord]) -> list[float]:
    """:func:`content_pixels` of each file, the largest of them for files of the same width and height (up to a
    quarter turn): those show the same amount of picture, so a frame found in one and not in another is part of
    the picture (a sky, a dark bar) that an edit disturbed (noise, a logo), not a frame added to it."""
    best: dict[tuple[int, int], float] = {}
    for im in images:
        size = (min(im.info.width, im.info.height), max(im.info.width, im.info.height))
        best[size] = max(best.get(size, 0.0), content_pixels(im))
    return [best[(min(im.info.width, im.info.height), max(im.info.width, im.info.height))] for im in images]


def resolution_tiers(values: Sequence[float], tolerance: float = RESOLUTION_TOLERANCE) -> list[int]:
    """Tier of each value, 0 for the largest: a new tier starts below (1 - tolerance) of the previous tier's top."""
    tiers = [0] * len(values)
    tier, head = 0, math.inf
    for i in sorted(range(len(values)), key=lambda k: -values[k]):
        if head == math.inf:
            head = values[i]
        elif values[i] < head * (1 - tolerance):
            tier, head = tier + 1, values[i]
        tiers[i] = tier
    return tiers


def look_deviation(looks: Sequence[tuple[float, float, float, float]]) -> np.ndarray:
    """How far each file's look is from the median of all of them: the sum over the four statistics of the
    distance in log units, each over its median absolute deviation among the files (so a statistic the edits
    spread widely does not outweigh the others), at least :data:`LOOK_SCALE`. Equal for every file of a pair."""
    x = np.log1p(np.asarray(looks, np.float64))
    off = np.abs(x - np.median(x, axis=0))
    return (off / np.maximum(np.median(off, axis=0), LOOK_SCALE)).sum(axis=1)  # type: ignore[no-any-return]


def keep_ranking(images: Sequence[ImageRecord]) -> list[int]:
    """Indices of ``images`` from the best file to keep (the likeliest original) to the least likely; see the
    module docstring for the order."""
    n = len(images)
    if n < 2:
        return list(range(n))
    tiers = resolution_tiers(group_content_pixels(images))
    colour = any(_colourful(im) for im in images)
    # a frame is a sign of an edit where it was added around the picture: another file of the same content
    # pixels has a smaller canvas
    added = [
        framed(images[i])
        and any(tiers[j] == tiers[i] and images[j].pixels < images[i].pixels * (1 - FRAME_SIGN) for j in range(n))
        for i in range(n)
    ]
    deviation = np.zeros(n)
    for tier in set(tiers):
        members = [i for i in range(n) if tiers[i] == tier]
        looks = [ev.look() if (ev := images[i].info.evidence) is not None else None for i in members]
        if len(members) >= 3 and all(v is not None for v in looks):
            deviation[members] = look_deviation(looks)  # type: ignore[arg-type]

    def key(i: int) -> tuple[int, bool, bool, float, float, int, str]:
        im = images[i]
        look = round(float(deviation[i]), 3)
        return (tiers[i], greyed(im, colour), added[i], -fidelity(im), look, im.mtime_ns, im.path)

    return sorted(range(n), key=key)
