"""Bad model files and a damaged model registry: one clear error, or a warned fall back to the shipped model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from dedup_app.core.checkpoint import Checkpoint
from dedup_app.core.embedder import Embedder, load_checkpoint
from dedup_app.core.model import EncoderConfig, SiameseEncoder
from dedup_app.core.model_files import ModelFileError, read_checkpoint, write_checkpoint
from dedup_app.core.registry import DEFAULT, ModelRegistry
from dedup_app.core.resources import default_model_path
from tests.conftest import noise_image


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    """The shipped checkpoint as the plain structure torch.save wrote."""
    return torch.load(default_model_path(), map_location="cpu", weights_only=True)


def variant(shipped: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The shipped checkpoint with top-level entries (``key=...``) or config fields (``cfg_key=...``) changed."""
    data = {**shipped, "config": dict(shipped["config"])}
    for key, value in changes.items():
        if key.startswith("cfg_"):
            data["config"][key[4:]] = value
        else:
            data[key] = value
    return data


BAD_CHECKPOINTS: dict[str, tuple[Any, str]] = {
    "no_head": ({"format_version": 1, "config": {}}, "no 'head_state'"),
    "config_list": ({"format_version": 1, "config": [1, 2]}, "config must be a dict"),
    "version_text": ({"format_version": "one", "config": {}}, "format_version"),
}

BAD_VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "head_shape": (
        {"head_state": {"center": torch.zeros(1280), "proj.weight": torch.zeros(256, 100)}},
        r"head_state\['proj.weight'\] has shape \(256, 100\)",
    ),
    "embed_dim_vs_weights": ({"cfg_embed_dim": 128}, r"needs \(128, 1280\)"),
    "head_missing_key": ({"head_state": {"proj.weight": torch.zeros(256, 1280)}}, "missing center"),
    "head_nan": (
        {"head_state": {"center": torch.full((1280,), float("nan")), "proj.weight": torch.zeros(256, 1280)}},
        "NaN",
    ),
    "head_not_tensors": ({"head_state": {"center": [0.0] * 1280}}, "must map names to tensors"),
    "unknown_backbone": ({"cfg_backbone": "resnet9000"}, "'resnet9000'"),
    "feature_dim": ({"cfg_feature_dim": 1000}, "feature_dim is 1000"),
    "input_size_text": ({"cfg_input_size": "big"}, "input_size must be a whole number"),
    "input_size_zero": ({"cfg_input_size": 0}, "input_size"),
    "gem_p_text": ({"cfg_gem_p": "3"}, "gem_p"),
    "mean_two": ({"cfg_mean": [0.5, 0.5]}, "mean must be three numbers"),
    "std_zero": ({"cfg_std": [0.2, 0.0, 0.2]}, "std must be positive"),
    "invariance": ({"cfg_invariance": "sideways"}, "invariance"),
    "threshold_high": ({"threshold": 5.0}, r"threshold must be .*\(0, 1\]"),
    "threshold_nan": ({"threshold": float("nan")}, "threshold"),
    "threshold_zero": ({"threshold": 0.0}, "threshold"),
    "threshold_text": ({"threshold": "0.8"}, "threshold"),
    "no_threshold": ({"threshold": None}, "threshold"),
    "pool_p_negative": ({"pool_p": -1.0}, "pool_p"),
    "name_number": ({"name": 7}, "name"),
    "metrics_list": ({"metrics": [1]}, "metrics"),
    "backbone_state_list": ({"backbone_state": [1]}, "backbone_state"),
}


def assert_one_line(message: str, path: Path) -> None:
    assert str(path) in message
    assert "\n" not in message and "Traceback" not in message and "weights_only" not in message


@pytest.mark.parametrize("name", sorted(BAD_CHECKPOINTS))
def test_malformed_checkpoint_structures_are_one_clear_error(tmp_path: Path, name: str) -> None:
    data, reason = BAD_CHECKPOINTS[name]
    path = tmp_path / f"{name}.pt"
    torch.save(data, path)
    with pytest.raises(ModelFileError, match=reason) as err:
        read_checkpoint(path)
    assert_one_line(str(err.value), path)


