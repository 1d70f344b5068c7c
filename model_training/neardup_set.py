"""The near-duplicate evaluation set: real photos, one edited copy per edit family, and distinct distractors.

Photos are split in two halves by position in sorted order: ``dev`` (even positions) is for choosing thresholds
and recipes, ``test`` (odd positions) for reporting. In each half every third photo is a distractor (no copies);
the others are sources written as a JPEG original plus one copy per family of :mod:`model_training.edits`.
Hard negatives (the same object photographed from other viewpoints, UKBench) are added as extra distractors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model_training.edits import EDIT_FAMILIES, EditedImage, apply_edit

PHOTO_DIRS = ("kodak", "urban100", "set14")
SPLITS = ("dev", "test", "all")


@dataclass(frozen=True)
class SetItem:
    """One file of the set: its name, the source photo it derives from (None for distractors) and its family."""

    file: str
    source: str | None
    family: str  # "orig", an edit family, or "distractor"


def list_photos(data_dir: Path) -> list[Path]:
    """The real photos under ``<data_dir>/photos/{kodak,urban100,set14}``, sorted."""
    photos: list[Path] = []
    for sub in PHOTO_DIRS:
        photos += sorted((data_dir / "photos" / sub).glob("*.png"))
    if not photos:
        raise FileNotFoundError(f"no photos under {data_dir / 'photos'}")
    return photos


def split_photos(photos: list[Path], split: str) -> list[Path]:
    """``dev``: even positions, ``test``: odd positions, ``all``: every photo."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if split == "all":
        return list(photos)
    return [p for i, p in enumerate(photos) if (i % 2 == 0) == (split == "dev")]


def hard_negatives(data_dir: Path, split: str) -> list[Path]:
    """Similar-but-different photos: UKBench viewpoints (test) or UKBench base images (dev)."""
    folder = (
        data_dir / "neardup" / "ukbench_similar_not_duplicate"
        if split != "dev"
        else data_dir / "neardup" / "imagededup" / "base_images"
    )
    return sorted(folder.glob("*.jpg"))


def _seed(name: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")


def build_neardup_set(
    data_dir: Path,
    out_dir: Path,
    split: str = "test",
    seed: int = 0,
    families: tuple[str, ...] = tuple(EDIT_FAMILIES),
    max_sources: int | None = None,
) -> list[SetItem]:
    """Write the set for ``split`` into ``out_dir`` (flat) and return its ground truth (also ``truth.json``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    items: list[SetItem] = []
    photos = split_photos(list_photos(data_dir), split)
    n_sources = 0
    for i, photo in enumerate(photos):
        name = f"{photo.parent.name}_{photo.stem}"
        with Image.open(photo) as im:
            img = im.convert("RGB")
        original = EditedImage(img, "JPEG", {"quality": 92})
        is_distractor = i % 3 == 2 or (max_sources is not None and n_sources >= max_sources)
        if is_distractor:
            fname = f"d_{name}.jpg"
            (out_dir / fname).write_bytes(original.to_bytes())
            items.append(SetItem(fname, None, "distractor"))
            continue
        n_sources += 1
        fname = f"s_{name}__orig.jpg"
        (out_dir / fname).write_bytes(original.to_bytes())
        items.append(SetItem(fname, name, "orig"))
        rng = np.random.default_rng(_seed(name, seed))
        for family in families:
            edited = apply_edit(family, img, rng)
            fname = f"s_{name}__{family}{edited.suffix}"
            (out_dir / fname).write_bytes(edited.to_bytes())
            items.append(SetItem(fname, name, family))
    for neg in hard_negatives(data_dir, split):
        fname = f"h_{neg.name}"
        (out_dir / fname).write_bytes(neg.read_bytes())
        items.append(SetItem(fname, None, "distractor"))
    (out_dir / "truth.json").write_text(json.dumps([asdict(it) for it in items], indent=1))
    return items
