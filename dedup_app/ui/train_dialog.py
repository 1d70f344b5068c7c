""" "Train on my labels": label counts, a live loss and validation curve, Cancel, before/after, and Activate.

The training code (``model_training``) is imported when the dialog opens (its light data module, to count the labels
that conflict with newer ones before the user starts) and inside the job that runs on the worker, so the window
starts without it. Nothing changes for the user until they press Activate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from dedup_app.core.labels import DUPLICATE, NOT_DUPLICATE, LabelStore
from dedup_app.core.progress import CancelToken


def _open_store(labels: LabelStore | str | None) -> tuple[LabelStore, bool]:
    """The label store given, or the one at the path given, and whether it was opened here (to close after use)."""
    if isinstance(labels, LabelStore):
        return labels, False
    return LabelStore(labels), True


class CurveView(QWidget):
    """Training loss per step (blue) and validation F1 per epoch (orange), each scaled to its own range, both placed
    by the step they were reported at (the worker passes on only some steps' losses)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.losses: list[float] = []
        self.loss_steps: list[int] = []
        self.f1: list[tuple[int, float]] = []  # (step, F1)
        self.total = 1
        self.setMinimumHeight(160)

    def add_loss(self, step: int, total: int, loss: float) -> None:
        self.total = max(total, 1)
        self.losses.append(loss)
        self.loss_steps.append(step)
        self.update()

    def add_validation(self, step: int, f1: float) -> None:
        self.f1.append((step, f1))
        self.update()

    def plot_area(self) -> QRectF:
        """Where the curves are drawn."""
        return QRectF(self.rect().adjusted(30, 8, -8, -20))

    def points(self) -> tuple[list[QPointF], list[QPointF]]:
        """The loss and the F1 curves' points in the widget (x: the step out of the total)."""
        r = self.plot_area()
        loss: list[QPointF] = []
        if self.losses:
            hi = max(self.losses) or 1.0
            loss = [QPointF(r.left() + r.width() * s / self.total, r.bottom() - r.height() * v / hi)
                    for s, v in zip(self.loss_steps, self.losses, strict=True)]  # fmt: skip
        f1: list[QPointF] = []
        if self.f1:
            lo = min(v for _, v in self.f1)
            span = max(1e-3, 1.0 - lo)
            f1 = [QPointF(r.left() + r.width() * s / self.total, r.bottom() - r.height() * (v - lo) / span)
                  for s, v in self.f1]  # fmt: skip
        return loss, f1

    def paintEvent(self, event) -> None:  # type: ignore[no-untyped-def]  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = self.plot_area()
        p.setPen(QPen(self.palette().mid().color()))
        p.drawRect(r)
        p.drawText(4, int(r.bottom()) + 16, "loss (blue), validation F1 (orange)")
        loss, f1 = self.points()
        if loss:
            p.setPen(QPen(QColor(40, 110, 220), 1.5))
            p.drawPolyline(QPolygonF(loss))
        if f1:
            p.setPen(QPen(QColor(230, 120, 20), 2))
            p.drawPolyline(QPolygonF(f1))
            for pt in f1:
                p.drawEllipse(pt, 2.5, 2.5)
        p.end()


class TrainingDialog(QDialog):
    """What the training dialogs share: an intro, options, a live loss and validation F1 curve, a status line, a
    before/after table, and Start, Cancel, Activate and Close. Subclasses build the job and read its result."""

    #: what is trained, in messages
    what = "model"

    def __init__(self, title: str, run_job: Callable[..., bool], worker: Callable[[], Any],
                 parent: QWidget | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.setWindowTitle(title)
        self.run_job, self.worker = run_job, worker
        self.result: Any = None
        self.intro = QLabel()
        self.intro.setWordWrap(True)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 500)
        self.curve = CurveView()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = QGridLayout()
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.activate_button = QPushButton("Activate")
        self.close_button = QPushButton("Close")
        self.cancel_button.setEnabled(False)
        self.activate_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.activate_button.clicked.connect(self.activate)
        self.close_button.clicked.connect(self.reject)

    def _lay_out(self, *options: QLayout | QWidget) -> None:
        """Intro, the option rows, the curve, the status, the table, the buttons."""
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.start_button, self.cancel_button, self.activate_button, self.close_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addWidget(self.intro)
        for row in options:
            if isinstance(row, QWidget):
                layout.addWidget(row)
            else:
                layout.addLayout(row)
        layout.addWidget(self.curve, 1)
        layout.addWidget(self.status)
        layout.addLayout(self.table)
        layout.addLayout(buttons)

    def start(self) -> None:
        """Start training on the worker (subclasses)."""
        raise NotImplementedError

    def activate(self) -> None:
        """Use the result from now on (subclasses)."""
        raise NotImplementedError

    def _run(self, name: str, job: Any, text: str, first_status: str) -> bool:
        """Run ``job`` through the window's runner with the curve following its progress; False when refused."""
        if not self.run_job(name, job, self._done, text):
            self.status.setText("Another job is running; try again when it has finished.")
            return False
        worker = self.worker()
        if worker is not None:
            worker.progress.connect(self._progress)
            worker.finished.connect(self._finished)
        self.result = None
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.activate_button.setEnabled(False)
        self.status.setText(first_status)
        return True

    def _done(self, result: Any) -> None:
        """The job's result, on the UI thread (subclasses)."""
        raise NotImplementedError

    def cancel(self) -> None:
        worker = self.worker()
        if worker is not None:
            worker.cancel()
        self.status.setText(f"Cancelling… the active {self.what} stays as it is.")

    def _progress(self, report: Any) -> None:
        loss = getattr(report, "loss", None)
        val = getattr(report, "val", None)
        if report.stage == "Training" and loss is not None:
            self.curve.add_loss(report.done, report.total or 1, loss)
            self.status.setText(f"Epoch {report.epoch}: step {report.done:,} of {report.total:,}, loss {loss:.4f}")
        elif val is not None:
            self.curve.add_validation(report.done, val["f1"])
        else:
            self.status.setText(f"{report.stage}: {report.done:,}" + (f" of {report.total:,}" if report.total else ""))

    def _finished(self) -> None:
        self.cancel_button.setEnabled(False)
        self.start_button.setEnabled(True)
        if self.result is None:
            self.status.setText(self.status.text() if "Cancel" not in self.status.text() else
                                f"Cancelled. The active {self.what} is unchanged.")  # fmt: skip

    def _fill_table(self, rows: Sequence[Sequence[str]]) -> None:
        """The before/after table: a header row, then one row per head or model (first column: its name)."""
        while self.table.count():
            item = self.table.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                label = QLabel(f"<b>{text}</b>" if r == 0 or c == 0 else text)
                label.setAlignment(Qt.AlignmentFlag.AlignRight if c else Qt.AlignmentFlag.AlignLeft)
                self.table.addWidget(label, r, c)


class TrainDialog(TrainingDialog):
    """Runs ``model_training.fit`` through the window's job runner and offers to activate the result."""

    def __init__(
        self,
        run_job: Callable[..., bool],
        worker: Callable[[], Any],
        label_counts: dict[str, int],
        labels: LabelStore | str | None,
        source_folders: list[str],
        on_activate: Callable[[Any], None],
        parent: QWidget | None = None,
    ) -> None:
        """``labels``: the session's label store (best: its labels are the ones the user sees, also when they are
        kept in memory because the file could not be written), or the path of one (``None``: the default file)."""
        super().__init__("Train on my labels", run_job, worker, parent)
        self.on_activate = on_activate
        self.labels, self.source_folders = labels, source_folders
        pairs = label_counts.get(DUPLICATE, 0) + label_counts.get(NOT_DUPLICATE, 0)
        self.conflicts = self._count_conflicts() if pairs else 0
        conflicts = ""
        if self.conflicts:
            from model_training.data import conflicts_note

            conflicts = f"<br><b>{conflicts_note(self.conflicts)}</b> (the latest label of a pair wins)."
        self.intro.setText(
            f"<b>{pairs} labelled pairs</b> ({label_counts.get(DUPLICATE, 0)} duplicate, "
            f"{label_counts.get(NOT_DUPLICATE, 0)} not duplicate).{conflicts}<br>Training adjusts the model's "
            "projection head so that your duplicates score higher and your non-duplicates lower, checked on a "
            "held-out part of your labels. With the images of your source folders added, edited copies of them "
            "teach it too. Expect one to a few minutes on a laptop. Nothing changes until you press <b>Activate</b>."
        )
        self.epochs.setValue(40)
        self.use_sources = QCheckBox("Also learn from edited copies of images in my source folders (up to 300)")
        self.use_sources.setChecked(pairs < 200)
        self.start_button.setEnabled(pairs > 0 or bool(source_folders))
        options = QHBoxLayout()
        options.addWidget(QLabel("Epochs"))
        options.addWidget(self.epochs)
        options.addWidget(self.use_sources, 1)
        self._lay_out(options)
        self.resize(720, 520)

    def _count_conflicts(self) -> int:
        """How many labels of files that still exist are ignored in training because newer ones contradict them."""
        from model_training.data import pairs_from_store, resolve_conflicts

        store, opened = _open_store(self.labels)
        try:
            pairs, _missing = pairs_from_store(store)
        finally:
            if opened:
                store.close()
        return len(resolve_conflicts(pairs)[1])

    def start(self) -> None:
        sources = self.source_folders if self.use_sources.isChecked() else []
        epochs = self.epochs.value()
        labels = self.labels  # the session's store is safe to read from the worker (one lock around it)

        def job(cancel: CancelToken):  # type: ignore[no-untyped-def]
            from dedup_app.core.embedder import load_checkpoint
            from dedup_app.core.files import FileEntry, walk_images
            from model_training.data import (
                DataError,
                ItemSet,
                items_from_pairs,
                merge,
                pairs_from_store,
                self_supervised_items,
                split_by_class,
            )
            from model_training.train import TrainConfig, fit

            store, opened = _open_store(labels)
            try:
                pairs, _missing = pairs_from_store(store)
            finally:
                if opened:
                    store.close()
            items = items_from_pairs(pairs) if pairs else ItemSet()
            if sources:
                paths = [e.path for e in walk_images(sources) if isinstance(e, FileEntry)][:300]
                items = merge(items, self_supervised_items(paths, copies=4))
            train, val = split_by_class(items, 0.2)
            if len(set(val.labels)) < 2 or len(set(train.labels)) < 2:
                raise DataError("too little data: label more pairs, or add source folders with images")
            return (yield from fit(load_checkpoint(), train, val, TrainConfig(epochs=epochs), None, cancel))

        self._run("train", job, "Training", "Preparing the images…")

    def _done(self, result: Any) -> None:
        self.result = result
        rows = [("", "ROC AUC", "threshold", "precision", "recall", "F1")]
        for name, m in (("Before", result.before), ("After", result.after)):
            rows.append((name, f"{m['auc']:.4f}", f"{m['calibrated_threshold']:.3f}", f"{m['precision']:.3f}",
                         f"{m['recall']:.3f}", f"{m['f1']:.3f}"))  # fmt: skip
        self._fill_table(rows)
        improved = result.improved
        self.activate_button.setEnabled(improved)
        names = ", ".join(os.path.basename(key) for key, _ in result.skipped[:3])
        more = "…" if len(result.skipped) > 3 else ""
        skipped = f" {len(result.skipped)} images could not be read and were left out ({names}{more})."
        skipped = skipped if result.skipped else ""
        self.status.setText(
            "Checked on pairs the training did not see; F1 at 99 % pair precision (how many duplicates are found "
            "when almost no wrong pair is allowed), ROC AUC (how well duplicates rank above other pairs). "
            + (
                "The new model is better: Activate to use it from now on (roll back any time)."
                if improved
                else "The new model is not clearly better (F1 up by 0.01 with ROC AUC no worse): keep the current one."
            )
            + skipped
        )

    def activate(self) -> None:
        if self.result is not None:
            self.on_activate(self.result)
            self.activate_button.setEnabled(False)
            self.status.setText(f"Active model: {self.result.checkpoint.model_id}.")
