"""The keep suggestion picks the original: evidence measured from real files in temporary folders (JPEG quality,
conversions, frames, colour, look), the order it gives a group, the scan and the cache that carry it, and caches
written before it was measured."""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from dedup_app.core.cache import EmbeddingCache
from dedup_app.core.duplicates import find_groups
from dedup_app.core.embedder import Embedder
from dedup_app.core.files import FileEntry
from dedup_app.core.imageio import ImageInfo, load_for_embedding
from dedup_app.core.keep import (
    KeepEvidence,
    content_box,
    jpeg_grid_quality,
    keep_ranking,
    quality_from_tables,
)
from dedup_app.core.marking import DEFAULT_RULE, RULES, choose_keep
from dedup_app.core.progress import drive
from dedup_app.core.report import suggested
from dedup_app.core.scan import ImageRecord, scan
from tests.conftest import photo

OLD, NEW = 1_500_000_000 * 10**9, 1_700_000_000 * 10**9  # modification times (ns)


def save(img: Image.Image, path: Path, mtime_ns: int = OLD, **options: object) -> Path:
    img.save(path, **options)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def record(path: Path) -> ImageRecord:
    """What the scan records for a file: its facts and evidence from the embedding decode."""
    st = path.stat()
    return ImageRecord(str(path), st.st_size, st.st_mtime_ns, path.name, load_for_embedding(str(path), 160).info)


def kept(*paths: Path) -> str:
    records = [record(p) for p in paths]
    return Path(records[keep_ranking(records)[0]].path).name


@pytest.fixture()
def original(tmp_path: Path, shared_data: Path) -> tuple[Image.Image, Path]:
    """A real photo saved as a JPEG (quality 92): the source of every copy below; the newest file of the folder,
    so its age never decides."""
    img = photo(shared_data, "kodim05.png")
    return img, save(img, tmp_path / "original.jpg", NEW, quality=92)


