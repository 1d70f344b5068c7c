"""Fine-tuning the Siamese model: balanced batches, metric-learning losses with hard mining, a cancellable loop.

The user's "not duplicate" labels (``ItemSet.negatives``) are the hardest negatives there are, and usually pairs of
images that have no duplicate of their own, which class-balanced batches never draw: the sampler adds both sides of
such pairs to the batches, and a pair loss on exactly those pairs pushes their similarity below ``neg_margin``.

``fit`` is a progress generator (like every long job in dedup-app): it yields :class:`TrainProgress` after each
step and after each validation, checks the cancel token there, writes the best checkpoint atomically, and returns
a :class:`TrainResult` with before/after validation metrics. The active model is never touched here: activating
the result is the caller's (the user's) decision.

With the backbone frozen (the default) the pooled backbone descriptors are computed once and only the projection
head trains, which takes seconds on a CPU; ``unfreeze_blocks`` > 0 also trains the last backbone blocks on the
images themselves (slow on a CPU, meant for a GPU).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dedup_app.core.calibration import CALIBRATION_KEY, Calibration, calibration_of, fit_platt
from dedup_app.core.checkpoint import Checkpoint
from dedup_app.core.imageio import resize_square
from dedup_app.core.index import unit_rows
from dedup_app.core.model import SiameseEncoder, build_encoder
from dedup_app.core.model_files import write_checkpoint
from dedup_app.core.progress import CancelToken, Progress
from model_training.data import DataError, ItemSet
from model_training.metrics import calibrate_threshold, threshold_scores

LOSSES = ("triplet", "contrastive")


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; stored in the checkpoint's metrics so a model says how it was made."""

    loss: str = "triplet"
    margin: float = 0.1  # triplet: anchor-positive similarity must beat anchor-negative by this much
    pos_margin: float = 0.9  # contrastive: positives pulled above this cosine similarity ...
    neg_margin: float = 0.6  # ... negatives pushed below this one; so are the labelled "not duplicate" pairs
    mining: str = "all"  # triplets violating the margin: "all", "semihard" or "hard" (hard finds none early on)
    epochs: int = 40
    classes_per_batch: int = 16
    per_class: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    unfreeze_blocks: int = 0
    seed: int = 0
    target_precision: float = 0.99
    name: str = "fine-tuned"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        if self.per_class < 2 or self.classes_per_batch < 2:
            raise ValueError("batches need at least 2 classes of at least 2 items")


@dataclass(frozen=True)
class TrainProgress(Progress):
    """A training step (``loss``) or a validation (``val`` metrics) for the live curve; both training loops (the
    duplicate model's and the change head's) report with it, and both dialogs draw it."""

    epoch: int = 0
    loss: float | None = None
    val: dict[str, Any] | None = None


@dataclass
class TrainResult:
    """The best checkpoint, validation metrics of the starting model and of the best one, and the curve."""

    checkpoint: Checkpoint
    before: dict[str, float]
    after: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason) of images that could not be read

    @property
    def improved(self) -> bool:
        """Whether the new model is worth using: F1 at the precision target up by at least 0.01 on validation,
        and the ranking quality (ROC AUC) not worse by more than 0.002. A gain from near-zero F1 that costs
        ranking quality is noise, not a better model."""
        if self.after is self.before:
            return False
        return (self.after["f1"] >= self.before["f1"] + 0.01
                and self.after["auc"] >= self.before["auc"] - 0.002)  # fmt: skip


