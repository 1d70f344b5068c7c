"""Which labelled change tiles and cities may be trained on, and which are held out for reporting.

The one place for the split rules of the change data in ``../shared/data/change``: the synthetic pair generator
(:mod:`model_training.change_synth`) takes its sources from here, and training and reporting code should too, so
that no tile or city used for a reported number is ever a training source.

- ``houses_pk``: the source's split, in its ``split.csv`` (29 train / 5 val / 6 test).
- ``egy_bcd`` and ``levir_samples``: the source's split is the name prefix (``train_``, ``val_``, ``test_``).
- ``oscd_rgb``: OSCD's 13 labelled cities are all from its *train* list, so we hold four of them out ourselves:
  one per continent-like setting, chosen before any result was seen (:data:`OSCD_HELD_OUT_CITIES`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Final, Literal

Split = Literal["train", "val", "test"]

#: OSCD cities (``oscd_rgb/<city>``) never used for training; validation and reporting use only these.
OSCD_HELD_OUT_CITIES: Final[frozenset[str]] = frozenset({"beirut", "cupertino", "hongkong", "nantes"})

#: The labelled building-change sets: ``A/`` before, ``B/`` after, ``label/`` 255 = changed building.
LABELLED_SETS: Final[tuple[str, ...]] = ("houses_pk", "egy_bcd", "levir_samples")


def split_of(change_root: Path, dataset: str, name: str) -> Split:
    """The split of tile ``name`` (a file stem) of a labelled set under ``change_root`` (``.../data/change``)."""
    if dataset == "houses_pk":
        splits = _houses_pk_splits(change_root)
        if name not in splits:
            raise KeyError(f"{name} is not in {change_root / 'houses_pk' / 'split.csv'}")
        return splits[name]
    if dataset in ("egy_bcd", "levir_samples"):
        prefix = name.split("_", 1)[0]
        if prefix not in ("train", "val", "test"):
            raise ValueError(f"{dataset}/{name}: the name does not start with train_, val_ or test_")
        return prefix  # type: ignore[return-value]
    raise ValueError(f"unknown labelled change set {dataset!r}")


def labelled_tiles(change_root: Path, dataset: str, split: Split) -> list[str]:
    """The stems of ``dataset``'s tiles in ``split``, sorted (taken from its ``label/`` folder)."""
    stems = sorted(p.stem for p in (change_root / dataset / "label").glob("*.png"))
    if not stems:
        raise FileNotFoundError(f"no labels under {change_root / dataset / 'label'}")
    return [s for s in stems if split_of(change_root, dataset, s) == split]


def oscd_cities(change_root: Path, held_out: bool = False) -> list[str]:
    """The OSCD RGB cities for training (default) or the held-out ones, sorted."""
    cities = sorted(p.name for p in (change_root / "oscd_rgb").iterdir() if (p / "before.png").is_file())
    unknown = OSCD_HELD_OUT_CITIES - set(cities)
    if unknown:
        raise FileNotFoundError(f"held-out OSCD cities missing under {change_root / 'oscd_rgb'}: {sorted(unknown)}")
    return [c for c in cities if (c in OSCD_HELD_OUT_CITIES) == held_out]


def _houses_pk_splits(change_root: Path) -> dict[str, Split]:
    path = change_root / "houses_pk" / "split.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, Split] = {}
    for row in rows:
        split = row["split"].strip()
        if split not in ("train", "val", "test"):
            raise ValueError(f"{path}: unknown split {split!r} for {row['name']}")
        out[row["name"].strip()] = split  # type: ignore[assignment]
    return out
