"""The change-head registry, on real head files in temporary folders: ids from the files' bytes, activation and roll
back, a damaged index set aside and rebuilt, a missing file flagged, and the default change model following it."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from dedup_app.core.change.heads import ChangeModelError, default_change_model, resolve_change_model
from dedup_app.core.registry import DEFAULT, ChangeHeadRegistry, ModelRegistry, change_head_id
from tests.conftest import write_change_head

NOT_INSTALLED = "the default 'general' change head is not installed; using 'features'"


@pytest.fixture()
def registry(tmp_path: Path, resources_copy: Path) -> ChangeHeadRegistry:
    """A change-head registry of its own, with no shipped change head installed."""
    return ChangeHeadRegistry(tmp_path / "models" / "change")


def head_file(folder: Path, name: str, bias: float = 5.0) -> Path:
    """A real change-head file; ``bias`` makes heads of one name differ in their bytes."""
    import torch

    from dedup_app.core.change.detect import load_change_head

    path = write_change_head(folder / f"{name}-{bias}.pt", name)
    head = load_change_head(path)
    head.state["fuse.2.bias"] = torch.full_like(head.state["fuse.2.bias"], bias)
    head.save(path)
    return path


def test_an_added_head_gets_an_id_from_its_name_and_bytes(registry: ChangeHeadRegistry, tmp_path: Path) -> None:
    src = head_file(tmp_path, "My fields/2024")
    entry = registry.add_file(src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:10]
    assert entry.model_id == change_head_id("My fields/2024", src.read_bytes()) == f"My-fields-2024-{digest}"
    assert entry.name == "My fields/2024" and entry.usable and entry.file.parent == registry.root
    assert entry.file.read_bytes() == src.read_bytes()  # a copy: the user's file may go
    assert registry.add_file(src).model_id == entry.model_id and len(registry.entries()) == 1  # twice: harmless
    other = registry.add_file(head_file(tmp_path, "My fields/2024", bias=3.0))  # same name, other weights
    assert other.model_id != entry.model_id and other.model_id.startswith("My-fields-2024-")
    assert registry.active_id is None  # adding does not activate
    with pytest.raises(ValueError, match="not a dedup-app change model file"):
        registry.add_file(Path(__file__))


def test_a_head_held_in_memory_is_stored_by_its_files_bytes(registry: ChangeHeadRegistry) -> None:
    from dedup_app.core.change.detect import ChangeConfig
    from dedup_app.core.change.head import ChangeUNetHead, HeadConfig, UNetHeadCheckpoint

    net = ChangeUNetHead(HeadConfig())
    ckpt = UNetHeadCheckpoint(ChangeConfig(threshold=0.4), HeadConfig(), net.state_dict(), {"validation": {"f1": 0.7},
                              "history": [1, 2]}, "trained")  # fmt: skip
    entry = registry.add(ckpt)
    assert entry.model_id == change_head_id("trained", entry.file.read_bytes())
    assert entry.metrics == {"validation": {"f1": 0.7}}  # what the listing needs, not the whole curve
    assert [p.name for p in registry.root.iterdir() if p.name != "registry.json"] == [entry.file.name]


def test_activate_and_roll_back_and_the_default_follows(registry: ChangeHeadRegistry, tmp_path: Path) -> None:
    a = registry.add_file(head_file(tmp_path, "a"))
    b = registry.add_file(head_file(tmp_path, "b"))
    label, path, note = default_change_model(registry)
    assert (label, path) == ("features", None) and note.startswith(NOT_INSTALLED)
    assert registry.activate(a.model_id) == (DEFAULT, a.model_id)
    assert default_change_model(registry) == (a.model_id, a.file, "")
    assert registry.activate(b.model_id) == (a.model_id, b.model_id)
    assert registry.active_id == b.model_id
    assert registry.activate("features") == (b.model_id, "features")
    assert default_change_model(registry) == ("features", None, "")  # chosen: no note
    with pytest.raises(ValueError, match="change head 'buildings' cannot be activated: the shipped 'buildings' "
                       "change head is not installed"):  # fmt: skip
        registry.activate("buildings")
    with pytest.raises(ValueError, match="no change head 'nope' in the registry"):
        registry.activate("nope")
    assert registry.rollback() == ("features", b.model_id)
    assert registry.rollback() == (b.model_id, a.model_id)
    assert registry.rollback() == (a.model_id, DEFAULT)
    assert registry.active_id is None
    with pytest.raises(ValueError, match="nothing to roll back to: no change head was activated before"):
        registry.rollback()


def test_registered_heads_are_resolved_by_id(registry: ChangeHeadRegistry, tmp_path: Path) -> None:
    a = registry.add_file(head_file(tmp_path, "a"))
    assert resolve_change_model(a.model_id, registry) == (a.model_id, a.file)
    with pytest.raises(ChangeModelError, match=f"the known ones are general, buildings, features, {a.model_id}"):
        resolve_change_model("a-0000", registry)


def test_the_duplicate_and_change_registries_are_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dedup_app.core.checkpoint import Checkpoint
    from dedup_app.core.model_files import read_checkpoint
    from dedup_app.core.resources import default_model_path

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    models, heads = ModelRegistry(), ChangeHeadRegistry()
    assert heads.root == models.root / "change" and str(models.root).startswith(str(tmp_path))
    base = read_checkpoint(default_model_path())
    model = models.add(Checkpoint(base.config, base.head_state, 0.9, "tuned"))
    head = heads.add_file(head_file(tmp_path, "head"))
    heads.activate(head.model_id)
    assert models.active_id is None and [e.model_id for e in models.entries()] == [model.model_id]
    assert [e.model_id for e in heads.entries()] == [head.model_id]
    (models.root / "registry.json").write_text("{broken")  # rebuilding the models' index skips the heads' folder
    assert [e.model_id for e in ModelRegistry().entries()] == [model.model_id]
    assert ChangeHeadRegistry().active_id == head.model_id


def test_a_damaged_index_is_set_aside_and_rebuilt_from_the_heads(
    registry: ChangeHeadRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = registry.add_file(head_file(tmp_path, "a"))
    registry.activate(a.model_id)
    (registry.root / "stray.pt").write_bytes(b"not a head")  # not one of ours: left out of the rebuilt index
    (registry.root / "registry.json").write_text('{"models": [')
    with caplog.at_level(logging.WARNING, logger="dedup_app.core.registry"):
        fresh = ChangeHeadRegistry(registry.root)
        assert fresh.active_id is None  # the shipped default, until the user chooses again
        assert [(e.model_id, e.name) for e in fresh.entries()] == [(a.model_id, "a")]
    assert "change head registry" in caplog.text and "was damaged" in caplog.text
    (aside,) = registry.root.glob("registry.json.corrupt-*")
    assert aside.read_text() == '{"models": ['
    assert json.loads((registry.root / "registry.json").read_text())["active"] is None
    assert default_change_model(fresh)[2].startswith(NOT_INSTALLED)
    fresh.activate(a.model_id)  # the rebuilt entries can be used
    assert default_change_model(fresh) == (a.model_id, a.file, "")


def test_an_active_head_whose_file_is_missing_is_flagged_and_not_used(
    registry: ChangeHeadRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = registry.add_file(head_file(tmp_path, "a"))
    registry.activate(a.model_id)
    a.file.unlink()
    with caplog.at_level(logging.WARNING, logger="dedup_app.core.registry"):
        assert registry.active_id is None and registry.selected_id == a.model_id
    assert f"the active change head {a.model_id} is unusable (file missing" in caplog.text
    (listed,) = registry.entries()
    assert not listed.usable and "file missing" in (listed.problem or "")
    label, path, note = default_change_model(registry)
    assert (label, path) == ("features", None)
    assert note.startswith(f"the active change head {a.model_id} cannot be used (file missing: ")
    assert NOT_INSTALLED in note
    with pytest.raises(ChangeModelError, match=f"the registered change head {a.model_id} cannot be used"):
        resolve_change_model(a.model_id, registry)
    with pytest.raises(ValueError, match="its file .* is missing"):
        registry.activate(a.model_id)
