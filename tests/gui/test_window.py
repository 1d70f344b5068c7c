"""The window, offscreen: drop to scan, cancel, slider, marks, trash/move/undo, labels, settings, threads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from dedup_app.core.actions import find_in_trash
from dedup_app.core.labels import DUPLICATE, NOT_DUPLICATE, LabelStore
from dedup_app.ui import settings as S
from dedup_app.ui.main_window import MainWindow
from tests.conftest import noise_image, photo

pytestmark = pytest.mark.gui
SCAN_TIMEOUT = 180_000


def drag_enter(mime: QMimeData) -> QDragEnterEvent:
    with warnings.catch_warnings():  # the QPoint constructor is the only one PySide6 offers for this event
        warnings.simplefilter("ignore", DeprecationWarning)
        return QDragEnterEvent(QPoint(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                               Qt.KeyboardModifier.NoModifier)  # fmt: skip


def drop(window: MainWindow, *paths: Path) -> None:
    """Simulate dragging files from a file manager onto the window and dropping them.

    Qt only routes a Drop event during a real drag, so the enter event goes through the event system (and must
    be accepted) and the drop goes to the window's handler.
    """
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = drag_enter(mime)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted(), "the window refused the drag"
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)  # fmt: skip
    window.dropEvent(event)
    assert event.isAccepted()


def group_names(window: MainWindow) -> list[set[str]]:
    return [{Path(m.image.path).name for m in g.members} for g in window.model.groups]


def scan(qtbot, window: MainWindow, *paths: Path) -> None:  # type: ignore[no-untyped-def]
    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT):
        drop(window, *paths)


def test_drag_of_non_files_is_refused(make_window) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    mime = QMimeData()
    mime.setText("just text")
    enter = drag_enter(mime)
    QApplication.sendEvent(window, enter)
    assert not enter.isAccepted()


def test_empty_window_says_what_to_do(make_window) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    assert window.center.currentWidget() is window.empty
    assert "Drop folders here" in window.empty.text()
    assert not window.act_trash.isEnabled() and not window.act_undo.isEnabled()


def test_toolbar_fits_a_small_screen(qtbot, make_window) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    window.resize(1024, 700)
    qtbot.waitUntil(lambda: window.toolbar.toolButtonStyle() == Qt.ToolButtonStyle.ToolButtonIconOnly)
    window.resize(1600, 900)
    qtbot.waitUntil(lambda: window.toolbar.toolButtonStyle() == Qt.ToolButtonStyle.ToolButtonTextBesideIcon)


def test_a_scan_without_duplicates_says_so(qtbot, make_window, tmp_path: Path, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "distinct"
    folder.mkdir()
    for name in ("kodim01.png", "kodim05.png", "kodim20.png"):
        photo(shared_data, name).save(folder / f"{Path(name).stem}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"not an image")
    window = make_window()
    scan(qtbot, window, folder)
    assert window.model.groups == [] and window.center.currentWidget() is window.no_groups
    text = window.no_groups.text()
    assert "No duplicates among 3 images" in text and "slider left" in text and "1 file could not be read" in text
    empty = tmp_path / "nothing"
    empty.mkdir()
    window.sources.setCurrentRow(0)
    window.remove_selected_sources()
    scan(qtbot, window, empty)
    assert "No images found" in window.no_groups.text()


def test_drop_a_folder_scans_and_groups(qtbot, make_window, photos_dir: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    scan(qtbot, window, photos_dir)
    assert window.source_folders() == [str(photos_dir)]
    groups = group_names(window)
    assert {"kodim01.jpg", "kodim01_resize.jpg", "kodim01_rotate90.jpg"} in groups
    assert {"kodim05.jpg", "kodim05_resize.jpg", "kodim05_rotate90.jpg"} in groups
    assert {"kodim20.jpg", "kodim20 copy.jpg"} in groups
    assert not any("lonely.jpg" in g for g in groups)
    kinds = {frozenset(n): g.kind for n, g in zip(groups, window.model.groups, strict=True)}
    assert kinds[frozenset({"kodim20.jpg", "kodim20 copy.jpg"})] == "exact"
    assert window.center.currentWidget() is window.tree
    assert "groups" in window.summary.text() and "labels: 0" in window.summary.text()
    # the compare view shows the first group's kept file against another member
    assert window.compare.a is not None and window.compare.b is not None
    assert window.worker is None


def test_an_unusable_default_cache_does_not_stop_a_scan(  # type: ignore[no-untyped-def]
    qtbot, make_window, photos_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """Something else sits where the default cache goes (here a folder): it is left alone, the scan runs without a
    cache, and the user is told; the counts in the status bar add up."""
    from dedup_app.core.cache import default_cache_path

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # this test's own user folder: others share one
    default_cache_path().mkdir(parents=True)
    window = make_window()
    window.ctx.cache_path = None
    errors: list[str] = []
    window.show_error = lambda title, message, details="": errors.append(message)  # type: ignore[method-assign]
    scan(qtbot, window, photos_dir)
    assert default_cache_path().is_dir()  # untouched
    assert {"kodim01.jpg", "kodim01_resize.jpg", "kodim01_rotate90.jpg"} in group_names(window)
    assert errors and str(default_cache_path()) in errors[0]
    st = window.finder.result.stats
    assert st.decoded + st.cached + st.copies + st.failed == st.files
    assert "Cache not used" in window.statusBar().currentMessage()


def test_cancel_keeps_cached_work(qtbot, make_window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(80):
        noise_image(300 + k, (400, 300)).save(folder / f"n{k:03d}.jpg", quality=85)
    window = make_window()
    reading = []

    def on_progress(report) -> None:  # type: ignore[no-untyped-def]
        if report.stage == "Reading images" and report.done > 0 and not reading:
            reading.append(report.done)
            window.cancel_job()

    window.add_sources([str(folder)], scan=False)
    with qtbot.waitSignal(window.job_finished, timeout=SCAN_TIMEOUT):
        window.start_scan()
        window.worker.progress.connect(on_progress)
    assert reading, "no progress was reported before the scan ended"
    assert window.finder is None  # cancelled: no result shown
    assert window.worker is None and not window.progress.isVisible()
    from dedup_app.core.cache import EmbeddingCache

    with EmbeddingCache(window.ctx.cache_path) as cache:
        cached = cache.count(window.embedder.model_id)
    assert 0 < cached < 80


def test_slider_regroups_without_a_new_search(qtbot, make_window, photos_dir: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    scan(qtbot, window, photos_dir)
    graph = window.finder.graph
    members = lambda: sum(len(g.members) for g in window.model.groups)  # noqa: E731
    default = members()
    with qtbot.waitSignal(window.groups_changed, timeout=10_000):
        window.slider.setValue(990)  # regrouped on a pool thread, shown on the UI thread
    strict = members()
    with qtbot.waitSignal(window.groups_changed, timeout=10_000):
        window.slider.setValue(700)
    loose = members()
    assert strict <= default <= loose and strict < loose
    assert window.finder.graph is graph and window.worker is None  # regrouped from memory: no new search
    assert window.slider.minimum() == round(graph.min_threshold * 1000) == 700  # 17 images: searched from 0.70
    assert window.slider_label.text() == "0.700"
    assert window.thresholds.get(window.embedder.model_id) == pytest.approx(0.7)  # chosen for this model


def test_auto_mark_rules_and_reference_folder(qtbot, make_window, tmp_path: Path, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import photo

    main, ref = tmp_path / "main", tmp_path / "ref"
    main.mkdir()
    ref.mkdir()
    img = photo(shared_data, "kodim03.png")
    img.save(main / "big.png")  # largest file, same resolution
    img.save(main / "old.jpg", quality=80)
    img.resize((384, 256)).save(main / "small.jpg", quality=90)
    os.utime(main / "old.jpg", (1_000_000, 1_000_000))
    img.save(ref / "in_ref.jpg", quality=60)
    window = make_window()
    window.add_sources([str(main), str(ref)], scan=False)
    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT):
        window.start_scan()
    assert len(window.model.groups) == 1

    def kept() -> str:
        return Path(window.model.kept(0)).name

    def marked() -> set[str]:
        return {Path(p).name for p in window.model.marked}

    assert window.rule_box.currentData() == "best"  # the default: the likeliest original
    assert kept() == "big.png"  # lossless without a JPEG history, above its JPEG copies (quality 80 and 60)
    window.rule_box.setCurrentIndex(window.rule_box.findData("resolution"))
    assert kept() in ("big.png", "old.jpg")  # highest resolution (ties broken by size)
    window.rule_box.setCurrentIndex(window.rule_box.findData("largest"))
    assert kept() == "big.png" and marked() == {"old.jpg", "small.jpg", "in_ref.jpg"}
    window.rule_box.setCurrentIndex(window.rule_box.findData("oldest"))
    assert kept() == "old.jpg"
    # make ref/ a reference folder: its file is never marked, and the reference rule keeps it
    window.sources.item(1).setCheckState(Qt.CheckState.Checked)
    assert "in_ref.jpg" not in marked()
    window.rule_box.setCurrentIndex(window.rule_box.findData("reference"))
    assert kept() == "in_ref.jpg" and marked() == {"big.png", "old.jpg", "small.jpg"}
    # manual marking with the keyboard: Space toggles, K keeps
    group = window.model.index(0, 0)
    rows = {Path(window.model.member(window.model.index(r, 0, group))[1].image.path).name: r for r in range(4)}
    window.tree.setFocus()
    window.tree.setCurrentIndex(window.model.index(rows["small.jpg"], 0, group))
    qtbot.keyClick(window.tree, Qt.Key.Key_Space)
    assert "small.jpg" not in marked()
    qtbot.keyClick(window.tree, Qt.Key.Key_Space)
    assert "small.jpg" in marked()
    window.act_keep.trigger()
    assert kept() == "small.jpg" and "small.jpg" not in marked()
    # manual choices survive a regroup by the slider
    with qtbot.waitSignal(window.groups_changed, timeout=10_000):
        window.slider.setValue(window.slider.value() - 1)
    assert kept() == "small.jpg"
    # settings persisted
    assert window.ctx.prefs.get(S.RULE) == "reference"
    assert window.ctx.prefs.get(S.REFERENCE_FOLDERS) == [str(ref)]


def test_similar_but_unsure_files_are_left_for_review(qtbot, make_window, tmp_path: Path, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    """UKBench: the same objects from other viewpoints (not duplicates). They group at the default threshold, but a
    file below the sure level is never ticked for the trash until the user says so."""
    from dedup_app.core.marking import SURE_SIMILARITY

    folder = tmp_path / "viewpoints"
    folder.mkdir()
    for src in sorted((shared_data / "neardup" / "ukbench_similar_not_duplicate").glob("*.jpg")):
        (folder / src.name).write_bytes(src.read_bytes())
    window = make_window()
    scan(qtbot, window, folder)
    near = [g for g in window.model.groups if g.kind == "near"]
    assert near, "expected the viewpoint pairs to group at the default threshold"
    unsure = [m.image.path for g in near for m in g.members[1:] if m.similarity < SURE_SIMILARITY]
    assert len(unsure) >= 3 and set(unsure) <= window.model.unsure
    assert not set(unsure) & set(window.model.marked_in_view())
    gi = next(k for k, g in enumerate(window.model.groups) if id(g) in window.model.review)
    assert "to review" in window.model.index(gi, 0).data()
    window.tree.setCurrentIndex(window.model.index(gi, 0))
    members = len(window.model.groups[gi].members)
    window.act_mark_group.trigger()  # M: the user decides the group is duplicates after all
    in_group = {m.image.path for m in window.model.groups[gi].members}
    assert len(in_group & set(window.model.marked_in_view())) == members - 1
    assert window.act_trash.isEnabled()
    window.toggle_current()  # Space on the group row: all ticked, so untick them all
    assert not in_group & set(window.model.marked_in_view())
    window.toggle_current()
    assert len(in_group & set(window.model.marked_in_view())) == members - 1


def test_similarities_follow_the_kept_file(qtbot, make_window, photos_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """After K on another file, the similarity column and the compare view measure against the new kept file."""
    from dedup_app.ui.models import COL_SIM

    window = make_window()
    scan(qtbot, window, photos_dir)
    gi = next(k for k, g in enumerate(window.model.groups) if any("kodim01_resize" in m.image.path for m in g.members))
    group = window.model.groups[gi]
    row = next(r for r, m in enumerate(group.members) if "kodim01_resize" in m.image.path)
    window.tree.setCurrentIndex(window.model.index(row, 0, window.model.index(gi, 0)))
    window.act_keep.trigger()
    expected = group.similarities_to(row)
    for r, m in enumerate(group.members):
        shown = window.model.index(r, COL_SIM, window.model.index(gi, 0)).data()
        assert float(shown) == pytest.approx(min(float(expected[r]), 1.0), abs=1e-3), m.image.path
    other = next(r for r, m in enumerate(group.members) if r != row)
    window.tree.setCurrentIndex(window.model.index(other, 0, window.model.index(gi, 0)))
    assert "kodim01_resize" in window.compare.a.image.path
    assert window.compare.similarity == pytest.approx(float(expected[other]), abs=1e-3)
    # next to the similarity, the shipped model's calibrated probability of a copy (dedup-app verify's)
    from dedup_app.core.calibration import calibration_of

    calibration = calibration_of(window.models.embedder.checkpoint.metrics)
    assert calibration is not None and window.compare.calibration == calibration
    form = window.compare.info_b
    shown = next(form.itemAt(r, form.ItemRole.FieldRole).widget().text() for r in range(form.rowCount())
                 if form.itemAt(r, form.ItemRole.LabelRole).widget().text() == "Similarity")  # fmt: skip
    from dedup_app.controllers.similar import probability_text

    p = calibration.probability(min(float(expected[other]), 1.0))
    assert shown == f"{window.compare.similarity:.3f} (copy: {probability_text(p)})"  # ">99.9%", not "100.0%"


def test_byte_copies_inside_a_near_group_are_called_identical(
    qtbot, make_window, tmp_path: Path, shared_data: Path
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "pics"
    folder.mkdir()
    img = photo(shared_data, "kodim23.png")
    img.save(folder / "a.jpg", quality=92)
    (folder / "a copy.jpg").write_bytes((folder / "a.jpg").read_bytes())
    img.resize((384, 256)).save(folder / "a_small.jpg", quality=85)
    window = make_window()
    scan(qtbot, window, folder)
    (group,) = window.model.groups
    assert group.kind == "near" and len(group.members) == 3
    texts = [window.model.index(r, 0, window.model.index(0, 0)).data() for r in range(3)]
    assert sum("(identical)" in t for t in texts) == 1 and any("(keep)" in t for t in texts)
    assert not any("(identical)" in t for t in texts if "small" in t)


def test_trash_and_undo_on_real_files(qtbot, make_window, photos_dir: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    scan(qtbot, window, photos_dir)
    marked = window.model.marked_in_view()
    assert len(marked) == 5  # 2 + 2 near copies, 1 exact copy
    vanished = Path(marked[0])
    vanished.unlink()  # removed behind the app's back: reported, the rest proceed
    with qtbot.waitSignal(window.job_finished, timeout=60_000):
        window.act_trash.trigger()
    for path in marked[1:]:
        assert not os.path.exists(path)
        assert find_in_trash(path) is not None
        assert Path(os.environ["XDG_DATA_HOME"]) in Path(find_in_trash(path)).parents  # the test's trash
    record = window.undo_stack[-1]
    assert [f.path for f in record.failed] == [str(vanished)]
    assert "no longer exists" in record.failed[0].error
    assert window.model.groups == [] or all(len(g.members) >= 2 for g in window.model.groups)
    assert not window.model.marked_in_view()
    with qtbot.waitSignal(window.job_finished, timeout=60_000):
        window.act_undo.trigger()
    for path in marked[1:]:
        assert os.path.exists(path)
    assert sum(len(g.members) for g in window.model.groups) == 8 - 1  # all back but the one deleted outside


def test_keys_act_only_on_what_the_user_is_looking_at(qtbot, make_window, photos_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from dedup_app.ui.models import COL_SIM, COL_SIZE

    window = make_window()
    asked: list[str] = []
    window.ask = lambda title, text: asked.append(title) or False  # type: ignore[method-assign]
    scan(qtbot, window, photos_dir)
    # sorting moves groups; the selected file and the compare view stay on the same file
    group_row = window.model.index(window.model.rowCount() - 1, 0)
    window.tree.setCurrentIndex(window.model.index(1, 0, group_row))
    chosen = window.current_member()[1].image.path
    for column, order in ((COL_SIM, Qt.SortOrder.AscendingOrder), (COL_SIZE, Qt.SortOrder.AscendingOrder)):
        window.tree.sortByColumn(column, order)
        assert window.current_member()[1].image.path == chosen
        assert chosen in (window.compare.a.image.path, window.compare.b.image.path)
    # Delete in the Sources list removes the folder, and never asks to trash the marked files
    window.sources.setCurrentRow(0)
    window.sources.setFocus()
    qtbot.keyClick(window.sources, Qt.Key.Key_Delete)
    assert window.source_folders() == [] and asked == []
    # on the Changes tab, the review keys (Delete, K, D, N, ...) do nothing to the hidden groups
    window.tabs.setCurrentWidget(window.changes)
    assert not any(act.isEnabled() for act in window.review_actions)
    window.tabs.setCurrentWidget(window.splitter)
    assert window.act_notdup.isEnabled() and window.act_trash.isEnabled()


def test_move_and_undo(qtbot, make_window, photos_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    scan(qtbot, window, photos_dir)
    dest = tmp_path / "moved"
    window.choose_folder = lambda title, start="": str(dest)  # type: ignore[method-assign]
    marked = window.model.marked_in_view()
    with qtbot.waitSignal(window.job_finished, timeout=60_000):
        window.act_move.trigger()
    assert sorted(p.name for p in dest.iterdir()) == sorted(Path(p).name for p in marked)
    assert window.ctx.prefs.get(S.MOVE_DESTINATION) == str(dest)
    with qtbot.waitSignal(window.job_finished, timeout=60_000):
        window.act_undo.trigger()
    assert all(os.path.exists(p) for p in marked) and not any(dest.iterdir())


def test_labels_persist_and_hide_not_duplicate_pairs(qtbot, make_window, photos_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    labels_path = tmp_path / "labels.sqlite3"
    window = make_window(labels_path)
    scan(qtbot, window, photos_dir)
    # D labels the pair shown and moves on to the next pair, so a group is labelled with one key per pair
    window.tree.setCurrentIndex(window.model.index(0, 0))
    first = window.compare.b.image.path
    window.act_dup.trigger()
    assert window.compare.b.image.path != first and window.compare.a is not None
    assert window.ctx.labels.counts()[DUPLICATE] == 1
    target = next(g for g in window.model.groups if any("kodim05" in m.image.path for m in g.members))
    gi = window.model.groups.index(target)
    window.tree.setCurrentIndex(window.model.index(1, 0, window.model.index(gi, 0)))
    a, b = window.compare.a, window.compare.b
    window.act_notdup.trigger()
    pair = {Path(a.image.path).name, Path(b.image.path).name}
    assert not any(pair <= names for names in group_names(window))
    assert "labels: 2" in window.summary.text()
    window.shutdown()
    window.ctx.labels.close()
    # a new window on the same label store: the pair stays apart after a rescan
    store = LabelStore(labels_path)
    assert store.get(a.image.content_hash, b.image.content_hash) == NOT_DUPLICATE
    store.close()
    again = make_window(labels_path)
    with qtbot.waitSignal(again.scan_finished, timeout=SCAN_TIMEOUT):
        again.start_scan()  # sources were saved in the preferences
    assert not any(pair <= names for names in group_names(again))
    assert "labels: 2" in again.summary.text()


def test_export_csv_and_json(qtbot, make_window, photos_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import csv
    import json

    window = make_window()
    scan(qtbot, window, photos_dir)
    window.export_to(str(tmp_path / "g.csv"))
    window.export_to(str(tmp_path / "g.json"))
    rows = list(csv.DictReader((tmp_path / "g.csv").open()))
    assert len(rows) == sum(len(g.members) for g in window.model.groups)
    assert len(json.loads((tmp_path / "g.json").read_text())["groups"]) == len(window.model.groups)


def test_settings_and_window_state_are_restored(qtbot, make_window, photos_dir: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    window.add_sources([str(photos_dir)], scan=False)
    window.slider.setValue(900)
    window.rule_box.setCurrentIndex(window.rule_box.findData("newest"))
    window.resize(1234, 777)
    window.shutdown()
    again = make_window()
    assert again.source_folders() == [str(photos_dir)]
    assert again.slider.value() == 900
    assert again.rule_box.currentData() == "newest"
    assert again.ctx.prefs.get(S.RECENT_FOLDERS) == [str(photos_dir)]
    assert again.ctx.state.value("window/geometry") is not None
    assert again.recent_menu.actions()[0].text() == str(photos_dir)


def test_worker_errors_reach_one_dialog(qtbot, make_window, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    shown = []
    monkeypatch.setattr(window, "show_error", lambda title, msg, details="": shown.append((title, msg, details)))

    def job(cancel):  # type: ignore[no-untyped-def]
        yield from ()
        raise RuntimeError("disk on fire")

    with qtbot.waitSignal(window.job_finished, timeout=10_000):
        window.run_job("boom", job, lambda result: None, "Testing")
    assert len(shown) == 1 and "disk on fire" in shown[0][1] and "RuntimeError" in shown[0][2]
    assert window.worker is None


def test_no_thread_left_running_at_exit(qtbot, make_window, photos_dir: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    scan(qtbot, window, photos_dir)
    worker_seen = []
    window.job_finished.connect(lambda name: worker_seen.append(name))
    window.start_scan()
    running = window.worker
    assert running is not None and running.isRunning()
    window.close()  # cancels and waits
    assert not running.isRunning()
    assert window.loader.calls.pool.activeThreadCount() == 0
    qtbot.waitUntil(lambda: not [t for t in threading.enumerate() if t.name.startswith("decode")], timeout=10_000)


def test_gui_command_without_a_screen_falls_back_to_the_command_line(photos_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run(
        [sys.executable, "-m", "dedup_app", "gui", str(photos_dir), "--cache", ":memory:"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no screen found" in proc.stderr and "Found 3 groups" in proc.stdout
    bare = subprocess.run([sys.executable, "-m", "dedup_app"], capture_output=True, text=True, timeout=120, env=env)
    assert bare.returncode == 2 and "no screen found" in bare.stderr


def test_screenshot_command(tmp_path: Path, photos_dir: Path) -> None:
    out = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run(
        [sys.executable, "-m", "dedup_app", "gui", str(photos_dir), "--screenshot", str(out), "--cache", ":memory:"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (1600, 900)
        grey = np.asarray(im.convert("L").resize((64, 36)))
    assert len(np.unique(grey)) > 20  # a real picture, not a blank window


def test_look_alikes_are_kept_apart_and_the_summary_says_so(  # type: ignore[no-untyped-def]
    qtbot, make_window, tmp_path: Path, shared_data: Path
) -> None:
    import shutil

    folder = tmp_path / "products"
    folder.mkdir()
    pool = shared_data / "photos" / "pool"
    for name in ("cloth_00250.jpg", "cloth_00293.jpg"):  # two trousers on one white wall: similar, not copies
        shutil.copy(pool / name, folder / name)
    photo(shared_data, "kodim05.png").save(folder / "k5.png")
    photo(shared_data, "kodim05.png").resize((384, 256)).save(folder / "k5_small.jpg", quality=80)
    window = make_window()
    scan(qtbot, window, folder)
    assert group_names(window) == [{"k5.png", "k5_small.jpg"}]
    assert "1 look-alike pair kept apart" in window.summary.text()
    with qtbot.waitSignal(window.groups_changed, timeout=10_000):
        window.slider.setValue(round(window.finder.checked_at * 1000) - 5)  # past the check: alike is enough
    assert {"cloth_00250.jpg", "cloth_00293.jpg"} in group_names(window)
    assert "look-alike" not in window.summary.text()
