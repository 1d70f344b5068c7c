""" "Train change head": the painted change labels (and folders of labelled pairs), a live loss and validation F1
curve, Cancel, the starting and the new head measured on validation pairs the training did not see, and Activate.

The training code (``model_training``) is imported only inside the job, on the worker, so neither the window nor this
dialog waits for it. Nothing changes for the user until they press Activate: then the head is registered in the
change-head registry and made the default of the Changes tab (Model > Use change head switches back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QLineEdit, QListWidget, QPushButton, QVBoxLayout, QWidget

from dedup_app.core.labels import LabelStore
from dedup_app.core.progress import CancelToken
from dedup_app.core.units import count_of
from dedup_app.ui.train_dialog import TrainingDialog

#: how much better (validation F1, mean over sources) the new head must be to be offered for activation
BETTER_BY = 0.01


@dataclass
class ChangeTraining:
    """What a training run gave: the result of ``fit_change``, the painted labels left out and why, how many pairs
    of each source trained and validated, and what the run started from."""

    result: Any  # model_training.change_train.ChangeTrainResult
    skipped: list[Any] = field(default_factory=list)  # model_training.painted.SkippedLabel
    train: dict[str, int] = field(default_factory=dict)
    val: dict[str, int] = field(default_factory=dict)
    start: str = "Untrained head"
    notes: list[str] = field(default_factory=list)

    @property
    def before(self) -> dict[str, Any]:
        """Validation figures of the head training started from (epoch 0)."""
        return dict(self.result.history[0])

    @property
    def after(self) -> dict[str, Any]:
        """Validation figures of the new head (its best epoch)."""
        return dict(self.result.metrics)

    @property
    def improved(self) -> bool:
        """Whether the new head is clearly better on the validation pairs."""
        return float(self.after["f1"]) > float(self.before["f1"]) + BETTER_BY


class ChangeTrainDialog(TrainingDialog):
    """Trains a change head with ``model_training.change_train.fit_change`` on the worker and offers to activate it.

    ``labels`` is the session's label store (its painted change masks; safe to read from the worker),
    ``start_from`` the active change head's ``(label, file)`` when there is one to fine-tune (None: start afresh),
    ``choose_folder`` asks for a folder (the window's; tests replace it), ``on_activate`` registers and activates
    a :class:`ChangeTraining`'s head (or has it wait for a running job) and says which.
    """

    what = "change head"

    def __init__(
        self,
        run_job: Callable[..., bool],
        worker: Callable[[], Any],
        labels: LabelStore,
        start_from: tuple[str, Path] | None,
        choose_folder: Callable[[str], str],
        on_activate: Callable[[ChangeTraining], str | None],
        device: str = "auto",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Train change head", run_job, worker, parent)
        self.labels, self.start_from, self.choose_folder = labels, start_from, choose_folder
        self.on_activate, self.device = on_activate, device
        #: overrides of the training recipe besides the epochs (``ChangeTrainConfig`` fields; tests make it tiny)
        self.recipe: dict[str, Any] = {}
        self.painted = labels.change_mask_count()
        self.intro.setText(
            f"<b>{self.painted} painted change labels</b> (from the Changes tab; pairs whose files were moved or "
            "changed since are left out and named). Add folders of labelled pairs (A/, B/ and label/ images of the "
            "same names, or &lt;place&gt;/before.png, after.png, label.png) to learn from them too.<br>Training "
            "teaches a change head on the network's features, checked on pairs it does not train on (about one in "
            "five, at least one). Expect a few minutes on a laptop. Nothing changes until you press "
            "<b>Activate</b>."
        )
        self.folders = QListWidget()
        self.folders.setMaximumHeight(80)
        self.folders.setToolTip("Folders of labelled before/after pairs trained on with the painted labels")
        self.add_button = QPushButton("Add folder…")
        self.remove_button = QPushButton("Remove")
        self.add_button.clicked.connect(self.add_folder)
        self.remove_button.clicked.connect(self.remove_folder)
        folder_buttons = QVBoxLayout()
        folder_buttons.addWidget(self.add_button)
        folder_buttons.addWidget(self.remove_button)
        folder_buttons.addStretch(1)
        folders = QHBoxLayout()
        folders.addWidget(self.folders, 1)
        folders.addLayout(folder_buttons)
        self.epochs.setValue(20)
        self.name = QLineEdit(f"my-head-{time.strftime('%Y-%m-%d')}")
        self.name.setToolTip("The head's name: the Changes tab's Model box offers it by this name")
        self.fine_tune = QCheckBox(
            f"Start from the active change head ({start_from[0]})"
            if start_from
            else "Start from the active change head (none: starts untrained)"
        )
        self.fine_tune.setChecked(start_from is not None)
        self.fine_tune.setEnabled(start_from is not None)
        self.fine_tune.setToolTip("Fine-tune the head the Changes tab uses now, instead of a new, untrained one")
        options = QHBoxLayout()
        options.addWidget(QLabel("Epochs"))
        options.addWidget(self.epochs)
        options.addWidget(QLabel("Name"))
        options.addWidget(self.name, 1)
        options.addWidget(self.fine_tune)
        self._lay_out(folders, options)
        self._update_start()
        self.resize(760, 600)

    def folder_list(self) -> list[str]:
        """The folders of labelled pairs added."""
        return [self.folders.item(i).text() for i in range(self.folders.count())]

    def add_folder(self) -> None:
        """Ask for a folder of labelled pairs and add it (once)."""
        folder = self.choose_folder("A folder of labelled before/after pairs")
        if folder and folder not in self.folder_list():
            self.folders.addItem(folder)
        self._update_start()

    def remove_folder(self) -> None:
        """Take the selected folder off the list."""
        row = self.folders.currentRow()
        if row >= 0:
            self.folders.takeItem(row)
        self._update_start()

    def _update_start(self) -> None:
        self.start_button.setEnabled(bool(self.painted or self.folders.count()) and not self.cancel_button.isEnabled())

    def start(self) -> None:
        """Train on the worker: the painted labels and the folders' pairs, split by pair, the live curve following."""
        labels, folders, epochs, device = self.labels, self.folder_list(), self.epochs.value(), self.device
        recipe, name = dict(self.recipe), self.name.text().strip() or "my-head"
        start_from = self.start_from if self.fine_tune.isChecked() else None

        def job(cancel: CancelToken):  # type: ignore[no-untyped-def]
            from dedup_app.core.change.detect import load_change_head
            from dedup_app.core.change.head import HeadConfig, UNetHeadCheckpoint
            from model_training.change_data import ChangeDataError, folder_pairs, split_counts
            from model_training.change_train import ChangeTrainConfig, fit_change
            from model_training.painted import painted_pairs

            pairs, skipped = painted_pairs(labels)
            try:
                for folder in folders:
                    pairs += folder_pairs(folder)
            except ChangeDataError as exc:
                return str(exc)
            train = [p for p in pairs if p.split == "train"]
            val = [p for p in pairs if p.split == "val"]
            if not train or not any(p.changed_px for p in val):
                return (f"too little to train on: {len(train)} training and {len(val)} validation pairs (a validation "
                        "pair needs changed pixels). Paint at least two pairs with changes, or add a folder of "
                        "labelled pairs.")  # fmt: skip
            notes, init, start = [], None, "Untrained head"
            if start_from is not None:
                try:
                    loaded = load_change_head(start_from[1])
                except ValueError as exc:
                    loaded, why = None, str(exc)
                else:
                    why = "a head of the older format cannot be fine-tuned"
                if isinstance(loaded, UNetHeadCheckpoint):
                    init, start = loaded, f"Active head ({start_from[0]})"
                else:
                    notes.append(f"Started from an untrained head: {why}.")
            config = ChangeTrainConfig(epochs=epochs, name=name, head=init.head_config if init else HeadConfig(),
                                       **recipe)  # fmt: skip
            result = yield from fit_change(train, val, config, None, cancel, device, init)
            counts = split_counts(pairs)
            return ChangeTraining(result, skipped, {s: c["train"] for s, c in counts.items()},
                                  {s: c["val"] for s, c in counts.items()}, start, notes)  # fmt: skip

        if self._run("train-change", job, "Training the change head", "Reading the labelled pairs…"):
            self.add_button.setEnabled(False)
            self.remove_button.setEnabled(False)

    def _finished(self) -> None:
        super()._finished()
        self.add_button.setEnabled(True)
        self.remove_button.setEnabled(True)
        self._update_start()

    def _done(self, outcome: ChangeTraining | str) -> None:
        if isinstance(outcome, str):
            self.status.setText(f"Cannot train: {outcome}")
            return
        self.result = outcome
        rows = [("", "F1", "pooled F1", "IoU", "threshold")]
        for label, m in ((outcome.start, outcome.before), (f"New head (epoch {outcome.result.best_epoch})",
                                                           outcome.after)):  # fmt: skip
            rows.append((label, f"{m['f1']:.3f}", f"{m['pooled_f1']:.3f}", f"{m['iou']:.3f}", f"{m['threshold']:.2f}"))
        self._fill_table(rows)
        improved = outcome.improved
        self.activate_button.setEnabled(improved)
        val = ", ".join(f"{n} {source}" for source, n in outcome.val.items() if n)
        skipped = ""
        if outcome.skipped:
            more = f" (and {len(outcome.skipped) - 1} more)" if len(outcome.skipped) > 1 else ""
            left_out = count_of(len(outcome.skipped), "painted label was", "painted labels were")
            skipped = f" {left_out} left out: {outcome.skipped[0].reason}{more}."
        self.status.setText(
            f"Checked on {count_of(sum(outcome.val.values()), 'validation pair')} the training did not see ({val}); "
            "F1 averaged over the sources at the threshold calibrated on them, pooled F1 over all their pixels. "
            + (
                "The new head is better: Activate to make it the Changes tab's default (switch back any time)."
                if improved
                else f"The new head is not clearly better (F1 up by less than {BETTER_BY}): keep the current one."
            )
            + skipped
            + "".join(f" {n}" for n in outcome.notes)
        )

    def activate(self) -> None:
        """Register the new head and make it the default change model."""
        if self.result is not None:
            message = self.on_activate(self.result)
            self.activate_button.setEnabled(False)
            self.status.setText(message or f"'{self.result.result.checkpoint.name}' is registered and is the Changes "
                                "tab's default change model.")  # fmt: skip