@pytest.mark.parametrize("name", sorted(BAD_VARIANTS))
def test_inconsistent_checkpoints_fail_when_loaded(shipped: dict[str, Any], tmp_path: Path, name: str) -> None:
    changes, reason = BAD_VARIANTS[name]
    path = tmp_path / f"{name}.pt"
    torch.save(variant(shipped, **changes), path)
    with pytest.raises(ModelFileError, match=reason) as err:
        read_checkpoint(path)
    assert_one_line(str(err.value), path)
    assert isinstance(err.value, ValueError)  # what the command line reports as a usage error


def test_checkpoint_with_backbone_weights_is_checked_against_the_backbone(tmp_path: Path) -> None:
    cfg = EncoderConfig(embed_dim=16, input_size=64)
    ckpt = Checkpoint.from_encoder(SiameseEncoder(cfg), 0.8, "tuned", include_backbone=True)
    good = tmp_path / "tuned.pt"
    write_checkpoint(ckpt, good)
    assert read_checkpoint(good).backbone_state  # a fine-tuned backbone loads
    data = ckpt.to_dict()
    key = next(k for k, v in data["backbone_state"].items() if v.ndim == 4)
    data["backbone_state"] = {**data["backbone_state"], key: torch.zeros(3, 3, 3, 3)}
    torch.save(data, tmp_path / "shape.pt")
    with pytest.raises(ModelFileError, match=rf"backbone_state\['{key}'\] has shape \(3, 3, 3, 3\)"):
        read_checkpoint(tmp_path / "shape.pt")
    data = {**ckpt.to_dict(), "config": {**ckpt.to_dict()["config"], "backbone": "resnet9000"}}
    torch.save(data, tmp_path / "unknown.pt")
    with pytest.raises(ModelFileError, match="unknown backbone 'resnet9000'"):
        read_checkpoint(tmp_path / "unknown.pt")


class NotAllowed:
    """A class torch.load(weights_only=True) refuses to rebuild."""


