"""Change heads on the command line, on real files in a data folder of the test's own: ``models`` lists them in
their own section, activates and rolls them back apart from the duplicate model, ``change`` uses the active one by
default and takes a registered id, and ``train-change --from-app --activate`` trains on painted labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dedup_app.cli import main
from dedup_app.core.registry import ChangeHeadRegistry, ModelRegistry
from tests.conftest import paint_labels, tiny_change_pair, write_change_head


@pytest.fixture()
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resources_copy: Path) -> Path:
    """The user's data folder (registries, labels) in the test's folder; no shipped change head installed."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert str(ChangeHeadRegistry().root).startswith(str(tmp_path))
    return tmp_path / "data"


def test_models_lists_the_installed_shipped_heads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resources_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from dedup_app.core.change.heads import SHIPPED_HEADS

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    real = Path(__file__).resolve().parents[2] / "resources" / "models"
    for name in SHIPPED_HEADS.values():
        shutil.copy(real / name, resources_copy / "models" / name)
    assert main(["models"]) == 0
    lines = section(capsys.readouterr().out)
    assert lines[0] == "* default  (shipped: general)"
    assert not any("not installed" in line for line in lines)


def registered_head(folder: Path, name: str, f1: float) -> str:
    """A real change head (it calls everything changed) with validation and held-out F1, registered; its id."""
    from dedup_app.core.change.detect import load_change_head

    path = write_change_head(folder / f"{name}.pt", name)
    head = load_change_head(path)
    head.metrics = {"validation": {"f1": f1}, "held_out": {"f1": f1 - 0.1}}
    head.save(path)
    return ChangeHeadRegistry().add_file(path).model_id


def section(text: str) -> list[str]:
    """The lines of the change heads' section of ``models list``."""
    return text.split("Change heads")[1].splitlines()[1:]


