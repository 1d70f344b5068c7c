"""The ``train`` command's work: gather the data, fine-tune, report before/after, register or save the model."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dedup_app.core.files import FileEntry, walk_images
from dedup_app.core.progress import drive
from model_training.data import (
    DataError,
    ItemSet,
    conflicts_note,
    items_from_pairs,
    merge,
    pairs_from_csv,
    pairs_from_store,
    self_supervised_items,
    split_by_class,
)

if TYPE_CHECKING:
    from model_training.train import TrainResult


TRAIN_DESCRIPTION = (
    "Fine-tune the active model on labelled pairs: the app's labels (--from-app), a CSV of path_a,path_b,label "
    "(--labels), and/or edited copies of the images in --images folders. The result is added to the model "
    "registry (or written to --out); it becomes active only with --activate."
)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` options (shared by ``dedup-app train`` and ``python -m model_training``)."""
    source = parser.add_argument_group("training data (at least one)")
    source.add_argument("--labels", metavar="FILE", help="CSV with path_a,path_b,label (1 = duplicate)")
    source.add_argument("--from-app", action="store_true", help="the pairs labelled in the window")
    source.add_argument("--images", nargs="+", metavar="DIR", help="folders whose images are copied with edits")
    parser.add_argument("--epochs", type=int, default=40, metavar="N", help="passes over the data (40)")
    parser.add_argument("--loss", choices=("triplet", "contrastive"), default="triplet")
    parser.add_argument("--unfreeze", type=int, default=0, metavar="N", help="also train the last N backbone blocks")
    parser.add_argument("--copies", type=int, default=8, metavar="N", help="edited copies per --images image (8)")
    parser.add_argument("--out", metavar="FILE", help="write the model here instead of adding it to the registry")
    parser.add_argument("--activate", action="store_true", help="make the new model active (if it improved)")
    parser.add_argument("--labels-db", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="auto", metavar="D", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")


def gather(args: argparse.Namespace) -> tuple[ItemSet, list[str]]:
    """Items from every source the arguments name, and notes for the user."""
    notes: list[str] = []
    items = ItemSet()
    if args.labels:
        pairs = pairs_from_csv(args.labels)
        from_csv = items_from_pairs(pairs)
        items = merge(items, from_csv)
        notes.append(f"{len(pairs):,} labelled pairs from {args.labels}")
        if from_csv.conflicts:
            print(f"dedup-app: {args.labels}: {conflicts_note(from_csv.conflicts)} (a later row wins)", file=sys.stderr)
    if args.from_app:
        from dedup_app.core.labels import LabelStore

        store = LabelStore(args.labels_db)
        if store.warning:  # a damaged, locked or unreadable labels file: said, and training goes on without it
            print(f"dedup-app: warning: {store.warning}", file=sys.stderr)
        pairs, missing = pairs_from_store(store)
        store.close()
        from_app = items_from_pairs(pairs)
        items = merge(items, from_app)
        if from_app.conflicts:
            print(f"dedup-app: labels from the app: {conflicts_note(from_app.conflicts)} (the latest label wins)",
                  file=sys.stderr)  # fmt: skip
        notes.append(
            f"{len(pairs):,} pairs labelled in the app" + (f" ({missing} skipped: file gone)" if missing else "")
        )
    if args.images:
        paths = [e.path for e in walk_images(args.images) if isinstance(e, FileEntry)]
        items = merge(items, self_supervised_items(paths, copies=args.copies))
        notes.append(f"{len(paths):,} images from {', '.join(args.images)} with {args.copies} edited copies each")
    return items, notes


def format_metrics(name: str, m: dict[str, float]) -> str:
    return (f"{name:>7}: ROC AUC {m['auc']:.4f} | at 99% precision: threshold {m['calibrated_threshold']:.3f}, "
            f"precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f}")  # fmt: skip


def train_main(
    args: argparse.Namespace, parser: argparse.ArgumentParser, progress: Callable[[Any], None] | None = None
) -> int:
    """Run training from parsed ``train`` arguments; returns the exit status."""
    from dedup_app.core.embedder import load_checkpoint
    from dedup_app.core.registry import ModelRegistry, drop_embeddings_of
    from model_training.train import TrainConfig, fit, missing_dependency

    if (missing := missing_dependency()) is not None:
        print(f"dedup-app: error: {missing}", file=sys.stderr)
        return 2
    if not (args.labels or args.from_app or args.images):
        parser.error("give training data: --labels FILE, --from-app and/or --images DIR")
    for folder in args.images or []:
        if not os.path.isdir(folder):
            parser.error(f"--images: not a folder: {folder}")
    if args.epochs < 1 or args.copies < 1 or args.unfreeze < 0:
        parser.error("--epochs and --copies must be at least 1, --unfreeze at least 0")

    try:
        items, notes = gather(args)
        train, val = split_by_class(items, 0.2, seed=0)
        if len(set(val.labels)) < 2 or len(set(train.labels)) < 2:
            raise DataError("too little data: training and validation each need two groups of duplicates; label "
                            "more pairs or add --images")  # fmt: skip
    except DataError as exc:
        print(f"dedup-app: error: {exc}", file=sys.stderr)
        return 2
    registry = ModelRegistry()
    base = load_checkpoint()
    print(f"Training from {base.model_id} on: " + "; ".join(notes), file=sys.stderr)
    print(f"{len(train):,} training and {len(val):,} validation images (split by group)", file=sys.stderr)
    config = TrainConfig(loss=args.loss, epochs=args.epochs, unfreeze_blocks=args.unfreeze)
    out = Path(args.out) if args.out else None
    try:
        result: TrainResult = drive(fit(base, train, val, config, out, None, args.device), progress)
    except KeyboardInterrupt:
        print("Cancelled: nothing was saved and the active model is unchanged.", file=sys.stderr)
        return 130
    finally:
        if progress is not None and hasattr(progress, "close"):
            progress.close()
    for key, reason in result.skipped:
        print(f"dedup-app: skipped {key}: {reason}", file=sys.stderr)
    print(format_metrics("before", result.before))
    print(format_metrics("after", result.after))
    improved = result.improved
    if not improved and out is None:
        print("The new model is not clearly better on validation (F1 +0.01 or more, ROC AUC no worse): "
              "nothing was added, the active model stays.")  # fmt: skip
        return 0
    if out is not None:
        print(f"Model written to {out} (use it with --model {out})")
        return 0
    entry = registry.add(result.checkpoint, base=base.model_id)
    print(f"Model {entry.model_id} added to the registry.")
    if args.activate and improved:
        old, new = registry.activate(entry.model_id)
        dropped = drop_embeddings_of(old)
        print(f"Activated; {dropped:,} cached embeddings of {old} dropped. 'dedup-app models rollback' undoes it.")
    else:
        print(f"Activate it with: dedup-app models activate {entry.model_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m model_training``: the ``train`` command on its own."""
    parser = argparse.ArgumentParser(prog="python -m model_training", description=TRAIN_DESCRIPTION)
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    return train_main(args, parser)
