"""The Changes tab, offscreen: drop two images, compare on the worker, live threshold, swipe, regions, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


@pytest.fixture()
def pair(tmp_path: Path, shared_data: Path) -> tuple[Path, Path]:
    a = np.asarray(Image.open(shared_data / "change" / "demo_pair" / "A" / "demo.png").convert("RGB"))[:512, :512]
    houses = np.asarray(Image.open(shared_data / "change" / "levir_samples" / "B" / "train_36_0512_0512.png")
                        .convert("RGB"))[60:160, 140:240]  # fmt: skip
    b = a.copy()
    b[300:400, 100:200] = houses
    Image.fromarray(a).save(tmp_path / "before.png")
    Image.fromarray(b).save(tmp_path / "after.png")
    return tmp_path / "before.png", tmp_path / "after.png"


def test_compare_two_dropped_images(qtbot, make_window, pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    window.tabs.setCurrentWidget(window.changes)
    tab = window.changes
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.handle_drop([str(pair[0]), str(pair[1])])
    assert tab.before_zone.path == str(pair[0]) and tab.after_zone.path == str(pair[1])
    assert "changed" in tab.pair_list.item(0).text()
    assert tab.regions.rowCount() >= 1
    x, y, w, h = tab.current.regions_at(tab.threshold.value() / 100, tab.min_area.value())[1][0].bbox
    assert 60 < x + w / 2 < 240 and 260 < y + h / 2 < 440  # the pasted houses
    # live threshold: stricter means fewer changed pixels, from memory (no job)
    before = tab.current.summary(0.5, 64)["changed_px"]
    with qtbot.waitSignal(tab.redrawn, timeout=TIMEOUT):  # worked out off the UI thread, newest request shown
        tab.threshold.setValue(95)
    assert window.worker is None
    assert tab.current.summary(0.95, 64)["changed_px"] <= before
    assert tab.threshold_label.text() == "0.95"
    assert f"{tab.current.summary(0.95, 64)['changed_fraction']:.1%} changed" in tab.info.text()
    with qtbot.waitSignal(tab.redrawn, timeout=TIMEOUT):
        tab.threshold.setValue(50)
    # swipe and overlay
    tab.swipe.setValue(25)
    assert tab.view.clip.rect().width() == pytest.approx(512 * 0.25)
    tab.opacity.setValue(30)
    assert tab.view.overlay.opacity() == pytest.approx(0.3)
    # click a region: the view zooms there
    tab.regions.setCurrentCell(0, 0)
    assert tab.view.highlight.rect().width() > 0
    # export
    out = tmp_path / "exported"
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.export_to(str(out))
    assert (out / "before_mask.png").is_file() and (out / "summary.json").is_file()
    assert "Exported 1 pairs" in tab.info.text()


def test_bad_pairs_are_reported(qtbot, make_window, pair, tmp_path: Path, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    window.tabs.setCurrentWidget(window.changes)
    tab = window.changes
    left, right = tmp_path / "L", tmp_path / "R"
    left.mkdir()
    right.mkdir()
    Image.open(pair[0]).save(left / "x.png")
    Image.open(pair[0]).save(right / "y.png")
    tab.before_zone.set_path(str(left))
    tab.after_zone.set_path(str(right))
    tab.compare()
    assert "Cannot compare" in tab.info.text() and window.worker is None
    elsewhere = tmp_path / "elsewhere.png"
    Image.open(shared_data / "photos" / "kodak" / "kodim05.png").crop((0, 0, 512, 512)).save(elsewhere)
    tab.before_zone.set_path(str(pair[0]))
    tab.after_zone.set_path(str(elsewhere))
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):  # same size: compared, with the alignment flagged
        tab.compare()
    assert "alignment not verified" in tab.pair_list.item(0).text() and tab.alignment_note.isVisible()
    wide = tmp_path / "wide.png"
    Image.new("RGB", (900, 300)).save(wide)
    tab.after_zone.set_path(str(wide))
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.compare()
    assert "could not compare" in tab.pair_list.item(0).text() and not tab.alignment_note.isVisible()
    assert "cannot be paired" in tab.info.text() and "wide.png" in tab.info.text()


def test_unverified_alignment_is_mapped_with_a_note(
    qtbot, make_window, pair, tmp_path: Path, shared_data: Path
) -> None:  # type: ignore[no-untyped-def]
    """Bare land that became a neighbourhood (A and B hardly correlate) was refused; it is mapped now, and the
    pair's row, a note over the view and the info line say that its alignment is not verified. The note goes
    away on a pair that lines up."""
    egy = shared_data / "change" / "egy_bcd"
    left, right = tmp_path / "L", tmp_path / "R"
    left.mkdir()
    right.mkdir()
    Image.open(egy / "A" / "val_2.png").save(left / "a_built.png")
    Image.open(egy / "B" / "val_2.png").save(right / "a_built.png")
    Image.open(pair[0]).save(left / "b_houses.png")
    Image.open(pair[1]).save(right / "b_houses.png")
    window = make_window()
    window.tabs.setCurrentWidget(window.changes)
    tab = window.changes
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.handle_drop([str(left), str(right)])
    row = tab.pair_list.item(0)
    assert row.text().startswith("a_built: ") and row.text().endswith("changed, alignment not verified")
    assert "no shift improves it" in row.toolTip()
    assert tab.current.alignment.verified is False and tab.current.summary(0.5, 64)["changed_fraction"] > 0.3
    assert tab.alignment_note.isVisible() and "Alignment not verified" in tab.alignment_note.text()
    assert "Alignment not verified (correlation" in tab.info.text()
    with qtbot.waitSignal(tab.redrawn, timeout=TIMEOUT):
        tab.pair_list.setCurrentRow(1)
    assert not tab.alignment_note.isVisible() and "Alignment: " in tab.info.text()
    assert "not verified" not in tab.pair_list.item(1).text() and not tab.pair_list.item(1).toolTip()
    out = tmp_path / "exported"
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.export_to(str(out))
    assert "Exported 2 pairs" in tab.info.text()


def test_large_results_are_kept_within_a_memory_budget(qtbot, make_window, pair, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Tile folders: only as many results as fit the memory budget are computed up front and kept; the others are
    compared when selected."""
    from dedup_app.ui import changes

    left, right = tmp_path / "L", tmp_path / "R"
    left.mkdir()
    right.mkdir()
    for k in range(3):
        Image.open(pair[0]).save(left / f"t{k}.png")
        Image.open(pair[1]).save(right / f"t{k}.png")
    monkeypatch.setattr(changes, "MAX_RESULT_BYTES", 1)  # one 512 x 512 result is already over it
    window = make_window()
    tab = window.changes
    tab.before_zone.set_path(str(left))
    tab.after_zone.set_path(str(right))
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.compare()
    assert list(tab.results) == [tab.pairs[0].key] and tab.pair_list.count() == 3
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.pair_list.setCurrentRow(2)
    assert list(tab.results) == [tab.pairs[2].key] and tab.current is tab.results[tab.pairs[2].key]
    assert tab.regions.rowCount() >= 1