def test_files_that_are_not_checkpoints_get_a_short_reason(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    noise_image(0).save(photo)
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    pickled = tmp_path / "object.pt"
    torch.save({"x": NotAllowed()}, pickled)
    cases = {
        photo: "it is a JPEG image",
        text: "not a PyTorch file",
        empty: "empty file",
        pickled: "Python objects besides tensors",
        tmp_path: "is a folder",
    }
    for path, reason in cases.items():
        with pytest.raises(ModelFileError, match=reason) as err:
            read_checkpoint(path)
        assert_one_line(str(err.value), path)
    with pytest.raises(ModelFileError, match="photo.jpg: not a dedup-app model file"):
        read_checkpoint(photo)


def test_embedder_validates_a_checkpoint_built_in_memory(checkpoint: Checkpoint) -> None:
    bad = Checkpoint(EncoderConfig(embed_dim=128), dict(checkpoint.head_state), 0.8, name="odd")
    with pytest.raises(ModelFileError, match=r"model 'odd': invalid model file .*needs \(128, 1280\)"):
        Embedder(bad, "cpu")


@pytest.mark.parametrize("name", ["head_shape", "embed_dim_vs_weights", "unknown_backbone", "input_size_text"])
def test_scan_with_a_bad_model_fails_up_front_in_one_line(
    shipped: dict[str, Any],
    tmp_path: Path,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import dedup_app.core.scan as scan_module
    from dedup_app.cli import EXIT_USAGE, main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(2):
        noise_image(k, (64, 48)).save(folder / f"{k}.jpg")
    model = tmp_path / f"{name}.pt"
    torch.save(variant(shipped, **BAD_VARIANTS[name][0]), model)
    decoded: list[str] = []
    real = scan_module.load_for_embedding
    monkeypatch.setattr(scan_module, "load_for_embedding", lambda path, *a: decoded.append(path) or real(path, *a))
    argv = ["scan", str(folder), "--cache", str(tmp_path / "c.sqlite3"), "--model", str(model), "--no-progress"]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dedup-app: error: {model}: invalid model file (")
    assert_one_line(err, model)
    assert decoded == []  # nothing was read before the model was found unusable


# ------------------------------------------------------------------------------------------------------ registry


@pytest.fixture()
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


@pytest.mark.parametrize("index", ["[]", "null", '"x"', "5", '{"models": []}', "{broken"])
def test_a_malformed_index_is_set_aside_and_the_shipped_model_used(
    registry: ModelRegistry, index: str, caplog: pytest.LogCaptureFixture
) -> None:
    (registry.root / "registry.json").write_text(index)
    with caplog.at_level(logging.WARNING, logger="dedup_app.core.registry"):
        assert registry.active_path() == default_model_path()
        assert registry.active_id is None
        assert registry.entries() == []
    assert "damaged" in caplog.text
    aside = list(registry.root.glob("registry.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == index  # kept for the user to look at
    json.loads((registry.root / "registry.json").read_text())  # and a sound index in its place


def test_a_rebuilt_index_keeps_the_model_files(registry: ModelRegistry, checkpoint: Checkpoint) -> None:
    entry = registry.add(Checkpoint(checkpoint.config, checkpoint.head_state, 0.9, name="mine"))
    (registry.root / "registry.json").write_text("[]")
    assert [e.model_id for e in ModelRegistry(registry.root).entries()] == [entry.model_id]
    assert ModelRegistry(registry.root).active_id is None


def test_malformed_entries_are_ignored(registry: ModelRegistry, caplog: pytest.LogCaptureFixture) -> None:
    index = {
        "active": "m",
        "history": 5,
        "models": {"m": {}, "n": "x", "o": {"file": "../outside.pt"}, "p": {"file": 3}},
    }
    (registry.root / "registry.json").write_text(json.dumps(index))
    with caplog.at_level(logging.WARNING, logger="dedup_app.core.registry"):
        assert registry.active_path() == default_model_path()
        assert registry.active_id is None
        assert registry.entries() == []
        with pytest.raises(ValueError, match="nothing to roll back"):
            registry.rollback()
    assert "ignoring the entry 'm' (no 'file')" in caplog.text
    assert caplog.text.count("ignoring the entry 'm'") == 1  # warned once, not on every query


def test_an_active_model_whose_file_is_missing_is_reported_and_not_used(
    registry: ModelRegistry, checkpoint: Checkpoint, caplog: pytest.LogCaptureFixture
) -> None:
    default_id = checkpoint.model_id
    entry = registry.add(Checkpoint(checkpoint.config, checkpoint.head_state, 0.9, name="mine"))
    registry.activate(entry.model_id)
    entry.file.unlink()
    with caplog.at_level(logging.WARNING, logger="dedup_app.core.registry"):
        assert registry.active_path() == default_model_path()
        assert registry.active_id is None  # what 'models list' stars: the model scans really use
    assert registry.selected_id == entry.model_id
    assert "unusable (file missing" in caplog.text
    (listed,) = registry.entries()
    assert not listed.usable and "file missing" in (listed.problem or "")
    assert load_checkpoint().model_id == default_id
    # the cache id follows the same fall back: activating the default drops nothing of the missing model
    assert registry.activate(DEFAULT) == (default_id, default_id)
    with pytest.raises(ValueError, match="file .* is missing"):
        registry.activate(entry.model_id)


def test_models_command_survives_a_malformed_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dedup_app.cli import EXIT_OK, main

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    root = ModelRegistry().root
    assert str(root).startswith(str(tmp_path))
    (root / "registry.json").write_text('{"active": "m", "models": {"m": {}}}')
    assert main(["models", "list"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("* default")


def test_a_broken_active_model_says_how_to_go_back(registry: ModelRegistry, checkpoint: Checkpoint) -> None:
    entry = registry.add(Checkpoint(checkpoint.config, checkpoint.head_state, 0.9, name="mine"))
    registry.activate(entry.model_id)
    Image.new("RGB", (8, 8)).save(entry.file, "PNG")
    import dedup_app.core.registry as registry_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry_module, "ModelRegistry", lambda: registry)
        with pytest.raises(ModelFileError, match="it is a PNG image.*models activate default"):
            load_checkpoint()
