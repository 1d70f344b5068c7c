"""The shipped change heads do not call lighting, season or a few pixels of misregistration a change.

Issue 9's target: a colour shift, a season tint or a 3-pixel misregistration alone flag under 1 % of the pixels.
Each pair here is one real tile from ../shared and the same tile with only that nuisance, mapped end to end by the
pipeline (alignment, histogram matching, the head, the threshold and minimum area it ships with).

A head that flags nothing at all would pass that, so a positive control goes with it: the same tiles with a patch of
another place pasted in (plus the colour shift, so the change is not the only difference) must be found, and the
flags must fall on the patch rather than around it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from dedup_app.core.change.detect import ChangeDetector, load_change_head
from dedup_app.core.change.heads import SHIPPED_HEADS, shipped_head_path
from dedup_app.core.change.pipeline import ChangeOptions, Pair, compare_pair
from dedup_app.core.embedder import Embedder
from dedup_app.core.progress import drive

#: Before images of tiles no head trained on: LEVIR-CD's held-out tile, houses_pk test tiles, an EGY-BCD test tile.
TILES = ("levir_samples/A/val_27_0000_0256.png", "houses_pk/A/test_1.jpg", "houses_pk/A/test_4.jpg",
         "egy_bcd/A/test_1.png")  # fmt: skip


def colour_shift(img: np.ndarray) -> np.ndarray:
    """Another sensor's gain and white balance."""
    return np.clip(img.astype(np.float32) * np.array([1.12, 0.95, 0.85]) + 10, 0, 255).astype(np.uint8)


def season_tint(img: np.ndarray) -> np.ndarray:
    """Late summer: greens turn yellow-brown, everything a little warmer and paler."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = np.where((hsv[..., 0] > 25) & (hsv[..., 0] < 90), hsv[..., 0] - 20, hsv[..., 0])
    hsv[..., 1] *= 0.8
    hsv[..., 2] = np.clip(hsv[..., 2] * 1.08, 0, 255)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)


def shifted(img: np.ndarray) -> np.ndarray:
    """A 3-pixel misregistration (edge pixels repeated)."""
    return cv2.warpAffine(img, np.float32([[1, 0, 3], [0, 1, 2]]), img.shape[1::-1], borderMode=cv2.BORDER_REFLECT)


#: The pasted patch: its side, where it goes in each tile, and the tile it comes from (a built-up area of a training
#: tile of another source, so what the heads see is buildings and roads where there were none before).
PATCH = 96
PATCH_SOURCE = ("egy_bcd/B/train_1.png", (128, 128))


NUISANCES = {"colour shift": colour_shift, "season tint": season_tint, "3 px misregistration": shifted}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, list[Pair]]:
    root = tmp_path_factory.mktemp("nuisance")
    out: dict[str, list[Pair]] = {}
    for name, change in NUISANCES.items():
        out[name] = []
        for k, tile in enumerate(TILES):
            img = np.asarray(Image.open(shared_data / "change" / tile).convert("RGB"))
            a, b = root / f"{k}_a.png", root / f"{k}_{name.split()[0]}.png"
            Image.fromarray(img).save(a)
            Image.fromarray(change(img)).save(b)
            out[name].append(Pair(f"{k}", str(a), str(b)))
    return out


@pytest.mark.parametrize("head", sorted(SHIPPED_HEADS))
@pytest.mark.parametrize("nuisance", sorted(NUISANCES))
def test_a_nuisance_alone_is_not_change(head: str, nuisance: str, pairs, embedder: Embedder) -> None:  # type: ignore[no-untyped-def]
    path = shipped_head_path(head)
    assert path.is_file(), f"the shipped {head} head is missing: {path}"
    detector = ChangeDetector(embedder, load_change_head(path))
    flagged = total = 0
    for pair in pairs[nuisance]:
        result = drive(compare_pair(pair, detector, ChangeOptions()))
        mask, _ = result.regions_at(detector.config.threshold, ChangeOptions().min_area_px)
        flagged += int(mask.sum())
        total += int(result.valid_px)
    assert flagged / total < 0.01, f"{head}: {flagged / total:.1%} of the pixels flagged after a {nuisance}"


@pytest.fixture(scope="module")
def pasted(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> list[tuple[Pair, np.ndarray]]:
    """Each tile, and the same tile after a colour shift with another place's patch pasted in; the patch's mask."""
    root = tmp_path_factory.mktemp("pasted")
    name, (py, px) = PATCH_SOURCE
    patch = np.asarray(Image.open(shared_data / "change" / name).convert("RGB"))[py : py + PATCH, px : px + PATCH]
    out = []
    for k, tile in enumerate(TILES):
        img = np.asarray(Image.open(shared_data / "change" / tile).convert("RGB"))
        h, w = img.shape[:2]
        y, x = (h - PATCH) // 2 + 20, (w - PATCH) // 2 - 30
        after = colour_shift(img)
        after[y : y + PATCH, x : x + PATCH] = patch
        truth = np.zeros((h, w), bool)
        truth[y : y + PATCH, x : x + PATCH] = True
        a, b = root / f"{k}_a.png", root / f"{k}_b.png"
        Image.fromarray(img).save(a)
        Image.fromarray(after).save(b)
        out.append((Pair(f"{k}", str(a), str(b)), truth))
    return out


@pytest.mark.parametrize("head", sorted(SHIPPED_HEADS))
def test_a_pasted_patch_is_found(head: str, pasted, embedder: Embedder) -> None:  # type: ignore[no-untyped-def]
    detector = ChangeDetector(embedder, load_change_head(shipped_head_path(head)))
    hit = flagged = inside = 0
    for pair, truth in pasted:
        result = drive(compare_pair(pair, detector, ChangeOptions()))
        mask, _ = result.regions_at(detector.config.threshold, ChangeOptions().min_area_px)
        mask = mask.astype(bool)
        assert mask.shape == truth.shape
        hit += int((mask & truth).sum())
        flagged += int(mask.sum())
        inside += int(truth.sum())
    recall, precision = hit / inside, hit / max(flagged, 1)
    assert recall >= 0.5, f"{head}: only {recall:.0%} of the pasted patches flagged"
    assert precision >= 0.8, f"{head}: only {precision:.0%} of the flagged pixels on the pasted patches"
