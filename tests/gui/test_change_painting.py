"""Painting change labels on the Changes tab with real mouse and key events, offscreen: brush, eraser, undo, fill
region, pan while a tool is active, saving (explicit, on switching pairs, at exit) and loading by content hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest

from dedup_app.core.change.painted import raster_hash
from dedup_app.core.labels import LabelStore

pytestmark = pytest.mark.gui
TIMEOUT = 120_000
H, W = 320, 448  # not square: rows and columns mixed up would show
HOUSES = {"t1": (150, 250), "t2": (40, 40)}  # where each after tile has houses pasted (row, column)


@pytest.fixture()
def tiles(tmp_path: Path, shared_data: Path) -> tuple[Path, Path]:
    """Folders ``before``/``after`` of two real aerial tiles, ``t1.png`` and ``t2.png``; each after tile has a
    100 x 100 block of houses pasted in (at ``HOUSES``)."""
    demo = np.asarray(Image.open(shared_data / "change" / "demo_pair" / "A" / "demo.png").convert("RGB"))
    houses = np.asarray(Image.open(shared_data / "change" / "levir_samples" / "B" / "train_36_0512_0512.png")
                        .convert("RGB"))[60:160, 140:240]  # fmt: skip
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    after.mkdir()
    for name, (y0, x0) in (("t1", (0, 0)), ("t2", (400, 300))):
        a = demo[y0 : y0 + H, x0 : x0 + W].copy()
        b = a.copy()
        hy, hx = HOUSES[name]
        b[hy : hy + 100, hx : hx + 100] = houses
        Image.fromarray(a).save(before / f"{name}.png")
        Image.fromarray(b).save(after / f"{name}.png")
    return before, after


def compared(qtbot, make_window, before: Path, after: Path):  # type: ignore[no-untyped-def]
    """A window on the Changes tab with the two folders compared and the first pair's label looked up."""
    window = make_window()
    window.tabs.setCurrentWidget(window.changes)
    tab = window.changes
    with qtbot.waitSignals([tab.compared, tab.painter.loaded], timeout=TIMEOUT):
        tab.handle_drop([str(before), str(after)])
    return window, tab


def at(tab, x: int, y: int) -> QPoint:  # type: ignore[no-untyped-def]
    """The viewport position over the centre of image pixel (column x, row y)."""
    return tab.view.mapFromScene(QPointF(x + 0.5, y + 0.5))  # type: ignore[no-any-return]