class BalancedBatchSampler:
    """Batches of ``classes_per_batch`` classes x ``per_class`` items: every batch holds positives (same class)
    and negatives (other classes) in fixed proportion. Deterministic for a given seed (pytorch-metric-learning's
    MPerClassSampler draws from a global random state, which would make runs depend on import order).

    Explicit ``negatives`` (pairs of item indices) are added on top: both sides of up to a quarter of the batch size
    of them per batch, taken in turn from a shuffled order, so that every pair is in a batch at least once per
    epoch (the epoch grows if there are too many for that) and a few pairs are in every batch. Without negatives
    the batches are exactly those of the plain sampler.
    """

    def __init__(
        self,
        labels: Sequence[int],
        classes_per_batch: int,
        per_class: int,
        seed: int = 0,
        negatives: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.by_class: dict[int, list[int]] = {}
        for i, lab in enumerate(labels):
            self.by_class.setdefault(lab, []).append(i)
        self.usable = [c for c, idx in self.by_class.items() if len(idx) >= 2]
        if len(self.usable) < 2:
            raise ValueError("need at least two classes with two or more items each to make positives and negatives")
        self.classes_per_batch = min(classes_per_batch, len(self.usable))
        self.per_class = per_class
        self.rng = random.Random(seed)
        self.negatives = sorted({(min(i, j), max(i, j)) for i, j in negatives if i != j})
        self.negatives_per_batch = min(len(self.negatives), max(1, self.classes_per_batch * per_class // 4))

    def __len__(self) -> int:
        plain = max(1, sum(len(self.by_class[c]) for c in self.usable) // (self.classes_per_batch * self.per_class))
        if not self.negatives:
            return plain
        return max(plain, -(-len(self.negatives) // self.negatives_per_batch))

    def __iter__(self):  # type: ignore[no-untyped-def]
        order = list(self.negatives)
        if order:
            self.rng.shuffle(order)
        for b in range(len(self)):
            batch: list[int] = []
            for c in self.rng.sample(self.usable, self.classes_per_batch):
                members = self.by_class[c]
                picks = (self.rng.sample(members, self.per_class) if len(members) >= self.per_class
                         else [self.rng.choice(members) for _ in range(self.per_class)])  # fmt: skip
                batch.extend(picks)
            start = b * self.negatives_per_batch
            for k in range(start, start + self.negatives_per_batch):
                batch.extend(i for i in order[k % len(order)] if i not in batch)
            yield batch


def negative_pairs_in(batch: Sequence[int], partners: dict[int, set[int]]) -> tuple[list[int], list[int]]:
    """Positions in ``batch`` of the explicit negative pairs both of whose sides it holds (each pair once)."""
    where: dict[int, int] = {}
    for pos, i in enumerate(batch):
        where.setdefault(i, pos)
    first, second = [], []
    for i, pos in where.items():
        for j in partners.get(i, ()):
            if j > i and j in where:
                first.append(pos)
                second.append(where[j])
    return first, second


def missing_dependency() -> str | None:
    """Why training cannot run in this installation (the ``train`` extra is missing), or ``None``."""
    import importlib.util

    if importlib.util.find_spec("pytorch_metric_learning") is None:
        return "training needs pytorch-metric-learning: pip install 'dedup-app[train]'"
    return None


def build_negative_loss(config: TrainConfig) -> Any:
    """The loss on the labelled "not duplicate" pairs of a batch (given to it as pytorch-metric-learning's
    ``indices_tuple`` of negative pairs only): their cosine similarity above ``neg_margin``, averaged over the pairs
    above it."""
    from pytorch_metric_learning import distances, losses

    cos = distances.CosineSimilarity()
    return losses.ContrastiveLoss(pos_margin=config.pos_margin, neg_margin=config.neg_margin, distance=cos)


def build_loss(config: TrainConfig) -> tuple[Any, Any]:
    """(loss, miner) from pytorch-metric-learning on cosine similarity."""
    from pytorch_metric_learning import distances, losses, miners

    cos = distances.CosineSimilarity()
    if config.loss == "triplet":
        loss = losses.TripletMarginLoss(margin=config.margin, distance=cos)
        miner = miners.TripletMarginMiner(margin=config.margin, type_of_triplets=config.mining, distance=cos)
    else:
        loss = losses.ContrastiveLoss(pos_margin=config.pos_margin, neg_margin=config.neg_margin, distance=cos)
        miner = miners.PairMarginMiner(pos_margin=config.pos_margin, neg_margin=config.neg_margin, distance=cos)
    return loss, miner


def pixels_of(
    items: ItemSet, size: int, cancel: CancelToken | None = None
) -> Generator[Progress, None, tuple[ItemSet, np.ndarray, list[tuple[str, str]]]]:
    """Every readable item as size x size x 3 uint8 (loaded and edited once).

    Returns the items that could be read, their pixels, and ``(key, reason)`` for each one that could not (a
    corrupt or vanished file is skipped, not fatal: the scan reports such files too)."""
    from dedup_app.core.imageio import ImageLoadError

    out = np.zeros((len(items), size, size, 3), np.uint8)
    kept: list[int] = []
    skipped: dict[str, str] = {}  # source file -> reason: an unreadable file's edited copies name it once
    for i in range(len(items)):
        if cancel is not None and i % 16 == 0:
            cancel.raise_if_cancelled()
        try:
            out[len(kept)] = resize_square(items.load(i).convert("RGB"), size)
            kept.append(i)
        except (ImageLoadError, OSError, ValueError) as exc:
            skipped.setdefault(_source_file(items.keys[i]), str(exc))
        if i % 16 == 15 or i == len(items) - 1:
            yield Progress("Preparing images", i + 1, len(items))
    if not skipped:
        return items, out, []
    return items.subset(kept), out[: len(kept)].copy(), list(skipped.items())


def _source_file(key: str) -> str:
    """The file an item comes from: its key, or for an edited copy (``path#family3``) the original's path."""
    if "#" in key and not os.path.exists(key):
        return key.rsplit("#", 1)[0]
    return key


def descriptors_of(
    encoder: SiameseEncoder, pixels: np.ndarray, cancel: CancelToken | None = None, batch: int = 32
) -> Generator[Progress, None, torch.Tensor]:
    """Pooled backbone descriptors (before the head) of uint8 images, on the encoder's device."""
    device = next(encoder.parameters()).device
    out = []
    with torch.no_grad():  # not inference_mode: the head trains on these tensors
        for k in range(0, len(pixels), batch):
            if cancel is not None:
                cancel.raise_if_cancelled()
            x = torch.from_numpy(pixels[k : k + batch]).permute(0, 3, 1, 2).to(device).float() / 255.0
            out.append(encoder.descriptor(x).float())
            yield Progress("Reading features", min(len(pixels), k + batch), len(pixels))
    return torch.cat(out) if out else torch.zeros(0, encoder.config.feature_dim, device=device)


def validation_loss(loss_fn: Any, embeddings: torch.Tensor, labels: Sequence[int], cap: int = 400) -> float:
    """The training loss over (at most ``cap`` of) the validation items, every pair or triplet, no mining."""
    idx = np.linspace(0, len(labels) - 1, min(cap, len(labels))).astype(int)
    with torch.no_grad():
        emb = embeddings[torch.from_numpy(idx).to(embeddings.device)]
        lab = torch.tensor(np.asarray(labels)[idx], device=embeddings.device)
        return float(loss_fn(emb, lab))


def pair_similarities(
    embeddings: torch.Tensor | np.ndarray, labels: Sequence[int], as_cached: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The similarity of every pair of items and whether the two share a label; ``as_cached``: of the vectors as
    the cache keeps them and the finder compares them (:func:`dedup_app.core.index.unit_rows`)."""
    e = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    if as_cached:
        e = unit_rows(e)
    lab = np.asarray(labels)
    iu = np.triu_indices(len(e), 1)
    return (e @ e.T)[iu], lab[iu[0]] == lab[iu[1]]


def evaluate(embeddings: torch.Tensor | np.ndarray, labels: Sequence[int], threshold: float | None = None,
             target_precision: float = 0.99) -> dict[str, float]:  # fmt: skip
    """Pair metrics over all pairs of validation items: ROC AUC, the threshold holding ``target_precision``
    (and P/R/F1 there), and P/R/F1 at ``threshold`` when given (the model's own)."""
    from sklearn.metrics import roc_auc_score

    sims, same = pair_similarities(embeddings, labels)
    if same.all() or not same.any():
        raise ValueError("validation needs both duplicate and non-duplicate pairs")
    t = calibrate_threshold(sims, same, target_precision)
    at_t = threshold_scores(sims, same, t)
    out = {
        "auc": float(roc_auc_score(same, sims)),
        "calibrated_threshold": t,
        "precision": at_t.precision,
        "recall": at_t.recall,
        "f1": at_t.f1,
        "pairs": float(len(sims)),
    }
    if threshold is not None:
        own = threshold_scores(sims, same, threshold)
        out.update({"precision_at_model_threshold": own.precision, "recall_at_model_threshold": own.recall,
                    "f1_at_model_threshold": own.f1})  # fmt: skip
    return out


def platt_on(embeddings: torch.Tensor | np.ndarray, labels: Sequence[int]) -> Calibration:
    """The similarity-to-probability calibration fitted on all pairs of the validation items, as the threshold is
    (on the vectors as the cache keeps them, so it matches what ``verify`` computes)."""
    sims, same = pair_similarities(embeddings, labels, as_cached=True)
    return fit_platt(sims, same, "all pairs of the training run's validation split")


def fit(
    base: Checkpoint,
    train: ItemSet,
    val: ItemSet,
    config: TrainConfig | None = None,
    out: Path | None = None,
    cancel: CancelToken | None = None,
    device: str = "auto",
) -> Generator[Progress, None, TrainResult]:
    """Fine-tune ``base`` on ``train``, keep the best on ``val``; write it to ``out`` (atomically) if given."""
    from dedup_app.core.embedder import resolve_device

    config = config or TrainConfig()
    if (missing := missing_dependency()) is not None:
        raise DataError(missing)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)  # noqa: NPY002 (pml's miners draw from numpy's global generator)
    dev = resolve_device(device)
    encoder = build_encoder(base).to(dev)
    size = encoder.config.input_size
    train, train_pix, skipped = yield from pixels_of(train, size, cancel)
    val, val_pix, skipped_val = yield from pixels_of(val, size, cancel)
    skipped += skipped_val
    if len(set(train.labels)) < 2 or len(set(val.labels)) < 2:
        raise DataError(f"too little readable data: {len(skipped)} images could not be read")
    frozen = config.unfreeze_blocks <= 0

    # what the model does before training, on the same validation set
    val_desc = yield from descriptors_of(encoder, val_pix, cancel)
    loss_fn, miner = build_loss(config)
    with torch.no_grad():
        val_emb = F.normalize(encoder.head(val_desc), dim=-1)
        before = evaluate(val_emb, val.labels, base.threshold, config.target_precision)
        before["loss"] = validation_loss(loss_fn, val_emb, val.labels)
    yield TrainProgress("Validating", 0, config.epochs, epoch=0, val=before)

    for p in encoder.parameters():
        p.requires_grad_(False)
    trainable = list(encoder.head.parameters())
    if not frozen:
        blocks: Any = encoder.backbone.blocks  # timm's EfficientNet: an nn.Sequential of stages
        for block in list(blocks)[-config.unfreeze_blocks :]:
            for p in block.parameters():
                p.requires_grad_(True)
                trainable.append(p)
    for p in encoder.head.parameters():
        p.requires_grad_(True)
    train_desc = (yield from descriptors_of(encoder, train_pix, cancel)) if frozen else None
    optimiser = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    sampler = BalancedBatchSampler(train.labels, config.classes_per_batch, config.per_class, config.seed,
                                   train.negatives)  # fmt: skip
    partners: dict[int, set[int]] = {}
    for i, j in train.negatives:
        partners.setdefault(i, set()).add(j)
        partners.setdefault(j, set()).add(i)
    negative_loss = build_negative_loss(config)
    no_pairs = torch.zeros(0, dtype=torch.long, device=dev)
    labels_t = torch.tensor(train.labels, device=dev)
    amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def embed(indices: list[int]) -> torch.Tensor:
        if frozen:
            assert train_desc is not None
            return F.normalize(encoder.head(train_desc[indices]), dim=-1)
        x = torch.from_numpy(train_pix[indices]).permute(0, 3, 1, 2).to(dev).float() / 255.0
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            return encoder(x).float()

    best = (before["f1"], before["auc"])
    best_state = _trainable_state(encoder, frozen)
    best_metrics = before
    best_calibration = platt_on(val_emb, val.labels)
    history: list[dict[str, Any]] = [{"epoch": 0, **before}]
    total = config.epochs * len(sampler)
    step = 0
    for epoch in range(1, config.epochs + 1):
        encoder.train(not frozen)
        if not frozen:  # batch-norm statistics of the frozen part stay as they are
            for m in encoder.backbone.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
        losses = []
        for batch in sampler:
            if cancel is not None:
                cancel.raise_if_cancelled()
            emb = embed(batch)
            lab = labels_t[batch]
            loss = loss_fn(emb, lab, miner(emb, lab))
            first, second = negative_pairs_in(batch, partners)
            if first:  # the user's "not duplicate" pairs, on top of what the miner found; both ways round, as
                # pml returns zero for a tuple of one pair (and the mean over a pair and its mirror is the pair's)
                a, n = torch.tensor(first + second, device=dev), torch.tensor(second + first, device=dev)
                loss = loss + negative_loss(emb, lab, (no_pairs, no_pairs, a, n))
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            step += 1
            losses.append(float(loss.detach()))
            yield TrainProgress("Training", step, total, epoch=epoch, loss=losses[-1])
        encoder.eval()
        with torch.no_grad():
            if frozen:
                val_emb = F.normalize(encoder.head(val_desc), dim=-1)
            else:
                val_emb = F.normalize(encoder.head((yield from descriptors_of(encoder, val_pix, cancel))), dim=-1)
        metrics = evaluate(val_emb, val.labels, None, config.target_precision)
        metrics["loss"] = validation_loss(loss_fn, val_emb, val.labels)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else 0.0, **metrics})
        yield TrainProgress("Validating", step, total, epoch=epoch, loss=history[-1]["train_loss"], val=metrics)
        if (metrics["f1"], metrics["auc"]) > best:
            best, best_metrics = (metrics["f1"], metrics["auc"]), metrics
            best_state = _trainable_state(encoder, frozen)
            best_calibration = platt_on(val_emb, val.labels)

    checkpoint = _checkpoint(base, encoder, best_state, best_metrics, before, config, frozen)
    # the probability calibration of the weights returned (verify, the compare view): the base model's own when
    # they are its weights and it has one (fitted on more pairs), else fitted on the validation pairs
    kept_base = best_metrics is before and calibration_of(base.metrics) is not None
    calibration = base.metrics[CALIBRATION_KEY] if kept_base else best_calibration.to_dict()
    checkpoint.metrics[CALIBRATION_KEY] = calibration
    if out is not None:
        write_checkpoint(checkpoint, out)
    return TrainResult(checkpoint, before, best_metrics, history, out, skipped)


def _trainable_state(encoder: SiameseEncoder, frozen: bool) -> dict[str, dict[str, torch.Tensor]]:
    state = {"head": {k: v.detach().cpu().clone() for k, v in encoder.head.state_dict().items()}}
    if not frozen:
        state["backbone"] = {k: v.detach().cpu().clone() for k, v in encoder.backbone.state_dict().items()}
    state["pool_p"] = {"p": encoder.pool.p.detach().cpu().clone()}
    return state


def _checkpoint(
    base: Checkpoint,
    encoder: SiameseEncoder,
    state: dict[str, dict[str, torch.Tensor]],
    after: dict[str, float],
    before: dict[str, float],
    config: TrainConfig,
    frozen: bool,
) -> Checkpoint:
    metrics: dict[str, Any] = {
        "validation_before": before,
        "validation_after": after,
        "recipe": dataclasses.asdict(config),
        "base_model": base.model_id,
        "calibrated_on": "validation split",
    }
    improved = after is not before
    return Checkpoint(
        config=base.config,
        head_state=copy.deepcopy(state["head"]),
        threshold=float(after["calibrated_threshold"]) if improved else base.threshold,
        name=config.name,
        metrics=metrics,
        backbone_state=state.get("backbone", {}) if not frozen else dict(base.backbone_state),
        pool_p=float(state["pool_p"]["p"]),
    )
