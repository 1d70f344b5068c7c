"""Training the change head (:mod:`dedup_app.core.change.head`) on labelled pairs, as a cancellable generator.

:func:`fit_change` yields :class:`TrainProgress` after each step and each validation, checks the cancel token
there, and writes the best epoch's head atomically (with its recipe, its validation metrics and the threshold
calibrated on the validation split) each time one beats the last, so a cancelled run keeps its best so far.

With the encoder frozen (the default, and what a CPU can afford) the encoder runs once per training tile: its
features at the head's stages are kept in memory as float16, for the tile as it is and for ``copies - 1``
photometrically jittered versions, and every step trains the head on random 32-pixel-aligned crops of those
features, mirrored and turned (the same transform for both dates, the pixels and the label). ``unfreeze_blocks``
> 0 also trains the encoder's last blocks, on image crops run through the encoder at each step (a GPU's job).

The loss is binary cross-entropy with the changed class up-weighted (the square root of the unchanged/changed
ratio, at most ``max_pos_weight``) plus a soft Dice term, over labelled pixels only. The threshold is the one
with the best F1 averaged over the validation sources (a source with one big image must not decide it alone); the
best epoch is the one with the best such F1 at its threshold.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dedup_app.core.change.detect import ChangeConfig
from dedup_app.core.change.head import ChangeUNetHead, HeadConfig, UNetHeadCheckpoint, parameter_count
from dedup_app.core.change.normalize import match_histograms
from dedup_app.core.change.torch_maps import stage_features
from dedup_app.core.model import PACKAGED_BACKBONE, EncoderConfig, create_backbone
from dedup_app.core.progress import CancelToken, Progress
from model_training.change_data import CHANGED, IGNORE, ChangePair, split_counts
from model_training.train import TrainProgress

ALIGN = 32  # the encoder's coarsest stride: crops of cached features start on multiples of it
THRESHOLDS = np.linspace(0.02, 0.98, 49)


@dataclass(frozen=True)
class ChangeTrainConfig:
    """The training recipe; stored in the head's file so it says how it was made."""

    epochs: int = 30
    steps_per_epoch: int = 40
    batch_size: int = 8
    crop: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    max_pos_weight: float = 10.0
    copies: int = 2  # cached feature versions per training tile: as it is, plus jittered ones
    normalise: bool = True  # after matched to before (histograms), as the change pipeline does
    source_balance: float = 0.5  # sources drawn in proportion to (labelled pixels) ** this; 1 = by area, 0 = equal
    unfreeze_blocks: int = 0
    synthetic_epochs: int = 0  # epochs on synthetic pairs (when given) before the real ones
    # share of each real-phase batch drawn from the synthetic pairs (replay): with a few dozen labelled tiles the
    # head overfits them within a few epochs; the synthetic pairs keep teaching what is and is not change
    synthetic_mix: float = 0.0
    output_stride: int = 2  # of the map the detector accumulates (memory on huge rasters); the head is full-res
    seed: int = 0
    name: str = "change-head"
    head: HeadConfig = field(default_factory=HeadConfig)

    def __post_init__(self) -> None:
        if self.crop % ALIGN or self.crop < ALIGN:
            raise ValueError(f"crop must be a multiple of {ALIGN}, not {self.crop}")
        if min(self.epochs, self.steps_per_epoch, self.batch_size, self.copies) < 1:
            raise ValueError("epochs, steps_per_epoch, batch_size and copies must be at least 1")
        if self.output_stride not in (1, 2, 4):
            raise ValueError(f"output_stride must be 1, 2 or 4, not {self.output_stride}")
        if not 0.0 <= self.synthetic_mix < 1.0:
            raise ValueError(f"synthetic_mix must be in [0, 1), not {self.synthetic_mix}")
        if not 0 <= self.unfreeze_blocks <= 7:
            raise ValueError(
                f"unfreeze_blocks must be 0-7 (EfficientNet-Lite0 has 7 blocks), not {self.unfreeze_blocks}"
            )


@dataclass
class ChangeTrainResult:
    """The best head, its epoch and validation metrics, the curve, and where it was written."""

    checkpoint: UNetHeadCheckpoint
    best_epoch: int
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


# --- loss -----------------------------------------------------------------------------------------------------


