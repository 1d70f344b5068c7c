"""The "Train on my labels" dialog, offscreen: counts, a run on the worker with a live curve, activate."""

from __future__ import annotations

from pathlib import Path

import pytest

from dedup_app.core.labels import DUPLICATE, NOT_DUPLICATE, LabelledFile

pytestmark = pytest.mark.gui


def test_train_on_labels_then_activate(qtbot, make_window, photos_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (photos_dir / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")  # left out, named, not fatal
    window = make_window()
    window.add_sources([str(photos_dir)], scan=False)
    store = window.ctx.labels
    f = {p.name: LabelledFile(p.name, str(p)) for p in photos_dir.iterdir()}
    store.put_pair(f["kodim01.jpg"], f["kodim01_resize.jpg"], DUPLICATE)
    store.put_pair(f["kodim05.jpg"], f["kodim05_rotate90.jpg"], DUPLICATE)
    store.put_pair(f["kodim01.jpg"], f["lonely.jpg"], NOT_DUPLICATE)
    dialog = window.open_training()
    assert "3 labelled pairs" in dialog.intro.text() and "2 duplicate" in dialog.intro.text()
    dialog.epochs.setValue(2)
    dialog.use_sources.setChecked(True)
    with qtbot.waitSignal(window.job_finished, timeout=300_000):
        dialog.start()
    assert dialog.result is not None, dialog.status.text()
    assert dialog.curve.losses and dialog.curve.f1
    assert dialog.table.count() == 18  # header + before + after, six columns
    assert "could not be read" in dialog.status.text() and "broken.jpg" in dialog.status.text()
    assert [Path(k).name for k, _ in dialog.result.skipped] == ["broken.jpg"]
    registry = window.ctx.registry()
    before = registry.active_id
    dialog.activate_button.setEnabled(True)  # whether or not it improved, activation must work
    window.models.use(object())  # type: ignore[arg-type]
    with qtbot.waitSignal(window.job_finished, timeout=60_000):  # the old model's embeddings dropped on the worker
        dialog.activate()
    assert registry.active_id == dialog.result.checkpoint.model_id != before
    assert window.embedder is None  # the next scan loads the new model
    with qtbot.waitSignal(window.job_finished, timeout=60_000):
        window.rollback_model()
    assert registry.active_id is None
    dialog.close()


def test_models_menu_greys_out_a_model_whose_file_is_gone(make_window) -> None:  # type: ignore[no-untyped-def]
    from dedup_app.core.checkpoint import Checkpoint
    from dedup_app.core.model_files import read_checkpoint
    from dedup_app.core.resources import default_model_path

    window = make_window()
    registry = window.ctx.registry()
    base = read_checkpoint(default_model_path())
    entry = registry.add(Checkpoint(base.config, base.head_state, 0.9, "tuned"), base=base.model_id)
    entry.file.unlink()  # deleted behind the app's back
    window._fill_models_menu()
    actions = {a.text(): a for a in window.models_menu.actions()}
    assert actions["Shipped default"].isEnabled() and actions["Shipped default"].isChecked()
    (gone,) = [a for text, a in actions.items() if text.startswith(entry.model_id)]
    assert not gone.isEnabled() and "unusable" in gone.text()


def test_labels_that_conflict_are_counted_before_training(make_window, photos_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from dedup_app.ui.train_dialog import TrainDialog

    window = make_window()
    store = window.ctx.labels
    f = {p.stem: LabelledFile(p.stem, str(p)) for p in photos_dir.iterdir()}
    store.put_pair(f["kodim01"], f["kodim01_resize"], DUPLICATE)
    store.put_pair(f["kodim01_resize"], f["kodim01_rotate90"], DUPLICATE)
    store.put_pair(f["kodim01"], f["kodim01_rotate90"], NOT_DUPLICATE)  # the newest: the oldest label gives way
    dialog = window.open_training()
    assert "1 label conflicts with a newer one and is ignored" in dialog.intro.text(), dialog.intro.text()
    assert dialog.start_button.isEnabled()
    dialog.close()
    # given the session's store itself (as the window should: labels kept in memory count too)
    dialog = TrainDialog(window.run_job, lambda: window.worker, store.counts(), store, [], window.activate_trained)
    assert dialog.conflicts == 1 and "1 label conflicts" in dialog.intro.text()
    dialog.close()


def test_without_torch_training_says_how_to_get_it(make_window, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The app bundle leaves torch out: both Train actions explain that instead of failing on the worker."""
    from PySide6.QtWidgets import QMessageBox

    from dedup_app.core import onnx_encoder

    monkeypatch.setattr(onnx_encoder, "torch_installed", lambda: False)
    window = make_window()
    assert window.open_training() is None and window.open_change_training() is None
    boxes = [b for b in window.findChildren(QMessageBox) if b.objectName() == "training-needs-torch"]
    assert len(boxes) == 2 and all(b.isVisible() for b in boxes)
    assert "pip install" in boxes[0].text() and "labels are kept" in boxes[0].text()
    for box in boxes:
        box.close()
