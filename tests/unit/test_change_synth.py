"""The synthetic change pair generator: exact labels, nuisances never labelled, seeds, and no held-out sources."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_training import change_synth
from model_training.change_splits import OSCD_HELD_OUT_CITIES, labelled_tiles, oscd_cities, split_of
from model_training.change_synth import (
    ChangeSynth,
    SourceCache,
    SynthConfig,
    save_examples,
    synth_sources,
    warp_pair,
)
from tests.conftest import REPO

TILE = 96
CLEAN = {"photometric": False, "geometric": False}


@pytest.fixture(scope="module")
def cache() -> SourceCache:
    """Decoded sources shared by this module's generators (decoding them is most of a generator's first second)."""
    return SourceCache()


def _gen(shared: Path, cache: SourceCache | None, seed: int = 0, **kw: object) -> ChangeSynth:
    return ChangeSynth(shared, SynthConfig(tile=TILE, **kw), seed=seed, length=1000, cache=cache)  # type: ignore[arg-type]


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _background_canvas(gen: ChangeSynth, scene: change_synth.Scene) -> np.ndarray | None:
    """The background crop read again from its file, independently of the generator (None if it was resized)."""
    if scene.scale != 1.0:
        return None
    src = next(b for b in gen.sources.backgrounds if b.key == scene.background)
    y, x = scene.origin
    size = scene.before.shape[0]
    return _read_rgb(src.path)[y : y + size, x : x + size]


def _held_out(path: Path) -> bool:
    parts = path.parts
    if "oscd_rgb" in parts:
        return parts[parts.index("oscd_rgb") + 1] in OSCD_HELD_OUT_CITIES
    return path.stem.startswith(("val_", "test_"))


def test_import_is_torch_free() -> None:
    code = "import sys, model_training.change_synth; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_sources_are_training_splits_only(shared_data: Path) -> None:
    change = shared_data / "change"
    sources = synth_sources(shared_data)
    paths = sources.paths()
    assert paths and not [p for p in paths if _held_out(p)]
    with (change / "houses_pk" / "split.csv").open() as f:
        houses_split = {row["name"]: row["split"] for row in csv.DictReader(f)}
    for p in paths:
        if "houses_pk" in p.parts:
            assert houses_split[p.stem] == "train", p
    keys = [b.key for b in sources.backgrounds]
    assert sum(k.startswith("houses_pk/A/") for k in keys) == 29
    assert sum(k.startswith("egy_bcd/A/train_") for k in keys) == 4
    assert sum(k.startswith("levir_samples/A/train_") for k in keys) == 3
    assert sum(k.startswith("xbd_buildings/") for k in keys) == 9
    assert sum(k.startswith("demo_pair/") for k in keys) == 2
    cities = {k.split("/")[1] for k in keys if k.startswith("oscd_rgb/")}
    assert len(cities) == 9 and not cities & OSCD_HELD_OUT_CITIES
    assert {c.group for c in sources.cutouts} == {"xbd", "houses_pk", "egy_bcd", "levir_samples"}
    assert not any(c.key.split("/")[-1].startswith(("val_", "test_")) for c in sources.cutouts)


def test_split_rules(shared_data: Path) -> None:
    change = shared_data / "change"
    assert split_of(change, "houses_pk", "val_3") == "val" and split_of(change, "egy_bcd", "test_1") == "test"
    assert len(labelled_tiles(change, "houses_pk", "train")) == 29
    assert labelled_tiles(change, "levir_samples", "val") == ["val_27_0000_0256"]
    train, held = oscd_cities(change), oscd_cities(change, held_out=True)
    assert set(held) == OSCD_HELD_OUT_CITIES and not set(train) & set(held) and len(train) + len(held) == 13


@pytest.mark.parametrize("mode", ["buildings", "general"])
def test_generator_opens_only_training_files(shared_data: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []
    real_imread = cv2.imread

    def recording_imread(path: str, *args: int) -> np.ndarray | None:
        opened.append(Path(path))
        return real_imread(path, *args)

    monkeypatch.setattr(change_synth.cv2, "imread", recording_imread)
    gen = _gen(shared_data, None, seed=1, mode=mode)
    for i in range(30):
        gen.pair(i)
    assert opened and set(opened) <= gen.sources.paths()
    assert not [p for p in opened if _held_out(p)]
    assert set(opened) == gen.files_read


def test_seeds_give_identical_pairs_in_any_order(shared_data: Path, cache: SourceCache) -> None:
    a, b = _gen(shared_data, cache, seed=7), _gen(shared_data, cache, seed=7)
    for i in (3, 0, 11):  # b visits other items first: each item depends on (seed, index) alone
        b.pair(i + 1)
    for i in (0, 3, 11):
        for x, y in zip(a[i], b[i], strict=True):
            assert np.array_equal(x, y)
    c = _gen(shared_data, cache, seed=8)
    assert any(not np.array_equal(a[i][1], c[i][1]) for i in range(3))


def test_nuisances_do_not_change_the_scene(shared_data: Path, cache: SourceCache) -> None:
    """Content and nuisances draw from separate streams: the same seed gives the same changes either way."""
    clean, noisy = _gen(shared_data, cache, seed=2, **CLEAN), _gen(shared_data, cache, seed=2)
    for i in range(8):
        s, t = clean.scene(i), noisy.pair(i).scene
        assert np.array_equal(s.after, t.after) and np.array_equal(s.label, t.label)


@pytest.mark.parametrize("mode", ["buildings", "general"])
def test_label_is_exactly_the_synthesised_area(shared_data: Path, cache: SourceCache, mode: str) -> None:
    gen = _gen(shared_data, cache, seed=3, mode=mode, **CLEAN)
    checked_against_file = events = 0
    for i in range(30):
        pair = gen.pair(i)
        scene = pair.scene
        assert np.array_equal(pair.before, scene.crop(scene.before))
        assert np.array_equal(pair.after, scene.crop(scene.after))
        assert np.array_equal(pair.label, np.where(scene.crop(scene.label), 255, 0))
        changed = scene.changed
        # outside every change the two dates are the very same pixels, and those of the background file
        assert np.array_equal(scene.before[~changed], scene.after[~changed])
        bg = _background_canvas(gen, scene)
        if bg is not None:
            assert np.array_equal(scene.after[~changed], bg[~changed])
            checked_against_file += 1
        masks = [e.mask for e in scene.events]
        assert sum(m.sum() for m in masks) == changed.sum()  # changes never overlap
        for e in scene.events:
            events += 1
            edited, other = (scene.after, scene.before) if e.date == "after" else (scene.before, scene.after)
            if bg is not None:
                assert np.array_equal(other[e.mask], bg[e.mask])  # only one date is edited
            assert (edited[e.mask] != other[e.mask]).any(axis=1).mean() > 0.3  # and the label covers a real change
    assert checked_against_file >= 5 and events >= 30


def test_buildings_mode_labels_only_buildings(shared_data: Path, cache: SourceCache) -> None:
    gen = _gen(shared_data, cache, seed=4, mode="buildings", p_distractor=1.0, **CLEAN)
    distractors = 0
    for i in range(40):
        scene = gen.scene(i)
        building = np.zeros_like(scene.label)
        for e in scene.events:
            assert e.labelled == (e.kind != "landcover")
            if e.kind != "landcover":
                building |= e.mask
                continue
            distractors += 1
            # an unlabelled patch never covers a building of the background (that would be an unlabelled removal)
            src = next(b for b in gen.sources.backgrounds if b.key == scene.background)
            assert src.footprints is not None
            y, x = scene.origin
            size = scene.before.shape[0]
            fp = cv2.imread(str(src.footprints), cv2.IMREAD_GRAYSCALE)[y : y + size, x : x + size] > 127
            assert not (fp & e.mask).any()
        assert np.array_equal(scene.label, building)
        assert not scene.background.startswith("oscd_rgb/")
    assert distractors >= 5


def test_general_mode_labels_land_cover(shared_data: Path, cache: SourceCache) -> None:
    gen = _gen(shared_data, cache, seed=5, mode="general", **CLEAN)
    kinds = set()
    for i in range(40):
        scene = gen.scene(i)
        assert all(e.labelled for e in scene.events)
        kinds |= {e.kind for e in scene.events}
    assert kinds == {"building_added", "building_removed", "landcover"}


def test_nuisance_only_pairs_have_an_empty_label(shared_data: Path, cache: SourceCache) -> None:
    gen = _gen(shared_data, cache, seed=6, p_no_change=1.0)
    for i in range(12):
        pair = gen.pair(i)
        assert not pair.scene.events and pair.label.max() == 0
        assert not np.array_equal(pair.before, pair.after)  # but the two dates differ
    default = _gen(shared_data, cache, seed=6)
    empty = [p for p in (default.pair(i) for i in range(40)) if not p.scene.events]
    assert empty and all(p.label.max() == 0 for p in empty)


def test_label_follows_the_after_images_geometry(shared_data: Path, cache: SourceCache) -> None:
    gen = _gen(shared_data, cache, seed=9, photometric=False, p_geometric=1.0)
    moved = 0
    for i in range(12):
        pair = gen.pair(i)
        scene, warp = pair.scene, pair.warp
        assert warp is not None
        # re-derive: each shown pixel samples the clean canvas at inverse(warp) * (x, y), rounded for the label
        a, t = warp[:, :2], warp[:, 2]
        inv_a = np.linalg.inv(a)
        pad, size = scene.pad, scene.before.shape[0]
        yy, xx = np.mgrid[pad : size - pad, pad : size - pad]
        src = np.einsum("ij,jhw->ihw", inv_a, np.stack([xx - t[0], yy - t[1]]).astype(np.float64))
        sx, sy = np.floor(src[0] + 0.5).astype(int), np.floor(src[1] + 0.5).astype(int)
        assert sx.min() >= 0 and sy.min() >= 0 and sx.max() < size and sy.max() < size  # the pad was enough
        assert np.array_equal(pair.label, np.where(scene.label[sy, sx], 255, 0))
        expected = cv2.warpAffine(scene.after, warp, (size, size), flags=cv2.INTER_LINEAR)
        diff = np.abs(scene.crop(expected).astype(int) - pair.after.astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.3
        assert np.array_equal(pair.before, scene.crop(scene.before))  # the before image is the reference
        moved += not np.array_equal(pair.label, np.where(scene.crop(scene.label), 255, 0))
    assert moved >= 3


def test_integer_shift_moves_image_and_label_alike() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    label = np.zeros((40, 40), bool)
    label[10:20, 5:12] = True
    warp = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]])
    out, moved = warp_pair(image, label, warp)
    expected = np.zeros_like(label)
    expected[8:18, 8:15] = True
    assert np.array_equal(moved, expected)
    assert np.array_equal(out[5:35, 5:35], image[7:37, 2:32])


@pytest.mark.parametrize("tile", [64, 160])
def test_shapes_and_values(shared_data: Path, cache: SourceCache, tile: int) -> None:
    gen = ChangeSynth(shared_data, SynthConfig(tile=tile, mode="general"), seed=0, length=5, cache=cache)
    assert len(gen) == 5 and len(list(gen)) == 5
    for before, after, label in gen:
        assert before.shape == after.shape == (tile, tile, 3) and label.shape == (tile, tile)
        assert before.dtype == after.dtype == label.dtype == np.uint8
        assert set(np.unique(label)) <= {0, 255}
    with pytest.raises(IndexError):
        gen[5]


def test_save_examples(shared_data: Path, cache: SourceCache, tmp_path: Path) -> None:
    files = save_examples(_gen(shared_data, cache), tmp_path, 3)
    assert len(files) == 3
    sheet = cv2.imread(str(files[0]))
    assert sheet.shape == (TILE, 4 * TILE + 12, 3)
