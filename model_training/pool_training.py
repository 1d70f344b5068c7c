"""Self-supervised training of the default model's head on the photo pool (``../shared/data/photos/pool``).

Every pool photo becomes a class: the photo itself and ``copies`` randomly composed strong copies of it
(:mod:`model_training.strong_edits`) plus one copy per benchmark edit family drawn at random
(:mod:`model_training.edits`). Each file is encoded as it would be on disk and decoded through the scanner's own path
(``dedup_app.core.imageio.decode``, DCT-scaled JPEG, EXIF applied), so the model is trained on what it will see.
The backbone is frozen: its pooled descriptors are computed once and cached in ``work``, and only the projection
head trains, which takes minutes on a CPU.

Loss: NT-Xent (InfoNCE) over batches of photos with two views each, every other photo of the batch a negative, the
hardest ones weighted most by the temperature, plus SSCD's KoLeo entropy term that spreads the descriptors so that
unrelated photos do not crowd near the threshold (Pizzi et al., "A Self-Supervised Descriptor for Image Copy
Detection", CVPR 2022). Batches are built around neighbourhoods (each batch takes seed photos and their nearest pool
neighbours under the base model), so the negatives a batch holds are the pool's hardest: photos of one subject,
one scene, one product line. Alternatives (``loss``): pytorch-metric-learning's contrastive loss with its pair
miner, or the triplet loss with its semi-hard triplet miner.

The pool is split by photo: ``train`` (80 %), ``dev`` (10 %) and ``test`` (10 %) by a hash of the file name; dev
chooses the epoch and the recipe, test is only reported.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dedup_app.core.imageio import decode, resize_square
from dedup_app.core.model import SiameseEncoder
from model_training.edits import EDIT_FAMILIES, apply_edit
from model_training.strong_edits import random_copy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolRecipe:
    """How the pool is turned into training data and how the head trains; stored in the model's metrics."""

    copies: int = 6  # strong random copies per photo (plus one benchmark-family copy)
    seed: int = 0
    loss: str = "ntxent"  # "ntxent", "contrastive" or "triplet"
    temperature: float = 0.05
    koleo: float = 0.0  # weight of the KoLeo entropy term (0: off)
    batch_photos: int = 256
    neighbours: int = 7  # nearest pool neighbours added around each seed photo of a batch
    steps: int = 1500
    lr: float = 1e-3
    weight_decay: float = 1e-4
    head: str = "linear"  # "linear" (initialised from the base model's projection) or "mlp"
    hidden: int = 1024


