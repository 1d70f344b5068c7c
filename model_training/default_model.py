"""Build the shipped untrained default model: pretrained backbone, fixed projection head, calibrated threshold.

The head is a random orthogonal projection of the 1280 GeM-pooled backbone features to 256 dimensions (a
Johnson-Lindenstrauss map: it keeps inner products up to a small error, and unlike PCA it is not fitted to any
photo collection, so the calibrated threshold transfers to collections it has never seen). The projection seed
and the threshold (the lowest one holding 99 % pair precision) are chosen on the ``dev`` half of the photos only;
the benchmark reports on the ``test`` half.

    python -m model_training.default_model --data ../shared/data --out resources/models/dedup-default-v1.pt

``--train`` trains the head on the photo pool instead (:mod:`model_training.pool_training`), starting from the
``--base`` model, chooses the recipe's best step and the threshold on the dev photos (the near-duplicate set's dev
half and the pool's dev split, with strong copies) and reports on the test photos (their test halves):

    python -m model_training.default_model --train --data ../shared/data --out resources/models/dedup-default-v2.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dedup_app.core.checkpoint import Checkpoint
from dedup_app.core.imageio import load_for_embedding
from dedup_app.core.model import EncoderConfig, SiameseEncoder, create_backbone
from dedup_app.core.model_files import write_checkpoint
from dedup_app.core.progress import drive
from model_training.metrics import calibrate_threshold, pairs_of_labels, threshold_scores
from model_training.neardup_set import build_neardup_set
from model_training.train import descriptors_of

log = logging.getLogger(__name__)

TARGET_PRECISION = 0.99


def orthogonal_projection(in_dim: int, out_dim: int, seed: int) -> torch.Tensor:
    """A (out_dim, in_dim) matrix with orthonormal rows, from a seeded Gaussian (QR, sign-fixed)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((in_dim, out_dim)))
    q = q * np.sign(np.diag(r))  # make the factorisation unique
    return torch.from_numpy(q.T.astype(np.float32))


def descriptors(encoder: SiameseEncoder, files: list[Path]) -> np.ndarray:
    """Pooled backbone descriptors (before the head) of image files."""
    size = encoder.config.input_size
    pixels = np.stack([load_for_embedding(str(f), size).pixels for f in files])
    return drive(descriptors_of(encoder, pixels)).cpu().numpy()


