"""Synthetic before/after change pairs made from single images, for pretraining a change head.

Labelled change pairs are scarce (a few dozen tiles in ``../shared/data/change``), single-date aerial images and
building footprints are not. This module turns them into an endless, seeded stream of
``(before uint8 HxWx3 RGB, after uint8 HxWx3 RGB, label uint8 HxW 0/255)`` at a chosen tile size. It imports
numpy and OpenCV only (no torch): ``ChangeSynth`` has ``__len__`` and ``__getitem__`` and can be handed to a
``torch.utils.data.DataLoader`` as it is.

What we took from whom, and why
-------------------------------
- **Self-Pair** (Seo, Lee, Jeon, Seo; WACV 2023, arXiv 2212.10236): make the after image *from the before image
  itself*. Their finding is that pairs of unrelated images confuse a detector, because pixels labelled
  "unchanged" look different; consistency of the unchanged area matters more than realism of the change. So every
  pair starts from one background crop used for both dates, and only the synthesised regions differ before the
  nuisances are applied. When the background has footprints, half the pasted buildings come from its own image.
- **ChangeStar / STAR** (Zheng, Ma, Zhang, Zhong; ICCV 2021, and the 2024 journal version): change supervision from
  single-date object masks (the change label is the XOR of the two dates' masks: an object present in one date
  only) and *temporal symmetry* (what appears from A to B disappears from B to A). Here: a building removal is a
  building pasted into the before image only, on backgrounds whose buildings we do not know; and a building of a
  footprint-labelled background that we erase from the *before* image is a real building appearing in B, in its
  own context and light.
- **Changen / Changen2** (Zheng, Tian, Ma, Zhang, Zhong; ICCV 2023 / Zheng, Ermon, Kim, Zhang, Zhong; TPAMI 2025,
  ``torchange/models/changen2/change_event_simulation.py``): change-event simulation on object masks -- add an
  existing object instance at a random place where it overlaps nothing (up to 50 tries), remove instances,
  ignore objects under 8x8 px, and let land-cover regions turn into another class. We keep their event
  simulation and replace their learned image synthesis (a GAN / diffusion model we cannot train here) by
  copying real pixels.
- **Simple Copy-Paste** (Ghiasi et al.; CVPR 2021): random placement with scale jitter (0.8-1.25) is enough, no
  context model needed. **IAug** (Chen, Li, Shi; TGRS 2021): paste building instances into one date only, away
  from existing buildings, and blend them with their context; we blend with a feathered alpha and a partial
  colour match of the cut-out's surroundings to the destination's, instead of their GAN and style transfer.
- **xBD** (Gupta et al. 2019; here its ``xbd_buildings`` samples with Ida-BD tiles): building footprint masks of
  pre-disaster tiles give building instances (with shadow and some ground around them), and tell us where a
  background's buildings are, so that removals hit real buildings and unlabelled distractors never touch one.
  (Inria's aerial labelling masks would serve the same way; they are not in ``../shared``.)

Modes (two heads)
-----------------
- ``buildings``: only building additions and removals are labelled. Land-cover patches appear as *unlabelled
  distractors* (``p_distractor``), because real building-change pairs are full of unlabelled field, lawn and soil
  change (LEVIR-CD labels only buildings) and a building head must learn to ignore it; they are placed only on
  backgrounds whose footprints are known, never over a building, and cut from building-free ground, so that
  no unlabelled building change can slip in. Sentinel-2 backgrounds (10 m) are not used: a sub-metre building
  would be 1-2 px there.
- ``general``: building changes and land-cover patches (fields, water, bare soil, forest: irregular soft-edged
  blobs cut from other images of the same resolution, preferring homogeneous areas) are all labelled.

The label is exactly the set of pixels that a change event wrote (the cut-out with its shadow and margin, the
erased building with its shadow, the whole blob including its soft edge), in the after image's geometry.

Nuisances (never labelled), each drawn independently for each date
--------------------------------------------------------------------
colour and season shifts (per-channel gain, gamma, contrast, hue, saturation; vegetation turned browner or
greener), haze (blend towards a bright airlight, with a gradient), sun angle, blur or resampling, sensor noise
(Gaussian plus signal-dependent), JPEG recompression; and, for the after image only, misregistration by a few
pixels with a small rotation and scale. The label is warped with the after image (nearest neighbour on the same
sampling grid), computed on a padded canvas so that no border is invented inside the tile.

*Sun angle is approximated*: we have no heights, so a change of sun elevation/azimuth is modelled as (a) a linear
illumination ramp across the tile and (b) lengthening or shortening of the existing dark regions (pixels below the
20th luminance percentile and 0.6x the median) by 1-3 px along one random direction, darkening the newly covered
pixels by the measured shadow/median ratio or brightening the uncovered ones by its inverse. It moves shadow
edges the way a sun change does, but it also grows dark roofs, water and tree crowns in that direction, and it
cannot make shadows appear where there were none.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import cv2
import numpy as np

from model_training.change_splits import LABELLED_SETS, labelled_tiles, oscd_cities

Mode = Literal["buildings", "general"]
Date = Literal["before", "after"]
EventKind = Literal["building_added", "building_removed", "landcover"]
Gsd = Literal["vhr", "s2"]  # sub-metre aerial/satellite tiles, or Sentinel-2 at 10 m

#: Chance of drawing a background from each group, per mode (renormalised over the groups that have images).
BACKGROUND_WEIGHTS: Final[dict[str, dict[str, float]]] = {
    "buildings": {"xbd": 0.45, "labelled": 0.40, "demo": 0.15},
    "general": {"xbd": 0.30, "labelled": 0.25, "demo": 0.10, "oscd": 0.35},
}
#: Chance of drawing a building cut-out from each source set (xBD has by far the most, and the cleanest, masks).
CUTOUT_WEIGHTS: Final[dict[str, float]] = {"xbd": 0.55, "houses_pk": 0.20, "levir_samples": 0.15, "egy_bcd": 0.10}

_MIN_OBJECT_AREA: Final = 64  # Changen ignores objects under 8x8 px
_PLACEMENT_TRIES: Final = 50  # Changen's MAXIMUM_TRY
_GAP: Final = 3  # px kept free around every change and every known building
_MIN_CONTRAST: Final = 8.0  # see _contrast
_MIN_PATCH_DIFFERENCE: Final = 12.0  # mean |difference| of the smoothed patch and what it covers, grey levels


@dataclass(frozen=True)
class SynthConfig:
    """Everything that shapes the pairs; a generator is fully determined by its config, sources and seed."""

    tile: int = 256
    mode: Mode = "buildings"
    p_no_change: float = 0.15  # pairs with nuisances only (all-zero label)
    max_added: int = 4  # building additions per pair: 0..max_added
    max_removed: int = 2  # building removals per pair: 0..max_removed
    max_patches: int = 2  # land-cover patches per pair (general mode, and distractors in buildings mode)
    p_distractor: float = 0.35  # buildings mode: chance of unlabelled land-cover patches in a pair
    p_same_image: float = 0.5  # chance a pasted building comes from the background's own image, when it can
    scale_jitter: tuple[float, float] = (0.8, 1.25)
    max_object_frac: float = 0.45  # a cut-out's longer side at most this share of the tile
    photometric: bool = True
    geometric: bool = True
    p_geometric: float = 0.7
    max_shift: float = 4.0  # px, misregistration of the after image
    max_rotation: float = 2.0  # degrees
    max_scale: float = 0.02

    def __post_init__(self) -> None:
        if self.mode not in ("buildings", "general"):
            raise ValueError(f"mode must be 'buildings' or 'general', not {self.mode!r}")
        if self.tile < 32:
            raise ValueError("tile must be at least 32 px")

    @property
    def pad(self) -> int:
        """Canvas margin around the tile: room for the after image's warp, so no border enters the tile.

        The same with or without ``geometric``, so that switching nuisances off leaves every scene as it was.
        """
        corner = self.tile / math.sqrt(2)
        reach = self.max_shift + corner * (math.radians(self.max_rotation) + self.max_scale)
        return max(8, math.ceil(reach) + 3)

    @property
    def canvas(self) -> int:
        return self.tile + 2 * self.pad


@dataclass(frozen=True)
class ImageSource:
    """A single-date image usable as a background (and as land-cover texture)."""

    key: str  # "<set>/<name>", e.g. "xbd_buildings/hurricane-harvey_00000001_pre_disaster"
    group: str  # "xbd", "labelled", "demo" or "oscd"
    path: Path
    gsd: Gsd
    footprints: Path | None = None  # the building mask of this very image (255 = building), when known


@dataclass(frozen=True)
class CutoutSource:
    """An image with a mask of buildings to cut out.

    With ``before`` set (a labelled change tile), each masked component is cut from the date in which it looks
    like a building: ``houses_pk`` labels many demolitions (the building is in A) as well as new buildings.
    """

    key: str
    group: str  # a key of CUTOUT_WEIGHTS
    path: Path  # the image the mask belongs to (the after image of a labelled tile)
    mask: Path
    before: Path | None = None


@dataclass(frozen=True)
class SynthSources:
    """Every file the generator may read; nothing held out for reporting is in here."""

    backgrounds: tuple[ImageSource, ...]
    cutouts: tuple[CutoutSource, ...]

    def paths(self) -> set[Path]:
        out: set[Path] = set()
        for b in self.backgrounds:
            out.add(b.path)
            if b.footprints is not None:
                out.add(b.footprints)
        for c in self.cutouts:
            out |= {c.path, c.mask} | ({c.before} if c.before is not None else set())
        return out


def synth_sources(data_root: Path | str) -> SynthSources:
    """The sources under ``data_root`` (``../shared/data``): training splits only (see :mod:`change_splits`)."""
    change = Path(data_root) / "change"
    backgrounds: list[ImageSource] = []
    cutouts: list[CutoutSource] = []
    xbd = change / "xbd_buildings"
    for img in sorted((xbd / "images").glob("*.png")):
        mask = xbd / "masks" / img.name
        if not mask.is_file():
            raise FileNotFoundError(f"no footprint mask for {img}")
        key = f"xbd_buildings/{img.stem}"
        backgrounds.append(ImageSource(key, "xbd", img, "vhr", mask))
        cutouts.append(CutoutSource(key, "xbd", img, mask))
    for dataset in LABELLED_SETS:
        for stem in labelled_tiles(change, dataset, "train"):
            a, b = _one(change / dataset / "A", stem), _one(change / dataset / "B", stem)
            label = change / dataset / "label" / f"{stem}.png"
            backgrounds.append(ImageSource(f"{dataset}/A/{stem}", "labelled", a, "vhr"))
            # LEVIR-CD and EGY-BCD label new buildings in B; houses_pk labels demolitions too (checked by eye).
            cutouts.append(CutoutSource(f"{dataset}/{stem}", dataset, b, label, a if dataset == "houses_pk" else None))
    for date in ("A", "B"):
        for img in sorted((change / "demo_pair" / date).glob("*.png")):
            backgrounds.append(ImageSource(f"demo_pair/{date}/{img.stem}", "demo", img, "vhr"))
    for city in oscd_cities(change):
        for date in ("before", "after"):
            path = change / "oscd_rgb" / city / f"{date}.png"
            backgrounds.append(ImageSource(f"oscd_rgb/{city}/{date}", "oscd", path, "s2"))
    if not backgrounds or not cutouts:
        raise FileNotFoundError(f"no change data under {change}")
    return SynthSources(tuple(backgrounds), tuple(cutouts))


def _one(folder: Path, stem: str) -> Path:
    found = sorted(p for p in folder.glob(f"{stem}.*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one image {folder / stem}.*, found {len(found)}")
    return found[0]


@dataclass(frozen=True, eq=False)
class Event:
    """One synthesised change: which pixels of which date it wrote (canvas frame) and whether it is labelled."""

    kind: EventKind
    date: Date
    labelled: bool
    source: str  # key of the pixels' source ("<key>" of a cut-out or land-cover image, "donor" or "inpaint")
    mask: np.ndarray = field(repr=False)  # bool, canvas-sized


@dataclass(eq=False)
class Scene:
    """A pair before nuisances, on the padded canvas (``config.canvas`` px a side; the tile is its centre)."""

    before: np.ndarray
    after: np.ndarray
    events: list[Event]
    background: str  # key of the background image
    origin: tuple[int, int]  # (y, x) of the canvas in the background image (after any upscaling, see ``scale``)
    scale: float  # factor the background image was resized by before cropping (1.0 for most)
    pad: int

    @property
    def label(self) -> np.ndarray:
        """Bool canvas of labelled changes."""
        out = np.zeros(self.before.shape[:2], bool)
        for e in self.events:
            if e.labelled:
                out |= e.mask
        return out

    @property
    def changed(self) -> np.ndarray:
        """Bool canvas of every synthesised change, labelled or not."""
        out = np.zeros(self.before.shape[:2], bool)
        for e in self.events:
            out |= e.mask
        return out

    def crop(self, canvas: np.ndarray) -> np.ndarray:
        """The tile (centre) of a canvas-sized array."""
        p = self.pad
        return canvas[p : canvas.shape[0] - p, p : canvas.shape[1] - p]


@dataclass(eq=False)
class SynthPair:
    """One synthetic pair and how it was made."""

    before: np.ndarray  # uint8 HxWx3 RGB
    after: np.ndarray  # uint8 HxWx3 RGB
    label: np.ndarray  # uint8 HxW, 0 or 255
    scene: Scene
    warp: np.ndarray | None  # 2x3 forward affine of the after image on the canvas (clean -> shown), or None
    nuisances: dict[str, tuple[str, ...]]  # "before"/"after": names of the nuisances applied

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.before, self.after, self.label


@dataclass
class SourceCache:
    """Decoded source images and the building instances found in them; generators may share one."""

    images: dict[Path, np.ndarray] = field(default_factory=dict)
    instances: dict[str, list[_Instance]] = field(default_factory=dict)
    files_read: set[Path] = field(default_factory=set)  # every file decoded (for model cards and held-out checks)


@dataclass
class _Instance:
    """A building to cut: its source image, the component's bounding box and mask in that image."""

    source: str
    image: np.ndarray
    y: int
    x: int
    footprint: np.ndarray  # bool, bbox-sized