def pixel_under(tab, pos: QPoint) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(row, column) of the image pixel under a viewport position, as the view maps it."""
    scene = tab.view.mapToScene(pos)
    return int(np.floor(scene.y())), int(np.floor(scene.x()))


def drag(qtbot, tab, points: list[QPoint], button=Qt.MouseButton.LeftButton) -> None:  # type: ignore[no-untyped-def]
    """Press at the first point, move through the others, release at the last: real mouse events."""
    viewport = tab.view.viewport()
    qtbot.mousePress(viewport, button, pos=points[0])
    for p in points[1:]:
        qtbot.mouseMove(viewport, p)
    qtbot.mouseRelease(viewport, button, pos=points[-1])


def key(tab, k: Qt.Key, modifiers=Qt.KeyboardModifier.NoModifier) -> None:  # type: ignore[no-untyped-def]
    QTest.keyClick(tab.view, k, modifiers)


def test_brush_eraser_undo_with_the_mouse_on_zoomed_views(qtbot, make_window, tiles) -> None:  # type: ignore[no-untyped-def]
    window, tab = compared(qtbot, make_window, *tiles)
    painter = tab.painter
    assert painter.ready and painter.label.shape == (H, W) and not painter.label.any()
    assert "No label yet" in painter.status.text()
    for act, shown in ((painter.act_brush, "(B)"), (painter.act_eraser, "(E)"), (painter.act_fill, "(G)"),
                       (painter.act_pan, "(H)"), (painter.act_undo, "(Ctrl+Z)"), (painter.act_save, "(Ctrl+S)"),
                       (painter.act_show, "(L)")):  # fmt: skip
        assert shown in act.toolTip(), act.text()
    assert "[" in painter.brush_size.toolTip() and "]" in painter.brush_size.toolTip()

    # zoomed in 3x: a one-pixel brush paints exactly the pixel clicked
    tab.view.resetTransform()
    tab.view.scale(3, 3)
    tab.view.centerOn(100, 80)
    key(tab, Qt.Key.Key_B)
    assert painter.tool == "brush" and painter.act_brush.isChecked()
    painter.brush_size.setValue(1)
    drag(qtbot, tab, [at(tab, 100, 80)])
    assert np.argwhere(painter.label).tolist() == [[80, 100]]
    assert painter.dirty and "Unsaved" in painter.status.text()

    # zoomed out to half size: the pixel under the pointer, not the viewport position, is painted
    tab.view.resetTransform()
    tab.view.scale(0.5, 0.5)
    pos = QPoint(tab.view.viewport().width() // 2 + 3, tab.view.viewport().height() // 2 - 5)
    row, col = pixel_under(tab, pos)
    assert 0 <= row < H and 0 <= col < W and (row, col) != (80, 100)
    drag(qtbot, tab, [pos])
    assert painter.label[row, col] == 255 and int((painter.label > 0).sum()) == 2

    # a stroke, 9 pixels wide, from (60, 200) to (140, 200) at the size that fits the window
    tab.view.fitInView(tab.view.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
    for _ in range(8):
        key(tab, Qt.Key.Key_BracketRight)  # ] grows the brush
    assert painter.brush_size.value() > 8
    painter.brush_size.setValue(9)
    dots = painter.label > 0
    drag(qtbot, tab, [at(tab, 60, 200), at(tab, 90, 200), at(tab, 120, 201), at(tab, 140, 200)])
    lab = painter.label > 0
    assert lab[199:202, 62:139].all()  # along the stroke
    column = np.flatnonzero(lab[:, 110])
    assert 194 <= column.min() <= 197 and 203 <= column.max() <= 206  # 9 pixels across, give or take the view
    rows, cols = np.nonzero(lab & ~dots)
    assert rows.min() >= 194 and rows.max() <= 206 and cols.min() >= 54 and cols.max() <= 146  # nothing elsewhere
    painted = lab.copy()

    # the eraser takes part of the stroke away
    key(tab, Qt.Key.Key_E)
    assert painter.tool == "eraser"
    painter.brush_size.setValue(5)
    drag(qtbot, tab, [at(tab, 95, 200), at(tab, 105, 200)])
    assert not (painter.label[198:203, 96:105] > 0).any()
    assert painter.label[200, 70] == 255 and painter.label[200, 130] == 255

    # Ctrl+Z, within the tab, undoes the eraser, then the stroke; Ctrl+Shift+Z redoes the stroke. The window's
    # Undo (of a trash, on the Duplicates tab) has Ctrl+Z too: it waits there, or Qt would run neither
    trashed = object()
    window.file_actions.undo_stack.append(trashed)
    window.tabs.setCurrentWidget(window.splitter)
    assert window.act_undo.isEnabled()
    window.tabs.setCurrentWidget(window.changes)
    assert not window.act_undo.isEnabled()
    key(tab, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(painter.label > 0, painted)
    key(tab, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert int((painter.label > 0).sum()) == 2
    key(tab, Qt.Key.Key_Z, Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(painter.label > 0, painted)
    assert window.file_actions.undo_stack == [trashed]  # the trash was not undone
    window.file_actions.undo_stack.clear()

    # panning while the brush is active: Space + drag, and the middle button; neither paints
    key(tab, Qt.Key.Key_B)
    tab.view.resetTransform()
    tab.view.scale(3, 3)
    tab.view.centerOn(W / 2, H / 2)
    bars = tab.view.horizontalScrollBar(), tab.view.verticalScrollBar()
    start = [b.value() for b in bars]
    centre = QPoint(tab.view.viewport().width() // 2, tab.view.viewport().height() // 2)
    QTest.keyPress(tab.view, Qt.Key.Key_Space)
    drag(qtbot, tab, [centre, centre + QPoint(20, 10), centre + QPoint(60, 30)])
    QTest.keyRelease(tab.view, Qt.Key.Key_Space)
    assert [b.value() for b in bars] != start and np.array_equal(painter.label > 0, painted)
    start = [b.value() for b in bars]
    drag(qtbot, tab, [centre, centre - QPoint(30, 20), centre - QPoint(50, 40)], Qt.MouseButton.MiddleButton)
    assert [b.value() for b in bars] != start and np.array_equal(painter.label > 0, painted)
    # H goes back to Pan: the left button drags the picture again
    key(tab, Qt.Key.Key_H)
    assert painter.tool == "pan"
    start = [b.value() for b in bars]
    drag(qtbot, tab, [centre, centre + QPoint(25, 25), centre + QPoint(50, 50)])
    assert [b.value() for b in bars] != start and np.array_equal(painter.label > 0, painted)
    # L hides and shows the label layer
    key(tab, Qt.Key.Key_L)
    assert not painter.layer.isVisible()
    key(tab, Qt.Key.Key_L)
    assert painter.layer.isVisible()


def components(mask, point: tuple[int, int]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The 8-connected component of ``mask`` holding ``point`` (row, column), by OpenCV's labelling."""
    import cv2

    _, labels = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
    return labels == labels[point]  # type: ignore[no-any-return]


