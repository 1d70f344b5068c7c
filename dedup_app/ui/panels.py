"""Parts of the main window with no state of their own: the list of files that failed, and the progress row."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dedup_app.core.files import FileError
from dedup_app.core.progress import Progress
from dedup_app.core.units import format_duration


class ErrorsDialog(QDialog):
    """The files a scan could not read, with the reason for each."""

    def __init__(
        self, errors: list[FileError], parent: QWidget | None = None, save: Callable[[str], None] | None = None
    ) -> None:
        """``save`` writes the list to a CSV file (offered as **Save list…**): for files the user may have to
        find or restore by hand."""
        super().__init__(parent)
        self.setWindowTitle(f"Files that could not be read ({len(errors)})")
        self._save = save
        table = QTableWidget(len(errors), 2, self)
        table.setHorizontalHeaderLabels(["File", "Reason"])
        for row, err in enumerate(errors):
            table.setItem(row, 0, QTableWidgetItem(err.path))
            table.setItem(row, 1, QTableWidgetItem(err.error))
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        self.save_button: QPushButton | None = None
        if save is not None:
            self.save_button = buttons.addButton("Save list…", QDialogButtonBox.ButtonRole.ActionRole)
            self.save_button.clicked.connect(self.save_list)
        layout = QVBoxLayout(self)
        layout.addWidget(table)
        layout.addWidget(buttons)
        self.resize(900, 400)
        self.table = table

    def choose_save_path(self) -> str:
        """Ask where to save the list (tests replace this)."""
        path, _ = QFileDialog.getSaveFileName(self, "Save the list", os.path.expanduser("~/dedup-app-files.csv"),
                                              "CSV (*.csv)")  # fmt: skip
        return path

    def save_list(self) -> None:
        path = self.choose_save_path()
        if not path or self._save is None:
            return
        try:
            self._save(path)
        except OSError as exc:
            QMessageBox.warning(self, "The list was not saved", f"{path}: {exc.strerror or exc}")


class ProgressPanel(QWidget):
    """Progress inside the window: a bar, '1,234 / 10,000 images, 2 min left', and Cancel."""

    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.label = QLabel()
        self.cancel = QPushButton("Cancel")
        self.cancel.setToolTip("Stop after the current batch; what was read stays cached (Esc)")
        self.cancel.clicked.connect(self.cancel_requested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        layout.addWidget(self.label, 2)
        layout.addWidget(self.bar, 3)
        layout.addWidget(self.cancel)
        self._rate: float | None = None
        self._last: tuple[float, int, str] | None = None
        self.hide()

    def start(self, text: str) -> None:
        self._rate, self._last = None, None
        self.bar.setRange(0, 0)
        self.label.setText(text)
        self.cancel.setEnabled(True)
        self.show()

    def update_progress(self, report: Progress) -> None:
        now = time.monotonic()
        if self._last is not None and self._last[2] == report.stage and report.done > self._last[1]:
            rate = (report.done - self._last[1]) / max(1e-6, now - self._last[0])
            self._rate = rate if self._rate is None else 0.3 * rate + 0.7 * self._rate
        if self._last is None or self._last[2] != report.stage:
            self._rate = None
        if self._last is None or report.done != self._last[1] or self._last[2] != report.stage:
            self._last = (now, report.done, report.stage)
        if report.total:
            self.bar.setRange(0, report.total)
            self.bar.setValue(report.done)
            text = f"{report.stage}: {report.done:,} / {report.total:,}"
            if self._rate and report.done < report.total:
                text += f", {format_duration((report.total - report.done) / self._rate)} left"
        else:
            self.bar.setRange(0, 0)
            text = f"{report.stage}: {report.done:,}" + (f" ({report.message})" if report.message else "")
        self.label.setText(text)

    def finish(self) -> None:
        self.hide()
