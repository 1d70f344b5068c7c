"""Training data for the Siamese model: labelled pairs (app labels or CSV) and self-supervised copies.

Everything becomes *items* (an image, identified by a key, with a class label: items of one class are
duplicates of each other) plus explicit negative pairs (the user's "not duplicate" labels). Duplicate pairs are
merged into classes by connected components; the validation split is made by class, so no image is seen by both
training and validation. Labels that contradict each other (the same two files labelled both ways, or a "not
duplicate" pair joined by a chain of "duplicate" labels) are settled by :func:`resolve_conflicts`: the latest label
wins, and the ignored ones are counted.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dedup_app.core.labels import DUPLICATE, LabelStore
from model_training.edits import EDIT_FAMILIES, apply_edit


class DataError(ValueError):
    """Training data that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class LabelledPair:
    """Two image files and whether they are duplicates (1) or not (0)."""

    a: str
    b: str
    label: int


@dataclass
class ItemSet:
    """Images with class labels (same class = duplicates) and explicit negative pairs between items.

    ``load(i)`` returns item i as an RGB PIL image (a file, or an edited copy made in memory).
    """

    keys: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    negatives: list[tuple[int, int]] = field(default_factory=list)
    loaders: list[Callable[[], Image.Image]] = field(default_factory=list)
    conflicts: int = 0  # labelled pairs left out because a newer label contradicts them

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, i: int) -> Image.Image:
        return self.loaders[i]()

    def add(self, key: str, label: int, loader: Callable[[], Image.Image]) -> int:
        self.keys.append(key)
        self.labels.append(label)
        self.loaders.append(loader)
        return len(self.keys) - 1

    def subset(self, indices: Sequence[int]) -> ItemSet:
        """The items at ``indices`` (negatives between them kept, renumbered)."""
        where = {old: new for new, old in enumerate(indices)}
        out = ItemSet(
            [self.keys[i] for i in indices], [self.labels[i] for i in indices],
            [(where[a], where[b]) for a, b in self.negatives if a in where and b in where],
            [self.loaders[i] for i in indices], self.conflicts,
        )  # fmt: skip
        return out


def pairs_from_csv(path: str | os.PathLike[str]) -> list[LabelledPair]:
    """Read ``path_a,path_b,label`` rows (label 1 = duplicate, 0 = not); a header row is allowed.

    Relative paths are taken relative to the CSV file's folder.
    """
    base = Path(path).parent
    pairs = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row or (n == 1 and row[-1].strip().lower() in ("label", "is_duplicate")):
                    continue
                if len(row) != 3 or row[2].strip() not in ("0", "1"):
                    raise DataError(f"{path}:{n}: expected path_a,path_b,label with label 0 or 1, got {row!r}")
                a, b = (str((base / p.strip()).resolve()) for p in row[:2])
                pairs.append(LabelledPair(a, b, int(row[2])))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    if not pairs:
        raise DataError(f"{path}: no labelled pairs")
    return pairs


def pairs_from_store(store: LabelStore) -> tuple[list[LabelledPair], int]:
    """The app's labels whose files still exist, and how many were skipped because a file is gone."""
    pairs, missing = [], 0
    for lab in store.all_labels():
        if not (os.path.exists(lab.a.path) and os.path.exists(lab.b.path)):
            missing += 1
            continue
        pairs.append(LabelledPair(lab.a.path, lab.b.path, 1 if lab.label == DUPLICATE else 0))
    return pairs, missing