def test_fill_region_takes_what_the_map_proposes(qtbot, make_window, tiles) -> None:  # type: ignore[no-untyped-def]
    window, tab = compared(qtbot, make_window, *tiles)
    painter = tab.painter
    proposed = tab.current.regions_at(tab.threshold.value() / 100, tab.min_area.value())[0]
    hy, hx = HOUSES["t1"]
    inside = (hy + 50, hx + 50)
    assert proposed[inside], "the map did not propose the pasted houses"
    key(tab, Qt.Key.Key_G)
    assert painter.tool == "fill"
    drag(qtbot, tab, [at(tab, inside[1], inside[0])])
    region = components(proposed, inside)
    assert np.array_equal(painter.label > 0, region)
    # a click where the map proposes nothing adds nothing, and says why
    outside = np.argwhere(proposed == 0)[0]
    drag(qtbot, tab, [at(tab, int(outside[1]), int(outside[0]))])
    assert np.array_equal(painter.label > 0, region) and "No proposed region" in painter.status.text()
    # Clear, then double-click the first row of the regions list: the largest region comes back
    painter.act_clear.trigger()
    assert not painter.label.any()
    _, regions = tab.current.regions_at(tab.threshold.value() / 100, tab.min_area.value())
    x, y, w, h = regions[0].bbox
    rect = tab.regions.visualItemRect(tab.regions.item(0, 0))
    qtbot.mouseClick(tab.regions.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # a double click's
    qtbot.mouseDClick(tab.regions.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # events, in order
    first = np.zeros_like(region)
    first[y : y + h, x : x + w] = True
    first &= components(proposed, tuple(np.argwhere(proposed[y : y + h, x : x + w])[0] + [y, x]))
    assert int(first.sum()) == regions[0].area_px and np.array_equal(painter.label > 0, first)
    # Shift+G takes every proposed region
    key(tab, Qt.Key.Key_G, Qt.KeyboardModifier.ShiftModifier)
    assert np.array_equal(painter.label > 0, proposed > 0)
    key(tab, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(painter.label > 0, first)


def test_labels_are_saved_kept_by_content_and_shown_again(qtbot, make_window, tiles, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before, after = tiles
    window, tab = compared(qtbot, make_window, before, after)
    painter, store = tab.painter, window.ctx.labels
    t1 = raster_hash(str(before / "t1.png")), raster_hash(str(after / "t1.png"))
    t2 = raster_hash(str(before / "t2.png")), raster_hash(str(after / "t2.png"))
    key(tab, Qt.Key.Key_B)
    drag(qtbot, tab, [at(tab, 20, 30), at(tab, 200, 30)])
    assert painter.dirty and painter.act_save.isEnabled() and "Unsaved" in painter.status.text()
    assert store.change_mask(*t1) is None
    with qtbot.waitSignal(painter.saved, timeout=TIMEOUT):
        qtbot.mouseClick(painter.toolbar.widgetForAction(painter.act_save), Qt.MouseButton.LeftButton)
    first = painter.label.copy()
    assert np.array_equal(store.change_mask(*t1), first) and first.any()
    assert not painter.dirty and not painter.act_save.isEnabled() and painter.status.text() == "Saved"

    # more painting, then another pair is shown: saved on the way, without asking
    drag(qtbot, tab, [at(tab, 300, 250), at(tab, 400, 260)])
    second = painter.label.copy()
    with qtbot.waitSignal(painter.loaded, timeout=TIMEOUT):
        tab.pair_list.setCurrentRow(1)
    assert np.array_equal(store.change_mask(*t1), second) and not np.array_equal(second, first)
    assert painter.ready and not painter.label.any() and store.change_mask(*t2) is None
    assert painter.status.text() in ("t1: saved", "No label yet")  # the autosave said, or already the new state
    drag(qtbot, tab, [at(tab, 10, 300), at(tab, 80, 310)])
    t2_label = painter.label.copy()
    with qtbot.waitSignal(painter.loaded, timeout=TIMEOUT):
        tab.pair_list.setCurrentRow(0)
    assert np.array_equal(painter.label, second) and not painter.dirty  # shown again, as saved
    assert painter.status.text() == "Saved label" and painter.act_delete.isEnabled()
    assert np.array_equal(store.change_mask(*t2), t2_label)

    # the folders renamed: the labels follow the content, and the store learns the new paths
    moved_before, moved_after = tmp_path / "2019", tmp_path / "2024"
    shutil.move(before, moved_before)
    shutil.move(after, moved_after)
    with qtbot.waitSignals([tab.compared, painter.loaded], timeout=TIMEOUT):
        tab.handle_drop([str(moved_before), str(moved_after)])
    assert np.array_equal(painter.label, second)
    stored = store.change_mask_label(*t1)
    assert stored is not None and stored.before.path == str(moved_before / "t1.png")
    assert stored.after.path == str(moved_after / "t1.png")

    # painting left unsaved when the window closes is saved
    key(tab, Qt.Key.Key_E)
    drag(qtbot, tab, [at(tab, 20, 30), at(tab, 200, 30)])
    assert painter.dirty
    last = painter.label.copy()
    window.shutdown()
    assert np.array_equal(store.change_mask(*t1), last)
    assert {(s.before.content_hash, s.after.content_hash) for s in store.change_masks()} == {t1, t2}


def test_a_saved_label_can_be_deleted(qtbot, make_window, tiles) -> None:  # type: ignore[no-untyped-def]
    window, tab = compared(qtbot, make_window, *tiles)
    painter, store = tab.painter, window.ctx.labels
    key(tab, Qt.Key.Key_B)
    drag(qtbot, tab, [at(tab, 50, 50), at(tab, 60, 90)])
    key(tab, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert store.change_mask_count() == 1 and not painter.dirty
    painter.act_delete.trigger()
    assert store.change_mask_count() == 0 and not painter.label.any() and not painter.dirty
    assert not painter.act_delete.isEnabled()


def test_a_label_from_an_earlier_session_is_shown(qtbot, make_window, tiles, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A label stored by an earlier session is shown when its pair is; one that no longer fits the image (another
    size) is not shown, said so, and replaced by the next save."""
    from dedup_app.core.change.painted import labelled_raster

    before, after = tiles
    db = tmp_path / "app" / "labels.sqlite3"
    store = LabelStore(db)
    mask = np.zeros((H, W), np.uint8)
    mask[100:140, 30:400] = 255
    mask[5, 7] = 255
    store.put_change_mask(labelled_raster(str(before / "t1.png")), labelled_raster(str(after / "t1.png")), mask)
    t2 = labelled_raster(str(before / "t2.png")), labelled_raster(str(after / "t2.png"))
    store.put_change_mask(*t2, np.full((H // 2, W // 2), 255, np.uint8))
    store.close()
    window = make_window(labels_path=db)
    window.tabs.setCurrentWidget(window.changes)
    tab, painter = window.changes, window.changes.painter
    with qtbot.waitSignals([tab.compared, painter.loaded], timeout=TIMEOUT):
        tab.handle_drop([str(before), str(after)])
    assert np.array_equal(painter.label, mask) and not painter.dirty
    with qtbot.waitSignal(painter.loaded, timeout=TIMEOUT):
        tab.pair_list.setCurrentRow(1)
    assert painter.ready and not painter.label.any() and painter.status.text() == "Saved label not shown"
    assert "224 x 160, this image 448 x 320" in painter.status.toolTip()
    key(tab, Qt.Key.Key_B)
    drag(qtbot, tab, [at(tab, 100, 100), at(tab, 120, 100)])
    key(tab, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    replaced = window.ctx.labels.change_mask(t2[0].content_hash, t2[1].content_hash)
    assert replaced is not None and np.array_equal(replaced, painter.label) and replaced.shape == (H, W)
