"""Thumbnails: decoded off the UI thread, at most the size asked for; small images are enlarged to the thumbnail size
(rows keep a photo's height, a 32 x 32 dataset image is seen), previews never are."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dedup_app.ui.models import THUMB
from dedup_app.ui.thumbnails import ImageLoader


def pixmap(qtbot, loader: ImageLoader, path: Path, size: int):  # type: ignore[no-untyped-def]
    if loader.get(str(path), size) is None:
        with qtbot.waitSignal(loader.loaded, timeout=10_000):
            pass
    return loader.get(str(path), size)


def test_small_images_are_enlarged_for_thumbnails_only(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tiny, wide = tmp_path / "tiny.png", tmp_path / "wide.png"
    checker = np.kron(np.indices((4, 4)).sum(axis=0) % 2, np.ones((2, 2))).astype(np.uint8) * 255  # 8 x 8, 2-px cells
    cv2.imwrite(str(tiny), np.dstack([checker] * 3))
    cv2.imwrite(str(wide), np.full((100, 400, 3), 90, np.uint8))
    loader = ImageLoader(parent=None)
    thumb = pixmap(qtbot, loader, tiny, THUMB)
    assert (thumb.width(), thumb.height()) == (THUMB, THUMB)
    image = thumb.toImage()
    cell = THUMB // 4  # pixels stay squares: no blur between a black and a white cell
    colours = {image.pixelColor(x, y).red() for x in range(0, THUMB, 3) for y in range(0, THUMB, 3)}
    assert colours == {0, 255} and image.pixelColor(0, 0).red() != image.pixelColor(cell, 0).red()
    assert (pixmap(qtbot, loader, wide, THUMB).width(), pixmap(qtbot, loader, wide, THUMB).height()) == (THUMB, 16)
    preview = pixmap(qtbot, loader, tiny, 600)  # a preview is shown as it is (the compare pane fits it)
    assert (preview.width(), preview.height()) == (8, 8)
