"""The "Find similar" field under the sources: drop an image on it, click it to choose one, or paste one.

The field only says what the user gave it (a file, an image without a file, or a request to browse or paste); the
window runs the search (``MainWindow.find_similar``) as a job and shows the result as a group at the top of the
duplicates view.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import (
    QContextMenuEvent,
    QDragEnterEvent,
    QDragLeaveEvent,
    QDropEvent,
    QIcon,
    QImage,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPalette,
)
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QMenu, QStyle, QVBoxLayout, QWidget

HINT = "Drop an image here, click to choose one, or paste one (Ctrl+Shift+V)"


class FindSimilarField(QFrame):
    """A drop target that asks for the files most similar to one image.

    Signals: ``file_requested(path)`` for a dropped file (the first local one), ``image_requested(QImage)`` for
    dropped image data without a file, ``browse_requested()`` on a click (or Enter / Space while it has the focus),
    ``paste_requested()`` for Ctrl+V while it has the focus or **Paste image** in its menu.
    """

    file_requested = Signal(str)
    image_requested = Signal(QImage)
    browse_requested = Signal()
    paste_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("find-similar-field")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFrameShadow(QFrame.Shadow.Sunken)
        self.setAcceptDrops(True)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(QPalette.ColorRole.Base)  # looks like a field to type or drop into
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setToolTip(
            "Find the scanned images most similar to one image (Ctrl+F).\n"
            "Drop an image file or a picture here, click to choose a file, or copy an image and press Ctrl+Shift+V.\n"
            "The results open at the top of the groups, most similar first; the image itself is never marked."
        )
        icon = QIcon.fromTheme("edit-find")
        if icon.isNull():
            icon = self.style().standardIcon(QStyle.StandardPixmap.SP_FileDialogContentsView)
        self.icon = QLabel()
        self.icon.setPixmap(icon.pixmap(24, 24))
        self.icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.title = QLabel("<b>Find similar</b>")
        self.hint = QLabel(f"<small>{HINT}</small>")
        self.hint.setWordWrap(True)
        self.query = QLabel()
        self.query.setWordWrap(True)
        self.query.hide()
        text = QVBoxLayout()
        text.setSpacing(2)
        text.addWidget(self.title)
        text.addWidget(self.hint)
        text.addWidget(self.query)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.addWidget(self.icon)
        layout.addLayout(text, 1)
        self._pressed = False

    def show_query(self, text: str) -> None:
        """Say what the result on screen was found for ('' hides the line)."""
        self.query.setText(f"<small>{text}</small>" if text else "")
        self.query.setToolTip(text)
        self.query.setVisible(bool(text))

    # -- drop -----------------------------------------------------------------------------------------------------

    def _highlight(self, on: bool) -> None:
        self.setBackgroundRole(QPalette.ColorRole.AlternateBase if on else QPalette.ColorRole.Base)
        self.setFrameShadow(QFrame.Shadow.Raised if on else QFrame.Shadow.Sunken)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        mime = event.mimeData()
        if (mime.hasUrls() and any(u.isLocalFile() for u in mime.urls())) or mime.hasImage():
            event.acceptProposedAction()
            self._highlight(True)
        else:
            event.ignore()

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:  # noqa: N802
        self._highlight(False)
        super().dragLeaveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        self._highlight(False)
        mime = event.mimeData()
        files = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []
        if files:
            event.acceptProposedAction()
            self.file_requested.emit(files[0])
            return
        image = QImage(mime.imageData()) if mime.hasImage() else QImage()
        if not image.isNull():
            event.acceptProposedAction()
            self.image_requested.emit(image)
            return
        event.ignore()

    # -- click, keys, menu ----------------------------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self._pressed = event.button() == Qt.MouseButton.LeftButton
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        inside = self.rect().contains(event.position().toPoint())
        if self._pressed and event.button() == Qt.MouseButton.LeftButton and inside:
            self.browse_requested.emit()
        self._pressed = False
        super().mouseReleaseEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.matches(QKeySequence.StandardKey.Paste):
            self.paste_requested.emit()
        elif event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space) and not event.modifiers():
            self.browse_requested.emit()
        else:
            super().keyPressEvent(event)

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:  # noqa: N802
        menu = QMenu(self)
        menu.addAction("Choose an image…", self.browse_requested.emit)
        menu.addAction("Paste image", self.paste_requested.emit)
        menu.exec(event.globalPos())
        menu.deleteLater()
