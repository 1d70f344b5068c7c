"""Find similar in the window, on real photos: drop an image on the field, paste one, or right-click a file; the
ranked result opens as a group on top, and its matches are ticked, labelled, trashed and restored like a group's."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from PIL import Image, ImageOps
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage
from PySide6.QtWidgets import QApplication

from dedup_app.controllers.similar import SimilarGroup
from dedup_app.core.actions import find_in_trash
from dedup_app.core.labels import DUPLICATE
from dedup_app.ui.main_window import MainWindow
from dedup_app.ui.models import COL_FILE, COL_SIM
from tests.conftest import photo
from tests.gui.test_window import scan

pytestmark = pytest.mark.gui
FIND_TIMEOUT = 60_000
COPIES = ("kodim01_small.jpg", "kodim01_q50.jpg", "kodim01_mirror.png")
OTHERS = ("kodim05.jpg", "kodim14.jpg", "kodim20.jpg", "kodim23.jpg")


@pytest.fixture()
def collection(tmp_path: Path, shared_data: Path) -> Path:
    """Five unrelated photos; three copies of the first (resized, recompressed, mirrored) and one of the second."""
    root = tmp_path / "photos"
    root.mkdir()
    first = photo(shared_data, "kodim01.png")
    first.save(root / "kodim01.jpg", quality=92)
    first.resize((first.width // 2, first.height // 2), Image.Resampling.LANCZOS).save(root / COPIES[0], quality=85)
    first.save(root / COPIES[1], quality=50)
    ImageOps.mirror(first).save(root / COPIES[2])
    for name in OTHERS:
        photo(shared_data, name.replace(".jpg", ".png")).save(root / name, quality=90)
    second = photo(shared_data, "kodim05.png")
    second.resize((second.width * 3 // 4, second.height * 3 // 4)).save(root / "kodim05_small.jpg", quality=80)
    return root


@pytest.fixture()
def scanned(qtbot, make_window, collection: Path) -> MainWindow:  # type: ignore[no-untyped-def]
    window = make_window()
    scan(qtbot, window, collection)
    return window


def drop_on(widget, mime: QMimeData) -> None:  # type: ignore[no-untyped-def]
    """Drag ``mime`` over ``widget`` (the enter event must be accepted) and drop it there."""
    with warnings.catch_warnings():  # the QPoint constructor is the only one PySide6 offers for this event
        warnings.simplefilter("ignore", DeprecationWarning)
        enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier)  # fmt: skip
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted(), "the field refused the drag"
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)  # fmt: skip
    widget.dropEvent(event)
    assert event.isAccepted()


def find(qtbot, window: MainWindow, start) -> None:  # type: ignore[no-untyped-def]
    """Start a search with ``start()`` and wait for its job to end."""
    with qtbot.waitSignal(window.job_finished, timeout=FIND_TIMEOUT, check_params_cb=lambda name: name == "find"):
        start()
        assert window.jobs.busy and window.progress.isVisible()  # on the worker, with progress and Cancel


def result_group(window: MainWindow) -> SimilarGroup:
    group = window.model.groups[0]
    assert isinstance(group, SimilarGroup), "the Find similar result is not on top"
    return group


def shown_texts(window: MainWindow, column: int) -> list[str]:
    top = window.model.index(0, 0)
    return [window.model.index(r, column, top).data() for r in range(window.model.rowCount(top))]


def test_dropped_image_lists_its_copies_first(qtbot, scanned: MainWindow, collection: Path) -> None:  # type: ignore[no-untyped-def]
    window = scanned
    groups_before = len(window.duplicate_groups())
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(collection / "kodim01.jpg"))])
    find(qtbot, window, lambda: drop_on(window.find_field, mime))
    result = window.similar.result
    assert result is not None and not result.external and result.indexed == 9
    ranked = [(Path(r.path).name, m) for r, m in result.matches]
    assert {name for name, _ in ranked[:3]} == set(COPIES)  # the copies first, each a duplicate
    assert all(m.duplicate and m.probability is not None and m.probability > 0.9 for _, m in ranked[:3])
    unrelated = dict(ranked)["kodim23.jpg"]
    assert not unrelated.duplicate and unrelated.probability is not None and unrelated.probability < 0.5
    assert [m.similarity for _, m in ranked] == sorted((m.similarity for _, m in ranked), reverse=True)

    # the view: the query as the reference, then the ranked matches with similarity and probability
    group = result_group(window)
    assert group.query.path == str(collection / "kodim01.jpg") and group.copies == {str(collection / n) for n in COPIES}
    names = shown_texts(window, COL_FILE)
    assert names[0] == "kodim01.jpg\nsearched for"
    assert all("\ncopy " in text and "%" in text for text in names[1:])  # the name, then P(copy) below it
    assert [text.split("\n")[0] for text in names[1:4]] == [Path(r.path).name for r, _ in result.matches[:3]]
    assert names[1].split("\n")[1].startswith("copy >99") and names[-1].split("\n")[1].startswith("copy <")
    sims = shown_texts(window, COL_SIM)
    assert float(sims[1]) == pytest.approx(ranked[0][1].similarity, abs=1e-3)
    top = window.model.index(0, 0)
    assert window.model.index(0, COL_FILE, top).data(Qt.ItemDataRole.CheckStateRole) is None  # never ticked
    assert top.data().startswith("Similar to kodim01.jpg\n3 copies")
    assert len(window.duplicate_groups()) == groups_before  # the duplicate groups stay below
    assert "3 copies of kodim01.jpg among 9 scanned images" in window.statusBar().currentMessage()
    assert "similar to kodim01.jpg" in window.find_field.query.text()

    # the best match opens in the compare view against the query, with its probability of being a copy
    assert window.compare.a.image.path == group.query.path
    assert window.compare.b.image.path == group.members[1].image.path
    compare_text = " ".join(w.text() for w in window.compare.findChildren(type(window.summary)))
    assert "(copy: " in compare_text

    # the slider moves the line between copies and the rest; M ticks only the copies, D labels the pair shown
    window.tree.setCurrentIndex(top)
    window.act_mark_group.trigger()
    marked = set(window.model.marked_in_view())
    kept = {g.keep.path for g in window.duplicate_groups()}  # what each duplicate group keeps (the default rule)
    assert marked >= group.copies - kept and not marked & kept  # every group still keeps a file
    assert not any(Path(p).name in OTHERS for p in marked)
    window.tree.setCurrentIndex(window.model.index(1, 0, top))
    window.act_dup.trigger()
    assert window.ctx.labels.counts()[DUPLICATE] == 1
    window.grab().save(str(collection.parent / "find-similar.png"))


def test_tick_trash_and_undo_a_match(qtbot, scanned: MainWindow, collection: Path) -> None:  # type: ignore[no-untyped-def]
    window = scanned
    query = str(collection / "kodim01_small.jpg")
    find(qtbot, window, lambda: window.find_similar(query))
    for path in list(window.model.marked_in_view()):  # untick what the rule ticked in the duplicate groups
        window.model.toggle_mark(path)
    top = window.model.index(0, 0)
    paths = [window.model.index(r, 0, top).data(Qt.ItemDataRole.UserRole) for r in range(window.model.rowCount(top))]
    # the file the query's own duplicate group keeps (the original): here too it cannot be ticked
    own_keep = next(g.keep.path for g in window.duplicate_groups() if query in {m.image.path for m in g.members})
    assert own_keep != query
    kept = paths.index(own_keep)
    assert window.model.index(kept, COL_FILE, top).data().endswith(" · kept")
    assert window.model.index(kept, COL_FILE, top).data(Qt.ItemDataRole.CheckStateRole) is None
    target = str(collection / "kodim01_q50.jpg")
    row = paths.index(target)
    assert window.model.setData(window.model.index(row, COL_FILE, top), Qt.CheckState.Checked.value,
                                Qt.ItemDataRole.CheckStateRole)  # fmt: skip
    assert window.model.marked_in_view() == [target] and window.act_trash.isEnabled()
    with qtbot.waitSignal(window.job_finished, timeout=FIND_TIMEOUT):
        window.act_trash.trigger()
    assert not os.path.exists(target) and find_in_trash(target) is not None
    assert target not in {m.image.path for m in result_group(window).members}
    assert result_group(window).query.path == query  # the query stays, untouched
    with qtbot.waitSignal(window.job_finished, timeout=FIND_TIMEOUT):
        window.act_undo.trigger()
    assert os.path.exists(target)
    assert target in {m.image.path for m in result_group(window).members}  # back in the ranked list
    window.close_similar()
    assert not any(isinstance(g, SimilarGroup) for g in window.model.groups)
    assert window.duplicate_groups()


@pytest.fixture()
def clipboard():  # type: ignore[no-untyped-def]
    """The application clipboard, emptied after the test: data a test leaves there (a QMimeData it made) would be
    freed by Qt at exit after Python has let go of it, which crashes the interpreter's shutdown."""
    board = QApplication.clipboard()
    yield board
    board.clear()
    QApplication.processEvents()


