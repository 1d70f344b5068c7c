"""The ``train-change`` command's work: read labelled folders, split them by tile, train a change head, report."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TRAIN_CHANGE_DESCRIPTION = (
    "Train a change head (a small network on the frozen encoder's features) on labelled before/after pairs. Each "
    "DIR holds A/ (before), B/ (after) and label/ (255 = changed) images of the same names (the LEVIR-CD layout), "
    "or <place>/before.png, after.png, label.png. Tiles are split by tile, never by pixel: a split.csv "
    "(name,split), else train_/val_/test_ name prefixes, else a fixed hash of the name (--val-fraction); test tiles "
    "are left out. The head with the best validation F1 is written to --out with its threshold calibrated on "
    "the validation tiles; use it with 'dedup-app change --model FILE', or register and activate it with --activate "
    "(then 'dedup-app change' and the window use it by default). --from-app also trains on the change labels painted "
    "in the window's Changes tab, alone or with DIRs."
)

#: Where the shared data lies in a development checkout (the synthetic generator reads its images there).
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def add_train_change_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train-change`` options."""
    parser.add_argument("folders", nargs="*", metavar="DIR", help="folders of labelled pairs")
    parser.add_argument("--from-app", action="store_true",
                        help="also train on the change labels painted in the window's Changes tab")  # fmt: skip
    parser.add_argument("--activate", action="store_true",
                        help="register the trained head and make it the default change model")  # fmt: skip
    parser.add_argument("--out", default="change-head.pt", metavar="FILE",
                        help="the head file to write (default change-head.pt)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=30, metavar="N", help="epochs on the labelled pairs (30)")
    parser.add_argument("--steps", type=int, default=40, metavar="N", help="training steps per epoch (40)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="crops per step (8)")
    parser.add_argument("--init", metavar="FILE", help="fine-tune this change head instead of starting afresh")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="first train on N synthetic 256 px pairs (model_training.change_synth; with the encoder "
                        "frozen their features stay in memory, about 2.3 MB a pair)")  # fmt: skip
    parser.add_argument("--synthetic-epochs", type=int, default=10, metavar="N",
                        help="epochs on the synthetic pairs before the labelled ones (10)")  # fmt: skip
    parser.add_argument("--synthetic-mix", type=float, default=0.0, metavar="F",
                        help="share of each batch drawn from the synthetic pairs while training on the labelled ones "
                        "(0-0.9; default 0): keeps a few dozen labelled tiles from being overfitted")  # fmt: skip
    parser.add_argument("--synthetic-mode", choices=("buildings", "general"), default="buildings",
                        help="which changes the synthetic pairs label (default buildings)")  # fmt: skip
    parser.add_argument("--shared-data", type=Path, default=DEFAULT_SHARED_DATA, metavar="DIR",
                        help="the shared data folder the synthetic generator reads")  # fmt: skip
    parser.add_argument("--unfreeze", type=int, default=0, metavar="N",
                        help="also train the encoder's last N blocks (slow without a GPU)")  # fmt: skip
    parser.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="share of tiles for validation in folders without a split (0.2)")  # fmt: skip
    parser.add_argument("--copies", type=int, default=2, metavar="N",
                        help="cached feature versions per training tile, the extra ones jittered (2)")  # fmt: skip
    parser.add_argument("--name", default="change-head", help="the head's name, shown with its results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", metavar="D", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")


def _synthetic_pairs(args: argparse.Namespace, progress: Callable[[Any], None] | None) -> list[Any]:
    """``--synthetic`` pairs from the synthetic generator (its training sources only); ``RuntimeError`` saying why
    when it cannot be used."""
    try:
        from model_training.change_synth import ChangeSynth, SynthConfig
    except ImportError as exc:
        raise RuntimeError(f"--synthetic: the synthetic pair generator (model_training.change_synth) cannot be "
                           f"imported here ({exc}); train without --synthetic") from None  # fmt: skip
    from dedup_app.core.progress import Progress
    from model_training.change_data import pairs_from_triples

    try:
        gen = ChangeSynth(args.shared_data, SynthConfig(tile=256, mode=args.synthetic_mode), seed=args.seed,
                          length=args.synthetic)  # fmt: skip
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"--synthetic: the generator cannot start ({exc}); see --shared-data") from None
    pairs = []
    for k, pair in enumerate(pairs_from_triples(iter(gen), f"synthetic-{args.synthetic_mode}"), 1):
        pairs.append(pair)
        if progress is not None:
            progress(Progress("Making synthetic pairs", k, args.synthetic))
    return pairs