def decoded(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


# -- the evidence --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quality", [20, 50, 75, 90, 92, 97])
def test_jpeg_quality_is_read_from_the_quantisation_tables(quality: int, shared_data: Path) -> None:
    buf = io.BytesIO()
    photo(shared_data, "kodim05.png").save(buf, "JPEG", quality=quality)
    with Image.open(buf) as im:
        assert quality_from_tables(im.quantization) == pytest.approx(quality, abs=0.5)
    assert quality_from_tables(None) is None and quality_from_tables({0: [1, 2]}) is None


def test_a_jpeg_decoded_and_saved_losslessly_is_recognised_with_its_quality(shared_data: Path) -> None:
    img = photo(shared_data, "kodim05.png")
    assert jpeg_grid_quality(np.asarray(img)) is None  # never compressed
    for quality in (50, 75):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        pixels = np.asarray(Image.open(buf).convert("RGB"))
        assert jpeg_grid_quality(pixels) == pytest.approx(quality, abs=4)
        # a crop starting on the grid, as the scan reads it, finds it too; off the grid of every corner, not
        assert jpeg_grid_quality(pixels[64:400, 128:500], (img.width, img.height)) == pytest.approx(quality, abs=4)
        assert jpeg_grid_quality(pixels[3:-2, 3:-2]) is None


def test_frames_and_letterboxes_are_found_nested_not_in_plain_pictures(shared_data: Path) -> None:
    img = photo(shared_data, "kodim05.png").reduce(2)  # 384 x 256
    framed = ImageOps.expand(img, border=30, fill=(200, 30, 30))
    x0, y0, x1, y1 = content_box(np.asarray(framed))
    assert (x0 * framed.width, y0 * framed.height) == pytest.approx((30, 30), abs=1)
    assert (x1 * framed.width, y1 * framed.height) == pytest.approx((414, 286), abs=1)
    letterbox = Image.new("RGB", (384, 384))
    letterbox.paste(img, (0, 64))
    assert content_box(np.asarray(letterbox)) == pytest.approx((0, 64 / 384, 1, 320 / 384), abs=0.006)
    nested = ImageOps.expand(letterbox, border=20, fill=(255, 255, 255))  # a frame around a letterboxed picture
    x0, y0, x1, y1 = content_box(np.asarray(nested))
    assert (y1 - y0) * nested.height == pytest.approx(256, abs=2) and (x1 - x0) * nested.width == pytest.approx(384)
    assert content_box(np.asarray(img)) == (0, 0, 1, 1)
    assert content_box(np.full((100, 80, 3), 128, np.uint8)) == (0, 0, 1, 1)  # one colour: no frame


# -- the order on real files ------------------------------------------------------------------------------------


def test_original_kept_over_a_framed_copy_with_more_pixels(original: tuple[Image.Image, Path], tmp_path: Path) -> None:
    img, source = original
    copy = save(ImageOps.expand(img, border=60, fill=(255, 255, 255)), tmp_path / "framed.jpg", quality=92)
    assert record(copy).pixels > record(source).pixels
    assert kept(source, copy) == "original.jpg"
    letterboxed = Image.new("RGB", (img.width, img.width))
    letterboxed.paste(img, (0, (img.width - img.height) // 2))
    box = save(letterboxed, tmp_path / "square.jpg", quality=92)
    assert kept(source, box) == "original.jpg"


def test_letterboxed_original_kept_over_edits_that_break_or_frame_its_bars(shared_data: Path, tmp_path: Path) -> None:
    """A source with bars of its own: an edit that disturbs them (noise, a logo over a bar) leaves a copy of the
    same size that looks less framed; files of one size show the same amount of picture, so quality decides. A
    frame added around the letterboxed picture is still found (inside it, the bars)."""
    img = photo(shared_data, "kodim05.png")
    boxed = Image.new("RGB", (img.width, img.height + 128))
    boxed.paste(img, (0, 64))
    source = save(boxed, tmp_path / "original.jpg", NEW, quality=92)
    noise = np.random.default_rng(0).normal(0, 8, (boxed.height, boxed.width, 3))
    noisy = np.clip(np.asarray(boxed, np.float32) + noise, 0, 255).astype(np.uint8)
    copy = save(Image.fromarray(noisy), tmp_path / "noisy.jpg", quality=90)
    logo = boxed.copy()
    logo.paste((255, 200, 0), (20, 10, 220, 120))  # over the top bar and into the picture
    badge = save(logo, tmp_path / "logo.jpg", quality=90)
    framed = save(ImageOps.expand(boxed, border=40, fill=(255, 255, 255)), tmp_path / "framed.jpg", quality=95)
    assert record(source).info.evidence.content == pytest.approx(512 / 640, abs=0.02)  # type: ignore[union-attr]
    assert kept(source, copy) == "original.jpg"
    assert kept(source, badge) == "original.jpg"
    assert kept(source, framed) == "original.jpg"
    assert kept(source, copy, badge, framed) == "original.jpg"


def test_original_kept_over_a_png_converted_from_it(original: tuple[Image.Image, Path], tmp_path: Path) -> None:
    _, source = original
    png = save(decoded(source), tmp_path / "converted.png")
    assert png.stat().st_size > source.stat().st_size
    assert kept(source, png) == "original.jpg"
    # from a JPEG of ordinary quality, the PNG is known for a conversion of it
    lower = save(decoded(source), tmp_path / "q75.jpg", NEW, quality=75)
    png75 = save(decoded(lower), tmp_path / "q75.png")
    evidence = record(png75).info.evidence
    assert evidence is not None and evidence.converted and evidence.quality == pytest.approx(75, abs=4)
    assert kept(lower, png75) == "q75.jpg"


def test_original_kept_over_a_recompressed_copy_of_the_same_size(
    original: tuple[Image.Image, Path], tmp_path: Path
) -> None:
    img, source = original
    small = save(decoded(source), tmp_path / "recompressed.jpg", quality=30)
    assert record(small).pixels == record(source).pixels
    assert kept(source, small) == "original.jpg"


def test_colour_original_kept_over_a_greyscale_copy_of_higher_quality(
    original: tuple[Image.Image, Path], tmp_path: Path
) -> None:
    img, source = original
    grey = save(ImageOps.grayscale(img), tmp_path / "grey.jpg", quality=98)
    grey_rgb = save(ImageOps.grayscale(img).convert("RGB"), tmp_path / "grey-rgb.png")
    assert kept(source, grey) == "original.jpg"
    assert kept(source, grey_rgb) == "original.jpg"
    # a greyscale photo and its copies: no colour anywhere, so greyness says nothing; quality decides
    low = save(ImageOps.grayscale(img), tmp_path / "grey-low.jpg", NEW, quality=60)
    assert kept(grey, low) == "grey.jpg"


def test_pdq_sample_keeps_its_original_whatever_the_file_ages(shared_data: Path, tmp_path: Path) -> None:
    """The issue's example: the PDQ edits share the size and JPEG quality of ``aaa-orig.jpg``; the old rule kept
    ``sharpen-a-lot.jpg`` (most bytes). The look of the group decides, not the file age or the size."""
    folder = shared_data / "neardup" / "pdq_bridge_mods"
    names = ["aaa-orig", "blur-a-little", "blur-a-lot", "high-contrast", "high-saturation", "sharpen-a-little",
             "sharpen-a-lot", "shrink-a-little", "square-512x512"]  # fmt: skip
    rng = np.random.default_rng(0)
    records = []
    for name in names:
        path = tmp_path / f"{name}.jpg"
        path.write_bytes((folder / f"{name}.jpg").read_bytes())
        when = int(rng.integers(10**9, 2 * 10**9)) * 10**9
        os.utime(path, ns=(when, when))
        records.append(record(path))
    assert Path(records[keep_ranking(records)[0]].path).name == "aaa-orig.jpg"
    assert Path(choose_keep(records, "resolution").path).name == "sharpen-a-lot.jpg"  # the rule before


def test_missing_evidence_is_neutral() -> None:
    """Files cached before the evidence was measured: most pixels first (within 3 %), then the format's usual
    fidelity, then the oldest; a file with evidence is compared on what both have."""
    big = ImageRecord("/p/big.jpg", 900, NEW, "a", ImageInfo(4000, 3000, "JPEG"))
    same_old = ImageRecord("/p/old.jpg", 1000, OLD, "b", ImageInfo(4000, 2990, "JPEG"))
    small = ImageRecord("/p/small.jpg", 5000, OLD - 1, "c", ImageInfo(2000, 1500, "JPEG"))
    png = ImageRecord("/p/same.png", 9000, OLD - 2, "d", ImageInfo(4000, 3000, "PNG"))
    images = [big, same_old, small, png]
    assert [images[i].path for i in keep_ranking(images)] == ["/p/same.png", "/p/old.jpg", "/p/big.jpg", "/p/small.jpg"]
    measured = ImageRecord("/p/new.jpg", 900, NEW, "e", ImageInfo(4000, 3000, "JPEG", evidence=KeepEvidence(95.0)))
    assert keep_ranking([same_old, measured]) == [1, 0]
    assert keep_ranking([]) == [] and keep_ranking([big]) == [0]


# -- through the scan and the cache -------------------------------------------------------------------------------


def _copies(img: Image.Image, source: Path, folder: Path) -> None:
    save(ImageOps.expand(img, border=48, fill=(20, 20, 20)), folder / "framed.jpg", quality=95)
    save(decoded(source), folder / "converted.png")
    save(decoded(source), folder / "recompressed.jpg", quality=35)
    save(ImageOps.grayscale(img), folder / "grey.jpg", quality=95)
    save(img.resize((img.width // 2, img.height // 2)), folder / "small.jpg", quality=95)


def test_scan_groups_keep_the_original_by_default(
    original: tuple[Image.Image, Path], tmp_path: Path, embedder: Embedder
) -> None:
    img, source = original
    _copies(img, source, tmp_path)
    with EmbeddingCache(tmp_path / "cache.sqlite3") as cache:
        result = drive(scan([tmp_path], embedder, cache))
    assert all(r.info.evidence is not None for r in result.images)
    groups = drive(find_groups(result))
    group = next(g for g in groups if str(source) in {m.image.path for m in g.members})
    assert len(group.members) >= 4
    assert group.keep.path == str(source) and group.members[0].similarity == 1.0  # members[0]: the representative
    assert DEFAULT_RULE == "best" and next(iter(RULES)) == "best"  # the window's first entry, and its default
    assert suggested([group])[0].keep == str(source)  # the command line's report
    assert Path(choose_keep([m.image for m in group.members], "resolution").path).name == "framed.jpg"


def test_cache_of_the_previous_release_still_scans_and_groups(
    original: tuple[Image.Image, Path], tmp_path: Path, embedder: Embedder
) -> None:
    """A cache written before the keep evidence was stored (no evidence columns) gains the columns, keeps its
    rows and embeddings (nothing is read again), and its files group with a valid suggestion; files read after
    the upgrade carry their evidence."""
    img, source = original
    folder = tmp_path
    _copies(img, source, folder)
    cache_path = tmp_path / "cache.sqlite3"
    with EmbeddingCache(cache_path) as cache:
        first = drive(scan([folder], embedder, cache))
    with sqlite3.connect(cache_path) as conn:  # the previous release's table
        for column in ("quality", "converted", "grey", "content", "sharpness", "contrast", "brightness",
                       "colourfulness"):  # fmt: skip
            conn.execute(f"ALTER TABLE files DROP COLUMN {column}")
    conn.close()
    save(img.crop((0, 0, img.width - 40, img.height - 40)), folder / "cropped.jpg", quality=90)
    with EmbeddingCache(cache_path) as cache:
        again = drive(scan([folder], embedder, cache))
        info = {Path(r.path).name: r.info for r in again.images}
        assert again.stats.cached == len(first.images) and again.stats.decoded == 1 and not again.errors
        assert info["original.jpg"].evidence is None and info["cropped.jpg"].evidence is not None
        groups = drive(find_groups(again))
        assert groups and all(g.keep.path == g.members[0].image.path for g in groups)
        for rule in RULES:
            assert choose_keep([m.image for m in groups[0].members], rule) in [m.image for m in groups[0].members]
    with EmbeddingCache(cache_path) as cache:  # the columns are there now: evidence written and read back
        entry = FileEntry(str(folder / "x.jpg"), 1, 1)
        evidence = KeepEvidence(88.0, False, True, 0.9, 1.0, 2.0, 3.0, 4.0)
        cache.put_file(entry, "h", ImageInfo(4, 3, "JPEG", evidence=evidence))
        cache.commit()
        stored = cache.lookup([entry], None)[entry.path].info
        assert stored is not None and stored.evidence == evidence