class ChangeSynth:
    """A deterministic stream of synthetic change pairs: item ``i`` depends only on (sources, config, seed, i).

    >>> gen = ChangeSynth("../shared/data", SynthConfig(tile=256, mode="buildings"), seed=0)
    >>> before, after, label = gen[0]          # uint8 256x256x3, uint8 256x256x3, uint8 256x256 in {0, 255}
    >>> pair = gen.pair(0)                     # the same, with the events, the warp and the nuisances applied
    """

    def __init__(
        self,
        data_root: Path | str,
        config: SynthConfig | None = None,
        seed: int = 0,
        length: int = 10_000,
        sources: SynthSources | None = None,
        cache: SourceCache | None = None,
    ) -> None:
        self.config = config or SynthConfig()
        self.seed = int(seed)
        self.length = int(length)
        self.sources = sources if sources is not None else synth_sources(data_root)
        self.cache = cache if cache is not None else SourceCache()
        self._allowed = self.sources.paths()
        gsd_ok: tuple[Gsd, ...] = ("vhr",) if self.config.mode == "buildings" else ("vhr", "s2")
        self._backgrounds = [b for b in self.sources.backgrounds if b.gsd in gsd_ok]
        if not self._backgrounds:
            raise ValueError("no background images for this mode")
        self._cut_groups = [g for g in CUTOUT_WEIGHTS if any(c.group == g for c in self.sources.cutouts)]
        cw = np.array([CUTOUT_WEIGHTS[g] for g in self._cut_groups])
        self._cut_weights = cw / cw.sum()

    # -- the public stream -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.pair(index).as_tuple()

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for i in range(self.length):
            yield self.pair(i).as_tuple()

    def pair(self, index: int) -> SynthPair:
        """Pair ``index``: the scene, then the nuisances, cropped to the tile."""
        content_rng, nuisance_rng = self._rngs(index)
        scene = self._scene(content_rng)
        return _finish(scene, self.config, nuisance_rng)

    def scene(self, index: int) -> Scene:
        """Pair ``index`` before any nuisance (the same events as :meth:`pair`)."""
        return self._scene(self._rngs(index)[0])

    def _rngs(self, index: int) -> tuple[np.random.Generator, np.random.Generator]:
        # Separate streams: switching nuisances off leaves the scene of every index unchanged.
        content, nuisance = np.random.SeedSequence([self.seed, int(index)]).spawn(2)
        return np.random.default_rng(content), np.random.default_rng(nuisance)

    # -- files -------------------------------------------------------------------------------------------------

    @property
    def files_read(self) -> set[Path]:
        """Every source file decoded so far (by this generator, or by others sharing its cache)."""
        return self.cache.files_read

    def _read(self, path: Path, mask: bool = False) -> np.ndarray:
        if path not in self._allowed:
            raise ValueError(f"{path} is not one of this generator's sources")
        images = self.cache.images
        cached = images.get(path)
        if cached is not None:
            return cached
        flags = cv2.IMREAD_GRAYSCALE if mask else cv2.IMREAD_COLOR
        raw = cv2.imread(str(path), flags)
        if raw is None:
            raise OSError(f"cannot read {path}")
        self.cache.files_read.add(path)
        arr = (raw > 127) if mask else cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
        images[path] = np.ascontiguousarray(arr)
        return images[path]

    # -- scene -------------------------------------------------------------------------------------------------

    def _pick_background(self, rng: np.random.Generator, pool: Sequence[ImageSource]) -> ImageSource:
        """A group by :data:`BACKGROUND_WEIGHTS` (29 small houses_pk tiles must not outweigh 9 large xBD ones)."""
        weights = BACKGROUND_WEIGHTS[self.config.mode]
        groups = sorted({b.group for b in pool}, key=list(weights).index)
        w = np.array([weights[g] for g in groups])
        group = groups[int(rng.choice(len(groups), p=w / w.sum()))]
        choices = [b for b in pool if b.group == group]
        return choices[int(rng.integers(len(choices)))]

    def _scene(self, rng: np.random.Generator) -> Scene:
        cfg = self.config
        bg = self._pick_background(rng, self._backgrounds)
        image = self._read(bg.path)
        footprints = self._read(bg.footprints, mask=True) if bg.footprints is not None else None
        size = cfg.canvas
        scale = 1.0
        if min(image.shape[:2]) < size:
            # Labelled tiles are 256 px: a 256 px tile needs them about 10 % larger for the warp margin.
            scale = size / min(image.shape[:2])
            dsize = (max(size, round(image.shape[1] * scale)), max(size, round(image.shape[0] * scale)))
            image = cv2.resize(image, dsize, interpolation=cv2.INTER_LINEAR)
            if footprints is not None:
                footprints = cv2.resize(footprints.astype(np.uint8), dsize, interpolation=cv2.INTER_NEAREST) > 0
        y0 = int(rng.integers(image.shape[0] - size + 1))
        x0 = int(rng.integers(image.shape[1] - size + 1))
        canvas = image[y0 : y0 + size, x0 : x0 + size].copy()
        known = footprints[y0 : y0 + size, x0 : x0 + size].copy() if footprints is not None else None
        scene = Scene(canvas, canvas.copy(), [], bg.key, (y0, x0), scale, cfg.pad)
        if rng.random() < cfg.p_no_change:
            return scene
        for kind in self._plan(rng, bg, known):
            ev = None
            if kind == "add":
                ev = self._paste_building(rng, scene, bg, known, "after")
            elif kind == "remove":
                if known is not None and rng.random() < 0.6:
                    ev = self._erase_building(rng, scene, known, "after")
                else:
                    ev = self._paste_building(rng, scene, bg, known, "before")
            elif kind == "appear":
                ev = self._erase_building(rng, scene, known, "before") if known is not None else None
            elif kind == "patch":
                ev = self._landcover_patch(rng, scene, bg, known)
            if ev is not None:
                scene.events.append(ev)
        return scene

    def _plan(self, rng: np.random.Generator, bg: ImageSource, known: np.ndarray | None) -> list[str]:
        """The events to try for one pair, in random order; at least one labelled one."""
        cfg = self.config
        kinds: list[str] = []
        if bg.gsd == "vhr":
            kinds += ["add"] * int(rng.integers(cfg.max_added + 1))
            kinds += ["remove"] * int(rng.integers(cfg.max_removed + 1))
            if known is not None and rng.random() < 0.3:
                kinds.append("appear")  # a real building of the background erased from the before image
        if cfg.mode == "general":
            kinds += ["patch"] * int(rng.integers(cfg.max_patches + 1))
            if not kinds:
                kinds.append("patch" if bg.gsd == "s2" else "add")
        else:
            if not kinds:
                kinds.append("add")
            if known is not None and rng.random() < cfg.p_distractor:
                kinds += ["patch"] * int(rng.integers(1, cfg.max_patches + 1))
        order = rng.permutation(len(kinds))
        return [kinds[i] for i in order]

    def _occupied(self, scene: Scene, known: np.ndarray | None) -> np.ndarray:
        occ = scene.changed
        if known is not None:
            occ = occ | known
        return _dilate(occ, _GAP)

    # -- buildings ---------------------------------------------------------------------------------------------

    def _instances_of(self, src: CutoutSource) -> list[_Instance]:
        if src.key in self.cache.instances:
            return self.cache.instances[src.key]
        mask = self._read(src.mask, mask=True)
        after = self._read(src.path)
        before = self._read(src.before) if src.before is not None else None
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        out: list[_Instance] = []
        h, w = mask.shape
        for i in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[i])
            if area < _MIN_OBJECT_AREA or x == 0 or y == 0 or x + bw == w or y + bh == h:
                continue  # too small, or cut by the image border
            fp = lab[y : y + bh, x : x + bw] == i
            image = after
            if before is not None and _building_score(before[y : y + bh, x : x + bw], fp) > _building_score(
                after[y : y + bh, x : x + bw], fp
            ):
                image = before
            if _contrast(image, lab == i, (y, x, bh, bw)) < _MIN_CONTRAST:
                continue  # under trees or blurred: a "building" that shows nothing of one
            out.append(_Instance(src.key, image, y, x, fp))
        self.cache.instances[src.key] = out
        return out

    def _pick_instance(self, rng: np.random.Generator, bg: ImageSource) -> _Instance | None:
        own = [c for c in self.sources.cutouts if c.path == bg.path]
        if own and rng.random() < self.config.p_same_image:
            src = own[0]
        else:
            group = self._cut_groups[int(rng.choice(len(self._cut_groups), p=self._cut_weights))]
            choices = [c for c in self.sources.cutouts if c.group == group]
            src = choices[int(rng.integers(len(choices)))]
        instances = self._instances_of(src)
        return instances[int(rng.integers(len(instances)))] if instances else None

    def _cutout(self, rng: np.random.Generator, inst: _Instance) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Pixels, region (footprint + margin + shadow) and surrounding-ground mask of an instance, scaled."""
        margin = int(rng.integers(1, 4))
        reach = margin + 14
        h, w = inst.image.shape[:2]
        fh, fw = inst.footprint.shape
        y0, x0 = max(0, inst.y - reach), max(0, inst.x - reach)
        y1, x1 = min(h, inst.y + fh + reach), min(w, inst.x + fw + reach)
        pix = inst.image[y0:y1, x0:x1]
        fp = np.zeros(pix.shape[:2], bool)
        fp[inst.y - y0 : inst.y - y0 + fh, inst.x - x0 : inst.x - x0 + fw] = inst.footprint
        region = object_region(pix, fp, margin, max_shadow=12)
        ground = region & ~_dilate(fp, 1)
        s = float(rng.uniform(*self.config.scale_jitter))
        if abs(s - 1.0) > 1e-3:
            dsize = (max(1, round(pix.shape[1] * s)), max(1, round(pix.shape[0] * s)))
            pix = cv2.resize(pix, dsize, interpolation=cv2.INTER_LINEAR)
            region = cv2.resize(region.astype(np.uint8), dsize, interpolation=cv2.INTER_NEAREST) > 0
            ground = cv2.resize(ground.astype(np.uint8), dsize, interpolation=cv2.INTER_NEAREST) > 0
        ys, xs = np.nonzero(region)
        if ys.size < _MIN_OBJECT_AREA:
            return None
        sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        if max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 > self.config.max_object_frac * self.config.tile:
            return None
        return pix[sl], region[sl], ground[sl]

    def _paste_building(
        self, rng: np.random.Generator, scene: Scene, bg: ImageSource, known: np.ndarray | None, date: Date
    ) -> Event | None:
        for _ in range(5):  # a few instances, in case one is too large for the tile
            inst = self._pick_instance(rng, bg)
            cut = self._cutout(rng, inst) if inst is not None else None
            if inst is None or cut is None:
                continue
            pix, region, ground = cut
            target = scene.after if date == "after" else scene.before
            pos = _place(rng, region, self._occupied(scene, known), scene.pad, self.config.tile)
            if pos is None:
                return None
            y, x = pos
            rh, rw = region.shape
            dest = target[y : y + rh, x : x + rw]
            pix = _match_colour(pix, ground, dest, float(rng.uniform(0.0, 1.0)))
            alpha = _feather(region, int(rng.integers(1, 3)))
            _composite(dest, pix, alpha)
            mask = np.zeros(target.shape[:2], bool)
            mask[y : y + rh, x : x + rw] = region
            kind: EventKind = "building_added" if date == "after" else "building_removed"
            return Event(kind, date, True, inst.source, mask)
        return None

    def _erase_building(self, rng: np.random.Generator, scene: Scene, known: np.ndarray, date: Date) -> Event | None:
        """Erase one of the background's own buildings (with its shadow) from ``date``: ground from nearby."""
        size, pad, tile = scene.before.shape[0], scene.pad, self.config.tile
        occupied = _dilate(scene.changed, _GAP)
        n, lab, stats, cents = cv2.connectedComponentsWithStats(known.astype(np.uint8), connectivity=8)
        candidates = []
        for i in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[i])
            cx, cy = cents[i]
            if area < _MIN_OBJECT_AREA or max(bw, bh) > self.config.max_object_frac * tile:
                continue
            if x < 16 or y < 16 or x + bw > size - 16 or y + bh > size - 16:
                continue
            if not (pad <= cx < pad + tile and pad <= cy < pad + tile):
                continue
            if _contrast(scene.after, lab == i, (y, x, bh, bw)) < _MIN_CONTRAST:
                continue  # erasing a building hidden under trees changes nothing visible
            candidates.append(i)
        if not candidates:
            return None
        target = scene.after if date == "after" else scene.before
        for i in rng.permutation(candidates)[:5]:
            region = object_region(target, lab == i, int(rng.integers(2, 4)), max_shadow=12)
            if (region & occupied).any():
                continue
            ys, xs = np.nonzero(region)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            free = ~_dilate(known, _GAP) & ~occupied
            donor = _find_donor(rng, region[y0:y1, x0:x1], (y0, x0), free)
            alpha = _feather(region[y0:y1, x0:x1], int(rng.integers(1, 3)))
            if donor is not None:
                dy, dx = donor
                fill = target[dy : dy + y1 - y0, dx : dx + x1 - x0].copy()
                source = "donor"
            else:
                fill = _inpaint(rng, target, region, (y0, y1, x0, x1))
                source = "inpaint"
            _composite(target[y0:y1, x0:x1], fill, alpha)
            kind: EventKind = "building_removed" if date == "after" else "building_added"
            return Event(kind, date, True, source, region)
        return None

    # -- land cover --------------------------------------------------------------------------------------------

    def _landcover_patch(
        self, rng: np.random.Generator, scene: Scene, bg: ImageSource, known: np.ndarray | None
    ) -> Event | None:
        cfg = self.config
        labelled = cfg.mode == "general"
        if not labelled and known is None:
            return None  # a distractor needs known buildings to stay off them
        tile = cfg.tile
        side = tile * float(rng.uniform(0.15, 0.45))
        h = max(12, round(side * float(rng.uniform(0.7, 1.3))))
        w = max(12, round(side * float(rng.uniform(0.7, 1.3))))
        blob = _blob(rng, h, w)
        ys, xs = np.nonzero(blob)
        blob = blob[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        # A distractor must not cover a building (that would be an unlabelled removal); a labelled patch may.
        pos = _place(rng, blob, self._occupied(scene, None if labelled else known), scene.pad, tile)
        if pos is None:
            return None
        y, x = pos
        date: Date = "after" if rng.random() < 0.5 else "before"
        target = scene.after if date == "after" else scene.before
        bh, bw = blob.shape
        dest = target[y : y + bh, x : x + bw]
        for _ in range(4):  # Changen's transitions always change the class: a look-alike patch is no change
            texture = self._landcover_texture(rng, bg, blob.shape, building_free=not labelled)
            if texture is None:
                return None
            pixels, source = texture
            if _difference(pixels, dest, blob) >= _MIN_PATCH_DIFFERENCE:
                break
        else:
            return None
        _composite(target[y : y + bh, x : x + bw], pixels, _feather(blob, int(rng.integers(3, 9))))
        mask = np.zeros(target.shape[:2], bool)
        mask[y : y + bh, x : x + bw] = blob
        return Event("landcover", date, labelled, source, mask)

    def _landcover_texture(
        self, rng: np.random.Generator, bg: ImageSource, shape: tuple[int, int], building_free: bool
    ) -> tuple[np.ndarray, str] | None:
        """A window of another image of the same resolution, preferring homogeneous (land-cover-like) ones."""
        pool = [b for b in self._backgrounds if b.gsd == bg.gsd and (b.footprints is not None or not building_free)]
        if not pool:
            return None
        h, w = shape
        best: tuple[float, np.ndarray, str] | None = None
        for _ in range(8):
            src = self._pick_background(rng, pool)
            image = self._read(src.path)
            if image.shape[0] <= h or image.shape[1] <= w:
                continue
            y = int(rng.integers(image.shape[0] - h))
            x = int(rng.integers(image.shape[1] - w))
            if building_free:
                assert src.footprints is not None
                fp = self._read(src.footprints, mask=True)
                if fp[max(0, y - _GAP) : y + h + _GAP, max(0, x - _GAP) : x + w + _GAP].any():
                    continue
            window = image[y : y + h, x : x + w]
            score = _texture(window)
            if best is None or score < best[0]:
                best = (score, window, src.key)
            if rng.random() < 0.3:
                break  # sometimes take a textured one too (orchards, scrub, small roads)
        return (best[1].copy(), best[2]) if best is not None else None


# -- pieces of a change ----------------------------------------------------------------------------------------


def object_region(image: np.ndarray, footprint: np.ndarray, margin: int, max_shadow: int = 12) -> np.ndarray:
    """A building's footprint grown by ``margin`` px of ground and by its shadow.

    The shadow side is the darkest of eight directions next to the grown footprint; the region grows along it,
    pixel by pixel, while the new strip stays darker than 0.75x the median luminance of the ring around.
    """
    lum = image.astype(np.float32).mean(axis=2)
    base = _dilate(footprint, margin)
    ring = _dilate(footprint, margin + 6) & ~base
    ref = float(np.median(lum[ring])) if ring.any() else float(np.median(lum))
    best: tuple[float, tuple[int, int]] | None = None
    for d in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)):
        strip = _shift(base, 2 * d[0], 2 * d[1]) & ~base
        if strip.any():
            m = float(lum[strip].mean())
            if best is None or m < best[0]:
                best = (m, d)
    region = base.copy()
    if best is None or best[0] >= 0.75 * ref:
        return region
    d = best[1]
    for k in range(1, max_shadow + 1):
        strip = _shift(base, k * d[0], k * d[1]) & ~region
        if not strip.any() or float(lum[strip].mean()) >= 0.75 * ref:
            break
        region |= strip
    return region


