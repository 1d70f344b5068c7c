"""Issue 13, the window at a million files: the groups view is handed its rows a chunk at a time, and nothing that
runs on the UI thread while showing, sorting or regrouping walks every group.

Here a few hundred groups of real (tiny) files stand in for the hundred thousand: with :data:`CHUNK` rows per
chunk the same code paths run (fetching on scroll, expansion of each fetched group, a sort that keeps the selected
file, marks counted as they change). ``benchmarks/scale.py --window`` measures them at a million files.
"""

from __future__ import annotations

import gc
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import Qt

from dedup_app.controllers.review import ScanOutcome, grouping
from dedup_app.core.duplicates import DuplicateFinder
from dedup_app.core.imageio import ImageInfo
from dedup_app.core.progress import drive
from dedup_app.core.scan import ImageRecord, ScanResult
from dedup_app.ui import gc as garbage_collector
from dedup_app.ui.models import CHUNK, COL_FILE, COL_SIZE, FOLLOW

GROUPS = 3 * CHUNK + 17  # three chunks and a bit


def pairs_finder(folder: Path, groups: int = GROUPS) -> DuplicateFinder:
    """``groups`` pairs of near-identical vectors (one pair per picture), plus a third copy in every fifth, on real
    small PNG files of different sizes (the size sort has something to sort)."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((groups, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    images, vectors = [], []
    tile = np.full((8, 8, 3), 120, np.uint8)
    for g in range(groups):
        for k in range(3 if g % 5 == 0 else 2):
            path = folder / f"g{g:04d}-{k}.png"
            cv2.imwrite(str(path), tile)
            images.append(ImageRecord(str(path), 1000 + 37 * g + k, g, f"{g}-{k}", ImageInfo(8, 8, "PNG")))
            v = base[g] + 0.02 * k * rng.standard_normal(32).astype(np.float32)
            vectors.append(v / np.linalg.norm(v))
    finder = DuplicateFinder(ScanResult([str(folder)], "m", 0.9, images, np.array(vectors, np.float16), []))
    drive(finder.search(0.8))
    return finder


def show(window, finder: DuplicateFinder, threshold: float = 0.9) -> None:  # type: ignore[no-untyped-def]
    first = grouping(finder, threshold, "best", [])
    window._scan_done(ScanOutcome(finder, "m", threshold, threshold, first, "", window._preparer()(first)))


def test_the_view_gets_its_groups_a_chunk_at_a_time_each_expanded(qtbot, make_window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    finder = pairs_finder(tmp_path)
    show(window, finder)
    model, tree = window.model, window.tree
    assert len(model.groups) == GROUPS
    # the first chunk (the view's first layout may ask for one more)
    given = model.rowCount()
    assert given in (CHUNK, 2 * CHUNK) and model.canFetchMore(model.index(-1, 0).parent())
    assert all(tree.isExpanded(model.index(r, 0)) for r in range(given))
    assert f"{GROUPS:,} groups" in window.summary.text()
    # scrolling to the end hands the view the next chunk, expanded too
    tree.scrollToBottom()
    qtbot.waitUntil(lambda: model.rowCount() > given)
    assert all(tree.isExpanded(model.index(r, 0)) for r in range(model.rowCount()))
    # a key that walks to the next pair goes past what the view has (labelling on and on)
    last = model.rowCount() - 1
    tree.setCurrentIndex(model.index(1, 0, model.index(last, 0)))
    window._go_to_next_pair()
    gi, member = window.current_member()
    assert gi == last + 1 and member is not None and model.rowCount() > last + 1


def test_a_sort_keeps_the_selected_file_and_orders_every_group(qtbot, make_window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    show(window, pairs_finder(tmp_path))
    model, tree = window.model, window.tree
    # sorted by bytes freed, largest first (the default), across all the groups, not only those fetched
    freed = [g.reclaimable_bytes for g in model.groups]
    assert freed == sorted(freed, reverse=True)
    assert len(set(freed)) == GROUPS  # no ties: ascending is the reverse
    chosen = model.groups[GROUPS - 1 - (CHUNK + 5)].members[1].image.path  # lands on row CHUNK + 5 ascending
    tree.setCurrentIndex(model.locate(chosen))
    tree.sortByColumn(COL_SIZE, Qt.SortOrder.AscendingOrder)
    assert [g.reclaimable_bytes for g in model.groups] == sorted(freed)
    assert window.current_member()[1].image.path == chosen  # type: ignore[union-attr]
    assert model.row_of(model.marks.group_of(chosen)) == CHUNK + 5  # past the first chunk: fetched to follow it
    assert tree.isExpanded(tree.currentIndex().parent())
    tree.sortByColumn(COL_FILE, Qt.SortOrder.DescendingOrder)  # the groups of three first
    sizes = [len(g.members) for g in model.groups]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 3


def test_a_selection_far_down_does_not_make_the_view_take_every_row(qtbot, make_window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    show(window, pairs_finder(tmp_path))
    model = window.model
    far = model.groups[-1].members[1].image.path
    given = model.rowCount()
    assert FOLLOW < GROUPS - 1 and not model.locate(far).isValid() and model.rowCount() == given
    tree = window.tree
    tree.setCurrentIndex(model.index(1, 0, model.index(0, 0)))
    tree.sortByColumn(COL_SIZE, Qt.SortOrder.AscendingOrder)  # the selected group goes to the last row: not followed
    assert model.rowCount() < GROUPS and window.current_member()[0] in (-1, 0)
    far = model.groups[-1].members[1].image.path
    found = model.locate(far, limit=GROUPS)
    assert found.isValid() and model.member(found)[1].image.path == far  # type: ignore[union-attr]
    assert model.rowCount() == len(model.groups)


def test_marks_are_counted_as_they_change(qtbot, make_window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    show(window, pairs_finder(tmp_path))
    marks = window.model.marks

    def recount() -> tuple[int, int]:
        paths = window.model.marked_in_view()
        sizes = {m.image.path: m.image.size for g in marks.groups for m in g.members}
        return len(paths), sum(sizes[p] for p in paths)

    assert (marks.count(), marks.marked_bytes()) == recount() and marks.count() > 0
    group = marks.groups[0]
    window.model.unmark_group(0)
    window.model.set_keep(group.members[1].image.path)  # K: the file kept before is ticked instead
    window.model.toggle_mark(marks.groups[3].members[1].image.path)
    window.model.mark_all_in_group(0)
    assert (marks.count(), marks.marked_bytes()) == recount()
    assert window.act_trash.text().startswith(f"Trash {marks.count()} (")


def test_a_choice_made_while_a_regroup_runs_is_kept(qtbot, make_window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    finder = pairs_finder(tmp_path)
    show(window, finder)
    model = window.model
    path = model.groups[0].members[1].image.path
    prepare = window._preparer()  # the user's choices as they are when the regroup starts
    late = prepare(grouping(finder, 0.95, "best", []))
    assert path in model.marked
    model.toggle_mark(path)  # meanwhile the user unticks a file
    window._regroup_request += 1
    window._show_prepared(window._regroup_request, late)
    assert path in {m.image.path for g in model.groups for m in g.members} and path not in model.marked


def test_a_slider_drag_regroups_once_it_rests(qtbot, make_window, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import dedup_app.ui.main_window as main_window

    window = make_window()
    finder = pairs_finder(tmp_path)
    show(window, finder)
    thresholds: list[float] = []
    real = main_window.grouping

    def counted(finder, threshold, *args):  # type: ignore[no-untyped-def]
        thresholds.append(threshold)
        return real(finder, threshold, *args)

    monkeypatch.setattr(main_window, "grouping", counted)
    for value in (910, 930, 950, 970, 990):  # a drag, faster than the slider's rest
        window.slider.setValue(value)
    with qtbot.waitSignal(window.groups_changed, timeout=5000):
        pass
    assert thresholds == [0.99]
    assert all(min(m.similarity for m in g.members) >= 0.99 - 1e-3 for g in window.model.groups)


def test_a_rule_change_on_a_large_scan_marks_on_a_pool_thread(qtbot, make_window, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import dedup_app.ui.main_window as main_window

    monkeypatch.setattr(main_window, "BACKGROUND_FROM", 1)  # as a million files would
    window = make_window()
    show(window, pairs_finder(tmp_path))
    model = window.model
    three = next(g for g in model.groups if len(g.members) == 3)
    middle = sorted(three.members, key=lambda m: m.image.size)[1].image.path
    model.set_keep(middle)  # the user's choice, which a new rule drops
    with qtbot.waitSignal(window.groups_changed, timeout=10_000):
        window.rule_box.setCurrentIndex(window.rule_box.findData("largest"))
        assert model.marks.rule == "best"  # not here and now: on a pool thread
    assert model.marks.rule == "largest" and len(model.groups) == GROUPS
    for group in model.groups:
        largest = max(group.members, key=lambda m: m.image.size).image.path
        assert model.marks.keep_of(group) == largest
        others = {m.image.path for m in group.members} - {largest}
        assert largest not in model.marked and model.marked | model.unsure >= others  # (unsure: under 0.95)
    assert middle not in model.unsure and middle in model.marked


def test_a_large_scan_regroups_after_a_label_and_a_trash_on_a_pool_thread(  # type: ignore[no-untyped-def]
    qtbot, make_window, tmp_path: Path, monkeypatch
) -> None:
    import dedup_app.ui.main_window as main_window

    monkeypatch.setattr(main_window, "BACKGROUND_FROM", 1)  # as a million files would
    window = make_window()
    show(window, pairs_finder(tmp_path))
    model = window.model
    # "not duplicate" splits the pair shown; the group now at its place is selected once the regroup lands
    gi = next(k for k, g in enumerate(model.groups) if len(g.members) == 2)
    window.tree.setCurrentIndex(model.index(1, 0, model.index(gi, 0)))
    pair = {window.compare.a.image.path, window.compare.b.image.path}
    with qtbot.waitSignal(window.groups_changed, timeout=10_000):
        window.act_notdup.trigger()
        assert any(pair <= {m.image.path for m in g.members} for g in model.groups)  # not yet: on a pool thread
    assert len(model.groups) == GROUPS - 1
    assert not any(pair <= {m.image.path for m in g.members} for g in model.groups)
    assert window.current_member()[0] == gi
    # files trashed (or moved) stay on screen until the regroup lands: Trash again must not take them
    marked = model.marked_in_view()
    window.file_actions.removed.update(marked[:3])
    assert window._marked_here() == marked[3:]
    window.file_actions.removed.difference_update(marked[:3])
    with qtbot.waitSignal(window.groups_changed, timeout=60_000):
        window.act_trash.trigger()
    assert not any(Path(p).exists() for p in marked)
    assert not {m.image.path for g in model.groups for m in g.members} & set(marked)


def test_collection_waits_for_a_regroup_and_a_large_result_is_frozen(qtbot, make_window) -> None:  # type: ignore[no-untyped-def]
    make_window()
    collector = garbage_collector._installed
    assert collector is not None
    collections: list[int] = []

    def seen(phase: str, info: dict) -> None:  # type: ignore[type-arg]
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        garbage_collector.pause()
        junk = [[] for _ in range(5000)]  # far past the youngest generation's threshold
        collector.check()
        assert collections == []
        garbage_collector.resume()
        collector.check()
        assert collections, "the tick after the regroup collects"
        del junk
    finally:
        gc.callbacks.remove(seen)
    assert not garbage_collector.settle(garbage_collector.LARGE - 1) and gc.get_freeze_count() == 0
    try:
        assert garbage_collector.settle(garbage_collector.LARGE) and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