def test_tiles_sharing_a_name_are_shown_apart(qtbot, make_window, pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``t.png``/``t.jpg`` and ``x/y.png``/``x__y.png`` once all got one name each, and one result between them:
    each tile has its own row, result and export now."""
    left, right = tmp_path / "L", tmp_path / "R"
    (left / "x").mkdir(parents=True)
    (right / "x").mkdir(parents=True)
    changed = ("t.png", "x/y.png")  # their after image has the pasted houses; the others are unchanged
    for rel in ("t.png", "t.jpg", "x/y.png", "x__y.png"):
        Image.open(pair[0]).save(left / rel, quality=95)
        Image.open(pair[1] if rel in changed else pair[0]).save(right / rel, quality=95)
    window = make_window()
    tab = window.changes
    tab.before_zone.set_path(str(left))
    tab.after_zone.set_path(str(right))
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.compare()
    names = [tab.pair_list.item(row).text().split(":")[0] for row in range(tab.pair_list.count())]
    assert names == ["t.jpg", "t.png", "x/y", "x__y"]
    assert len(tab.results) == 4 and len({id(r) for r in tab.results.values()}) == 4
    fractions = {}
    for row in (1, 2, 3, 0):  # the first row is shown already: each of these is a change of row
        p = tab.pairs[row]
        with qtbot.waitSignal(tab.redrawn, timeout=TIMEOUT):
            tab.pair_list.setCurrentRow(row)
        assert tab.current is tab.results[p.key] and tab.current.pair.before == p.before
        assert tab.info.text().startswith(f"{p.name}: ")
        fractions[p.name] = tab.current.summary(0.5, 64)["changed_fraction"]
    assert fractions["t.png"] > 0.01 and fractions["x/y"] > 0.01  # the pasted houses
    assert fractions["t.jpg"] < 0.005 and fractions["x__y"] < 0.005  # nothing changed
    assert "0.0% changed" in tab.pair_list.item(0).text() and "0.0% changed" not in tab.pair_list.item(1).text()
    out = tmp_path / "exported"
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.export_to(str(out))
    assert "Exported 4 pairs" in tab.info.text()
    for name in ("t.jpg", "t.png", "x/y", "x__y"):
        assert (out / f"{name}_mask.png").is_file()


def choose_other_file(tab, monkeypatch, path: str) -> None:  # type: ignore[no-untyped-def]
    """Pick Other file… in the Model box, the file dialog answering ``path`` ("" for Cancel)."""
    from dedup_app.ui import changes

    monkeypatch.setattr(changes.QFileDialog, "getOpenFileName", lambda *args, **kwargs: (path, ""))
    index = tab.model.findData(changes.OTHER_FILE)
    tab.model.setCurrentIndex(index)
    tab.model.activated.emit(index)


def test_change_models_are_offered_by_name(
    qtbot, make_window, pair, tmp_path: Path, resources_copy: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The Model box offers the shipped heads by name (one not installed greyed out), Features, Pixels and Other
    file…; the default falls back to Features with a note while it is not installed; a file chosen with Other
    file… is offered and used, one that is not a change head is refused naming it."""
    import torch

    from dedup_app.ui.changes import OTHER_FILE
    from tests.conftest import write_change_head

    window = make_window()
    window.tabs.setCurrentWidget(window.changes)
    tab = window.changes
    box = tab.model
    assert [box.itemData(i) for i in range(box.count())] == ["general", "buildings", "features", "pixels", OTHER_FILE]
    assert box.currentData() == "general" and box.currentText() == "General (not installed: Features for now)"
    assert box.itemText(1) == "Buildings (not installed)" and not box.model().item(1).isEnabled()
    assert all(box.model().item(i).isEnabled() for i in (0, 2, 3, 4))
    tab.before_zone.set_path(str(pair[0]))
    tab.after_zone.set_path(str(pair[1]))
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.compare()
    assert "feature difference" in tab.current.model
    assert "Note: the default 'general' change head is not installed; using 'features'" in tab.info.text()

    bad = tmp_path / "bad.pt"
    torch.save({"kind": "change-head", "format_version": 1}, bad)
    choose_other_file(tab, monkeypatch, str(bad))
    assert (
        box.currentData() == str(bad) and box.currentText() == "bad.pt" and box.itemData(box.count() - 1) == OTHER_FILE
    )
    with qtbot.waitSignal(tab.refused, timeout=TIMEOUT):
        tab.compare()
    assert tab.info.text() == f"Cannot compare: {bad}: damaged change model file (no 'config')"

    mine = write_change_head(tmp_path / "mine.pt", "mine")
    choose_other_file(tab, monkeypatch, str(mine))
    assert box.currentData() == str(mine)
    choose_other_file(tab, monkeypatch, "")  # Cancel in the dialog: the file chosen before stays
    assert box.currentData() == str(mine)
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.compare()
    assert tab.current.model.endswith("+ mine") and "Note:" not in tab.info.text()
    assert tab.current.summary(0.5, 64)["changed_fraction"] > 0.9  # the head that calls everything changed
    box.setCurrentIndex(box.findData("pixels"))  # the box changes, the results shown (and exported) do not
    out = tmp_path / "exported"
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.export_to(str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["change_model"] == str(mine) and summary["model"].endswith("+ mine")


def test_the_default_change_model_is_used_once_installed(qtbot, make_window, pair, resources_copy: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import write_change_head

    write_change_head(resources_copy / "models" / "change-general.pt", "shipped-general")
    window = make_window()
    tab = window.changes
    assert tab.model.currentData() == "general" and tab.model.currentText() == "General"
    tab.before_zone.set_path(str(pair[0]))
    tab.after_zone.set_path(str(pair[1]))
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.compare()
    assert tab.current.model.endswith("+ shipped-general") and "Note:" not in tab.info.text()