def test_pasted_image_and_right_click(qtbot, scanned: MainWindow, collection: Path, shared_data: Path,  # type: ignore[no-untyped-def]
                                      clipboard) -> None:  # fmt: skip
    window = scanned
    # a bitmap on the clipboard (a screenshot, an image copied in a browser): searched for, never marked
    picture = ImageOps.mirror(photo(shared_data, "kodim05.png")).resize((384, 256))
    image = QImage(picture.tobytes(), picture.width, picture.height, 3 * picture.width, QImage.Format.Format_RGB888)
    clipboard.setImage(image.copy())
    find(qtbot, window, window.act_find_paste.trigger)
    group = result_group(window)
    assert group.external and group.title == "the pasted image"
    assert {Path(m.image.path).name for m in group.members[1:3]} == {"kodim05.jpg", "kodim05_small.jpg"}
    assert shown_texts(window, COL_FILE)[0] == "the pasted image\nsearched for · not scanned"
    window.tree.setCurrentIndex(window.model.index(0, 0))
    window.act_mark_group.trigger()
    assert group.query.path not in window.model.marked_in_view()  # the pasted image is never offered for removal
    window.tree.setCurrentIndex(window.model.index(0, 0, window.model.index(0, 0)))
    window.toggle_current()
    assert group.query.path not in window.model.marked_in_view()

    # an image file copied in a file manager: searched for as that file
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(collection / "kodim01_q50.jpg"))])
    clipboard.setMimeData(mime)
    find(qtbot, window, window.paste_and_find)
    assert result_group(window).query.path == str(collection / "kodim01_q50.jpg")

    # right-click a file of a duplicate group → Find similar
    gi = next(i for i, g in enumerate(window.model.groups)
              if not isinstance(g, SimilarGroup) and any("kodim05" in m.image.path for m in g.members))  # fmt: skip
    index = window.model.index(0, 0, window.model.index(gi, 0))
    menu = window.file_menu(index)
    wanted = window.model.groups[gi].members[0].image.path
    act = menu.actions()[0]
    assert act.text() == f"Find similar to {Path(wanted).name}"
    find(qtbot, window, act.trigger)
    assert result_group(window).query.path == wanted

    # right-click the picture on the right of the compare view → Find similar
    window.tree.setCurrentIndex(window.model.index(1, 0, window.model.index(0, 0)))
    right = window.compare.b.image.path
    find(qtbot, window, window.compare.file_menu(window.compare.view_b).actions()[0].trigger)
    assert result_group(window).query.path == right