def _open_rgb(path: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from dedup_app.core.imageio import open_image

        return open_image(path)

    return load


def resolve_conflicts(pairs: Sequence[LabelledPair]) -> tuple[list[LabelledPair], list[LabelledPair]]:
    """Settle contradicting labels, the latest winning: ``(kept, ignored)``, each in the given order.

    ``pairs`` come oldest first (the store's by time, a CSV's in file order) and are taken newest first: a
    "duplicate" label is kept unless a kept "not duplicate" already separates the two groups it would join, a "not
    duplicate" unless the two files are already in one group. A file paired with itself says nothing and is in
    neither list.
    """
    parent: dict[str, str] = {}
    apart: dict[str, set[str]] = {}  # group (its root) -> groups a kept "not duplicate" separates it from

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keep = [False] * len(pairs)
    for i in reversed(range(len(pairs))):
        p = pairs[i]
        if p.a == p.b:
            continue
        ra, rb = find(p.a), find(p.b)
        if p.label == 1:
            if ra != rb:
                if rb in apart.get(ra, ()):
                    continue
                parent[rb] = ra  # rb's separations become ra's
                for other in apart.pop(rb, set()):
                    apart[other].discard(rb)
                    apart[other].add(ra)
                    apart.setdefault(ra, set()).add(other)
            keep[i] = True
        elif ra != rb:
            apart.setdefault(ra, set()).add(rb)
            apart.setdefault(rb, set()).add(ra)
            keep[i] = True
    kept = [p for p, k in zip(pairs, keep, strict=True) if k]
    ignored = [p for p, k in zip(pairs, keep, strict=True) if not k and p.a != p.b]
    return kept, ignored


def conflicts_note(n: int) -> str:
    """The note for the user: 'N labels conflict with newer ones and are ignored' (singular for one)."""
    if n == 1:
        return "1 label conflicts with a newer one and is ignored"
    return f"{n:,} labels conflict with newer ones and are ignored"


def items_from_pairs(pairs: Iterable[LabelledPair]) -> ItemSet:
    """Images of labelled pairs; duplicate pairs joined into classes (union-find), non-duplicates as negatives.

    Contradicting labels are settled first (:func:`resolve_conflicts`); ``conflicts`` counts the ignored ones.
    """
    given = list(pairs)
    pairs, ignored = resolve_conflicts(given)
    paths = sorted({p.a for p in given} | {p.b for p in given})
    index = {p: i for i, p in enumerate(paths)}
    parent = list(range(len(paths)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        if p.label == 1:
            ra, rb = find(index[p.a]), find(index[p.b])
            parent[max(ra, rb)] = min(ra, rb)
    items = ItemSet()
    for path in paths:
        items.add(path, find(index[path]), _open_rgb(path))
    ends = [(index[p.a], index[p.b]) for p in pairs if p.label == 0]
    items.negatives = sorted({(min(i, j), max(i, j)) for i, j in ends})  # each pair once
    items.conflicts = len(ignored)
    return items


def self_supervised_items(
    image_paths: Sequence[str], copies: int = 8, seed: int = 0, families: Sequence[str] = tuple(EDIT_FAMILIES)
) -> ItemSet:
    """Each image and ``copies`` edited copies of it (random edit families) form one class; the other images are
    the negatives. Copies are made when loaded, deterministically from ``seed``."""
    items = ItemSet()
    for cls, path in enumerate(image_paths):
        items.add(path, cls, _open_rgb(path))
        for k in range(copies):
            # seeded by the file name, not the full path, so a data set gives the same copies on every machine
            rng_seed = int.from_bytes(hashlib.sha256(f"{seed}:{Path(path).name}:{k}".encode()).digest()[:8], "little")
            family = families[rng_seed % len(families)]
            items.add(f"{path}#{family}{k}", cls, _edited(path, family, rng_seed))
    return items


def _edited(path: str, family: str, seed: int) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from dedup_app.core.imageio import open_image

        return apply_edit(family, open_image(path), np.random.default_rng(seed)).decoded()

    return load


def merge(a: ItemSet, b: ItemSet) -> ItemSet:
    """Both sets in one (b's class labels shifted so they never collide with a's)."""
    shift = (max(a.labels) + 1) if a.labels else 0
    out = ItemSet(a.keys + b.keys, a.labels + [lab + shift for lab in b.labels],
                  a.negatives + [(i + len(a), j + len(a)) for i, j in b.negatives], a.loaders + b.loaders,
                  a.conflicts + b.conflicts)  # fmt: skip
    return out


def split_by_class(items: ItemSet, val_fraction: float = 0.2, seed: int = 0) -> tuple[ItemSet, ItemSet]:
    """Training and validation sets with whole classes on one side (stable for a given seed).

    Classes joined by a labelled "not duplicate" pair go to the same side, so the pair stays usable (split apart,
    neither side would hold it): a user's negatives are the scarcest labels there are. A cluster of such classes
    larger than a quarter of all classes is split class by class, so one busy labelling session cannot empty a side.
    """
    classes = sorted(set(items.labels))
    names: dict[int, list[str]] = {c: [] for c in classes}
    for key, lab in zip(items.keys, items.labels, strict=True):
        names[lab].append(Path(key).name)
    parent = {c: c for c in classes}

    def find(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for i, j in items.negatives:
        a, b = find(items.labels[i]), find(items.labels[j])
        parent[max(a, b)] = min(a, b)
    clusters: dict[int, list[int]] = {}
    for c in classes:
        clusters.setdefault(find(c), []).append(c)
    limit = max(2, len(classes) // 4)
    blocks = [block for members in clusters.values()
              for block in ([members] if len(members) <= limit else [[c] for c in members])]  # fmt: skip

    def rank(block: list[int]) -> float:
        key = "||".join(sorted("|".join(sorted(names[c])) for c in block))  # one class: the key it always had
        return (int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little") % 10_000) / 10_000

    ranked_blocks = sorted(blocks, key=rank)
    ranked = [c for block in ranked_blocks for c in block]
    val_classes = {c for block in ranked_blocks if rank(block) < val_fraction for c in block}
    if len(val_classes) < 2 and len(classes) >= 4:  # validation needs duplicates and non-duplicates
        val_classes = set(ranked[:2])
    train_idx = [i for i, lab in enumerate(items.labels) if lab not in val_classes]
    val_idx = [i for i, lab in enumerate(items.labels) if lab in val_classes]
    return items.subset(train_idx), items.subset(val_idx)
