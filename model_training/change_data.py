"""Labelled change pairs for training and measuring change heads, split by tile, never by pixel.

A :class:`ChangePair` is one before/after pair with its label map (1 changed, 0 unchanged, 255 not labelled) and
the split it belongs to: ``train`` (the head learns from it), ``val`` (picks the best epoch and calibrates the
threshold) or ``test`` (held out: only the benchmark reads it). A tile is on exactly one side.

The shared labelled sets (``../shared/data/change``) have fixed splits, so the training loop, the benchmark and the
synthetic-pair generator agree on what is held out (the OSCD cities the generator must not use are
:mod:`model_training.change_splits`'s; how they divide into validation and test, and the rest, is here):

- ``levir_samples``: the three ``train_`` tiles train; its one ``val_`` tile is held out (test), since one tile
  is worth more as an honest measurement than as a validation set;
- ``houses_pk``: the source's own ``split.csv`` (29 train, 5 val, 6 test);
- ``egy_bcd``: the source's name prefixes (4 ``train_``, 3 ``val_``, 2 ``test_``);
- ``oscd_rgb``: whole cities, :data:`OSCD_VAL_CITIES` and :data:`OSCD_TEST_CITIES` (together
  :data:`OSCD_HELD_OUT_CITIES`), the other nine train;
- ``landsat_taizhou``: one 400 x 400 labelled pair cut into regions, :data:`TAIZHOU_REGIONS` (top half train,
  bottom-left quarter val, bottom-right quarter test); its pixels labelled neither changed nor unchanged are 255.

Any other folder in the LEVIR-CD layout (``A/``, ``B/``, ``label/``, same names) is split by a ``split.csv``
(name,split), else by ``train_``/``val_``/``test_`` name prefixes, else by a hash of the tile's name
(:func:`hash_split`). Synthetic pairs come in as ``(before, after, label)`` uint8 triples
(:func:`pairs_from_triples`), always on the training side.

Augmentation (:func:`random_view`) crops, flips and turns both dates and the label identically.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dedup_app.core.change.raster import RasterError, read_raster
from dedup_app.core.files import IMAGE_EXTENSIONS
from model_training.change_splits import OSCD_HELD_OUT_CITIES

SPLITS = ("train", "val", "test")
CHANGED, UNCHANGED, IGNORE = 1, 0, 255

#: The shared labelled sets, by folder name under ``../shared/data/change``.
SHARED_SOURCES = ("levir_samples", "houses_pk", "egy_bcd", "oscd_rgb", "landsat_taizhou")

#: OSCD cities never trained on (nor used by the synthetic generator) are ``change_splits.OSCD_HELD_OUT_CITIES``;
#: of those, one validates (picks the epoch and the threshold), the others are held out for measuring.
OSCD_VAL_CITIES = ("cupertino",)
OSCD_TEST_CITIES = tuple(sorted(OSCD_HELD_OUT_CITIES - set(OSCD_VAL_CITIES)))
#: Taizhou (400 x 400): (row start, row end, column start, column end) of each split's region.
TAIZHOU_REGIONS = {"train": (0, 200, 0, 400), "val": (200, 400, 0, 200), "test": (200, 400, 200, 400)}
#: levir_samples: its one ``val_`` tile is held out for measuring (names without extension).
LEVIR_SAMPLES_TEST = ("val_27_0000_0256",)


class ChangeDataError(ValueError):
    """A folder that holds no usable labelled pairs; the message names it and says what was expected."""


@dataclass
class ChangePair:
    """One labelled before/after pair: H x W x 3 uint8 images, an H x W uint8 label (1 changed, 0 unchanged,
    255 not labelled), where it comes from and which split it is in."""

    source: str
    name: str
    split: str
    before: np.ndarray
    after: np.ndarray
    label: np.ndarray

    @property
    def key(self) -> str:
        """``source/name``: unique across the sources."""
        return f"{self.source}/{self.name}"

    @property
    def changed_px(self) -> int:
        """Pixels labelled changed."""
        return int((self.label == CHANGED).sum())

    @property
    def labelled_px(self) -> int:
        """Pixels labelled changed or unchanged."""
        return int((self.label != IGNORE).sum())


def held_out(source: str, name: str) -> bool:
    """Whether a tile of a shared source is outside its training split (validation or test): the synthetic
    generator must not take pixels from it."""
    if source == "levir_samples":
        return not name.startswith("train_")
    if source == "oscd_rgb":
        return name in OSCD_HELD_OUT_CITIES
    if source in ("egy_bcd", "houses_pk"):  # houses_pk's split.csv agrees with its names' prefixes
        return not name.startswith("train_")
    return False  # landsat_taizhou: one pair, split by region (TAIZHOU_REGIONS)


def hash_split(name: str, val_fraction: float = 0.2) -> str:
    """``val`` for about ``val_fraction`` of names, ``train`` for the rest; the same for a name every time."""
    h = int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big") / 2**64
    return "val" if h < val_fraction else "train"


def _read_rgb(path: Path, bands: tuple[int, ...] | None = None) -> np.ndarray:
    try:
        return read_raster(path, bands).pixels
    except RasterError as exc:
        raise ChangeDataError(str(exc)) from None


def _read_label(path: Path) -> np.ndarray:
    """A label image as 1 (> 127) / 0."""
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if arr is None:
        raise ChangeDataError(f"{path}: cannot read the label image")
    return (arr > 127).astype(np.uint8)


def _checked(pair: ChangePair, where: Path) -> ChangePair:
    if pair.before.shape != pair.after.shape or pair.before.shape[:2] != pair.label.shape:
        raise ChangeDataError(
            f"{where}: {pair.name}: before {pair.before.shape[:2]}, after {pair.after.shape[:2]} and label "
            f"{pair.label.shape} differ in size"
        )
    return pair


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()}


def _csv_splits(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = {r["name"]: r["split"] for r in csv.DictReader(f) if r.get("name") and r.get("split")}
    bad = sorted({s for s in rows.values() if s not in SPLITS})
    if bad:
        raise ChangeDataError(f"{path}: unknown split(s) {bad}; use {', '.join(SPLITS)}")
    return rows


def levir_layout(folder: str | os.PathLike[str], source: str | None = None, val_fraction: float = 0.2
                 ) -> list[ChangePair]:  # fmt: skip
    """Pairs of a folder with ``A/`` (before), ``B/`` (after) and ``label/`` (255 = changed), paired by name.

    The split: ``split.csv`` (name,split) when there is one, else the ``train_``/``val_``/``test_`` prefix when
    every name has one, else :func:`hash_split` (with at least one validation tile when there are two or more).
    """
    root = Path(folder)
    source = source or root.name
    for sub in ("A", "B", "label"):
        if not (root / sub).is_dir():
            raise ChangeDataError(f"{root}: no {sub}/ folder (expected A/ before, B/ after, label/ with 255 = changed)")
    a, b, lab = _by_stem(root / "A"), _by_stem(root / "B"), _by_stem(root / "label")
    names = sorted(set(a) & set(b) & set(lab))
    if not names:
        raise ChangeDataError(f"{root}: no tile has an image in each of A/, B/ and label/ under the same name")
    csv_path = root / "split.csv"
    if csv_path.is_file():
        listed = _csv_splits(csv_path)
        splits = {n: listed.get(n, hash_split(n, val_fraction)) for n in names}
    elif all(n.split("_", 1)[0] in SPLITS and "_" in n for n in names):
        splits = {n: n.split("_", 1)[0] for n in names}
    else:
        splits = {n: hash_split(n, val_fraction) for n in names}
        if len(names) >= 2 and "val" not in splits.values():
            splits[min(names, key=lambda n: hashlib.sha1(n.encode()).digest())] = "val"
    if source == "levir_samples":
        splits.update({n: "test" for n in names if n in LEVIR_SAMPLES_TEST})
    return [_checked(ChangePair(source, n, splits[n], _read_rgb(a[n]), _read_rgb(b[n]), _read_label(lab[n])), root)
            for n in names]  # fmt: skip


def city_layout(folder: str | os.PathLike[str], source: str | None = None, val_fraction: float = 0.2
                ) -> list[ChangePair]:  # fmt: skip
    """Pairs of a folder of ``<place>/before.png``, ``after.png``, ``label.png`` (the OSCD RGB layout).

    ``oscd_rgb`` is split by :data:`OSCD_VAL_CITIES` and :data:`OSCD_TEST_CITIES`; other folders by
    :func:`hash_split` of the place's name.
    """
    root = Path(folder)
    source = source or root.name
    places = sorted(p.name for p in root.iterdir() if (p / "before.png").is_file() and (p / "label.png").is_file())
    if not places:
        raise ChangeDataError(f"{root}: no <place>/before.png, after.png, label.png inside")
    out = []
    for place in places:
        if source == "oscd_rgb":
            split = "test" if place in OSCD_TEST_CITIES else "val" if place in OSCD_VAL_CITIES else "train"
        else:
            split = hash_split(place, val_fraction)
        d = root / place
        pair = ChangePair(source, place, split, _read_rgb(d / "before.png"), _read_rgb(d / "after.png"),
                          _read_label(d / "label.png"))  # fmt: skip
        out.append(_checked(pair, root))
    return out


def landsat_taizhou(folder: str | os.PathLike[str]) -> list[ChangePair]:
    """The Taizhou Landsat pair (true colour: bands 3, 2, 1) cut into the regions of :data:`TAIZHOU_REGIONS`.
    Needs rasterio (the ``geo`` extra) to read ENVI."""
    root = Path(folder)
    before = _read_rgb(root / "A" / "2000TM", (3, 2, 1))
    after = _read_rgb(root / "B" / "2003TM", (3, 2, 1))
    changed = _read_label(root / "label" / "change.bmp")
    unchanged = _read_label(root / "label" / "unchanged.bmp")
    label = np.full(changed.shape, IGNORE, np.uint8)
    label[unchanged > 0] = UNCHANGED
    label[changed > 0] = CHANGED
    out = []
    for split, (r0, r1, c0, c1) in TAIZHOU_REGIONS.items():
        window = np.s_[r0:r1, c0:c1]
        out.append(ChangePair("landsat_taizhou", f"{split}_{r0}_{c0}", split, before[window].copy(),
                              after[window].copy(), label[window].copy()))  # fmt: skip
    return out


def folder_pairs(folder: str | os.PathLike[str], val_fraction: float = 0.2) -> list[ChangePair]:
    """The labelled pairs of a folder in any layout above, recognised from its contents (the shared sets by
    their folder names get their recorded splits). Raises :class:`ChangeDataError` saying what was expected."""
    root = Path(folder)
    if not root.is_dir():
        raise ChangeDataError(f"{root}: not a folder")
    if (root / "A" / "2000TM").exists() and (root / "label" / "change.bmp").exists():
        return landsat_taizhou(root)
    if (root / "A").is_dir():
        return levir_layout(root, None, val_fraction)
    if any((p / "before.png").is_file() for p in root.iterdir() if p.is_dir()):
        return city_layout(root, None, val_fraction)
    raise ChangeDataError(
        f"{root}: expected A/, B/ and label/ folders (LEVIR-CD layout) or <place>/before.png, after.png, label.png"
    )


def shared_pairs(change_root: str | os.PathLike[str], sources: Iterable[str] = SHARED_SOURCES) -> list[ChangePair]:
    """Every labelled pair of the shared sets under ``change_root`` (``../shared/data/change``), all splits."""
    root = Path(change_root)
    out: list[ChangePair] = []
    for source in sources:
        if source not in SHARED_SOURCES:
            raise ChangeDataError(f"unknown shared source {source!r}; known: {', '.join(SHARED_SOURCES)}")
        out += folder_pairs(root / source)
    return out


def pairs_from_triples(
    triples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], source: str = "synthetic"
) -> Iterator[ChangePair]:
    """Training pairs from ``(before, after, label)`` uint8 triples (a synthetic generator's): H x W x 3 images, an
    H x W label where any value above 0 (above 127 for 0-255 labels) is changed."""
    for k, (before, after, label) in enumerate(triples):
        label = np.asarray(label)
        if label.ndim == 3:
            label = label[..., 0]
        lab = (label > (127 if label.max(initial=0) > 1 else 0)).astype(np.uint8)
        pair = ChangePair(source, f"{source}_{k:06d}", "train", np.ascontiguousarray(before, dtype=np.uint8),
                          np.ascontiguousarray(after, dtype=np.uint8), lab)  # fmt: skip
        yield _checked(pair, Path(source))


def split_counts(pairs: Iterable[ChangePair]) -> dict[str, dict[str, int]]:
    """Tiles per source and split (for the command's summary and the model card)."""
    out: dict[str, dict[str, int]] = {}
    for p in pairs:
        out.setdefault(p.source, dict.fromkeys(SPLITS, 0))[p.split] += 1
    return out


def dihedral(arr: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
    """``arr`` (H x W [x C]) mirrored left-right when ``mirror``, then turned ``turns`` quarter turns."""
    if mirror:
        arr = arr[:, ::-1]
    return np.rot90(arr, turns, axes=(0, 1))


def random_view(pair: ChangePair, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random ``size`` x ``size`` crop of both dates and the label, mirrored and turned identically (padded
    with unlabelled pixels where the pair is smaller)."""
    h, w = pair.label.shape
    y = int(rng.integers(0, max(h - size, 0) + 1))
    x = int(rng.integers(0, max(w - size, 0) + 1))
    turns, mirror = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for arr, fill in ((pair.before, 0), (pair.after, 0), (pair.label, IGNORE)):
        crop = arr[y : y + size, x : x + size]
        if crop.shape[0] < size or crop.shape[1] < size:
            pad = ((0, size - crop.shape[0]), (0, size - crop.shape[1])) + ((0, 0),) * (arr.ndim - 2)
            crop = np.pad(crop, pad, constant_values=fill)
        out.append(np.ascontiguousarray(dihedral(crop, turns, mirror)))
    return out[0], out[1], out[2]