def split_of(name: str) -> str:
    """``train`` / ``dev`` / ``test`` for a pool file name (80 / 10 / 10 by a hash of the name)."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") % 10
    return "dev" if h == 0 else "test" if h == 1 else "train"


def pool_photos(data_dir: Path, split: str) -> list[Path]:
    """The pool photos of ``split``, sorted."""
    folder = data_dir / "photos" / "pool"
    photos = sorted(p for p in folder.glob("*.jpg") if split_of(p.name) == split)
    if not photos:
        raise FileNotFoundError(f"no pool photos of the {split} split under {folder}")
    return photos


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little")


def copies_of(photos: Sequence[Path], copies: int, seed: int) -> Iterator[tuple[int, bytes]]:
    """(class, encoded file) for every photo and its copies: the photo's own bytes, ``copies`` strong random
    copies (a collage's second tile is another photo of the list) and one copy by a random benchmark family."""
    families = list(EDIT_FAMILIES)
    for k, path in enumerate(photos):
        data = path.read_bytes()
        yield k, data
        rng = np.random.default_rng(_seed(seed, path.name))
        with Image.open(io.BytesIO(data)) as im:
            img = im.convert("RGB")
        for _ in range(copies):
            j = int(rng.integers(len(photos) - 1))
            with Image.open(photos[j + (j >= k)]) as other:
                yield k, random_copy(img, rng, other.convert("RGB")).to_bytes()
        yield k, apply_edit(families[int(rng.integers(len(families)))], img, rng).to_bytes()


def descriptors(encoder: SiameseEncoder, files: Sequence[bytes], batch: int = 64, workers: int = 2) -> np.ndarray:
    """Pooled backbone descriptors of encoded image files, decoded as the scanner decodes them."""
    size = encoder.config.input_size

    def load(data: bytes) -> np.ndarray:
        rgb, _ = decode(data, size)
        return resize_square(rgb, size)

    out = []
    with ThreadPoolExecutor(workers) as pool, torch.inference_mode():
        for start in range(0, len(files), batch):
            pixels = np.stack(list(pool.map(load, files[start : start + batch])))
            x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
            out.append(encoder.descriptor(x).float().numpy())
            if start // batch % 20 == 0:
                log.info("descriptors %d / %d", min(len(files), start + batch), len(files))
    return np.concatenate(out) if out else np.zeros((0, encoder.config.feature_dim), np.float32)


def pool_descriptors(
    encoder: SiameseEncoder, data_dir: Path, split: str, recipe: PoolRecipe, work: Path
) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors, class labels) of a pool split and its copies, cached in ``work`` by split, copies and seed."""
    path = work / f"pool-{split}-c{recipe.copies}-s{recipe.seed}-{encoder.config.input_size}.npz"
    if path.exists():
        cached = np.load(path)
        return cached["desc"], cached["labels"]
    photos = pool_photos(data_dir, split)
    labels, files = [], []
    for k, data in copies_of(photos, recipe.copies, recipe.seed):
        labels.append(k)
        files.append(data)
    desc = descriptors(encoder, files)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(path, desc=desc, labels=np.array(labels))
    return desc, np.array(labels)


class Head(torch.nn.Module):
    """The trainable projection: linear (from the base model's weights) or a two-layer MLP, on centred input."""

    def __init__(self, base_weight: torch.Tensor, recipe: PoolRecipe) -> None:
        super().__init__()
        out_dim, in_dim = base_weight.shape
        self.center = torch.nn.Parameter(torch.zeros(in_dim), requires_grad=False)
        if recipe.head == "mlp":
            self.proj: torch.nn.Module = torch.nn.Sequential(
                torch.nn.Linear(in_dim, recipe.hidden), torch.nn.GELU(), torch.nn.Linear(recipe.hidden, out_dim)
            )
        else:
            linear = torch.nn.Linear(in_dim, out_dim, bias=False)
            with torch.no_grad():
                linear.weight.copy_(base_weight)
            self.proj = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(x - self.center), dim=-1)


