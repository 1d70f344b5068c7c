"""Side-by-side comparison of two images: linked zoom and pan, swap, a differences overlay, and file facts."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
from PySide6.QtCore import QPoint, QRectF, Qt, Signal
from PySide6.QtGui import QImage, QKeySequence, QPainter, QPixmap, QWheelEvent
from PySide6.QtWidgets import (
    QFormLayout,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from dedup_app.controllers.similar import probability_text
from dedup_app.core.calibration import Calibration
from dedup_app.core.duplicates import GroupMember
from dedup_app.core.units import format_bytes
from dedup_app.ui.background import BackgroundCalls
from dedup_app.ui.thumbnails import ImageLoader

PREVIEW = 1600  # longest side of the pictures shown in the compare view


def qimage_to_rgb(image: QImage) -> np.ndarray:
    """A QImage as an H x W x 3 uint8 RGB array (copied)."""
    img = image.convertToFormat(QImage.Format.Format_RGB888)
    ptr = img.constBits()
    arr = np.frombuffer(ptr, dtype=np.uint8, count=img.sizeInBytes()).reshape(img.height(), img.bytesPerLine())
    return arr[:, : img.width() * 3].reshape(img.height(), img.width(), 3).copy()


class ImageView(QGraphicsView):
    """One zoomable, pannable picture. Two views share zoom and scroll through :meth:`link`."""

    zoomed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.item = QGraphicsPixmapItem()
        self.item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.overlay = QGraphicsPixmapItem()
        self.overlay.setZValue(1)
        self.scene().addItem(self.item)
        self.scene().addItem(self.overlay)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.placeholder = self.scene().addText("")
        self._fit = True

    def show_pixmap(self, pixmap: QPixmap | None, frame: QRectF, message: str = "") -> None:
        """Show ``pixmap`` fitted (aspect kept, centred) into ``frame``, the scene rect both views share."""
        self.scene().setSceneRect(frame)
        self.placeholder.setPlainText(message)
        self.placeholder.setPos(frame.center().x() - 60, frame.center().y())
        if pixmap is None or pixmap.isNull():
            self.item.setPixmap(QPixmap())
            return
        self.item.setPixmap(pixmap)
        scale = min(frame.width() / pixmap.width(), frame.height() / pixmap.height())
        self.item.setScale(scale)
        self.item.setPos(
            frame.x() + (frame.width() - pixmap.width() * scale) / 2,
            frame.y() + (frame.height() - pixmap.height() * scale) / 2,
        )
        if self._fit:
            self.fit()

    def set_overlay(self, pixmap: QPixmap | None, frame: QRectF) -> None:
        if pixmap is None:
            self.overlay.setPixmap(QPixmap())
            return
        self.overlay.setPixmap(pixmap)
        self.overlay.setScale(frame.width() / pixmap.width())
        self.overlay.setPos(frame.topLeft())

    def fit(self) -> None:
        self._fit = True
        self.fitInView(self.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def zoom(self, factor: float) -> None:
        self._fit = False
        self.scale(factor, factor)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        factor = 1.25 if event.angleDelta().y() > 0 else 0.8
        self.zoom(factor)
        self.zoomed.emit(factor)

    def resizeEvent(self, event) -> None:  # type: ignore[no-untyped-def]  # noqa: N802
        super().resizeEvent(event)
        if self._fit:
            self.fit()

    def link(self, other: ImageView) -> None:
        """Zoom and scroll ``other`` with this view, and this view with ``other``."""
        self.zoomed.connect(other.zoom)
        other.zoomed.connect(self.zoom)
        for mine, theirs in (
            (self.horizontalScrollBar(), other.horizontalScrollBar()),
            (self.verticalScrollBar(), other.verticalScrollBar()),
        ):
            mine.valueChanged.connect(theirs.setValue)
            theirs.valueChanged.connect(mine.setValue)


def difference_overlay(a: QImage, b: QImage) -> tuple[QImage, float, str]:
    """Runs on a pool thread: B aligned onto A, the differences as a red overlay in A's frame, the changed
    fraction and the turn/mirror that was undone."""
    from dedup_app.core.compare import difference

    diff = difference(qimage_to_rgb(a), qimage_to_rgb(b))
    h, w = diff.heat.shape
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = 40
    rgba[..., 3] = (np.where(diff.mask, 0.35 + 0.5 * diff.heat, 0.0) * 255).astype(np.uint8)
    overlay = QImage(rgba.tobytes(), w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
    return overlay, diff.changed_fraction, diff.transform


class CompareWidget(QWidget):
    """Two images side by side with their facts; ``label_requested`` asks the window to store a pair label,
    ``find_similar_requested`` to find the files most similar to one side (its right-click menu)."""

    label_requested = Signal(str)  # "duplicate" | "not_duplicate"
    find_similar_requested = Signal(str)  # path

    def __init__(self, loader: ImageLoader, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loader = loader
        self.a: GroupMember | None = None
        self.similarity: float | None = None  # of the pair shown
        self.calibration: Calibration | None = None  # the model's, for the probability of a copy
        self.b: GroupMember | None = None
        self._request = 0
        self._calls = BackgroundCalls(1, self)

        self.view_a, self.view_b = ImageView(), ImageView()
        self.view_a.link(self.view_b)
        self.info_a, self.info_b = QFormLayout(), QFormLayout()
        views = QHBoxLayout()
        for view, info, title in ((self.view_a, self.info_a, "A"), (self.view_b, self.info_b, "B")):
            col = QVBoxLayout()
            head = QLabel(f"<b>{title}</b>")
            col.addWidget(head)
            col.addWidget(view, 1)
            box = QWidget()
            box.setLayout(info)
            col.addWidget(box)
            views.addLayout(col, 1)

        self.swap_button = QPushButton("Swap")
        self.swap_button.setToolTip("Swap A and B (S)")
        self.swap_button.setShortcut(QKeySequence("S"))
        self.diff_button = QPushButton("Differences")
        self.diff_button.setCheckable(True)
        self.diff_button.setToolTip("Align B onto A and highlight on A where they differ (X)")
        self.diff_button.setShortcut(QKeySequence("X"))
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Fit both pictures in view (F); scroll to zoom, drag to pan")
        self.fit_button.setShortcut(QKeySequence("F"))
        self.dup_button = QPushButton("Duplicate")
        self.dup_button.setToolTip("Label A and B as duplicates (D); Shift+D labels the whole group")
        self.notdup_button = QPushButton("Not duplicate")
        self.notdup_button.setToolTip("Label A and B as not duplicates (N): they are never grouped again")
        self.diff_label = QLabel("")
        # a long message ("could not compare: ...") must not widen the window: it is cut, the tooltip has it all
        self.diff_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        buttons = QHBoxLayout()
        for w in (self.swap_button, self.fit_button, self.diff_button):
            buttons.addWidget(w)
        buttons.addWidget(self.diff_label, 1)  # takes the free width, never asks for more
        buttons.addWidget(self.dup_button)
        buttons.addWidget(self.notdup_button)

        layout = QVBoxLayout(self)
        layout.addLayout(views, 1)
        layout.addLayout(buttons)

        self.swap_button.clicked.connect(self.swap)
        self.fit_button.clicked.connect(self._fit)
        self.diff_button.toggled.connect(lambda _on: self._refresh_overlay())
        self.dup_button.clicked.connect(lambda: self.label_requested.emit("duplicate"))
        self.notdup_button.clicked.connect(lambda: self.label_requested.emit("not_duplicate"))
        loader.loaded.connect(self._loaded)
        for view in (self.view_a, self.view_b):
            view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            view.customContextMenuRequested.connect(lambda pos, v=view: self._show_menu(v, pos))
        self.show_pair(None, None)

    def file_menu(self, view: ImageView) -> QMenu | None:
        """The right-click menu of the picture in ``view`` (None when that side is empty)."""
        member = self.a if view is self.view_a else self.b
        if member is None:
            return None
        path = member.image.path
        menu = QMenu(self)
        act = menu.addAction(f"Find similar to {os.path.basename(path)}")
        act.setToolTip("Find the scanned images most similar to this one")
        act.triggered.connect(lambda: self.find_similar_requested.emit(path))
        return menu

    def _show_menu(self, view: ImageView, pos: QPoint) -> None:
        menu = self.file_menu(view)
        if menu is not None:
            menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            menu.popup(view.viewport().mapToGlobal(pos))

    def show_pair(
        self, a: GroupMember | None, b: GroupMember | None, similarity: float | None = None,
        calibration: Calibration | None = None,
    ) -> None:  # fmt: skip
        """Compare ``a`` (left) with ``b`` (right); ``None`` clears a side. ``similarity`` is theirs (shown on both
        sides); without it each side shows its similarity to its group's representative. With the model's
        ``calibration``, the probability of a copy is shown next to the similarity."""
        self.a, self.b = a, b
        self.similarity = similarity
        self.calibration = calibration
        enabled = a is not None and b is not None
        for w in (self.swap_button, self.diff_button, self.dup_button, self.notdup_button):
            w.setEnabled(enabled)
        self._refresh()

    def _say(self, text: str) -> None:
        self.diff_label.setText(text)
        self.diff_label.setToolTip(text)

    def swap(self) -> None:
        self.show_pair(self.b, self.a, self.similarity, self.calibration)

    def _fit(self) -> None:
        self.view_a.fit()
        self.view_b.fit()

    def _frame(self) -> QRectF:
        if self.a is None:
            return QRectF(0, 0, 400, 300)
        info = self.a.image.info
        scale = PREVIEW / max(info.width, info.height, 1)
        return QRectF(0, 0, max(1.0, info.width * scale), max(1.0, info.height * scale))

    def _refresh(self) -> None:
        frame = self._frame()
        for member, view, form in ((self.a, self.view_a, self.info_a), (self.b, self.view_b, self.info_b)):
            _fill_info(form, member, self.similarity, self.calibration)
            if member is None:
                view.show_pixmap(None, frame, "")
                continue
            path = member.image.path
            pixmap = self.loader.get(path, PREVIEW)
            message = "" if pixmap else (self.loader.error(path) or "loading...")
            view.show_pixmap(pixmap, frame, message)
        self._refresh_overlay()

    def _loaded(self, path: str, size: int) -> None:
        if size == PREVIEW and any(m is not None and m.image.path == path for m in (self.a, self.b)):
            self._refresh()

    def _refresh_overlay(self) -> None:
        self._request += 1
        frame = self._frame()
        for view in (self.view_a, self.view_b):
            view.set_overlay(None, frame)
        self._say("")
        if not self.diff_button.isChecked() or self.a is None or self.b is None:
            return
        ia = self.loader.image(self.a.image.path, PREVIEW)
        ib = self.loader.image(self.b.image.path, PREVIEW)
        if ia is None or ib is None:
            self._say("waiting for the pictures...")
            return
        self._say("aligning...")
        request = self._request
        self._calls.submit(lambda: difference_overlay(ia, ib), lambda out, err: self._diff_done(request, out, err))

    def _diff_done(self, request: int, out: tuple[QImage, float, str] | None, error: BaseException | None) -> None:
        if request != self._request:
            return  # the user moved on
        if error is not None or out is None:  # the overlay is optional: report, never crash
            self._say(f"could not compare: {error}")
            return
        overlay, fraction, transform = out
        # The difference is computed in A's frame (B aligned onto A), so it is drawn over A only.
        self.view_a.set_overlay(QPixmap.fromImage(overlay), self._frame())
        turned = "" if transform == "identity" else f", B {transform}"
        self._say(f"{fraction:.1%} differs{turned}")

    def shutdown(self) -> None:
        self._calls.shutdown(5000)


def similarity_text(similarity: float, calibration: Calibration | None) -> str:
    """``0.903``, or with a calibration ``0.903 (copy: 99.5 %)``."""
    if calibration is None:
        return f"{similarity:.3f}"
    return f"{similarity:.3f} (copy: {probability_text(calibration.probability(min(similarity, 1.0)))})"


def _fill_info(
    form: QFormLayout, member: GroupMember | None, similarity: float | None = None,
    calibration: Calibration | None = None,
) -> None:  # fmt: skip
    while form.rowCount():
        form.removeRow(0)
    if member is None:
        return
    image = member.image
    info = image.info
    name = QLabel(os.path.basename(image.path))
    name.setToolTip(image.path)
    name.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    folder = QLabel(os.path.dirname(image.path))
    folder.setWordWrap(True)
    folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    modified = dt.datetime.fromtimestamp(image.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    rows = [
        ("Name", name),
        ("Folder", folder),
        ("Dimensions", QLabel(f"{info.width} x {info.height} ({info.format})")),
        ("File size", QLabel(format_bytes(image.size))),
        ("Modified", QLabel(modified)),
        ("Taken", QLabel(info.exif_datetime or "—")),
        ("Camera", QLabel(info.camera or "—")),
        ("Similarity", QLabel(similarity_text(member.similarity if similarity is None else similarity, calibration))),
    ]
    for label, widget in rows:
        form.addRow(label, widget)
