"""The format-2 change head: shapes, size, symmetry, its file and loading both formats; the loss and calibration
against hand-computed values."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from dedup_app.core.change.detect import (
    ChangeConfig,
    ChangeDetector,
    ChangeHeadCheckpoint,
    load_change_head,
)
from dedup_app.core.change.head import (
    ChangeUNetHead,
    HeadConfig,
    UNetHeadCheckpoint,
    parameter_count,
    plain,
)
from dedup_app.core.change.torch_maps import ChangeHead
from dedup_app.core.model_files import atomic_torch_save
from dedup_app.core.progress import drive
from model_training.change_train import _Counts, bce_dice_loss, calibrate


def _features(n: int, size: int, seed: int) -> list[torch.Tensor]:
    """Random feature maps shaped like EfficientNet-Lite0's blocks 0, 1, 2, 4, 6 for an n x 3 x size x size input."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(16, 2), (24, 4), (40, 8), (112, 16), (320, 32)]
    return [torch.randn(n, c, size // s, size // s, generator=g) for c, s in shapes]


def test_head_shapes_size_and_date_symmetry() -> None:
    torch.manual_seed(0)
    head = ChangeUNetHead().eval()
    assert 200_000 <= parameter_count(head) <= 2_000_000
    for h in (64, 96):
        fa, fb = _features(2, h, 1), _features(2, h, 2)
        xa, xb = torch.randn(2, 3, h, h), torch.randn(2, 3, h, h)
        with torch.no_grad():
            out = head(fa, fb, xa, xb)
            swapped = head(fb, fa, xb, xa)
        assert out.shape == (2, 1, h, h)  # full resolution
        assert torch.allclose(out, swapped, atol=1e-5)  # the order of the dates does not matter
    narrow = ChangeUNetHead(HeadConfig(stages=(1, 2, 4), fuse=(8, 8, 8), decoder=(8, 8, 8), pixel_width=0))
    assert narrow.config.channels == (24, 40, 112)
    fa = _features(1, 64, 3)[1:4]
    assert narrow(fa, fa, torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_head_config_is_checked() -> None:
    with pytest.raises(ValueError, match="stages"):
        HeadConfig(stages=(4, 2))
    with pytest.raises(ValueError, match="decoder"):
        HeadConfig(decoder=(16, 32))
    with pytest.raises(ValueError, match="block indices"):
        HeadConfig(stages=(0, 9), fuse=(8, 8), decoder=(8, 8))


def _v2(tmp_path: Path, bias: float, output_stride: int = 2) -> Path:
    torch.manual_seed(0)
    head = ChangeUNetHead()
    with torch.no_grad():
        head.classify.weight.zero_()
        head.classify.bias.fill_(bias)  # a head that calls everything changed (or nothing), so its use shows
    config = ChangeConfig(stages=HeadConfig().stages, threshold=0.37, output_stride=output_stride)
    metrics = {"f1": np.float64(0.5), "sources": {"x": {"n": np.int64(3)}}, "t": (1, 2)}
    ckpt = UNetHeadCheckpoint(config, HeadConfig(), head.state_dict(), metrics, "unit-head")
    path = tmp_path / f"head{bias}.pt"
    ckpt.save(path)
    return path


def test_format_2_file_round_trips_and_drives_the_detector(embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _v2(tmp_path, 6.0)
    loaded = load_change_head(path)
    assert isinstance(loaded, UNetHeadCheckpoint)
    assert loaded.name == "unit-head" and loaded.threshold == pytest.approx(0.37)
    assert loaded.metrics == {"f1": 0.5, "sources": {"x": {"n": 3}}, "t": [1, 2]}  # numpy made plain
    assert loaded.config.output_stride == 2 and loaded.config.stages == (0, 1, 2, 4, 6)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    det = ChangeDetector(embedder, loaded)
    assert "unit-head" in det.model_name and det.config.threshold == pytest.approx(0.37)
    prob = drive(det.probability(a, a.copy()))
    assert prob.shape == (100, 150) and prob.min() > 0.99  # the head, not the training-free map, decided
    quiet = ChangeDetector(embedder, load_change_head(_v2(tmp_path, -6.0, output_stride=1)))
    prob = drive(quiet.probability(a, a.copy()))
    assert prob.shape == (200, 300) and prob.max() < 0.01


def test_format_1_files_still_load(embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    head = ChangeHead()
    with torch.no_grad():
        head.fuse[-1].bias.fill_(5.0)
        head.fuse[-1].weight.zero_()
    ckpt = ChangeHeadCheckpoint(ChangeConfig(), head.state_dict(), head.channels, head.width, {}, "old-head")
    ckpt.save(tmp_path / "v1.pt")
    loaded = load_change_head(tmp_path / "v1.pt")
    assert isinstance(loaded, ChangeHeadCheckpoint) and loaded.config.output_stride == 4
    a = np.zeros((128, 160, 3), np.uint8)
    prob = drive(ChangeDetector(embedder, loaded).probability(a, a))
    assert prob.shape == (32, 40) and prob.min() > 0.9


def test_bad_and_newer_head_files_are_refused(tmp_path: Path) -> None:
    data = load_change_head(_v2(tmp_path, 0.0)).to_dict()
    atomic_torch_save({**data, "format_version": 3}, tmp_path / "new.pt")
    with pytest.raises(ValueError, match="newer"):
        load_change_head(tmp_path / "new.pt")
    state = dict(data["state"])
    state.pop("classify.bias")
    atomic_torch_save({**data, "state": state}, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="broken.pt: damaged change model file"):
        load_change_head(tmp_path / "broken.pt")
    atomic_torch_save({**data, "config": {**data["config"], "threshold": 1.5}}, tmp_path / "thr.pt")
    with pytest.raises(ValueError, match="threshold"):
        load_change_head(tmp_path / "thr.pt")


def test_plain_turns_numpy_into_builtins() -> None:
    out = plain({"a": np.float32(0.5), "b": [np.arange(2)], 3: (np.bool_(True),)})
    assert out == {"a": 0.5, "b": [[0, 1]], "3": [True]}
    assert type(out["a"]) is float


def test_bce_dice_loss_matches_hand_computed_value() -> None:
    logits = torch.zeros(1, 1, 1, 3)
    label = torch.tensor([[[1, 0, 255]]], dtype=torch.uint8)  # changed, unchanged, not labelled
    loss = bce_dice_loss(logits, label, pos_weight=2.0, dice_weight=1.0)
    # BCE: (2 ln 2 + ln 2) / 2 labelled pixels; Dice: 1 - (2 * 0.5 + 1) / (0.5 + 0.5 + 1 + 1)
    expected = 1.5 * math.log(2) + (1 - 2 / 3)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(bce_dice_loss(logits, torch.full((1, 1, 3), 255, dtype=torch.uint8))) == 0.0


def test_calibration_matches_hand_computed_f1() -> None:
    counts = _Counts(bins=10)
    # source a: changed pixels at 0.85 and 0.35, unchanged at 0.55 and 0.05; source b: one changed at 0.65
    counts.add("a", np.array([0.85, 0.35, 0.55, 0.05]), np.array([1, 1, 0, 0]))
    counts.add("b", np.array([0.65, 0.15]), np.array([1, 0]))
    m = calibrate(counts)
    # above 0.55: a has TP 1, FP 0, FN 1 (F1 2/3), b F1 1: mean 5/6. Between 0.15 and 0.35: a has TP 2, FP 1
    # (F1 4/5), b F1 1: mean 9/10, the best. Pooled there: TP 3, FP 1, FN 0.
    assert m["f1"] == pytest.approx(0.9)
    assert 0.15 < m["threshold"] <= 0.35
    assert m["sources"]["a"]["precision"] == pytest.approx(2 / 3) and m["sources"]["a"]["recall"] == 1.0
    assert m["pooled_f1"] == pytest.approx(6 / 7)
    with pytest.raises(ValueError, match="no changed pixels"):
        empty = _Counts(bins=10)
        empty.add("a", np.array([0.5]), np.array([0]))
        calibrate(empty)


def test_calibration_takes_the_middle_of_a_flat_top() -> None:
    """Where F1 is flat near its best, the threshold is the middle of the flat part, not its edge: on a few
    validation tiles the single best threshold jumped between 0.1 and 0.96 from one epoch to the next."""
    counts = _Counts(bins=100)
    # 100 changed pixels at 0.95, 100 unchanged at 0.05 and one at 0.5: F1 200/201 from 0.06 to 0.5, 1.0 to 0.95
    counts.add("a", np.r_[np.full(100, 0.95), np.full(100, 0.05), 0.5], np.r_[np.ones(100), np.zeros(101)])
    m = calibrate(counts)
    assert 0.4 <= m["threshold"] <= 0.6 and m["f1"] >= 0.99


def test_synthetic_replay_takes_its_share_of_the_draws() -> None:
    from model_training.change_train import ChangeTrainConfig, _Batches

    def sample(source: str) -> Any:
        return SimpleNamespace(source=source, label=np.zeros((64, 64), np.uint8))

    real = [sample("houses_pk") for _ in range(5)]
    synth = [sample("synthetic") for _ in range(50)]
    batches = _Batches(real, ChangeTrainConfig(synthetic_mix=0.3), seed=0, replay=synth)  # type: ignore[arg-type]
    draws = batches.rng.choices(batches.samples, weights=batches.weights, k=4000)
    share = sum(s.source == "synthetic" for s in draws) / len(draws)
    assert share == pytest.approx(0.3, abs=0.03)
    plain = _Batches(real, ChangeTrainConfig(), seed=0, replay=synth)  # type: ignore[arg-type]
    assert all(s.source == "houses_pk" for s in plain.samples)  # no mix asked for: the real tiles only


def test_change_config_of_a_format_1_file_keeps_stride_4() -> None:
    old = {k: v for k, v in dataclasses.asdict(ChangeConfig()).items() if k != "output_stride"}
    assert ChangeConfig.from_dict(old).output_stride == 4


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_tiles_blend_to_the_value_every_tile_gives(embedder, monkeypatch: pytest.MonkeyPatch, stride: int) -> None:  # type: ignore[no-untyped-def]
    det = ChangeDetector(embedder)
    det.output_stride = stride
    seen: list[tuple[int, int]] = []

    def constant(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        seen.append(a.shape[:2])
        return np.full((a.shape[0] // stride, a.shape[1] // stride), 0.3, np.float32)

    monkeypatch.setattr(det, "_tile_map", constant)
    a = np.zeros((900, 1300, 3), np.uint8)
    prob = drive(det.probability(a, a))
    assert len(seen) == 2 * 3 and set(seen) == {(512, 512)}  # overlapping tiles: rows at 0, 388; columns 0, 448, 788
    assert prob.shape == (-(-900 // stride), -(-1300 // stride))
    assert np.allclose(prob, 0.3, atol=1e-6)


def test_damaged_format_2_files_are_one_clear_error(tmp_path: Path) -> None:
    data = load_change_head(_v2(tmp_path, 0.0)).to_dict()
    broken = {
        "no_head_config": ({k: v for k, v in data.items() if k != "head_config"}, "no 'head_config'"),
        "no_state": ({k: v for k, v in data.items() if k != "state"}, "no 'state'"),
        "bad_config": ({**data, "config": [1]}, "'config' is a list"),
        "bad_stages": ({**data, "head_config": {**data["head_config"], "stages": [3]}}, "stages"),
        "wrong_weights": ({**data, "head_config": {**data["head_config"], "pixel_width": 4}}, "size mismatch"),
        "foreign_encoder": ({**data, "encoder_state": {"conv_head.weight": torch.zeros(1)}}, "outside the blocks"),
    }
    for name, (content, reason) in broken.items():
        path = tmp_path / f"{name}.pt"
        atomic_torch_save(content, path)
        with pytest.raises(ValueError, match=reason) as exc:
            load_change_head(path)
        message = str(exc.value)
        assert message.startswith(f"{path}: damaged change model file (") and "\n" not in message, name