def test_unreadable_query_and_empty_index(qtbot, make_window, tmp_path: Path, collection: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    errors: list[str] = []
    warnings_shown: list[str] = []
    window.show_error = lambda title, message, details="": errors.append(message)  # type: ignore[method-assign]
    window.show_warning = lambda title, message: warnings_shown.append(message)  # type: ignore[method-assign]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    window.choose_image = lambda title: str(broken)  # type: ignore[method-assign]
    assert window.act_find.shortcut().toString() == "Ctrl+F"
    assert window.act_find_paste.shortcut().toString() == "Ctrl+Shift+V"
    find(qtbot, window, window.act_find.trigger)
    assert len(errors) == 1 and str(broken) in errors[0]
    assert window.similar.result is None and window.worker is None
    # the search runs as a job with the usual progress and Cancel
    find(qtbot, window, lambda: (window.find_similar(str(collection / "kodim01.jpg")), window.cancel_job()))
    assert "cancelled" in window.statusBar().currentMessage() and window.similar.result is None
    # nothing scanned yet: said plainly
    find(qtbot, window, lambda: window.find_similar(str(collection / "kodim01.jpg")))
    assert warnings_shown and "scan a folder first" in warnings_shown[0]
    assert window.center.currentWidget() is window.empty
    # the window keeps working: a scan, then the search finds the copies
    scan(qtbot, window, collection)
    find(qtbot, window, lambda: window.find_similar(str(collection / "kodim01.jpg")))
    assert result_group(window).copies == {str(collection / n) for n in COPIES}
    assert len(errors) == 1


def test_results_without_a_scan_in_this_window(qtbot, make_window, collection: Path) -> None:  # type: ignore[no-untyped-def]
    """The index outlives the window: a new window finds among what an earlier one scanned, before any scan."""
    first = make_window()
    scan(qtbot, first, collection)
    first.shutdown()
    window = make_window()
    assert window.finder is None
    find(qtbot, window, lambda: window.find_similar(str(collection / "kodim01.jpg")))
    assert result_group(window).copies == {str(collection / n) for n in COPIES}
    assert window.center.currentWidget() is window.tree and len(window.model.groups) == 1
    with qtbot.waitSignal(window.groups_changed, timeout=10_000):
        window.slider.setValue(990)  # stricter: fewer copies, from memory
    assert len(result_group(window).copies) < 3
    window.close_similar()
    assert window.model.groups == [] and window.center.currentWidget() is not window.tree


def test_a_look_alike_is_shown_but_not_a_copy(qtbot, make_window, tmp_path: Path, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    root = tmp_path / "products"
    root.mkdir()
    pool = shared_data / "photos" / "pool"
    shutil.copy(pool / "cloth_00293.jpg", root / "other_trousers.jpg")  # alike (0.90), a different photo
    with Image.open(pool / "cloth_00250.jpg") as im:
        im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4)).save(root / "copy.jpg", quality=75)
    query = tmp_path / "query.jpg"
    shutil.copy(pool / "cloth_00250.jpg", query)
    window = make_window()
    scan(qtbot, window, root)
    find(qtbot, window, lambda: window.find_similar(str(query)))
    group = result_group(window)
    shown = {Path(m.image.path).name for m in group.members}
    assert {"copy.jpg", "other_trousers.jpg"} <= shown  # both listed, ranked by similarity
    assert group.copies == {str(root / "copy.jpg")}  # only the copy can be ticked by M as a copy
    # lowered past the threshold searched at, the look-alike counts again, as in the duplicate groups
    low = window.similar.group(group.threshold - 0.01)
    assert low is not None and str(root / "other_trousers.jpg") in low.copies