def bce_dice_loss(logits: torch.Tensor, label: torch.Tensor, pos_weight: float = 1.0, dice_weight: float = 1.0
                  ) -> torch.Tensor:  # fmt: skip
    """Binary cross-entropy (changed pixels weighted ``pos_weight``) plus ``dice_weight`` x soft Dice loss, both
    over the labelled pixels (``label`` 0 or 1; 255 is left out). N x 1 x H x W logits, N x H x W labels."""
    logits = logits[:, 0].float()
    valid = label != IGNORE
    if not bool(valid.any()):
        return logits.sum() * 0.0
    target = (label == CHANGED).float()
    weight = valid.float()
    pw = torch.tensor(pos_weight, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight, pos_weight=pw, reduction="sum")
    bce = bce / weight.sum()
    prob = torch.sigmoid(logits) * weight
    dice = 1.0 - (2.0 * (prob * target).sum() + 1.0) / (prob.sum() + (target * weight).sum() + 1.0)
    return bce + dice_weight * dice


def positive_weight(pairs: Sequence[ChangePair], limit: float) -> float:
    """sqrt(unchanged / changed) over the training labels, between 1 and ``limit``."""
    changed = sum(p.changed_px for p in pairs)
    labelled = sum(p.labelled_px for p in pairs)
    if changed == 0:
        return 1.0
    return float(min(limit, max(1.0, math.sqrt((labelled - changed) / changed))))


def warmup_cosine(total: int, warmup_share: float = 0.05) -> Callable[[int], float]:
    """Learning-rate factor per step: a linear warm-up over the first steps, then a cosine decay to zero."""
    warmup = max(1, int(total * warmup_share))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return factor


# --- metrics --------------------------------------------------------------------------------------------------


@dataclass
class _Counts:
    """Per-source histograms of the probability of changed and unchanged labelled pixels."""

    bins: int = 100
    pos: dict[str, np.ndarray] = field(default_factory=dict)
    neg: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, source: str, prob: np.ndarray, label: np.ndarray) -> None:
        idx = np.clip((prob * self.bins).astype(np.int64), 0, self.bins - 1)
        for store, cls in ((self.pos, CHANGED), (self.neg, 0)):
            hist = np.bincount(idx[label == cls], minlength=self.bins)
            store[source] = store.get(source, np.zeros(self.bins, np.int64)) + hist


def _scores(tp: float, fp: float, fn: float) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return {"f1": 2 * p * r / (p + r) if p + r else 0.0, "iou": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
            "precision": p, "recall": r}  # fmt: skip


#: Thresholds whose mean F1 is within this of the best count as equally good: the middle of that plateau is taken.
F1_PLATEAU = 0.01


def calibrate(counts: _Counts) -> dict[str, Any]:
    """The threshold (F1 averaged over the sources that have changed pixels) and the scores there: per source, their
    mean (``f1``, ``iou``) and over all pixels pooled (``pooled_f1``, ``pooled_iou``).

    The threshold is the middle of the plateau of thresholds within :data:`F1_PLATEAU` of the best mean F1, not the
    single best one: on a few validation tiles F1 is flat near its top, and the arg-max wandered between 0.1 and
    0.96 from epoch to epoch (a head's threshold then says more about noise than about the head)."""
    sources = sorted(s for s in counts.pos if counts.pos[s].sum() > 0)
    if not sources:
        raise ValueError("the validation split has no changed pixels: F1 and the threshold cannot be measured")
    curve = []
    for t in THRESHOLDS:
        k = int(round(t * counts.bins))
        f1s = []
        for s in sources:
            tp = counts.pos[s][k:].sum()
            f1s.append(_scores(tp, counts.neg[s][k:].sum(), counts.pos[s].sum() - tp)["f1"])
        curve.append(float(np.mean(f1s)))
    top = max(curve)
    plateau = [float(t) for t, f in zip(THRESHOLDS, curve, strict=True) if f >= top - F1_PLATEAU]
    threshold = float(THRESHOLDS[np.abs(THRESHOLDS - float(np.median(plateau))).argmin()])
    k = int(round(threshold * counts.bins))
    per_source = {}
    pooled = [0.0, 0.0, 0.0]
    for s in sorted(counts.pos):
        tp, fp = float(counts.pos[s][k:].sum()), float(counts.neg[s][k:].sum())
        fn = float(counts.pos[s].sum()) - tp
        per_source[s] = _scores(tp, fp, fn)
        pooled = [pooled[0] + tp, pooled[1] + fp, pooled[2] + fn]
    macro = {m: float(np.mean([per_source[s][m] for s in sources])) for m in ("f1", "iou")}
    pooled_scores = _scores(pooled[0], pooled[1], pooled[2])
    return {"threshold": threshold, "f1": macro["f1"], "iou": macro["iou"], "pooled_f1": pooled_scores["f1"],
            "pooled_iou": pooled_scores["iou"], "sources": per_source}  # fmt: skip