def koleo(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The Kozachenko-Leonenko entropy estimate's loss term: minus the mean log distance of each row to its nearest
    other row (rows unit length), as SSCD adds it."""
    with torch.no_grad():
        sims = x @ x.T
        sims.fill_diagonal_(-2.0)
        nearest = sims.argmax(dim=1)
    return -torch.log((x - x[nearest]).norm(dim=1) + eps).mean()


def info_nce(temperature: float) -> Any:
    """NT-Xent (InfoNCE) for batches of two views per class, as SimCLR and SSCD compute it: each embedding's
    other view is the positive among all the batch's embeddings. Equal to pytorch-metric-learning's ``NTXentLoss``
    for two views per class, but one (2B x 2B) matrix instead of its (positives x negatives) one, which at 256
    photos per batch is 512 x 261,120 entries and made a step take seconds."""

    def loss(emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = emb @ emb.T / temperature
        logits.fill_diagonal_(float("-inf"))
        same = labels[:, None] == labels[None, :]
        same.fill_diagonal_(False)
        target = same.float().argmax(dim=1)  # the other view of the same photo
        return F.cross_entropy(logits, target)

    return loss


def neighbourhood_batches(
    base: np.ndarray, labels: np.ndarray, recipe: PoolRecipe, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Endless batches of photo classes: random seeds, each with its ``neighbours`` nearest classes under the base
    descriptors (the photos themselves), so each batch is full of hard negatives."""
    classes = np.unique(labels)
    first = np.array([np.flatnonzero(labels == c)[0] for c in classes])
    x = base[first] / np.linalg.norm(base[first], axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    near = np.argsort(-sims, axis=1)[:, : recipe.neighbours]
    while True:
        chosen: list[int] = []
        seen: set[int] = set()
        for s in rng.permutation(len(classes)):
            for c in [int(s), *near[s].tolist()]:
                if c not in seen:
                    seen.add(c)
                    chosen.append(c)
            if len(chosen) >= recipe.batch_photos:
                break
        yield classes[np.array(chosen[: recipe.batch_photos])]


def train_head(
    base_weight: torch.Tensor,
    desc: np.ndarray,
    labels: np.ndarray,
    recipe: PoolRecipe,
    evaluate: Any = None,
    every: int = 250,
) -> tuple[Head, list[dict[str, Any]]]:
    """Train a :class:`Head` on cached descriptors; ``evaluate(head) -> dict`` (with a ``score`` key) is called
    every ``every`` steps and the best head by that score is returned with the history."""
    from pytorch_metric_learning import distances, losses, miners

    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    head = Head(base_weight, recipe)
    x = torch.from_numpy(np.ascontiguousarray(desc, np.float32))
    by_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    cos = distances.CosineSimilarity()
    miner = None
    if recipe.loss == "ntxent":
        loss_fn: Any = info_nce(recipe.temperature)
    elif recipe.loss == "contrastive":
        loss_fn = losses.ContrastiveLoss(pos_margin=0.9, neg_margin=0.6, distance=cos)
        miner = miners.PairMarginMiner(pos_margin=0.9, neg_margin=0.6, distance=cos)
    elif recipe.loss == "triplet":
        loss_fn = losses.TripletMarginLoss(margin=0.1, distance=cos)
        miner = miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard", distance=cos)
    else:
        raise ValueError(f"unknown loss {recipe.loss!r}")
    optimiser = torch.optim.AdamW(
        [p for p in head.parameters() if p.requires_grad], lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, recipe.lr, total_steps=recipe.steps, pct_start=0.1)
    batches = neighbourhood_batches(desc, labels, recipe, rng)
    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    if evaluate is not None:
        head.eval()
        first = {"step": 0, **evaluate(head)}
        history.append(first)
        best = (first["score"], {k: v.clone() for k, v in head.state_dict().items()})
    for step in range(1, recipe.steps + 1):
        head.train()
        classes = next(batches)
        rows, lab = [], []
        for c in classes:
            pick = rng.choice(by_class[int(c)], size=2, replace=False)
            rows += pick.tolist()
            lab += [int(c), int(c)]
        emb = head(x[rows])
        target = torch.tensor(lab)
        loss = loss_fn(emb, target, miner(emb, target)) if miner is not None else loss_fn(emb, target)
        if recipe.koleo:
            loss = loss + recipe.koleo * koleo(emb)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if evaluate is not None and (step % every == 0 or step == recipe.steps):
            head.eval()
            with torch.no_grad():
                row = {"step": step, "loss": float(loss), **evaluate(head)}
            history.append(row)
            log.info("step %d loss %.4f %s", step, float(loss), {k: round(v, 4) for k, v in row.items()
                                                                 if isinstance(v, float)})  # fmt: skip
            assert best is not None
            if row["score"] > best[0]:
                best = (row["score"], {k: v.clone() for k, v in head.state_dict().items()})
    if best is not None:
        head.load_state_dict(best[1])
    head.eval()
    return head, history


def recipe_dict(recipe: PoolRecipe) -> dict[str, Any]:
    return asdict(recipe)


def embed(head: Head, desc: np.ndarray) -> np.ndarray:
    """Unit embeddings of descriptors through ``head``."""
    with torch.no_grad():
        return head(torch.from_numpy(np.ascontiguousarray(desc, np.float32))).numpy()


def steps_per_epoch(n_classes: int, recipe: PoolRecipe) -> int:
    return max(1, math.ceil(n_classes / recipe.batch_photos))