def pair_similarities(emb: np.ndarray, sources: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs similarities (upper triangle) and whether each pair shares a source."""
    sims = emb @ emb.T
    iu = np.triu_indices(len(emb), 1)
    truth = pairs_of_labels(sources)
    same = np.array([(a, b) in truth for a, b in zip(*iu, strict=True)])
    return sims[iu], same


def build_default(data_dir: Path, out: Path, seeds: range = range(8)) -> Checkpoint:
    """Choose the projection seed and threshold on the dev photos and write the checkpoint to ``out``."""
    config = EncoderConfig()
    encoder = SiameseEncoder(config, create_backbone(config, pretrained=True)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        items = build_neardup_set(data_dir, Path(tmp), "dev")
        desc = descriptors(encoder, [Path(tmp) / it.file for it in items])
    sources = [it.source for it in items]
    best: tuple[float, int, float, dict[str, Any]] | None = None
    for seed in seeds:
        proj = orthogonal_projection(config.feature_dim, config.embed_dim, seed).numpy()
        emb = desc @ proj.T
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        sims, same = pair_similarities(emb, sources)
        t = calibrate_threshold(sims, same, TARGET_PRECISION)
        sc = threshold_scores(sims, same, t)
        log.info("seed %d: threshold %.4f  P %.4f R %.4f F1 %.4f", seed, t, sc.precision, sc.recall, sc.f1)
        if best is None or sc.f1 > best[0]:
            best = (sc.f1, seed, t, {"dev_precision": sc.precision, "dev_recall": sc.recall, "dev_f1": sc.f1})
    assert best is not None
    _, seed, threshold, metrics = best
    linear = encoder.head.proj
    assert isinstance(linear, torch.nn.Linear)
    with torch.no_grad():
        linear.weight.copy_(orthogonal_projection(config.feature_dim, config.embed_dim, seed))
    # Rounded up to three decimals for display; up, so the precision bound still holds.
    threshold = float(np.ceil(threshold * 1000) / 1000)
    metrics = {**metrics, "projection_seed": seed, "target_precision": TARGET_PRECISION, "calibrated_on": "dev"}
    ckpt = Checkpoint.from_encoder(encoder, threshold, name="default-v1", metrics=metrics)
    write_checkpoint(ckpt, out)
    log.info("wrote %s (model id %s, threshold %.3f)", out, ckpt.model_id, threshold)
    return ckpt


def file_descriptors(encoder: SiameseEncoder, files: list[Path]) -> np.ndarray:
    """Pooled descriptors of image files, decoded as the scanner decodes them."""
    from model_training.pool_training import descriptors as desc_of

    return desc_of(encoder, [f.read_bytes() for f in files])


@dataclass
class EvalSet:
    """Descriptors of one evaluation set with its ground truth (all pairs of files, copies share a source)."""

    name: str
    desc: np.ndarray
    sources: list[Any]
    families: list[str]

    _same: np.ndarray | None = None

    @property
    def same(self) -> np.ndarray:
        """Whether each pair (upper triangle, row-major) shares a source (distractors share none)."""
        if self._same is None:
            codes = {s: k for k, s in enumerate(dict.fromkeys(x for x in self.sources if x is not None))}
            lab = np.array([codes[s] if s is not None else -1 - k for k, s in enumerate(self.sources)])
            iu = np.triu_indices(len(lab), 1)
            self._same = lab[iu[0]] == lab[iu[1]]
        return self._same

    def pairs(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All-pairs similarities (upper triangle) and whether each pair shares a source."""
        return (emb @ emb.T)[np.triu_indices(len(emb), 1)], self.same

    def scores(self, emb: np.ndarray, threshold: float) -> dict[str, Any]:
        sims, same = self.pairs(emb)
        sc = threshold_scores(sims, same, threshold)
        out: dict[str, Any] = {"precision": sc.precision, "recall": sc.recall, "f1": sc.f1,
                               "false_pairs": int(((sims >= threshold) & ~same).sum())}  # fmt: skip
        iu = np.triu_indices(len(emb), 1)
        fam = np.array(self.families)
        for family in sorted(set(self.families) - {"orig", "distractor", "copy"}):
            members = fam == family
            touch = (members[iu[0]] | members[iu[1]]) & same
            out[f"recall_{family}"] = float((sims[touch] >= threshold).mean()) if touch.any() else 1.0
        return out


def neardup_eval(encoder: SiameseEncoder, data_dir: Path, split: str, work: Path | None = None) -> EvalSet:
    """The near-duplicate benchmark's set of ``split`` as descriptors (cached in ``work`` when given)."""
    cached = None if work is None else work / f"neardup-{split}-{encoder.config.input_size}.npz"
    with tempfile.TemporaryDirectory() as tmp:
        items = build_neardup_set(data_dir, Path(tmp), split)
        if cached is not None and cached.exists():
            desc = np.load(cached)["desc"]
        else:
            desc = file_descriptors(encoder, [Path(tmp) / it.file for it in items])
            if cached is not None:
                work.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
                np.savez(cached, desc=desc)
    return EvalSet(f"neardup-{split}", desc, [it.source for it in items], [it.family for it in items])


def pool_eval(encoder: SiameseEncoder, data_dir: Path, split: str, work: Path, copies: int = 3) -> EvalSet:
    from model_training.pool_training import PoolRecipe, pool_descriptors

    desc, labels = pool_descriptors(encoder, data_dir, split, PoolRecipe(copies=copies, seed=1000), work)
    first = np.r_[True, labels[1:] != labels[:-1]]
    families = ["orig" if f else "copy" for f in first]
    return EvalSet(f"pool-{split}", desc, labels.tolist(), families)


def train_default(data_dir: Path, out: Path, base_path: Path, work: Path, recipe: Any) -> Checkpoint:
    """Train the head on the pool (see the module's text) and write the checkpoint to ``out``."""
    import json

    from dedup_app.core.calibration import fit_platt
    from dedup_app.core.model import build_encoder
    from dedup_app.core.model_files import read_checkpoint
    from model_training.pool_training import embed, pool_descriptors, recipe_dict, train_head

    base = read_checkpoint(base_path)
    encoder = build_encoder(base).eval()
    dev = [neardup_eval(encoder, data_dir, "dev", work), pool_eval(encoder, data_dir, "dev", work)]
    test = [neardup_eval(encoder, data_dir, "test", work), pool_eval(encoder, data_dir, "test", work)]
    desc, labels = pool_descriptors(encoder, data_dir, "train", recipe, work)
    log.info("training on %d files of %d pool photos", len(labels), len(set(labels.tolist())))

    def dev_threshold(emb_sets: list[np.ndarray]) -> float:
        pairs = [s.pairs(e) for e, s in zip(emb_sets, dev, strict=True)]
        return calibrate_threshold(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]),
                                   TARGET_PRECISION)  # fmt: skip

    def evaluate(head: Any) -> dict[str, Any]:
        embs = [embed(head, s.desc) for s in dev]
        t = dev_threshold(embs)
        f1s = [s.scores(e, t)["f1"] for s, e in zip(dev, embs, strict=True)]
        named = {f"f1_{s.name}": f for s, f in zip(dev, f1s, strict=True)}
        return {"score": float(np.mean(f1s)), "threshold": t, **named}

    linear = encoder.head.proj
    assert isinstance(linear, torch.nn.Linear)
    head, history = train_head(linear.weight.detach().clone(), desc, labels, recipe, evaluate)
    embs = [embed(head, s.desc) for s in dev]
    threshold = float(np.ceil(dev_threshold(embs) * 1000) / 1000)
    metrics: dict[str, Any] = {"recipe": recipe_dict(recipe), "target_precision": TARGET_PRECISION,
                               "calibrated_on": "dev (near-duplicate set dev half + pool dev split)",
                               "history": history}  # fmt: skip
    for s, e in zip(dev, embs, strict=True):
        metrics[s.name] = s.scores(e, threshold)
    for s in test:
        metrics[s.name] = s.scores(embed(head, s.desc), threshold)
    # the base model on the same test sets, at its own threshold, for the comparison
    base_head = lambda d: (lambda z: z / np.linalg.norm(z, axis=1, keepdims=True))(  # noqa: E731
        (d - encoder.head.center.detach().numpy()) @ linear.weight.detach().numpy().T
    )
    metrics["base"] = {s.name: s.scores(base_head(s.desc), base.threshold) for s in test}
    # the probability calibration (verify, find): Platt scaling on the dev pairs
    pairs = [s.pairs(e) for e, s in zip(embs, dev, strict=True)]
    sims, same = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    calibration = fit_platt(sims, same.astype(np.float64), fitted_on="dev pairs (near-duplicate dev + pool dev)")
    config = dataclasses.replace(base.config, head="mlp" if recipe.head == "mlp" else "linear",
                                 head_hidden=recipe.hidden if recipe.head == "mlp" else 0)  # fmt: skip
    new = SiameseEncoder(config, encoder.backbone).eval()
    new.head.load_state_dict(head.state_dict())
    from dedup_app.core.calibration import CALIBRATION_KEY

    metrics[CALIBRATION_KEY] = calibration.to_dict()
    ckpt = Checkpoint.from_encoder(new, threshold, name=out.stem.replace("dedup-", ""), metrics=metrics)
    write_checkpoint(ckpt, out)
    summary = {k: v for k, v in metrics.items() if k not in ("history", CALIBRATION_KEY)}
    log.info("wrote %s (model id %s, threshold %.3f)\n%s", out, ckpt.model_id, threshold,
             json.dumps(summary, indent=1, default=float))  # fmt: skip
    return ckpt


def main(argv: list[str] | None = None) -> int:
    from model_training.pool_training import PoolRecipe

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data folder")
    parser.add_argument("--out", type=Path, default=Path("resources/models/dedup-default-v1.pt"))
    parser.add_argument("--train", action="store_true", help="train the head on the photo pool")
    parser.add_argument("--base", type=Path, default=Path("resources/models/dedup-default-v1.pt"),
                        help="--train: the model to start from")  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dedup-pool-descriptors",
                        help="--train: where the pool's descriptors are cached between runs")  # fmt: skip
    defaults = PoolRecipe()
    for name, value in vars(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"--train recipe (default {value})")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.train:
        recipe = PoolRecipe(**{name: getattr(args, name) for name in vars(defaults)})
        train_default(args.data, args.out, args.base, args.work, recipe)
    else:
        build_default(args.data, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
