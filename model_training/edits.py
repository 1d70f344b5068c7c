"""Edit families that turn one photo into a near-duplicate copy of itself.

The near-duplicate benchmark writes one copy per family for every source photo, and the training module uses the
same families as self-supervised positives, so what the model is trained on and what it is measured on stay in
step. Every edit is deterministic given its ``numpy`` generator.

Each family returns an :class:`EditedImage`: the pixels plus the file format they are written in. Lossy formats
are applied for real (``to_bytes`` / ``decoded``), because recompression artefacts are part of what makes a copy.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

# EXIF orientation tag and the transpose that *stores* an upright image so that a viewer applying the tag shows it
# upright again (the inverse of what ``ImageOps.exif_transpose`` does for each value).
_ORIENTATION_TAG = 0x0112
_STORE_FOR_ORIENTATION: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@dataclass
class EditedImage:
    """An edited copy: pixels, the format to store them in and the encoder options."""

    image: Image.Image
    format: str = "JPEG"
    save_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def suffix(self) -> str:
        """File name suffix for :attr:`format`."""
        return {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}[self.format]

    def to_bytes(self) -> bytes:
        """Encode the copy as it would be written to disk."""
        buf = io.BytesIO()
        image = self.image
        if self.format == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(buf, format=self.format, **self.save_kwargs)
        return buf.getvalue()

    def decoded(self) -> Image.Image:
        """The copy as a reader sees it: encoded, decoded again, EXIF orientation applied."""
        with Image.open(io.BytesIO(self.to_bytes())) as im:
            return ImageOps.exif_transpose(im).convert("RGB")


def _jpeg(image: Image.Image, quality: int = 90) -> EditedImage:
    return EditedImage(image, "JPEG", {"quality": int(quality)})


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def edit_resize(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Downscale to 30-60 % of each side."""
    s = _uniform(rng, 0.3, 0.6)
    size = (max(16, round(img.width * s)), max(16, round(img.height * s)))
    return _jpeg(img.resize(size, Image.Resampling.LANCZOS), 88)


def edit_recompress(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Heavy JPEG recompression (quality 12-30)."""
    return _jpeg(img, int(rng.integers(12, 31)))


def _random_crop(img: Image.Image, rng: np.random.Generator, lo: float, hi: float) -> Image.Image:
    fw, fh = _uniform(rng, lo, hi), _uniform(rng, lo, hi)
    w, h = max(8, round(img.width * fw)), max(8, round(img.height * fh))
    x = int(rng.integers(0, img.width - w + 1))
    y = int(rng.integers(0, img.height - h + 1))
    return img.crop((x, y, x + w, y + h))


def edit_crop(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Keep 70-90 % of each side at a random offset."""
    return _jpeg(_random_crop(img, rng, 0.7, 0.9))


def edit_rotate_small(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Straighten-style rotation by 3-10 degrees, cropped so no empty corners show."""
    angle = _uniform(rng, 3.0, 10.0) * (1 if rng.random() < 0.5 else -1)
    rotated = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    # Largest axis-aligned box inside the rotated frame, for a frame of the same aspect ratio.
    a = np.deg2rad(abs(angle))
    w, h = img.width, img.height
    scale = min(w, h) / (w * np.sin(a) + h * np.cos(a)) if w >= h else min(w, h) / (h * np.sin(a) + w * np.cos(a))
    cw, ch = int(w * scale), int(h * scale)
    x, y = (w - cw) // 2, (h - ch) // 2
    return _jpeg(rotated.crop((x, y, x + cw, y + ch)))


def edit_colour(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Colour grading: hue shift, saturation, brightness and contrast changes."""
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.integers(10, 40)) * (1 if rng.random() < 0.5 else -1)) % 256
    out = Image.fromarray(hsv, "HSV").convert("RGB")
    out = ImageEnhance.Color(out).enhance(_uniform(rng, 0.5, 1.6))
    out = ImageEnhance.Brightness(out).enhance(_uniform(rng, 0.75, 1.3))
    out = ImageEnhance.Contrast(out).enhance(_uniform(rng, 0.75, 1.3))
    return _jpeg(out)


