"""Training the change head on real labelled tiles (small and few, CPU): it learns, its file works in the detector,
and ``dedup-app train-change`` writes one."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dedup_app.cli import main
from dedup_app.core.change.detect import ChangeDetector, load_change_head
from dedup_app.core.change.head import UNetHeadCheckpoint
from dedup_app.core.progress import Cancelled, CancelToken, drive
from model_training.change_data import ChangePair, folder_pairs
from model_training.change_train import ChangeTrainConfig, fit_change
from model_training.train import TrainProgress

SMALL = ChangeTrainConfig(epochs=3, steps_per_epoch=8, batch_size=4, crop=128, copies=1, lr=3e-3)


@pytest.fixture(scope="module")
def houses(shared_data: Path) -> dict[str, list[ChangePair]]:
    """A few houses_pk tiles with changes: six to train on, two to validate on (by the source's split)."""
    pairs = [p for p in folder_pairs(shared_data / "change" / "houses_pk") if p.changed_px > 0]
    return {"train": [p for p in pairs if p.split == "train"][:6], "val": [p for p in pairs if p.split == "val"][:2]}


def test_a_few_steps_lower_the_validation_loss_and_the_best_head_is_written(
    houses: dict[str, list[ChangePair]], tmp_path: Path, embedder
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "head.pt"
    reports: list[TrainProgress] = []
    run = fit_change(houses["train"], houses["val"], SMALL, out, device="cpu")
    result = drive(run, lambda p: reports.append(p) if isinstance(p, TrainProgress) else None)
    losses = [h["loss"] for h in result.history]
    f1 = [h["f1"] for h in result.history]
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    # on tiles it never saw, the trained head does better than the untrained one (epoch 0)
    assert losses[-1] < losses[0] - 0.05 and f1[-1] > f1[0] + 0.3
    assert [r.epoch for r in reports if r.val is not None] == [0, 1, 2, 3]
    assert len([r for r in reports if r.loss is not None and r.val is None]) == 24  # one report per step

    loaded = load_change_head(out)
    assert isinstance(loaded, UNetHeadCheckpoint)
    assert loaded.threshold == pytest.approx(result.metrics["threshold"])
    assert loaded.metrics["best_epoch"] == result.best_epoch in (1, 2, 3)
    assert loaded.metrics["validation"]["f1"] == pytest.approx(max(f1[1:]))
    assert loaded.metrics["recipe"]["steps_per_epoch"] == 8 and loaded.metrics["data"]["val"]["houses_pk"]["val"] == 2
    assert not loaded.encoder_state  # frozen encoder: the file holds the head only
    det = ChangeDetector(embedder, loaded)
    p = houses["val"][0]
    prob = drive(det.probability(p.before, p.after))
    assert prob.shape == (128, 128) and np.isfinite(prob).all()


def test_training_is_seeded(houses: dict[str, list[ChangePair]]) -> None:
    config = ChangeTrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, crop=64, copies=1)
    runs = [drive(fit_change(houses["train"][:2], houses["val"][:1], config, device="cpu")) for _ in range(2)]
    for key, value in runs[0].checkpoint.state.items():
        assert torch.equal(value, runs[1].checkpoint.state[key]), key


def test_cancelling_keeps_the_best_head_so_far(houses: dict[str, list[ChangePair]], tmp_path: Path) -> None:
    out = tmp_path / "head.pt"
    token = CancelToken()

    def cancel_after_first_epoch(report: object) -> None:
        if isinstance(report, TrainProgress) and report.val is not None and report.epoch == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        drive(fit_change(houses["train"], houses["val"], SMALL, out, token, device="cpu"), cancel_after_first_epoch)
    assert load_change_head(out).metrics["best_epoch"] == 1


def test_unfrozen_blocks_travel_with_the_head(houses: dict[str, list[ChangePair]], embedder) -> None:  # type: ignore[no-untyped-def]
    config = ChangeTrainConfig(epochs=1, steps_per_epoch=1, batch_size=2, crop=64, unfreeze_blocks=1)
    ckpt = drive(fit_change(houses["train"][:2], houses["val"][:1], config, device="cpu")).checkpoint
    assert ckpt.encoder_state and {k.split(".")[1] for k in ckpt.encoder_state} == {"6"}
    det = ChangeDetector(embedder, ckpt)
    p = houses["val"][0]
    drive(det.probability(p.before, p.after))
    assert det._backbone is not embedder.encoder.backbone  # the head's own blocks, not the shared backbone's


def test_train_change_command_writes_a_head(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:  # fmt: skip
    folder = tmp_path / "tiles"
    src = shared_data / "change" / "egy_bcd"
    for sub in ("A", "B", "label"):
        (folder / sub).mkdir(parents=True)
        for name in ("train_1", "train_2", "val_1", "test_1"):
            shutil.copy(src / sub / f"{name}.png", folder / sub / f"{name}.png")
    out = tmp_path / "egy.pt"
    args = ["train-change", str(folder), "--epochs", "1", "--steps", "2", "--batch-size", "2", "--copies", "1",
            "--out", str(out), "--device", "cpu", "--no-progress", "--name", "egy-test"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "tiles: 2 train, 1 validation, 1 held-out tiles (not used)" in text and "Change head written to" in text
    head = load_change_head(out)
    assert isinstance(head, UNetHeadCheckpoint) and head.name == "egy-test"
    assert head.metrics["data"]["train"] == {"tiles": {"train": 2, "val": 0, "test": 0}}

    assert main(["train-change", str(tmp_path / "missing"), "--out", str(out), "--no-progress"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_train_change_says_when_the_synthetic_generator_is_missing(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "model_training.change_synth", None)  # as if it were not installed
    code = main(["train-change", str(shared_data / "change" / "egy_bcd"), "--synthetic", "10", "--out",
                 str(tmp_path / "x.pt"), "--no-progress"])  # fmt: skip
    assert code == 2 and "synthetic pair generator" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