def _building_score(image: np.ndarray, mask: np.ndarray) -> float:
    """Bright and not green: which date of a labelled change shows the building (roofs vs. trees or soil)."""
    px = image[mask].astype(np.float32)
    r, g, b = px[:, 0], px[:, 1], px[:, 2]
    return float(px.mean() - 2.0 * (2 * g - r - b).mean())


def _contrast(image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """How much a building stands out from the ground around it: colour difference plus how much less green it is.

    xBD footprints include buildings hidden under tree crowns; those score under ~8 (checked by eye on all 483).
    """
    y, x, h, w = box
    g = 12
    y0, x0 = max(0, y - g), max(0, x - g)
    y1, x1 = min(image.shape[0], y + h + g), min(image.shape[1], x + w + g)
    win = image[y0:y1, x0:x1].astype(np.float32)
    fp = mask[y0:y1, x0:x1]
    ring = _dilate(fp, 8) & ~_dilate(fp, 3)
    if not ring.any():
        return float("inf")

    def stats(m: np.ndarray) -> tuple[float, np.ndarray]:
        px = win[m]
        exg = (2 * px[:, 1] - px[:, 0] - px[:, 2]) / (px.sum(axis=1) + 1.0)
        return float(exg.mean()), px.mean(axis=0)

    exg_fp, col_fp = stats(fp)
    exg_ring, col_ring = stats(ring)
    return (exg_ring - exg_fp) * 255.0 / 3.0 + float(np.abs(col_fp - col_ring).mean())


def _place(
    rng: np.random.Generator, shape_mask: np.ndarray, occupied: np.ndarray, pad: int, tile: int
) -> tuple[int, int] | None:
    """A top-left corner where ``shape_mask`` fits in the canvas, its centre in the tile, touching nothing occupied."""
    h, w = shape_mask.shape
    size = occupied.shape[0]
    lo_y, hi_y = max(0, pad - h // 2), min(size - h, pad + tile - 1 - h // 2)
    lo_x, hi_x = max(0, pad - w // 2), min(size - w, pad + tile - 1 - w // 2)
    if hi_y < lo_y or hi_x < lo_x:
        return None
    for _ in range(_PLACEMENT_TRIES):
        y = int(rng.integers(lo_y, hi_y + 1))
        x = int(rng.integers(lo_x, hi_x + 1))
        if not (occupied[y : y + h, x : x + w] & shape_mask).any():
            return y, x
    return None


def _find_donor(
    rng: np.random.Generator, region: np.ndarray, at: tuple[int, int], free: np.ndarray
) -> tuple[int, int] | None:
    """The top-left of a nearby window whose ``region``-shaped part is all free ground."""
    h, w = region.shape
    size = free.shape[0]
    for _ in range(40):
        angle = float(rng.uniform(0, 2 * math.pi))
        dist = float(rng.uniform(1.0, 3.0)) * max(h, w) + 4
        y = round(at[0] + dist * math.sin(angle))
        x = round(at[1] + dist * math.cos(angle))
        if 0 <= y <= size - h and 0 <= x <= size - w and free[y : y + h, x : x + w][region].all():
            return y, x
    return None


def _inpaint(
    rng: np.random.Generator, image: np.ndarray, region: np.ndarray, box: tuple[int, int, int, int]
) -> np.ndarray:
    """Telea inpainting of ``region`` with noise at the local ground's grain, as a bbox-sized fill."""
    y0, y1, x0, x1 = box
    g = 10
    wy0, wx0 = max(0, y0 - g), max(0, x0 - g)
    wy1, wx1 = min(image.shape[0], y1 + g), min(image.shape[1], x1 + g)
    window = np.ascontiguousarray(image[wy0:wy1, wx0:wx1])
    hole = region[wy0:wy1, wx0:wx1].astype(np.uint8)
    filled = cv2.inpaint(window, hole, 5, cv2.INPAINT_TELEA).astype(np.float32)
    ring = _dilate(hole > 0, 5) & (hole == 0)
    grain = min(8.0, float(window[ring].std()) * 0.25) if ring.any() else 4.0
    # soil-like grain: smoothed noise (per-pixel noise reads as speckle, not as ground)
    noise = cv2.GaussianBlur(rng.standard_normal(filled.shape[:2]).astype(np.float32), (0, 0), 1.0)
    filled += (noise * (grain / max(float(noise.std()), 1e-6)))[..., None]
    out = np.clip(np.rint(filled), 0, 255).astype(np.uint8)
    return out[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]


def _match_colour(pix: np.ndarray, ground: np.ndarray, dest: np.ndarray, strength: float) -> np.ndarray:
    """Per-channel gain taking the cut-out's surrounding ground part of the way to the destination's colour."""
    if strength <= 0 or not ground.any():
        return pix
    src = pix[ground].astype(np.float32).mean(axis=0)
    dst = dest[ground].astype(np.float32).mean(axis=0)
    gain = np.clip((dst + 1.0) / (src + 1.0), 0.7, 1.4)
    gain = 1.0 + strength * (gain - 1.0)
    return np.clip(np.rint(pix.astype(np.float32) * gain), 0, 255).astype(np.uint8)


def _feather(mask: np.ndarray, width: int, floor: float = 0.25) -> np.ndarray:
    """Alpha inside ``mask``: ``floor`` on its outermost pixels rising to 1 at ``width`` px in; 0 outside."""
    if width <= 1:
        return mask.astype(np.float32)
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    alpha = floor + (1.0 - floor) * np.clip((dist - 1.0) / (width - 1), 0.0, 1.0)
    return np.where(mask, alpha, 0.0).astype(np.float32)


def _composite(dest: np.ndarray, pix: np.ndarray, alpha: np.ndarray) -> None:
    """Blend ``pix`` into ``dest`` in place where ``alpha`` > 0; pixels with alpha 0 are not touched."""
    m = alpha > 0
    a = alpha[m][:, None]
    mixed = a * pix[m].astype(np.float32) + (1.0 - a) * dest[m].astype(np.float32)
    dest[m] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An irregular, smooth, hole-free blob filling part of an h x w box."""
    coarse = rng.random((int(rng.integers(3, 7)), int(rng.integers(3, 7)))).astype(np.float32)
    noise = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy + 0.5) / h * 2 - 1) ** 2 + ((xx + 0.5) / w * 2 - 1) ** 2
    fieldv = noise - 0.9 * r2
    blob = fieldv > np.quantile(fieldv, 1.0 - float(rng.uniform(0.45, 0.7)))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(blob.astype(np.uint8), connectivity=4)
    if n > 1:
        blob = lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # fill holes: what the border's flood fill does not reach
    outside = np.pad(~blob, 1, constant_values=True).astype(np.uint8)
    ff = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(outside, ff, (0, 0), 2)
    result: np.ndarray = outside[1:-1, 1:-1] != 2
    return result


def _difference(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """How different two windows look under ``mask`` at a coarse scale (colour and brightness, not grain)."""
    sa = cv2.GaussianBlur(a, (0, 0), 3.0).astype(np.float32)
    sb = cv2.GaussianBlur(b, (0, 0), 3.0).astype(np.float32)
    return float(np.abs(sa - sb)[mask].mean())


def _texture(window: np.ndarray) -> float:
    grey = cv2.cvtColor(window, cv2.COLOR_RGB2GRAY)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean())


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by (dy, dx), with zeros shifted in."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


# -- nuisances -------------------------------------------------------------------------------------------------


def _finish(scene: Scene, cfg: SynthConfig, rng: np.random.Generator) -> SynthPair:
    """Nuisances on both dates (the after image's warp on the canvas, moving the label with it), then the tile."""
    after = scene.after
    label = scene.label
    warp = None
    applied: dict[str, list[str]] = {"before": [], "after": []}
    if cfg.geometric and rng.random() < cfg.p_geometric:
        warp = random_warp(rng, scene.after.shape[0], cfg.max_shift, cfg.max_rotation, cfg.max_scale)
        after, label = warp_pair(after, label, warp)
        applied["after"].append("misregistration")
    before = scene.crop(scene.before).copy()
    after = scene.crop(after).copy()
    label_u8 = np.where(scene.crop(label), 255, 0).astype(np.uint8)
    if cfg.photometric:
        before, names_b = photometric_nuisance(before, rng)
        after, names_a = photometric_nuisance(after, rng)
        applied["before"] += names_b
        applied["after"] += names_a
    if cfg.photometric and not scene.events and not applied["before"] and not applied["after"]:
        # a nuisance-only pair must differ somewhere, or it teaches nothing
        after = _colour(after, rng)
        applied["after"].append("colour")
    return SynthPair(before, after, label_u8, scene, warp, {k: tuple(v) for k, v in applied.items()})


def random_warp(
    rng: np.random.Generator, size: int, max_shift: float, max_rotation: float, max_scale: float
) -> np.ndarray:
    """A small similarity transform about the canvas centre, as a 2x3 forward matrix."""
    angle = float(rng.uniform(-max_rotation, max_rotation))
    scale = 1.0 + float(rng.uniform(-max_scale, max_scale))
    c = (size - 1) / 2.0
    m = np.array(cv2.getRotationMatrix2D((c, c), angle, scale), np.float64)
    m[:, 2] += rng.uniform(-max_shift, max_shift, 2)
    return m


def warp_maps(warp: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel samples its source (float64), for the forward 2x3 ``warp``."""
    inv = cv2.invertAffineTransform(warp)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    map_x = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    map_y = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    return map_x, map_y


def warp_pair(image: np.ndarray, label: np.ndarray, warp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` resampled bilinearly and ``label`` by nearest neighbour on the same sampling grid."""
    map_x, map_y = warp_maps(warp, label.shape)
    out = cv2.remap(
        image, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    ix = np.floor(map_x + 0.5).astype(np.int64)
    iy = np.floor(map_y + 0.5).astype(np.int64)
    inside = (ix >= 0) & (iy >= 0) & (ix < label.shape[1]) & (iy < label.shape[0])
    warped = np.zeros_like(label)
    warped[inside] = label[iy[inside], ix[inside]]
    return np.asarray(out), warped


def photometric_nuisance(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Radiometric differences between dates that are not changes: each drawn independently."""
    names: list[str] = []
    steps: Sequence[tuple[str, float, Callable[[np.ndarray, np.random.Generator], np.ndarray]]] = (
        ("colour", 0.8, _colour),
        ("season", 0.35, _season),
        ("haze", 0.25, _haze),
        ("sun", 0.35, _sun),
        ("blur", 0.35, _blur),
        ("noise", 0.5, _noise),
        ("jpeg", 0.5, _jpeg),
    )
    for name, p, fn in steps:
        if rng.random() < p:
            image = fn(image, rng)
            names.append(name)
    return image, names


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor/processing colour: per-channel gain, gamma, contrast, offset, hue and saturation."""
    x = image.astype(np.float32) / 255.0
    x = x * rng.uniform(0.88, 1.12, 3).astype(np.float32)
    x = np.clip(x, 0, 1) ** float(rng.uniform(0.75, 1.35))
    mean = float(x.mean())
    x = (x - mean) * float(rng.uniform(0.8, 1.2)) + mean + float(rng.uniform(-0.06, 0.06))
    hsv = cv2.cvtColor(_u8(x * 255.0), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + float(rng.uniform(-5, 5))) % 180
    hsv[..., 1] *= float(rng.uniform(0.75, 1.3))
    return np.asarray(cv2.cvtColor(_u8(hsv), cv2.COLOR_HSV2RGB))


def _season(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vegetation turned browner and paler (dry season, leaf-off) or greener, weighted by its greenness."""
    x = image.astype(np.float32)
    s = x.sum(axis=2) + 1.0
    exg = (2 * x[..., 1] - x[..., 0] - x[..., 2]) / s
    veg = np.clip((exg - 0.02) / 0.1, 0.0, 1.0)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    sign = -1.0 if rng.random() < 0.7 else 1.0  # mostly towards yellow/brown
    hsv[..., 0] = np.clip(hsv[..., 0] + sign * float(rng.uniform(4, 14)) * veg, 0, 179)
    hsv[..., 1] *= 1.0 + veg * (float(rng.uniform(-0.4, 0.0)) if sign < 0 else float(rng.uniform(0.0, 0.3)))
    hsv[..., 2] *= 1.0 + veg * float(rng.uniform(-0.05, 0.15))
    return np.asarray(cv2.cvtColor(_u8(hsv), cv2.COLOR_HSV2RGB))


def _haze(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Atmospheric haze: blend towards a bright, slightly blue airlight, thicker on one side."""
    h, w = image.shape[:2]
    air = float(rng.uniform(170, 235)) + np.array([-4.0, 0.0, 6.0], np.float32) * float(rng.uniform(0, 1))
    t0 = float(rng.uniform(0.65, 0.92))
    theta = float(rng.uniform(0, 2 * math.pi))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xx / w - 0.5) * math.cos(theta) + (yy / h - 0.5) * math.sin(theta)) * float(rng.uniform(0, 0.16))
    t = np.clip(t0 + ramp, 0.5, 1.0)[..., None]
    return _u8(image.astype(np.float32) * t + air * (1.0 - t))


def _sun(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another sun angle, approximated: a light ramp, and shadows lengthened or shortened along one direction."""
    h, w = image.shape[:2]
    x = image.astype(np.float32)
    theta = float(rng.uniform(0, 2 * math.pi))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = 1.0 + float(rng.uniform(-0.12, 0.12)) * ((xx / w - 0.5) * math.cos(theta) + (yy / h - 0.5) * math.sin(theta))
    lum = x.mean(axis=2)
    med = float(np.median(lum))
    dark = lum < min(float(np.percentile(lum, 20)), 0.6 * med)
    dark = cv2.morphologyEx(dark.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    gain = np.ones((h, w), np.float32)
    if dark.mean() > 0.01 and med > 0:
        ratio = float(np.clip(np.median(lum[dark]) / med, 0.3, 0.8))
        k = int(rng.integers(1, 4))
        phi = float(rng.uniform(0, 2 * math.pi))
        steps = [(round(i * math.sin(phi)), round(i * math.cos(phi))) for i in range(1, k + 1)]
        if rng.random() < 0.6:  # lower sun: shadows grow away from their casters
            grown = dark.copy()
            for dy, dx in steps:
                grown |= _shift(dark, dy, dx)
            gain[grown & ~dark] = ratio
        else:  # higher sun: their far ends are lit again
            dy, dx = steps[-1]
            gain[dark & ~_shift(dark, -dy, -dx)] = 1.0 / ratio
        gain = np.asarray(cv2.GaussianBlur(gain, (0, 0), 0.7), np.float32)
    return _u8(x * (ramp * gain)[..., None])


def _blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Optics or a coarser resampling of the other date."""
    if rng.random() < 0.5:
        return np.asarray(cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.4, 1.4))))
    h, w = image.shape[:2]
    f = float(rng.uniform(0.5, 0.85))
    small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))


def _noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise: read noise plus signal-dependent shot noise."""
    x = image.astype(np.float32)
    sigma = float(rng.uniform(1.0, 5.0)) + float(rng.uniform(0.0, 0.35)) * np.sqrt(x)
    return _u8(x + rng.standard_normal(x.shape).astype(np.float32) * sigma)


def _jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    quality = int(rng.integers(35, 91))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        return image
    return np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))


# -- looking at them -------------------------------------------------------------------------------------------


def example_sheet(pair: SynthPair) -> np.ndarray:
    """Before | after | label | after with the label's outline in red, side by side (RGB)."""
    h, w = pair.label.shape
    gap = np.full((h, 4, 3), 255, np.uint8)
    outline = pair.after.copy()
    contours, _ = cv2.findContours((pair.label > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outline, contours, -1, (255, 0, 0), 1)
    label = np.repeat(pair.label[..., None], 3, axis=2)
    return np.hstack([pair.before, gap, pair.after, gap, label, gap, outline])


def save_examples(gen: ChangeSynth, out_dir: Path | str, n: int, start: int = 0) -> list[Path]:
    """Write pairs ``start .. start+n-1`` of ``gen`` as PNG sheets (:func:`example_sheet`); returns the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(start, start + n):
        pair = gen.pair(i)
        kinds = "+".join(sorted({f"{e.kind}{'' if e.labelled else '(unlabelled)'}" for e in pair.scene.events}))
        path = out / f"{gen.config.mode}_{i:04d}_{kinds or 'nuisance-only'}.png"
        cv2.imwrite(str(path), cv2.cvtColor(example_sheet(pair), cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m model_training.change_synth --out DIR``: write example sheets to look at."""
    parser = argparse.ArgumentParser(description="Write synthetic change pairs as PNG sheets.")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--mode", choices=("buildings", "general"), default="buildings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clean", action="store_true", help="no nuisances (to check the changes themselves)")
    args = parser.parse_args(argv)
    cfg = SynthConfig(tile=args.tile, mode=args.mode, photometric=not args.clean, geometric=not args.clean)
    gen = ChangeSynth(args.data, cfg, seed=args.seed)
    for path in save_examples(gen, args.out, args.n, args.start):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
