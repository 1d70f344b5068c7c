"""Randomly composed, strong edits for self-supervised training of the duplicate model.

The benchmark's edit families (:mod:`model_training.edits`) are one edit each, of moderate strength. Copies in the
wild stack edits and go further: a meme's text bands on a recoloured crop, a screenshot of a photo inside an app's
window, a collage tile, a photo of a screen. :func:`random_copy` draws a chain from five stages, each applied with
its own probability, then a file format:

1. geometry: a crop keeping 40-95 % of the area, a mild perspective warp, a mirror, a quarter turn;
2. colour: greyscale, sepia, strong grading (hue, saturation, gamma, per-channel gain), posterisation;
3. overlays: text of any size and opacity, logo badges, meme bands with text;
4. framing: borders and letterboxing, a screenshot inside a window frame, a collage tile beside another photo;
5. degradation: blur, noise, a chain of resizes and JPEG recompressions;

then JPEG (quality 30-95), WebP or PNG. The recipe follows SSCD (Pizzi et al., "A Self-Supervised Descriptor for
Image Copy Detection", CVPR 2022), whose augmentations stack strong photometric, geometric and overlay edits (text,
emoji) so that the descriptor learns copies as the ISC2021 benchmark makes them; we add the framings desktop users
meet (screenshots, collages, letterboxing). Everything is deterministic given the ``numpy`` generator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from model_training.edits import EditedImage, _font

_WORDS = ["SAMPLE", "© studio", "PREVIEW", "stock", "when the code finally works", "LOL", "@photo_daily",
          "Summer 2019", "DRAFT", "not for sale", "me irl", "Nailed it", "www.example.com", "#travel",
          "Breaking news", "CONFIDENTIAL", "best day ever", "1/12"]  # fmt: skip


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _colour(rng: np.random.Generator, alpha: int | None = None) -> tuple[int, ...]:
    rgb = tuple(int(c) for c in rng.integers(0, 256, 3))
    return rgb if alpha is None else (*rgb, alpha)


# -- 1. geometry --------------------------------------------------------------------------------------------------


def crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep 40-95 % of the area, aspect ratio changed by up to 1.5x."""
    area = _u(rng, 0.4, 0.95)
    aspect = float(np.exp(rng.uniform(np.log(1 / 1.5), np.log(1.5))))
    fw = min(1.0, np.sqrt(area * aspect))
    fh = min(1.0, area / fw)
    w, h = max(16, round(img.width * fw)), max(16, round(img.height * fh))
    x, y = int(rng.integers(0, img.width - w + 1)), int(rng.integers(0, img.height - h + 1))
    return img.crop((x, y, x + w, y + h))


def perspective(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A re-photography-like warp: each corner moved by up to 8 % of the size, the result cropped to its inside."""
    w, h = img.size
    d = 0.08
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    dst = [(x + _u(rng, -d, d) * w, y + _u(rng, -d, d) * h) for x, y in src]
    # coefficients mapping output to input (PIL's convention)
    matrix = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        matrix.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        matrix.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(matrix, float), np.array(src, float).ravel())
    warped = img.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC)
    m = int(d * min(w, h))
    return warped.crop((m, m, w - m, h - m))


def mirror(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.mirror(img)


def quarter_turn(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    turns = [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270]
    return img.transpose(turns[int(rng.integers(3))])


# -- 2. colour ----------------------------------------------------------------------------------------------------


def greyscale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.grayscale(img).convert("RGB")


def sepia(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    grey = np.asarray(ImageOps.grayscale(img), np.float32)[..., None]
    tone = np.array([1.07, 0.74, 0.43], np.float32) * _u(rng, 0.9, 1.1)
    return Image.fromarray(np.clip(grey * tone, 0, 255).astype(np.uint8))


def grade(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Strong grading: hue shift up to +-60 of 256, saturation 0.2-2, gamma 0.6-1.6, per-channel gains 0.7-1.3."""
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.integers(-60, 61))) % 256
    out = ImageEnhance.Color(Image.fromarray(hsv, "HSV").convert("RGB")).enhance(_u(rng, 0.2, 2.0))
    arr = np.asarray(out, np.float32) / 255.0
    arr = arr ** _u(rng, 0.6, 1.6) * rng.uniform(0.7, 1.3, 3).astype(np.float32)
    out = Image.fromarray(np.clip(arr * 255, 0, 255).astype(np.uint8))
    return ImageEnhance.Contrast(out).enhance(_u(rng, 0.6, 1.5))