def train_change_main(
    args: argparse.Namespace, parser: argparse.ArgumentParser, progress: Callable[[Any], None] | None = None
) -> int:
    """Run ``train-change``; returns the exit code (0 written, 1 failed, 2 bad arguments or data, 130 cancelled)."""
    from dedup_app.core.change.head import HeadConfig, UNetHeadCheckpoint
    from dedup_app.core.progress import drive
    from model_training.change_data import ChangeDataError, ChangePair, folder_pairs, split_counts
    from model_training.change_train import ChangeTrainConfig, fit_change

    if not 0.0 < args.val_fraction < 1.0:
        parser.error(f"--val-fraction must be between 0 and 1, not {args.val_fraction}")
    if not args.folders and not args.from_app:
        parser.error("give folders of labelled pairs (DIR), --from-app for the labels painted in the window, or both")
    pairs: list[ChangePair] = []
    try:
        if args.from_app:
            pairs += _painted(args.val_fraction, bool(args.folders))
        for folder in args.folders:
            pairs += folder_pairs(folder, args.val_fraction)
        init = None
        if args.init:
            from dedup_app.core.change.detect import load_change_head

            loaded = load_change_head(args.init)
            if not isinstance(loaded, UNetHeadCheckpoint):
                raise ValueError(f"{args.init}: a format-1 change head cannot be fine-tuned; start afresh")
            init = loaded
        config = ChangeTrainConfig(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size,
                                   copies=args.copies, unfreeze_blocks=args.unfreeze, seed=args.seed, name=args.name,
                                   synthetic_epochs=args.synthetic_epochs if args.synthetic else 0,
                                   synthetic_mix=args.synthetic_mix if args.synthetic else 0.0,
                                   head=init.head_config if init else HeadConfig())  # fmt: skip
        synthetic = _synthetic_pairs(args, progress) if args.synthetic else []
    except (ChangeDataError, ValueError, RuntimeError) as exc:
        print(f"dedup-app: error: {exc}", file=sys.stderr)
        return 2
    train = [p for p in pairs if p.split == "train"]
    val = [p for p in pairs if p.split == "val"]
    counts = split_counts(pairs)
    for source, c in counts.items():
        print(f"{source}: {c['train']} train, {c['val']} validation, {c['test']} held-out tiles (not used)")
    if synthetic:
        print(f"{len(synthetic):,} synthetic pairs ({args.synthetic_mode}) first, {config.synthetic_epochs} epochs; "
              f"their encoder features are kept in memory (about {len(synthetic) * 2.3 / 1024:.1f} GB)")  # fmt: skip
    started = time.monotonic()
    run = fit_change(train, val, config, args.out, device=args.device, init=init, synthetic=synthetic)
    try:
        result = drive(run, progress)
    except KeyboardInterrupt:
        run.close()
        print(f"Cancelled; the best head so far (if an epoch finished) is in {args.out}.", file=sys.stderr)
        return 130
    except ValueError as exc:
        print(f"dedup-app: error: {exc}", file=sys.stderr)
        return 2
    m = result.metrics
    print(f"Trained in {time.monotonic() - started:.0f} s; best epoch {result.best_epoch} of "
          f"{config.synthetic_epochs + config.epochs if synthetic else config.epochs}: validation F1 {m['f1']:.3f} "
          f"(mean over sources; pooled {m['pooled_f1']:.3f}) at threshold {m['threshold']:.2f}")  # fmt: skip
    for source, s in m["sources"].items():
        print(f"  {source}: F1 {s['f1']:.3f}, IoU {s['iou']:.3f}, precision {s['precision']:.3f}, "
              f"recall {s['recall']:.3f}")  # fmt: skip
    print(f"Change head written to {args.out} ({result.checkpoint.metrics['parameters']:,} parameters)")
    if args.activate:
        return _register_and_activate(args.out)
    return 0


def _painted(val_fraction: float, with_folders: bool) -> list[Any]:
    """``--from-app``: the painted labels of the default label store as pairs; says how many were used and which
    were skipped and why. ``ValueError`` when there are none to train on and no folder either."""
    from dedup_app.core.labels import LabelStore, default_labels_path
    from model_training.painted import painted_pairs

    path = default_labels_path()
    if path.exists():
        try:
            store = LabelStore(path)
        except (sqlite3.Error, OSError) as exc:
            raise ValueError(f"--from-app: the labels {path} cannot be read ({exc})") from None
        try:
            pairs, skipped = painted_pairs(store, val_fraction)
        finally:
            store.close()
    else:
        pairs, skipped = [], []
    train = sum(1 for p in pairs if p.split == "train")
    print(f"Painted change labels ({path}): {len(pairs)} pairs used ({train} train, {len(pairs) - train} "
          f"validation), {len(skipped)} skipped")  # fmt: skip
    for s in skipped:
        print(f"  skipped {s.before} / {s.after}: {s.reason}")
    if not pairs and not with_folders:
        raise ValueError("--from-app: no painted change labels to train on (paint some on the window's Changes tab, "
                         "or give folders of labelled pairs)")  # fmt: skip
    if len(pairs) == 1 and not with_folders:
        raise ValueError("--from-app: one painted pair is too few: one is needed to train on and another to check "
                         "the training on (paint at least two, or give folders of labelled pairs)")  # fmt: skip
    return pairs


def _register_and_activate(path: str) -> int:
    """``--activate``: copy the head into the change-head registry and make it the default."""
    from dedup_app.core.registry import ChangeHeadRegistry

    registry = ChangeHeadRegistry()
    try:
        entry = registry.add_file(path)
        previous, _new = registry.activate(entry.model_id)
    except (ValueError, OSError) as exc:
        print(f"dedup-app: error: the head was written but not activated: {exc}", file=sys.stderr)
        return 1
    print(f"Registered as {entry.model_id} and activated (was {previous}): 'dedup-app change' and the window's "
          "Changes tab use it by default; 'dedup-app models rollback --change' goes back")  # fmt: skip
    return 0
