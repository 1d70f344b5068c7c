"""The window with its controllers, offscreen: a model switch during a scan, the active model's threshold, undo
while busy, what Export writes, the list of files that could not be restored."""

from __future__ import annotations

import csv
import json
import os
import threading
from pathlib import Path

import pytest

from dedup_app.core.checkpoint import Checkpoint
from dedup_app.core.embedder import Embedder
from dedup_app.core.files import FileError
from dedup_app.core.model_files import read_checkpoint
from dedup_app.core.resources import default_model_path
from dedup_app.ui.main_window import MainWindow
from dedup_app.ui.panels import ErrorsDialog
from tests.gui.test_window import SCAN_TIMEOUT, scan

pytestmark = pytest.mark.gui


def real_loader(embedder: Embedder):  # type: ignore[no-untyped-def]
    """Load the model file the window asks for; the shipped one is the session's (already built) embedder."""

    def load(path: str, device: str) -> Embedder:
        checkpoint = read_checkpoint(path)
        return embedder if checkpoint.model_id == embedder.model_id else Embedder(checkpoint, "cpu")

    return load


def register_tuned(window: MainWindow, threshold: float) -> str:
    base = read_checkpoint(default_model_path())
    return window.ctx.registry().add(Checkpoint(base.config, base.head_state, threshold, "tuned")).model_id


def rescan(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT):
        window.start_scan()


def test_switching_models_during_a_scan_then_the_new_models_threshold(  # type: ignore[no-untyped-def]
    qtbot, make_window, photos_dir: Path, embedder, monkeypatch
) -> None:
    """Issue items 1, 2 and 6. Picking another model while a scan runs used to drop the embedder and the cache rows
    under the scan, and the end of the scan crashed; the trained model's calibrated threshold was then ignored
    (the window had saved 0.829 at start); and the old model's embeddings were dropped on the UI thread."""
    import dedup_app.core.registry as registry_module

    window = make_window(load_embedder=real_loader(embedder))
    errors: list[str] = []
    window.show_error = lambda title, message, details="": errors.append(f"{title}: {message}")  # type: ignore[method-assign]
    dropped_on: list[str] = []
    real_drop = registry_module.drop_embeddings_of

    def drop(model_id: str, cache_path: str | None = None) -> int:
        dropped_on.append(threading.current_thread().name)
        return real_drop(model_id, cache_path)

    monkeypatch.setattr(registry_module, "drop_embeddings_of", drop)
    assert window.thresholds.get(embedder.model_id) is None  # opening the window chose nothing
    tuned = register_tuned(window, 0.9)
    window.add_sources([str(photos_dir)], scan=False)
    finished: list[str] = []
    window.job_finished.connect(finished.append)
    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT):
        window.start_scan()
        assert window.worker is not None
        window.use_model(tuned)
        assert "once the current job" in window.statusBar().currentMessage()
        assert window.ctx.registry().active_id is None  # not yet: the scan keeps its model
    assert errors == [] and window.finder is not None and window.model.groups
    qtbot.waitUntil(lambda: "switch" in finished, timeout=60_000)
    assert window.ctx.registry().active_id == tuned and window.embedder is None
    assert dropped_on and "MainThread" not in dropped_on
    rescan(qtbot, window)
    assert window.embedder.model_id == tuned
    assert window.slider.value() == 900 and window.slider_label.text() == "0.900"  # the trained model's own
    window.slider.setValue(880)  # the user's choice, for this model only
    with qtbot.waitSignal(window.job_finished, timeout=60_000):
        window.rollback_model()
    rescan(qtbot, window)
    assert window.embedder.model_id == embedder.model_id
    assert window.slider.value() == round(embedder.threshold * 1000)
    with qtbot.waitSignal(window.job_finished, timeout=60_000):
        window.use_model(tuned)
    rescan(qtbot, window)
    assert window.slider.value() == 880
    assert errors == []


def test_undo_asked_while_busy_keeps_its_record(qtbot, make_window, photos_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue item 4: the record was taken off the stack before the job ran; a refused job lost it."""
    window = make_window()
    scan(qtbot, window, photos_dir)
    marked = window.model.marked_in_view()
    with qtbot.waitSignal(window.job_finished, timeout=60_000):
        window.act_trash.trigger()
    assert not any(os.path.exists(p) for p in marked)
    record = window.undo_stack[-1]
    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT):
        window.start_scan()
        window.undo_last()  # refused: a scan runs
        assert "Busy" in window.statusBar().currentMessage()
        assert window.undo_stack == [record]
    with qtbot.waitSignal(window.job_finished, timeout=60_000):
        window.act_undo.trigger()
    assert all(os.path.exists(p) for p in marked) and window.undo_stack == []


def test_export_writes_the_kept_file_and_the_ticks_on_screen(  # type: ignore[no-untyped-def]
    qtbot, make_window, photos_dir: Path, tmp_path: Path
) -> None:
    """Issue item 11: K and Space change what is exported; before, the export wrote the default suggestion."""
    window = make_window()
    scan(qtbot, window, photos_dir)
    gi = next(k for k, g in enumerate(window.model.groups) if len(g.members) == 3)
    group = window.model.groups[gi]
    new_keep = group.members[2].image.path
    window.tree.setCurrentIndex(window.model.index(2, 0, window.model.index(gi, 0)))
    window.act_keep.trigger()
    untick = next(m.image.path for m in group.members if m.image.path in window.model.marked)
    window.model.toggle_mark(untick)
    window.export_to(str(tmp_path / "shown.json"))
    window.export_to(str(tmp_path / "shown.csv"))
    exported = next(g for g in json.loads((tmp_path / "shown.json").read_text())["groups"]
                    if new_keep in {f["path"] for f in g["files"]})  # fmt: skip
    assert exported["keep"] == new_keep
    assert {f["path"] for f in exported["files"] if f["marked"]} == set(window.model.marked) & {
        m.image.path for m in group.members
    }
    assert untick not in {f["path"] for f in exported["files"] if f["marked"]}
    rows = [r for r in csv.DictReader((tmp_path / "shown.csv").open()) if r["path"] == new_keep]
    assert rows and rows[0]["keep"] == "yes" and rows[0]["marked"] == "no"


def test_the_list_of_files_not_restored_can_be_saved(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    saved: list[str] = []
    failures = [FileError("/photos/a.jpg", "in the system trash: restore it from there")]
    dialog = ErrorsDialog(failures, None, lambda path: (saved.append(path), Path(path).write_text("x")))
    qtbot.addWidget(dialog)
    dialog.choose_save_path = lambda: str(tmp_path / "list.csv")  # type: ignore[method-assign]
    assert dialog.save_button is not None
    dialog.save_button.click()
    assert saved == [str(tmp_path / "list.csv")] and (tmp_path / "list.csv").exists()
    plain = ErrorsDialog(failures)
    qtbot.addWidget(plain)
    assert plain.save_button is None  # a scan's unreadable files: nothing to restore