def posterise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.posterize(img, int(rng.integers(3, 6)))


# -- 3. overlays --------------------------------------------------------------------------------------------------


def text(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """1-3 lines of text, 4-30 % of the short side high, opacity 30-100 %, anywhere."""
    base = img.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(1, 4))):
        size = int(min(base.size) * _u(rng, 0.04, 0.3))
        words = _WORDS[int(rng.integers(len(_WORDS)))]
        xy = (int(base.width * _u(rng, -0.1, 0.7)), int(base.height * _u(rng, 0.0, 0.85)))
        fill = _colour(rng, int(rng.integers(77, 256)))
        stroke = int(rng.integers(0, 3)) if size > 14 else 0
        draw.text(xy, words, font=_font(size), fill=fill, stroke_width=stroke, stroke_fill=(0, 0, 0, fill[3]))
    return Image.alpha_composite(base, layer).convert("RGB")


def logo(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A badge (rounded box or ellipse with letters) of 5-30 % of the width, opacity 40-100 %."""
    base = img.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    bw = max(8, int(base.width * _u(rng, 0.05, 0.3)))
    bh = max(6, int(bw * _u(rng, 0.3, 1.0)))
    x0, y0 = int(rng.integers(0, max(1, base.width - bw))), int(rng.integers(0, max(1, base.height - bh)))
    alpha = int(rng.integers(102, 256))
    box = (x0, y0, x0 + bw, y0 + bh)
    if rng.random() < 0.5:
        draw.rounded_rectangle(box, radius=max(2, bh // 4), fill=_colour(rng, alpha))
    else:
        draw.ellipse(box, fill=_colour(rng, alpha))
    draw.text((x0 + bw // 8, y0 + bh // 5), "LOGO"[: int(rng.integers(1, 5))], font=_font(int(bh * 0.5)),
              fill=(255, 255, 255, alpha))  # fmt: skip
    return Image.alpha_composite(base, layer).convert("RGB")


def meme(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """White or black bands above and/or below (10-25 % of the height each) with a caption."""
    top = rng.random() < 0.7
    bottom = not top or rng.random() < 0.5
    band = int(img.height * _u(rng, 0.1, 0.25))
    bg = (255, 255, 255) if rng.random() < 0.6 else (0, 0, 0)
    fg = (0, 0, 0) if bg == (255, 255, 255) else (255, 255, 255)
    out = Image.new("RGB", (img.width, img.height + band * (top + bottom)), bg)
    out.paste(img, (0, band if top else 0))
    draw = ImageDraw.Draw(out)
    size = max(8, int(band * 0.45))
    for y0 in ([0] if top else []) + ([out.height - band] if bottom else []):
        draw.text((int(img.width * 0.05), y0 + band // 4), _WORDS[int(rng.integers(len(_WORDS)))],
                  font=_font(size), fill=fg)  # fmt: skip
    return out


# -- 4. framing ---------------------------------------------------------------------------------------------------


def border(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A frame of 3-25 % (uniform colour or the photo blurred), or letterboxing to another aspect ratio."""
    if rng.random() < 0.5:
        pad = int(max(img.size) * _u(rng, 0.03, 0.25))
        size = (img.width + 2 * pad, img.height + 2 * pad)
    else:
        side = max(img.size)
        ratio = float(rng.choice([1.0, 16 / 9, 9 / 16, 4 / 5]))
        size = (int(side * min(1.0, ratio)) or 1, int(side * min(1.0, 1 / ratio)) or 1)
        size = (max(size[0], img.width), max(size[1], img.height))
    if rng.random() < 0.3:
        canvas = img.resize(size).filter(ImageFilter.GaussianBlur(max(2, min(size) // 20)))
    else:
        canvas = Image.new("RGB", size, _colour(rng))
    canvas.paste(img, ((size[0] - img.width) // 2, (size[1] - img.height) // 2))
    return canvas


def screenshot(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The photo shown at 50-85 % of a window with a title bar, a side panel and some text: a screen capture."""
    scale = _u(rng, 0.5, 0.85)
    w, h = int(img.width / scale), int(img.height / scale)
    theme = (240, 240, 240) if rng.random() < 0.6 else (40, 42, 48)
    ink = (30, 30, 30) if theme[0] > 128 else (220, 220, 220)
    out = Image.new("RGB", (w, h), theme)
    draw = ImageDraw.Draw(out)
    bar = max(6, int(h * 0.06))
    draw.rectangle((0, 0, w, bar), fill=tuple(max(0, c - 30) for c in theme))
    draw.text((8, bar // 5), "Photo Viewer - IMG_2041.jpg", font=_font(max(6, int(bar * 0.6))), fill=ink)
    side = int(w * _u(rng, 0.0, 0.2))
    for k in range(int(rng.integers(3, 9))):
        y = bar + 6 + k * max(8, bar)
        draw.text((6, y), _WORDS[int(rng.integers(len(_WORDS)))][:12], font=_font(max(6, bar // 2)), fill=ink)
    room_w, room_h = w - side, h - bar
    x0 = side + max(0, (room_w - img.width) // 2)
    y0 = bar + max(0, (room_h - img.height) // 2)
    out.paste(img, (x0, y0))
    return out


def collage(img: Image.Image, rng: np.random.Generator, other: Image.Image | None = None) -> Image.Image:
    """The photo as the larger tile (55-75 % of the width or height) of a two-tile collage."""
    if other is None:
        other = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(img.size)
    share = _u(rng, 0.55, 0.75)
    gap = int(rng.integers(0, 12))
    if rng.random() < 0.5:  # side by side
        total_w = int(img.width / share)
        out = Image.new("RGB", (total_w + gap, img.height), _colour(rng))
        rest = other.resize((max(8, total_w - img.width), img.height))
        first = rng.random() < 0.5
        out.paste(img, (0, 0) if first else (rest.width + gap, 0))
        out.paste(rest, (img.width + gap, 0) if first else (0, 0))
    else:
        total_h = int(img.height / share)
        out = Image.new("RGB", (img.width, total_h + gap), _colour(rng))
        rest = other.resize((img.width, max(8, total_h - img.height)))
        first = rng.random() < 0.5
        out.paste(img, (0, 0) if first else (0, rest.height + gap))
        out.paste(rest, (0, img.height + gap) if first else (0, 0))
    return out


# -- 5. degradation -----------------------------------------------------------------------------------------------


def blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(_u(rng, 0.8, 3.0)))


def noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, np.float32)
    arr = arr + rng.normal(0.0, _u(rng, 4.0, 20.0), arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def recompress_chain(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """2-4 rounds of a resize (40-100 %) and a JPEG save at quality 25-90."""
    for _ in range(int(rng.integers(2, 5))):
        s = _u(rng, 0.4, 1.0)
        img = img.resize((max(16, round(img.width * s)), max(16, round(img.height * s))), Image.Resampling.BILINEAR)
        img = EditedImage(img, "JPEG", {"quality": int(rng.integers(25, 91))}).decoded()
    return img


Stage = list[tuple[float, Callable[..., Image.Image]]]
#: (probability, edit) per stage; at most one edit of a stage is applied, tried in order.
STAGES: list[tuple[float, Stage]] = [
    (0.75, [(0.55, crop), (0.2, perspective), (0.25, mirror), (0.2, quarter_turn)]),
    (0.5, [(0.2, greyscale), (0.12, sepia), (0.55, grade), (0.13, posterise)]),
    (0.45, [(0.55, text), (0.25, logo), (0.2, meme)]),
    (0.35, [(0.45, border), (0.3, screenshot), (0.25, collage)]),
    (0.5, [(0.35, blur), (0.3, noise), (0.35, recompress_chain)]),
]


def random_copy(img: Image.Image, rng: np.random.Generator, other: Image.Image | None = None) -> EditedImage:
    """A copy of ``img`` with a random chain of strong edits (see the module's text), in a random file format.
    ``other`` is a different photo for collages. Always changes something (an empty chain falls back to a crop)."""
    out = img.convert("RGB")
    applied = 0
    for p_stage, edits in STAGES:
        if rng.random() >= p_stage:
            continue
        weights = np.array([w for w, _ in edits])
        _, fn = edits[int(rng.choice(len(edits), p=weights / weights.sum()))]
        out = fn(out, rng, other) if fn is collage else fn(out, rng)
        applied += 1
    if applied == 0:
        out = crop(out, rng)
    r = rng.random()
    if r < 0.7:
        return EditedImage(out, "JPEG", {"quality": int(rng.integers(30, 96))})
    if r < 0.85:
        return EditedImage(out, "WEBP", {"quality": int(rng.integers(40, 90))})
    return EditedImage(out, "PNG", {})