def edit_greyscale(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Black-and-white conversion."""
    return _jpeg(ImageOps.grayscale(img))


def edit_blur_noise(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Gaussian blur followed by sensor-like Gaussian noise."""
    blurred = img.filter(ImageFilter.GaussianBlur(_uniform(rng, 1.0, 2.5)))
    arr = np.asarray(blurred, dtype=np.float32)
    arr = arr + rng.normal(0.0, _uniform(rng, 6.0, 14.0), arr.shape).astype(np.float32)
    return _jpeg(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def edit_overlay(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """A semi-transparent text watermark across the picture and an opaque logo badge in a corner."""
    base = img.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    words = ["SAMPLE", "© studio", "PREVIEW", "stock photo", "DRAFT", "@someone"]
    text = str(words[int(rng.integers(len(words)))])
    size = int(min(base.size) * _uniform(rng, 0.1, 0.18))
    colour = (255, 255, 255, int(rng.integers(110, 170)))
    y = int(base.height * _uniform(rng, 0.3, 0.6))
    draw.text((int(base.width * _uniform(rng, 0.05, 0.3)), y), text, font=_font(size), fill=colour)
    bw, bh = int(base.width * 0.22), int(base.height * 0.12)
    corner = int(rng.integers(4))
    x0 = 8 if corner in (0, 2) else base.width - bw - 8
    y0 = 8 if corner in (0, 1) else base.height - bh - 8
    fill = tuple(int(c) for c in rng.integers(0, 256, 3)) + (255,)
    draw.rounded_rectangle((x0, y0, x0 + bw, y0 + bh), radius=max(2, bh // 4), fill=fill)
    draw.text((x0 + bw // 10, y0 + bh // 5), "LOGO", font=_font(int(bh * 0.55)), fill=(255, 255, 255, 255))
    return _jpeg(Image.alpha_composite(base, layer).convert("RGB"))


def edit_border(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """A solid frame of 5-12 % on each side (or a letterbox to a square)."""
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if rng.random() < 0.5:
        pad = int(max(img.size) * _uniform(rng, 0.05, 0.12))
        out = ImageOps.expand(img, border=pad, fill=colour)
    else:
        side = max(img.size)
        out = Image.new("RGB", (side, side), colour)
        out.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return _jpeg(out)


def edit_mirror(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Left-right mirror."""
    return _jpeg(ImageOps.mirror(img))


def edit_rotate90(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Pixels turned by 90, 180 or 270 degrees (no EXIF tag to undo it)."""
    turn = [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270][int(rng.integers(3))]
    return _jpeg(img.transpose(turn))


def edit_exif_rotated(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Pixels stored turned, with the EXIF orientation tag that shows them upright (as cameras write them)."""
    orientation = int([3, 6, 8][int(rng.integers(3))])
    stored = img.transpose(_STORE_FOR_ORIENTATION[orientation])
    exif = Image.Exif()
    exif[_ORIENTATION_TAG] = orientation
    return EditedImage(stored, "JPEG", {"quality": 90, "exif": exif.tobytes()})


def edit_png(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Lossless conversion to PNG."""
    return EditedImage(img, "PNG", {})


def edit_webp(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Lossy WebP conversion (quality 60-85)."""
    return EditedImage(img, "WEBP", {"quality": int(rng.integers(60, 86))})


def edit_social(img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """What a social network does: a light crop, a resize to ~1080 px or less, JPEG quality 55-75."""
    cropped = _random_crop(img, rng, 0.82, 0.97)
    longest = min(1080, int(max(cropped.size) * _uniform(rng, 0.4, 0.8)))
    scale = longest / max(cropped.size)
    size = (max(16, round(cropped.width * scale)), max(16, round(cropped.height * scale)))
    return _jpeg(cropped.resize(size, Image.Resampling.BILINEAR), int(rng.integers(55, 76)))


EditFn = Callable[[Image.Image, np.random.Generator], EditedImage]

#: Every edit family by name, in the order the benchmark reports them.
EDIT_FAMILIES: dict[str, EditFn] = {
    "resize": edit_resize,
    "recompress": edit_recompress,
    "crop": edit_crop,
    "rotate_small": edit_rotate_small,
    "colour": edit_colour,
    "greyscale": edit_greyscale,
    "blur_noise": edit_blur_noise,
    "overlay": edit_overlay,
    "border": edit_border,
    "mirror": edit_mirror,
    "rotate90": edit_rotate90,
    "exif_rotated": edit_exif_rotated,
    "png": edit_png,
    "webp": edit_webp,
    "social": edit_social,
}


def apply_edit(family: str, img: Image.Image, rng: np.random.Generator) -> EditedImage:
    """Apply the edit family ``family`` to an RGB image."""
    try:
        fn = EDIT_FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown edit family {family!r}; known: {', '.join(EDIT_FAMILIES)}") from None
    return fn(img.convert("RGB"), rng)