def test_models_lists_activates_and_rolls_back_change_heads(
    data_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = registered_head(tmp_path, "fields", 0.61)
    b = registered_head(tmp_path, "roofs", 0.72)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("* default  (shipped)\n")  # the duplicate models first, as before
    lines = section(out)
    assert lines[0] == "* default  (shipped: features (general is not installed))"
    assert lines[1].startswith("  general  (") and lines[1].endswith("[not installed]")
    assert lines[3].startswith("  features  (")
    assert lines[4] == f"  {a}  fields  val F1 0.610, held-out F1 0.510"
    assert lines[5] == f"  {b}  roofs  val F1 0.720, held-out F1 0.620"

    assert main(["models", "activate", b]) == 0  # found in the change heads' registry
    assert capsys.readouterr().out == f"active change head: {b} (was default)\n"
    assert ChangeHeadRegistry().active_id == b and ModelRegistry().active_id is None
    assert main(["models", "activate", a]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("* default  (shipped)\n") and section(out)[4].startswith(f"* {a}  fields")
    assert main(["models", "rollback"]) == 2  # plain rollback is the duplicate model's: nothing to go back to
    assert "no model was activated before" in capsys.readouterr().err
    assert main(["models", "rollback", "--change"]) == 0
    assert capsys.readouterr().out == f"active change head: {b} (was {a})\n"

    assert main(["models", "activate", "buildings"]) == 2  # a shipped head that is not installed
    assert "'buildings' change head is not installed" in capsys.readouterr().err
    assert main(["models", "activate", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no model or change head 'nope'" in err and a in err and b in err

    ChangeHeadRegistry().entry(b).file.unlink()  # type: ignore[union-attr]
    assert main(["models"]) == 0
    lines = section(capsys.readouterr().out)
    assert lines[0].startswith("* default")  # what is really used
    assert lines[5].startswith(f"  {b}  roofs") and "[unusable: file missing:" in lines[5]
    assert main(["models", "activate", "default", "--change"]) == 0
    assert ChangeHeadRegistry().selected_id is None


def test_change_uses_the_active_head_by_default_and_a_registered_id(
    data_home: Path, tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after, _label = tiny_change_pair(tmp_path / "tiles", shared_data, "t", 0)
    head = registered_head(tmp_path, "everything", 0.5)
    argv = ["change", before, after, "--no-progress", "--device", "cpu", "--out"]

    def run(out: str, *extra: str) -> dict:  # type: ignore[type-arg]
        assert main([*argv, str(tmp_path / out), *extra]) == 0
        return json.loads((tmp_path / out / "summary.json").read_text())  # type: ignore[no-any-return]

    summary = run("by-id", "--model", head)
    assert summary["change_model"] == head and summary["model"].endswith("+ everything")
    assert summary["pairs"][0]["changed_fraction"] > 0.9  # the head that calls everything changed
    summary = run("default")
    assert summary["change_model"] == "features" and "not installed" in summary["change_model_note"]
    capsys.readouterr()
    ChangeHeadRegistry().activate(head)
    summary = run("active")
    assert summary["change_model"] == head and "change_model_note" not in summary
    assert summary["pairs"][0]["changed_fraction"] > 0.9 and capsys.readouterr().err == ""


def test_train_change_from_app_trains_on_painted_labels_and_activates(
    data_home: Path, tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dedup_app.core.change.detect import load_change_head
    from dedup_app.core.labels import LabelStore, default_labels_path

    tiles = tmp_path / "tiles"
    pairs = [tiny_change_pair(tiles, shared_data, name, y0) for name, y0 in (("one", 0), ("two", 200), ("gone", 400))]
    store = LabelStore(default_labels_path())
    paint_labels(store, pairs)
    store.close()
    Path(pairs[2][1]).unlink()  # deleted since the painting: skipped, and said why
    out = tmp_path / "mine.pt"
    argv = ["train-change", "--from-app", "--epochs", "1", "--steps", "2", "--batch-size", "2", "--copies", "1",
            "--device", "cpu", "--no-progress", "--name", "mine", "--out", str(out)]  # fmt: skip
    assert main([*argv, "--activate"]) == 0
    text = capsys.readouterr().out
    assert f"Painted change labels ({default_labels_path()}): 2 pairs used (1 train, 1 validation), 1 skipped" in text
    assert f"  skipped {pairs[2][0]} / {pairs[2][1]}: {pairs[2][1]}: file not found" in text
    assert "painted: 1 train, 1 validation, 0 held-out tiles (not used)" in text
    head = load_change_head(out)
    assert head.name == "mine" and head.metrics["data"]["train"] == {"painted": {"train": 1, "val": 0, "test": 0}}
    registry = ChangeHeadRegistry()
    active = registry.active_id
    assert active is not None and active.startswith("mine-") and f"Registered as {active} and activated" in text
    assert registry.entry(active).file.read_bytes() == out.read_bytes()  # type: ignore[union-attr]


def test_train_change_needs_something_to_train_on(data_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                  ) -> None:  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main(["train-change", "--no-progress"])
    assert stop.value.code == 2 and "give folders of labelled pairs (DIR), --from-app" in capsys.readouterr().err
    out = tmp_path / "x.pt"
    assert main(["train-change", "--from-app", "--no-progress", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "0 pairs used" in captured.out and "no painted change labels to train on" in captured.err
    assert not out.exists() and ChangeHeadRegistry().active_id is None


def test_one_painted_label_is_too_few_to_validate(
    data_home: Path, tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dedup_app.core.labels import LabelStore, default_labels_path

    store = LabelStore(default_labels_path())
    paint_labels(store, [tiny_change_pair(tmp_path / "tiles", shared_data, "one", 0)])
    store.close()
    assert main(["train-change", "--from-app", "--no-progress", "--device", "cpu", "--out", str(tmp_path / "x.pt"),
                 "--activate"]) == 2  # fmt: skip
    assert "one painted pair is too few" in capsys.readouterr().err and ChangeHeadRegistry().active_id is None
