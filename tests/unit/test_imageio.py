"""Image loading: formats, modes, EXIF orientation, reduced JPEG decoding, and every kind of bad file."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup_app.core.imageio import ImageLoadError, decode, load_for_embedding, open_image
from tests.conftest import noise_image


def save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    ("name", "fmt", "kwargs"),
    [
        ("a.jpg", "JPEG", {"quality": 90}),
        ("a.png", "PNG", {}),
        ("a.webp", "WEBP", {"quality": 80}),
        ("a.bmp", "BMP", {}),
        ("a.tif", "TIFF", {}),
        ("a.gif", "GIF", {}),
        ("a.ppm", "PPM", {}),
    ],
)
def test_formats_load_to_rgb_at_target_size(tmp_path: Path, name: str, fmt: str, kwargs: dict) -> None:
    path = save(noise_image(1), tmp_path / name, format=fmt, **kwargs)
    loaded = load_for_embedding(str(path), 96)
    assert loaded.pixels.shape == (96, 96, 3)
    assert loaded.pixels.dtype == np.uint8
    assert (loaded.info.width, loaded.info.height) == (320, 240)
    assert len(loaded.content_hash) == 32
    # the content is the picture, not a blank: compare with the source at the same size
    ref = np.asarray(noise_image(1).resize((96, 96), Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(loaded.pixels.astype(np.float32) - ref).mean() < 25


def test_heic(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    heif = pillow_heif.from_pillow(noise_image(2))
    path = tmp_path / "a.heic"
    heif.save(path, quality=90)
    loaded = load_for_embedding(str(path), 64)
    assert loaded.info.format in ("HEIF", "HEIC")
    assert (loaded.info.width, loaded.info.height) == (320, 240)


def test_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    px = load_for_embedding(str(path), 32).pixels
    assert px[..., 0].mean() > 200 and px[..., 2].mean() < 50


def test_modes_become_rgb(tmp_path: Path) -> None:
    base = noise_image(3)
    cmyk = save(base.convert("CMYK"), tmp_path / "cmyk.jpg", quality=95)
    grey16 = tmp_path / "grey16.png"
    arr16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(arr16).save(grey16)  # mode I;16
    palette = save(base.convert("P", palette=Image.Palette.ADAPTIVE), tmp_path / "pal.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.new("L", base.size, 0))  # fully transparent: must show as white, not black
    transparent = save(rgba, tmp_path / "alpha.png")
    la = save(base.convert("LA"), tmp_path / "la.png")
    bilevel = save(base.convert("1"), tmp_path / "bw.png")
    for path in (cmyk, grey16, palette, transparent, la, bilevel):
        px = load_for_embedding(str(path), 64).pixels
        assert px.shape == (64, 64, 3), path
    grey = load_for_embedding(str(grey16), 64).pixels.astype(float)
    ref = np.asarray(base.convert("L").resize((64, 64), Image.Resampling.BILINEAR), dtype=float)
    assert np.abs(grey[..., 0] - ref).mean() < 3  # 16-bit scaled to 8-bit, not clipped to white
    assert load_for_embedding(str(transparent), 32).pixels.min() == 255


def test_16bit_rgb_tiff(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    arr = (np.asarray(noise_image(4), dtype=np.uint16) * 257)[..., ::-1]  # BGR for OpenCV
    path = tmp_path / "rgb16.tif"
    cv2.imwrite(str(path), np.ascontiguousarray(arr))
    px = load_for_embedding(str(path), 64).pixels.astype(float)
    ref = np.asarray(noise_image(4).resize((64, 64), Image.Resampling.BILINEAR), dtype=float)
    assert np.abs(px - ref).mean() < 6


def test_large_jpeg_is_decoded_reduced(tmp_path: Path) -> None:
    big = noise_image(5, (4000, 3000))
    data = io.BytesIO()
    big.save(data, "JPEG", quality=85)
    img, info = decode(data.getvalue(), target=160)
    assert (info.width, info.height) == (4000, 3000)
    assert img.size == (500, 375)  # 1/8 DCT scaling, still >= 160 on both sides
    full, _ = decode(data.getvalue(), target=None)
    assert full.size == (4000, 3000)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    from model_training.edits import _STORE_FOR_ORIENTATION

    upright = Image.new("RGB", (120, 60), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 30, 30))  # red block top-left
    stored = upright.transpose(_STORE_FOR_ORIENTATION[orientation]) if orientation != 1 else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(stored, tmp_path / f"o{orientation}.jpg", quality=95, exif=exif.tobytes())
    img = open_image(path)
    assert img.size == (120, 60)
    px = np.asarray(img)
    assert px[5, 5, 0] > 200 and px[5, 5, 2] < 60  # red block back at top-left
    assert px[50, 110, 2] > 200
    info = decode(path.read_bytes(), 32)[1]
    assert (info.width, info.height) == (120, 60)


def test_exif_photos_of_shared_data_are_upright(shared_data: Path) -> None:
    folder = shared_data / "neardup" / "exif_rotation"
    sizes = {p.name: decode(p.read_bytes(), 160)[1] for p in sorted(folder.glob("*.jpg"))}
    # orientation 6 and 8 are stored landscape and shown portrait
    assert (sizes["exif-rotn-6.jpg"].width, sizes["exif-rotn-6.jpg"].height) == (3024, 4032)
    assert (sizes["exif-rotn-1.jpg"].width, sizes["exif-rotn-1.jpg"].height) == (4032, 3024)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_bad_files_raise_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    noise_image(6).save(good, quality=90)
    data = good.read_bytes()
    cases = {
        "empty.jpg": (b"", "empty file"),
        "text.png": (b"hello, I am not an image\n" * 10, "not a recognised image"),
        "random.jpg": (np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "not a recognised"),
        "truncated.jpg": (data[: len(data) // 2], "truncated"),
        "bomb.png": (_png_header_only(40_000, 40_000), "decompression bomb"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ImageLoadError, match=reason) as err:
            load_for_embedding(str(path), 64)
        assert not err.value.transient, name


def test_missing_file_is_a_transient_error(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="no such file") as err:
        load_for_embedding(str(tmp_path / "gone.jpg"), 64)
    assert err.value.transient


def test_exif_date_and_camera(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D"
    exif.get_ifd(0x8769)[0x9003] = "2021:06:01 10:11:12"
    path = save(noise_image(7), tmp_path / "cam.jpg", exif=exif.tobytes())
    info = load_for_embedding(str(path), 32).info
    assert info.camera == "Canon EOS 5D"
    assert info.exif_datetime == "2021:06:01 10:11:12"


@pytest.mark.parametrize(
    ("name", "kwargs"), [("p.tif", {}), ("p.gif", {}), ("p.webp", {"lossless": True}), ("p.png", {})]
)
def test_multi_page_files_report_their_page_count(tmp_path: Path, name: str, kwargs: dict) -> None:
    pages = [noise_image(20 + k, (64, 48)) for k in range(3)]
    path = tmp_path / name
    pages[0].save(path, save_all=True, append_images=pages[1:], **kwargs)
    loaded = load_for_embedding(str(path), 32)
    assert loaded.info.frames == 3  # pages 2-3 exist only here: not a copy of an image of page 1 alone
    ref = np.asarray(pages[0].resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(loaded.pixels.astype(np.float32) - ref).mean() < 25  # the picture is the first page
    single = save(pages[0], tmp_path / f"single{path.suffix}", **kwargs)
    assert load_for_embedding(str(single), 32).info.frames == 1


def test_large_16bit_image_is_scaled_without_a_full_size_float_copy(tmp_path: Path) -> None:
    import tracemalloc

    base = noise_image(8, (4000, 3000)).convert("L")
    path = tmp_path / "big16.png"
    Image.fromarray((np.asarray(base, dtype=np.uint16) * 257).astype(np.uint16)).save(path, compress_level=1)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc; Pillow's own image memory is not counted
    try:
        loaded = load_for_embedding(str(path), 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4000 * 3000 * 8 // 2, f"{peak / 1e6:.0f} MB of arrays"  # well under one float64 copy (96 MB)
    ref = np.asarray(base.resize((64, 64), Image.Resampling.BILINEAR), dtype=float)
    assert np.abs(loaded.pixels[..., 0].astype(float) - ref).mean() < 3


def test_float_grey_image_is_stretched_to_its_range(tmp_path: Path) -> None:
    base = np.asarray(noise_image(9).convert("L"), dtype=np.float32)
    path = save(Image.fromarray(base / 1000.0 - 0.1, "F"), tmp_path / "float.tif")
    px = load_for_embedding(str(path), 64).pixels[..., 0].astype(float)
    stretched = (base - base.min()) / (base.max() - base.min()) * 255
    ref = np.asarray(Image.fromarray(stretched.astype(np.uint8)).resize((64, 64), Image.Resampling.BILINEAR))
    assert np.abs(px - ref).mean() < 3


def test_float_rgb_tiff_in_unit_range_is_not_black(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    rgb = np.asarray(noise_image(10), dtype=np.float32) / 255.0
    path = tmp_path / "float_rgb.tif"
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))  # 3 x float32: Pillow cannot open it
    px = load_for_embedding(str(path), 64).pixels.astype(float)
    ref = np.asarray(noise_image(10).resize((64, 64), Image.Resampling.BILINEAR), dtype=float)
    assert np.abs(px - ref).mean() < 6


def _jpeg_with_broken_data(tmp_path: Path) -> Path:
    """A JPEG with bytes flipped in the middle that Pillow reports as a broken data stream."""
    good = io.BytesIO()
    noise_image(11, (640, 480)).save(good, "JPEG", quality=90)
    data = good.getvalue()
    for start in range(len(data) // 20, len(data) // 2, len(data) // 50):
        damaged = bytearray(data)
        damaged[start : start + 256] = bytes(b ^ 0xFF for b in damaged[start : start + 256])
        try:
            Image.open(io.BytesIO(bytes(damaged))).load()
        except OSError as exc:
            if "broken data stream" in str(exc):
                path = tmp_path / "flipped.jpg"
                path.write_bytes(bytes(damaged))
                return path
    pytest.fail("no byte flip made Pillow report a broken data stream")


def test_jpeg_with_broken_data_is_an_error_not_garbage(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = _jpeg_with_broken_data(tmp_path)
    with pytest.raises(ImageLoadError, match=r"damaged image data \(broken data stream") as err:
        load_for_embedding(str(path), 64)
    assert not err.value.transient
    assert "Corrupt JPEG data" not in capfd.readouterr().err  # OpenCV's libjpeg was not asked to decode it
