"""Images for the views, decoded off the UI thread and cached.

``ImageLoader.get(path, size)`` returns a cached ``QPixmap`` at once or ``None``; in the second case it queues the
decode on a thread pool (JPEG DCT scaling makes thumbnails of large photos cheap) and emits ``loaded(path, size)``
when the picture is ready. Views repaint on that signal, so scrolling never waits for a decode. Failed files are
remembered with their reason and not retried.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage, QPixmap

from dedup_app.ui.background import BackgroundCalls

log = logging.getLogger(__name__)


#: Thumbnails up to this size of images smaller than them are enlarged to fit (previews are not).
ENLARGE_UP_TO = 128


def _decode_qimage(path: str, size: int) -> QImage:
    """Runs on a pool thread: a QImage (not a QPixmap, which belongs to the UI thread) at most size x size.

    A thumbnail (``size`` up to :data:`ENLARGE_UP_TO`) of a smaller image is enlarged to fit, pixels as squares: a
    32 x 32 dataset image or an icon is then seen, its row is as high as a photo's, and rows do not shrink under the
    pointer when its thumbnail arrives (a view of a million 8 x 8 files painted five times the rows per page)."""
    from PIL import Image

    from dedup_app.core.imageio import decode, read_bytes

    img, _info = decode(read_bytes(path), target=size)
    img.thumbnail((size, size))
    if size <= ENLARGE_UP_TO and max(img.size) < size:
        scale = size / max(img.size)
        fit = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(fit, Image.Resampling.NEAREST)
    return QImage(img.tobytes(), img.width, img.height, 3 * img.width, QImage.Format.Format_RGB888).copy()


class ImageLoader(QObject):
    """Asynchronous, cached image loading for thumbnails (small) and previews (large)."""

    loaded = Signal(str, int)  # path, size
    failed = Signal(str, int, str)  # path, size, reason

    def __init__(self, max_items: int = 2000, threads: int = 2, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.calls = BackgroundCalls(threads, self)
        self._cache: OrderedDict[tuple[str, int], QPixmap] = OrderedDict()
        self._images: dict[tuple[str, int], QImage] = {}
        self._pending: set[tuple[str, int]] = set()
        self._errors: dict[str, str] = {}
        self.max_items = max_items

    def get(self, path: str, size: int) -> QPixmap | None:
        """The pixmap if cached; otherwise ``None`` and a decode is queued (once)."""
        key = (path, size)
        pix = self._cache.get(key)
        if pix is not None:
            self._cache.move_to_end(key)
            return pix
        if key not in self._pending and path not in self._errors:
            self._pending.add(key)
            self.calls.submit(lambda: _decode_qimage(path, size), lambda img, err: self._on_done(path, size, img, err))
        return None

    def image(self, path: str, size: int) -> QImage | None:
        """The decoded QImage behind a cached pixmap (for pixel work such as the difference overlay)."""
        return self._images.get((path, size))

    def error(self, path: str) -> str | None:
        """Why ``path`` could not be shown, if it failed."""
        return self._errors.get(path)

    @property
    def busy(self) -> bool:
        """Whether decodes are queued or running."""
        return bool(self._pending)

    def clear(self) -> None:
        """Drop every cached picture (after files were removed or the scan changed)."""
        self._cache.clear()
        self._images.clear()
        self._errors.clear()

    def shutdown(self) -> None:
        """Drop queued decodes and wait for running ones (at exit)."""
        self.calls.shutdown(5000)

    def _on_done(self, path: str, size: int, image: QImage | None, error: BaseException | None) -> None:
        from dedup_app.core.imageio import ImageLoadError

        key = (path, size)
        self._pending.discard(key)
        if error is not None or image is None:
            if not isinstance(error, ImageLoadError):
                log.error("loading %s failed", path, exc_info=error)
            reason = str(error) if isinstance(error, ImageLoadError) else f"unexpected error: {error}"
            self._errors[path] = reason
            self.failed.emit(path, size, reason)
            return
        self._cache[key] = QPixmap.fromImage(image)
        if size > 256:
            self._images[key] = image
        while len(self._cache) > self.max_items:
            old, _ = self._cache.popitem(last=False)
            self._images.pop(old, None)
        self.loaded.emit(path, size)
