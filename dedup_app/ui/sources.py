"""The Sources pane: the folders (or files) to scan, reference folders ticked, Add / Remove, and Errors (N).

Delete or Backspace in the list removes the selected folder from the list; it never reaches the window's Delete
(trash the marked files), which would otherwise act on files the user is not looking at.
"""

from __future__ import annotations

import os

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget


class SourcesPanel(QWidget):
    """The source list. ``changed`` fires when folders are added or removed or a reference tick changes;
    ``add_requested`` when the user presses Add…; ``errors_requested`` for Errors (N)."""

    changed = Signal()
    add_requested = Signal()
    errors_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.list.installEventFilter(self)
        self.list.setToolTip("Folders to scan. Tick a folder to make it a reference: its files are never marked.")
        add_button = QPushButton("Add…")
        add_button.clicked.connect(self.add_requested)
        remove_button = QPushButton("Remove")
        remove_button.clicked.connect(self.remove_selected)
        self.errors_button = QPushButton("Errors (0)")
        self.errors_button.clicked.connect(self.errors_requested)
        layout = QVBoxLayout(self)
        heading = QLabel("<b>Sources</b> <small>(ticked: reference folder, never marked)</small>")
        heading.setWordWrap(True)  # must not widen the pane
        layout.addWidget(heading)
        layout.addWidget(self.list, 1)
        row = QHBoxLayout()
        row.addWidget(add_button)
        row.addWidget(remove_button)
        layout.addLayout(row)
        layout.addWidget(self.errors_button)
        self.list.itemChanged.connect(lambda _item: self.changed.emit())

    def folders(self) -> list[str]:
        """Every source, in the order added."""
        return [self.list.item(i).text() for i in range(self.list.count())]

    def references(self) -> list[str]:
        """The ticked (reference) sources."""
        return [
            self.list.item(i).text()
            for i in range(self.list.count())
            if self.list.item(i).checkState() == Qt.CheckState.Checked
        ]

    def add(self, paths: list[str], references: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
        """Add existing folders or files once each (absolute paths). Returns (added, not found); ``changed`` fires
        when something was added."""
        known = set(self.folders())
        added, missing = [], []
        for path in paths:
            path = os.path.abspath(path)
            if not os.path.exists(path):
                missing.append(path)
                continue
            if path not in known:
                self._add_item(path, path in references)
                known.add(path)
                added.append(path)
        if added:
            self.changed.emit()
        return added, missing

    def restore(self, folders: list[str], references: list[str]) -> None:
        """The saved sources, as they were (missing folders too: they may be on a disk not plugged in yet)."""
        for folder in folders:
            self._add_item(folder, folder in references)

    def remove_selected(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))
        self.changed.emit()

    def set_error_count(self, n: int) -> None:
        self.errors_button.setText(f"Errors ({n})")

    def _add_item(self, folder: str, reference: bool) -> None:
        self.list.blockSignals(True)
        item = QListWidgetItem(folder)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if reference else Qt.CheckState.Unchecked)
        item.setToolTip(f"{folder}\nTick to make it a reference folder (its files are never marked)")
        self.list.addItem(item)
        self.list.blockSignals(False)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        key_events = (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress)
        if obj is self.list and event.type() in key_events:
            key_event: QKeyEvent = event  # type: ignore[assignment]
            if key_event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and not key_event.modifiers():
                event.accept()  # overriding the window's Delete (trash marked) while the list has the focus
                if event.type() == QEvent.Type.KeyPress:
                    self.remove_selected()
                return True
        return super().eventFilter(obj, event)
