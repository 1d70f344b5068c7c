"""Model > Train change head… offscreen: the painted labels counted, a folder of labelled pairs added, a tiny training
run on the worker with a live curve, the starting and the new head measured on validation pairs, Activate making the
head the Changes tab's default; Model > Use change head; a switch during a running job waits for it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image

from dedup_app.core.progress import CancelToken, Progress
from tests.conftest import paint_labels, tiny_change_pair, write_change_head

pytestmark = pytest.mark.gui
TIMEOUT = 300_000


def labelled_folder(root: Path, shared_data: Path) -> Path:
    """A LEVIR-layout folder (A/, B/, label/) with one training and one validation tile."""
    for sub in ("A", "B", "label"):
        (root / sub).mkdir(parents=True)
    for name, y0 in (("train_a", 600), ("val_a", 800)):
        before, after, label = tiny_change_pair(root / "src", shared_data, name, y0)
        Image.open(before).save(root / "A" / f"{name}.png")
        Image.open(after).save(root / "B" / f"{name}.png")
        Image.fromarray(label).save(root / "label" / f"{name}.png")
    return root


def test_train_a_change_head_on_painted_labels_then_activate(
    qtbot, make_window, tmp_path: Path, shared_data: Path, resources_copy: Path
) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    tab = window.changes
    assert tab.model.currentData() == "general"  # nothing registered yet: the shipped default
    tiles = tmp_path / "tiles"
    pairs = [tiny_change_pair(tiles, shared_data, name, y0) for name, y0 in (("one", 0), ("two", 200), ("gone", 400))]
    paint_labels(window.ctx.labels, pairs)
    Path(pairs[2][0]).unlink()  # moved away since the painting: left out, and named
    folder = labelled_folder(tmp_path / "levir", shared_data)
    window.choose_folder = lambda *args: str(folder)  # type: ignore[method-assign]

    dialog = window.open_change_training()
    assert "3 painted change labels" in dialog.intro.text()
    assert not dialog.fine_tune.isEnabled()  # nothing active to fine-tune: Features is in use
    dialog.add_folder()
    dialog.add_folder()  # once only
    assert dialog.folder_list() == [str(folder)]
    dialog.epochs.setValue(1)
    dialog.name.setText("my roofs")
    dialog.recipe = {"steps_per_epoch": 3, "batch_size": 2, "crop": 64, "copies": 1}
    with qtbot.waitSignal(window.job_finished, timeout=TIMEOUT):
        dialog.start()
    assert dialog.result is not None, dialog.status.text()
    training = dialog.result
    assert training.train == {"painted": 1, "levir": 1} and training.val == {"painted": 1, "levir": 1}
    assert dialog.curve.losses and len(dialog.curve.f1) == 2  # the start and the one epoch
    assert dialog.table.count() == 15  # header + starting head + new head, five columns
    texts = [dialog.table.itemAt(i).widget().text() for i in range(dialog.table.count())]
    assert "<b>Untrained head</b>" in texts and "<b>New head (epoch 1)</b>" in texts
    status = dialog.status.text()
    assert "Checked on 2 validation pairs the training did not see (1 painted, 1 levir)" in status
    assert "1 painted label was left out: " in status and "gone_before.png: file not found" in status

    dialog.activate_button.setEnabled(True)  # whether or not it improved, activation must work
    dialog.activate()
    registry = window.ctx.change_registry()
    head = registry.active_id
    assert head is not None and head.startswith("my-roofs-")
    assert registry.entry(head).name == "my roofs"  # type: ignore[union-attr]
    assert "is now the default on the Changes tab" in dialog.status.text()
    # the Changes tab offers it by name and uses it by default
    assert tab.model.currentData() == head and tab.model.currentText() == "my roofs"
    tab.before_zone.set_path(pairs[0][0])
    tab.after_zone.set_path(pairs[0][1])
    with qtbot.waitSignal(tab.compared, timeout=TIMEOUT):
        tab.compare()
    assert tab.current.model.endswith("+ my roofs") and "Note:" not in tab.info.text()
    dialog.close()

    # training again fine-tunes the active head: the starting row is that head's
    dialog = window.open_change_training()
    assert dialog.fine_tune.isEnabled() and dialog.fine_tune.isChecked() and "my roofs" in dialog.fine_tune.text()
    dialog.add_folder()  # the same validation pairs as the first run
    dialog.epochs.setValue(1)
    dialog.recipe = {"steps_per_epoch": 1, "batch_size": 2, "crop": 64, "copies": 1}
    with qtbot.waitSignal(window.job_finished, timeout=TIMEOUT):
        dialog.start()
    texts = [dialog.table.itemAt(i).widget().text() for i in range(dialog.table.count())]
    assert "<b>Active head (my roofs)</b>" in texts, dialog.status.text()
    before_f1 = float(texts[6])
    assert before_f1 == pytest.approx(registry.entry(head).metrics["validation"]["f1"], abs=0.002)  # type: ignore[union-attr]
    dialog.close()

    window.rollback_change_head()
    assert window.ctx.change_registry().active_id is None and tab.model.currentData() == "general"


def test_too_few_painted_labels_are_refused_with_a_reason(qtbot, make_window, tmp_path: Path, shared_data: Path
                                                          ) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    window = make_window()
    dialog = window.open_change_training()
    assert "0 painted change labels" in dialog.intro.text() and not dialog.start_button.isEnabled()
    paint_labels(window.ctx.labels, [tiny_change_pair(tmp_path / "tiles", shared_data, "one", 0)])
    dialog = window.open_change_training()
    assert "1 painted change labels" in dialog.intro.text() and dialog.start_button.isEnabled()
    with qtbot.waitSignal(window.job_finished, timeout=TIMEOUT):
        dialog.start()
    assert dialog.result is None and dialog.status.text().startswith("Cannot train: too little to train on")
    assert not dialog.activate_button.isEnabled() and dialog.start_button.isEnabled()
    assert window.ctx.change_registry().entries() == []


def test_use_change_head_menu_lists_heads_and_greys_what_cannot_be_used(
    make_window, tmp_path: Path, resources_copy: Path
) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    registry = window.ctx.change_registry()
    mine = registry.add_file(write_change_head(tmp_path / "mine.pt", "mine"))
    gone = registry.add_file(write_change_head(tmp_path / "gone.pt", "gone"))
    gone.file.unlink()
    window._fill_change_heads_menu()
    actions = {a.text(): a for a in window.change_heads_menu.actions() if not a.isSeparator()}
    default = actions["Shipped default (now Features)"]
    assert default.isEnabled() and default.isChecked()
    assert not actions["General (shipped, not installed)"].isEnabled()
    assert not actions["Buildings (shipped, not installed)"].isEnabled()
    assert actions["Features (training-free)"].isEnabled()
    (unusable,) = [a for text, a in actions.items() if text.startswith("gone")]
    assert not unusable.isEnabled() and "unusable: file missing" in unusable.text()
    (usable,) = [a for text, a in actions.items() if text.startswith("mine")]
    text = usable.text()
    usable.trigger()
    assert window.ctx.change_registry().active_id == mine.model_id
    assert window.changes.model.currentData() == mine.model_id
    window._fill_change_heads_menu()
    checked = [a.text() for a in window.change_heads_menu.actions() if a.isChecked()]
    assert checked == [text]


def test_switching_the_change_head_waits_for_a_running_job(qtbot, make_window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    registry = window.ctx.change_registry()
    mine = registry.add_file(write_change_head(tmp_path / "mine.pt", "mine"))
    release = threading.Event()

    def job(cancel: CancelToken):  # type: ignore[no-untyped-def]
        while not release.wait(0.02):
            cancel.raise_if_cancelled()
            yield Progress("Comparing", 0, None)
        return None

    assert window.run_job("change", job, lambda _result: None, "Comparing")
    window.use_change_head(mine.model_id)
    assert "will be the default once the current job (change) is over" in window.statusBar().currentMessage()
    assert window.ctx.change_registry().active_id is None and window.changes.model.currentData() == "general"
    with pytest.raises(ValueError, match="no change head 'nope'"):
        window.change_heads.activate("nope")  # refused at once, not when the job is over
    with qtbot.waitSignal(window.job_finished, timeout=30_000):
        release.set()
    assert window.ctx.change_registry().active_id == mine.model_id
    assert window.changes.model.currentData() == mine.model_id


def test_the_curve_places_losses_by_their_step(qtbot) -> None:  # type: ignore[no-untyped-def]
    """The worker passes on only some steps' losses: they were drawn one after another from the left, so a curve
    missing steps ended short of the validation point reported at the same step."""
    from dedup_app.ui.train_dialog import CurveView

    curve = CurveView()
    qtbot.addWidget(curve)
    curve.resize(430, 200)
    for step in (1, 5, 10):
        curve.add_loss(step, 10, 1.0 / step)
    curve.add_validation(10, 0.5)
    loss, f1 = curve.points()
    area = curve.plot_area()
    assert loss[-1].x() == pytest.approx(f1[-1].x()) == pytest.approx(area.right())
    assert loss[1].x() == pytest.approx(area.left() + area.width() / 2)


def test_an_active_head_of_the_older_format_is_not_fine_tuned(
    qtbot, make_window, tmp_path: Path, shared_data: Path, resources_copy: Path
) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    registry = window.ctx.change_registry()
    old = registry.add_file(write_change_head(tmp_path / "old.pt", "old"))  # format 1
    window.use_change_head(old.model_id)
    tiles = tmp_path / "tiles"
    paint_labels(window.ctx.labels, [tiny_change_pair(tiles, shared_data, n, y0) for n, y0 in (("a", 0), ("b", 200))])
    dialog = window.open_change_training()
    assert dialog.fine_tune.isChecked() and "(old)" in dialog.fine_tune.text()
    dialog.epochs.setValue(1)
    dialog.recipe = {"steps_per_epoch": 1, "batch_size": 2, "crop": 64, "copies": 1}
    with qtbot.waitSignal(window.job_finished, timeout=TIMEOUT):
        dialog.start()
    assert dialog.result is not None and dialog.result.start == "Untrained head"
    assert "Started from an untrained head: a head of the older format cannot be fine-tuned." in dialog.status.text()
    assert window.ctx.change_registry().active_id == old.model_id  # nothing changes until Activate