# --- features -------------------------------------------------------------------------------------------------


def _pad(arr: np.ndarray, height: int, width: int, fill: int | None) -> np.ndarray:
    """Pad to height x width at the bottom/right: reflected image content, or ``fill`` (labels)."""
    ph, pw = height - arr.shape[0], width - arr.shape[1]
    if not ph and not pw:
        return arr
    pad = ((0, ph), (0, pw)) + ((0, 0),) * (arr.ndim - 2)
    if fill is not None:
        return np.pad(arr, pad, constant_values=fill)
    mode = "reflect" if arr.shape[0] > ph and arr.shape[1] > pw else "symmetric"
    return np.pad(arr, pad, mode=mode)  # type: ignore[call-overload,no-any-return]


def _jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same place seen another day: contrast, brightness, gamma, colour balance; sometimes blur or noise."""
    import cv2

    x = img.astype(np.float32) / 255.0
    x = np.clip(x * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08), 0, 1) ** rng.uniform(0.8, 1.25)
    x = x * rng.uniform(0.92, 1.08, size=3).astype(np.float32)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.5, 1.2)))
    if rng.random() < 0.3:
        x = x + rng.normal(0, 0.012, x.shape).astype(np.float32)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class _Sample:
    """One pair ready for the head: images (3 x H x W uint8, padded to multiples of 32), label (H x W), and the
    cached features of both dates (float16, one per stage; empty when they are computed at each step)."""

    source: str
    xa: torch.Tensor
    xb: torch.Tensor
    label: torch.Tensor
    fa: list[torch.Tensor]
    fb: list[torch.Tensor]
    size: tuple[int, int]  # before padding


class _Encoder:
    """The packaged EfficientNet-Lite0, ImageNet normalisation, features at the head's stages."""

    def __init__(self, stages: tuple[int, ...], device: torch.device, unfreeze: int,
                 encoder_state: dict[str, torch.Tensor]) -> None:  # fmt: skip
        config = EncoderConfig()
        self.backbone: Any = create_backbone(config, pretrained=True)
        if encoder_state:
            self.backbone.load_state_dict(encoder_state, strict=False)
        self.backbone.to(device).eval()
        self.stages, self.device = stages, device
        self.mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.trainable: list[nn.Parameter] = []
        blocks: Any = self.backbone.blocks  # timm's EfficientNet: an nn.Sequential of stages
        self.unfrozen = list(range(len(blocks) - unfreeze, len(blocks))) if unfreeze else []
        for i in self.unfrozen:
            for p in blocks[i].parameters():
                p.requires_grad_(True)
                self.trainable.append(p)

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W on any device -> ImageNet-normalised float on the encoder's device."""
        x = (x.to(self.device).float().div_(255.0) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of normalised images at the stages (batch norms always use their stored statistics)."""
        return stage_features(self.backbone, x.contiguous(memory_format=torch.channels_last), self.stages)

    def state(self) -> dict[str, torch.Tensor]:
        """Weights of the unfrozen blocks (what a head trained with them carries)."""
        keep = tuple(f"blocks.{i}." for i in self.unfrozen)
        return {k: v.detach().cpu().clone() for k, v in self.backbone.state_dict().items() if k.startswith(keep)}


def _prepare(pair: ChangePair, normalise: bool, crop: int, rng: np.random.Generator | None) -> _Sample:
    """Pad to multiples of 32 (and at least ``crop``), optionally jitter both dates, match B to A."""
    h, w = pair.label.shape
    hh, ww = max(crop, -(-h // ALIGN) * ALIGN), max(crop, -(-w // ALIGN) * ALIGN)
    a, b = pair.before, pair.after
    if rng is not None:
        a, b = _jitter(a, rng), _jitter(b, rng)
    if normalise:
        b = match_histograms(b, a)
    tensors = [torch.from_numpy(np.ascontiguousarray(_pad(v, hh, ww, None))).permute(2, 0, 1) for v in (a, b)]
    label = torch.from_numpy(np.ascontiguousarray(_pad(pair.label, hh, ww, IGNORE)))
    return _Sample(pair.source, tensors[0], tensors[1], label, [], [], (h, w))


def _cache_features(encoder: _Encoder, sample: _Sample) -> None:
    with torch.no_grad():
        x = encoder.normalised(torch.stack([sample.xa, sample.xb]))
        feats = encoder.features(x)
    sample.fa = [f[0].to("cpu", torch.float16) for f in feats]
    sample.fb = [f[1].to("cpu", torch.float16) for f in feats]


def _samples(
    encoder: _Encoder, pairs: Sequence[ChangePair], config: ChangeTrainConfig, copies: int, crop: int,
    cache: bool, cancel: CancelToken | None, stage: str, seed: int,
) -> Generator[Progress, None, list[_Sample]]:  # fmt: skip
    rng = np.random.default_rng(seed)
    out = []
    total = len(pairs) * copies
    for copy in range(copies):
        for pair in pairs:
            if cancel is not None:
                cancel.raise_if_cancelled()
            sample = _prepare(pair, config.normalise, crop, rng if copy else None)
            if cache:
                _cache_features(encoder, sample)
            out.append(sample)
            yield Progress(stage, len(out), total)
    return out


# --- batches --------------------------------------------------------------------------------------------------


def _turn(t: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    if mirror:
        t = t.flip(-1)
    return torch.rot90(t, turns, dims=(-2, -1)) if turns else t


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


_Batch = tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]


class _Batches:
    """Random crops of the training samples: tile drawn by source weight then area, crop on the 32-pixel grid,
    one random mirror/turn per crop applied to both dates' features, pixels and label."""

    def __init__(
        self, samples: list[_Sample], config: ChangeTrainConfig, seed: int, replay: list[_Sample] | None = None
    ) -> None:
        """``replay`` (synthetic pairs) get ``config.synthetic_mix`` of the draws, ``samples`` the rest."""
        self.samples, self.config = samples + (replay or []), config
        self.rng = random.Random(seed)
        area: dict[str, float] = {}
        for s in samples:
            area[s.source] = area.get(s.source, 0.0) + float((s.label != IGNORE).sum())
        source_w = {k: max(v, 1.0) ** config.source_balance for k, v in area.items()}
        self.weights = [source_w[s.source] * max(float((s.label != IGNORE).sum()), 1.0) / max(area[s.source], 1.0)
                        for s in samples]  # fmt: skip
        if replay and config.synthetic_mix > 0:
            real = sum(self.weights)
            each = real * config.synthetic_mix / (1.0 - config.synthetic_mix) / len(replay)
            self.weights += [each] * len(replay)
        else:
            self.samples = samples

    def next(self, encoder: _Encoder, train_encoder: bool) -> _Batch:
        crop, dev = self.config.crop, encoder.device
        picks = self.rng.choices(self.samples, weights=self.weights, k=self.config.batch_size)
        fa: list[list[torch.Tensor]] = []
        fb: list[list[torch.Tensor]] = []
        xs, ys, labels = [], [], []
        for s in picks:
            h, w = s.label.shape
            y0 = self.rng.randrange(0, h - crop + 1, ALIGN)
            x0 = self.rng.randrange(0, w - crop + 1, ALIGN)
            turns, mirror = self.rng.randrange(4), self.rng.random() < 0.5
            xs.append(_turn(s.xa[:, y0 : y0 + crop, x0 : x0 + crop], turns, mirror))
            ys.append(_turn(s.xb[:, y0 : y0 + crop, x0 : x0 + crop], turns, mirror))
            labels.append(_turn(s.label[y0 : y0 + crop, x0 : x0 + crop], turns, mirror))
            if not train_encoder:
                crops = []
                for feats in (s.fa, s.fb):
                    crops.append([_turn(f[:, y0 * f.shape[1] // h : (y0 + crop) * f.shape[1] // h,
                                          x0 * f.shape[2] // w : (x0 + crop) * f.shape[2] // w], turns, mirror)
                                  for f in feats])  # fmt: skip
                fa.append(crops[0])
                fb.append(crops[1])
        xa = encoder.normalised(torch.stack(xs))
        xb = encoder.normalised(torch.stack(ys))
        label = torch.stack(labels).to(dev)
        if train_encoder:  # the image crops through the encoder, gradients into its unfrozen blocks
            feats = encoder.features(torch.cat([xa, xb]))
            n = xa.shape[0]
            return [f[:n] for f in feats], [f[n:] for f in feats], xa, xb, label
        fa_t = [_channels_last(torch.stack([c[k] for c in fa]).to(dev).float()) for k in range(len(fa[0]))]
        fb_t = [_channels_last(torch.stack([c[k] for c in fb]).to(dev).float()) for k in range(len(fb[0]))]
        return fa_t, fb_t, xa, xb, label


# --- validation -----------------------------------------------------------------------------------------------


def _validate(
    head: ChangeUNetHead, encoder: _Encoder, samples: list[_Sample], config: ChangeTrainConfig, pos_weight: float,
    cached: bool,
) -> dict[str, Any]:  # fmt: skip
    head.eval()
    counts = _Counts()
    losses = []
    with torch.no_grad():
        for s in samples:
            xa, xb = encoder.normalised(s.xa[None]), encoder.normalised(s.xb[None])
            if cached:
                fa = [_channels_last(f[None].to(encoder.device).float()) for f in s.fa]
                fb = [_channels_last(f[None].to(encoder.device).float()) for f in s.fb]
            else:
                feats = encoder.features(torch.cat([xa, xb]))
                fa, fb = [f[:1] for f in feats], [f[1:] for f in feats]
            logits = head(fa, fb, xa, xb).float()
            label = s.label[None].to(encoder.device)
            losses.append(float(bce_dice_loss(logits, label, pos_weight, config.dice_weight)))
            h, w = s.size
            prob = torch.sigmoid(logits[0, 0, :h, :w]).cpu().numpy()
            counts.add(s.source, prob, s.label[:h, :w].numpy())
    metrics = calibrate(counts)
    metrics["loss"] = float(np.mean(losses))
    return metrics


# --- the loop -------------------------------------------------------------------------------------------------


def fit_change(
    train: Sequence[ChangePair],
    val: Sequence[ChangePair],
    config: ChangeTrainConfig | None = None,
    out: str | Path | None = None,
    cancel: CancelToken | None = None,
    device: str = "auto",
    init: UNetHeadCheckpoint | None = None,
    synthetic: Sequence[ChangePair] = (),
) -> Generator[Progress, None, ChangeTrainResult]:
    """Train a change head on ``train`` (after ``config.synthetic_epochs`` epochs on ``synthetic`` when given),
    keep the epoch that validates best on ``val``, write it to ``out`` (atomically, at each new best).

    ``init`` starts from a trained head (its architecture and any unfrozen encoder blocks). Raises ``ValueError``
    when there is nothing to train on or ``val`` has no changed pixels.
    """
    import time

    from dedup_app.core.embedder import resolve_device

    config = config or ChangeTrainConfig()
    if init is not None:
        config = dataclasses.replace(config, head=init.head_config)
    if not train and not synthetic:
        raise ValueError("no training pairs")
    if not val or sum(p.changed_px for p in val) == 0:
        raise ValueError("the validation split needs pairs with changed pixels (give more tiles, or a split.csv)")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    random.seed(config.seed)
    np.random.seed(config.seed)  # noqa: NPY002
    torch.manual_seed(config.seed)
    dev = resolve_device(device)
    amp = dev.type == "cuda"
    encoder = _Encoder(config.head.stages, dev, config.unfreeze_blocks, init.encoder_state if init else {})
    frozen = not encoder.trainable
    head = ChangeUNetHead(config.head)
    if init is not None:
        head.load_state_dict(init.state)
    head.to(dev).to(memory_format=torch.channels_last)  # several times faster convolutions on the CPU

    train_s = yield from _samples(encoder, train, config, config.copies if frozen else 1, config.crop, frozen,
                                  cancel, "Reading features of the training pairs", config.seed)  # fmt: skip
    synth_s = yield from _samples(encoder, synthetic, config, 1, config.crop, frozen, cancel,
                                  "Reading features of the synthetic pairs", config.seed + 1)  # fmt: skip
    val_s = yield from _samples(encoder, val, config, 1, 0, frozen, cancel, "Reading features of the validation pairs",
                                config.seed + 2)  # fmt: skip
    seconds["features"] = time.perf_counter() - started
    pos_weight = positive_weight(list(train) + list(synthetic), config.max_pos_weight)

    phases = [(synth_s, config.synthetic_epochs, "synthetic")] if synth_s and config.synthetic_epochs else []
    if train_s:
        phases.append((train_s, config.epochs, "real"))
    replay = synth_s if config.synthetic_mix > 0 else []
    total = sum(e for _, e, _ in phases) * config.steps_per_epoch
    history: list[dict[str, Any]] = []
    best: tuple[float, int] = (-1.0, -1)
    best_ckpt: UNetHeadCheckpoint | None = None
    best_metrics: dict[str, Any] = {}
    step = epoch = 0
    data_summary = {"train": split_counts(train), "val": split_counts(val), "synthetic_pairs": len(synthetic),
                    "val_tiles": sorted(p.key for p in val)}  # fmt: skip
    train_started = time.perf_counter()
    before = _validate(head, encoder, val_s, config, pos_weight, frozen)  # the starting head, for comparison
    history.append({"epoch": 0, "phase": "start", **before})
    yield TrainProgress("Validating", 0, total, epoch=0, val=before)
    for samples, epochs, phase in phases:
        params = list(head.parameters()) + encoder.trainable
        optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(epochs * config.steps_per_epoch))
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        batches = _Batches(samples, config, config.seed + epoch, replay if phase == "real" else None)
        for _ in range(epochs):
            epoch += 1
            head.train()
            losses = []
            for _ in range(config.steps_per_epoch):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                    fa, fb, xa, xb, label = batches.next(encoder, not frozen)
                    logits = head(fa, fb, xa, xb)
                loss = bce_dice_loss(logits, label, pos_weight, config.dice_weight)
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
                schedule.step()
                step += 1
                losses.append(float(loss.detach()))
                yield TrainProgress("Training", step, total, epoch=epoch, loss=losses[-1])
            metrics = _validate(head, encoder, val_s, config, pos_weight, frozen)
            metrics["train_loss"] = float(np.mean(losses))
            history.append({"epoch": epoch, "phase": phase, **metrics})
            yield TrainProgress("Validating", step, total, epoch=epoch, loss=metrics["train_loss"], val=metrics)
            if metrics["f1"] > best[0]:
                best = (metrics["f1"], epoch)
                best_metrics = metrics
                best_ckpt = _checkpoint(head, encoder, config, metrics, epoch, data_summary)
                if out is not None:
                    best_ckpt.save(out)
    assert best_ckpt is not None
    seconds["training"] = time.perf_counter() - train_started
    seconds["total"] = time.perf_counter() - started
    best_ckpt.metrics["seconds"] = seconds
    best_ckpt.metrics["history"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()
                                     if k != "sources"} for h in history]  # fmt: skip
    if out is not None:
        best_ckpt.save(out)
    return ChangeTrainResult(best_ckpt, best[1], best_metrics, history, Path(out) if out else None, seconds)


def _checkpoint(
    head: ChangeUNetHead, encoder: _Encoder, config: ChangeTrainConfig, metrics: dict[str, Any], epoch: int,
    data: dict[str, Any],
) -> UNetHeadCheckpoint:  # fmt: skip
    detector = ChangeConfig(stages=config.head.stages, threshold=float(metrics["threshold"]),
                            output_stride=config.output_stride)  # fmt: skip
    recipe = dataclasses.asdict(config)
    info = {
        "validation": metrics,
        "best_epoch": epoch,
        "recipe": recipe,
        "data": data,
        "parameters": parameter_count(head),
        "encoder": f"{PACKAGED_BACKBONE[0]} ({PACKAGED_BACKBONE[1]}), "
        + (f"blocks {encoder.unfrozen} trained" if encoder.unfrozen else "frozen"),
        "calibrated_on": "validation split: F1-best threshold, F1 averaged over the sources",
    }
    state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    return UNetHeadCheckpoint(detector, config.head, state, info, config.name, encoder.state())
