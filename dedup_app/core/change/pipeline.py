"""Change detection end to end, as a progress generator: pair the inputs, read, align, normalise, detect,
threshold, export. A pair that fails (unreadable, or images that cannot be paired at all) is reported in the summary
and the rest go on; a pair whose registration could not be verified is mapped and says so."""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import time
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from dedup_app.core.change import export
from dedup_app.core.change.align import Alignment, AlignmentError, align
from dedup_app.core.change.detect import ChangeDetector
from dedup_app.core.change.normalize import match_histograms
from dedup_app.core.change.raster import Raster, RasterError, read_raster
from dedup_app.core.change.regions import Region, change_mask, find_regions, upsample
from dedup_app.core.files import IMAGE_EXTENSIONS, FileEntry, walk_images
from dedup_app.core.progress import CancelToken, Progress

RASTER_EXTENSIONS = IMAGE_EXTENSIONS | {".tif", ".tiff", ".img", ".jp2", ".vrt"}


class ChangeInputError(Exception):
    """The inputs cannot be paired (missing, of different kinds, or folders without matching tiles)."""


@dataclass(frozen=True)
class Pair:
    """A before/after pair and the name its outputs get: a path inside the output folder, without the suffixes
    (``x/y`` writes ``x/y_mask.png``), unique among the pairs of one run."""

    name: str
    before: str
    after: str

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the comparison: its two paths (the name may change with the other tiles present)."""
        return (self.before, self.after)


@dataclass(frozen=True)
class ChangeOptions:
    """User choices; ``threshold`` None means the detector's calibrated threshold."""

    threshold: float | None = None
    min_area_px: int = 64
    bands: tuple[int, ...] | None = None
    normalise: bool = True


@dataclass
class ChangeResult:
    """One compared pair, kept in memory so the threshold and minimum area can change without recomputing."""

    pair: Pair
    before: Raster
    after: np.ndarray  # B on A's grid, radiometrically matched (0 x 0 when not kept)
    valid: np.ndarray  # A's pixels that B covers
    alignment: Alignment
    prob_full: np.ndarray  # uint8 0-255, A's size
    model: str
    default_threshold: float
    cache: dict[tuple[float, int], tuple[np.ndarray, list[Region]]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Memory the result holds (both images, the coverage, the probability map and cached masks)."""
        arrays = [self.before.pixels, self.after, self.valid, self.prob_full]
        arrays += [mask for mask, _ in self.cache.values()]
        return sum(int(a.nbytes) for a in arrays)

    @cached_property
    def valid_px(self) -> int:
        """Pixels of A that B covers (counted once: the summary is asked for on every threshold change)."""
        return int(self.valid.sum())

    def regions_at(self, threshold: float, min_area_px: int) -> tuple[np.ndarray, list[Region]]:
        """Mask and regions at a threshold and minimum area (cached for the last few settings)."""
        key = (round(threshold, 3), int(min_area_px))
        if key not in self.cache:
            if len(self.cache) > 4:
                self.cache.clear()
            mask = change_mask(self.prob_full, threshold, min_area_px, self.valid)
            self.cache[key] = (mask, find_regions(mask, self.prob_full, self.before.geo))
        return self.cache[key]

    def summary(self, threshold: float, min_area_px: int) -> dict[str, Any]:
        """The pair's figures at a threshold and minimum area (a row of summary.json).

        ``alignment_verified`` False (``alignment`` "not verified"): the images were compared unmoved (or as
        georeferenced) because no trustworthy registration was found; ``alignment_note`` says why."""
        mask, regions = self.regions_at(threshold, min_area_px)
        changed = int(mask.sum())
        valid = self.valid_px or 1
        geo = self.before.geo
        return {
            "name": self.pair.name,
            "before": self.pair.before,
            "after": self.pair.after,
            "width": self.before.shape[1],
            "height": self.before.shape[0],
            "changed_fraction": round(changed / valid, 6),
            "regions": len(regions),
            "changed_px": changed,
            "changed_m2": None if geo is None else round(sum(r.area_m2 or 0.0 for r in regions), 2),
            "largest_region_px": max((r.area_px for r in regions), default=0),
            "region_areas_px": [r.area_px for r in regions],
            "shift_x_px": round(self.alignment.dx, 2),
            "shift_y_px": round(self.alignment.dy, 2),
            "rotation_deg": round(self.alignment.angle_deg, 3),
            "alignment": self.alignment.method,
            "alignment_correlation": round(self.alignment.correlation, 3),
            "alignment_verified": self.alignment.verified,
            "alignment_note": self.alignment.note,
            "georeferenced": geo is not None,
            "threshold": round(threshold, 4),
            "min_area_px": min_area_px,
            "model": self.model,
            "error": "",
        }


def _image_files(folder: Path) -> dict[str, Path]:
    """Rasters under ``folder`` by relative path (the scanner's walk: loops, unreadable folders, FIFOs are safe)."""
    return {
        Path(e.path).relative_to(folder).as_posix(): Path(e.path)
        for e in walk_images([folder], RASTER_EXTENSIONS)
        if isinstance(e, FileEntry)
    }


def pair_inputs(before: str | os.PathLike[str], after: str | os.PathLike[str]) -> list[Pair]:
    """Two files make one pair; two folders pair their images by relative path. Raises ChangeInputError."""
    b, a = os.fspath(before), os.fspath(after)
    for label, p in (("before", b), ("after", a)):
        if "," not in p and not os.path.exists(p):
            raise ChangeInputError(f"{label} not found: {p}")
    if os.path.isdir(b) != os.path.isdir(a):
        raise ChangeInputError(f"give two files or two folders, not a {'folder' if os.path.isdir(b) else 'file'} "
                               f"and a {'folder' if os.path.isdir(a) else 'file'}: {b}, {a}")  # fmt: skip
    if not os.path.isdir(b):
        name = Path(b.split(",")[0]).stem
        return [Pair(name, b, a)]
    left, right = _image_files(Path(b)), _image_files(Path(a))
    common = sorted(set(left) & set(right))
    if not common:
        raise ChangeInputError(
            f"no tiles with the same name in {b} and {a} ({len(left)} and {len(right)} images); tiles are paired "
            "by their path inside each folder"
        )
    only_b, only_a = sorted(set(left) - set(right)), sorted(set(right) - set(left))
    if only_b or only_a:
        raise ChangeInputError(
            "the folders do not match: "
            + (f"only before: {', '.join(only_b[:5])}{' ...' if len(only_b) > 5 else ''}; " if only_b else "")
            + (f"only after: {', '.join(only_a[:5])}{' ...' if len(only_a) > 5 else ''}" if only_a else "")
        )
    return [Pair(name, str(left[rel]), str(right[rel])) for rel, name in zip(common, output_names(common), strict=True)]


def output_names(rels: list[str]) -> list[str]:
    """Output names of tiles given by relative path (``/``-separated): the path without its extension, so the
    output folder mirrors the input's (``x/y.png`` is ``x/y``, ``x__y.png`` is ``x__y``); where that would give
    two tiles the same name, ignoring case (``t.png`` and ``t.jpg``, ``T.png`` and ``t.jpg``), both keep their
    extension, and paths that differ only in case also get a hash of the path. Unique even on a case-insensitive
    disk, and the same every run.
    """
    names = {rel: posixpath.splitext(rel)[0] for rel in rels}
    while True:  # ends: a name only ever changes to its tile's path, and the paths are unique
        counts = Counter(name.casefold() for name in names.values())
        clashing = [rel for rel, name in names.items() if counts[name.casefold()] > 1 and name != rel]
        if not clashing:
            break
        for rel in clashing:
            names[rel] = rel
    # paths that differ only in case (``T.png``, ``t.png``) would write one file on a case-insensitive disk (macOS,
    # Windows, a FAT memory card): those get a short hash of their path as well
    counts = Counter(name.casefold() for name in names.values())
    for rel, name in names.items():
        if counts[name.casefold()] > 1:
            names[rel] = f"{name}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"
    return [names[rel] for rel in rels]


def compare_pair(
    pair: Pair,
    detector: ChangeDetector,
    options: ChangeOptions | None = None,
    cancel: CancelToken | None = None,
    keep_after: bool = True,
) -> Generator[Progress, None, ChangeResult]:
    """Read, align, normalise and compute the change probability of one pair.

    ``keep_after`` False drops the aligned after image once the map is made (exports do not need it; on a
    10,000 x 10,000 pair that is 300 MB).
    """
    options = options or ChangeOptions()
    yield Progress("Reading", 0, None, pair.name)
    a = read_raster(pair.before, options.bands)
    b = read_raster(pair.after, options.bands)
    yield Progress("Aligning", 0, None, pair.name)
    b_pixels, valid, alignment = align(a, b)
    del b
    if options.normalise:
        b_pixels = match_histograms(b_pixels, a.pixels, valid, out=b_pixels)  # B's array is ours alone now
    prob = yield from detector.probability(a.pixels, b_pixels, cancel)
    if not keep_after:
        b_pixels = np.zeros((0, 0, 3), np.uint8)
    prob_full = upsample(prob, a.shape)
    return ChangeResult(pair, a, b_pixels, valid, alignment, prob_full, detector.model_name, detector.config.threshold)


def write_outputs(
    result: ChangeResult, out_dir: Path, threshold: float, min_area_px: int, consume: bool = False
) -> dict[str, Any]:
    """Write every map of one pair into ``out_dir``; returns its summary with the files written.

    With ``consume`` the result's images are drawn on to save memory: do not use the result afterwards.
    """
    stem = result.pair.name
    mask, regions = result.regions_at(threshold, min_area_px)
    summary = result.summary(threshold, min_area_px)
    files = {
        "mask": out_dir / f"{stem}_mask.png",
        "overlay": out_dir / f"{stem}_overlay.png",
        "heatmap": out_dir / f"{stem}_heatmap.png",
        "geojson": out_dir / f"{stem}.geojson",
    }
    export.write_mask(files["mask"], mask)
    export.write_heatmap(files["heatmap"], result.prob_full)
    geo = result.before.geo
    export.write_json(files["geojson"], export.geojson(regions, geo, {"before": result.pair.before,
                                                                       "after": result.pair.after}))  # fmt: skip
    if geo is not None:
        files["geotiff"] = out_dir / f"{stem}_mask.tif"
        export.write_geotiff(files["geotiff"], mask, geo)
    export.write_overlay(files["overlay"], result.before.pixels, mask, in_place=consume)  # last: may consume
    summary["files"] = {k: str(v) for k, v in files.items()}
    return summary


def run_change(
    before: str | os.PathLike[str],
    after: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    detector: ChangeDetector,
    options: ChangeOptions | None = None,
    cancel: CancelToken | None = None,
    known: dict[tuple[str, str], ChangeResult] | None = None,
    header: dict[str, Any] | None = None,
) -> Generator[Progress, None, list[dict[str, Any]]]:
    """Compare every pair and write the maps and ``summary.json``/``summary.csv`` into ``out_dir``.

    The summary is rewritten (atomically) as pairs finish, and once more when the run stops early (Ctrl-C, the
    cancel token, an error, the generator closed): it lists exactly the pairs finished so far, and says with
    ``complete``, ``pairs_done`` and ``pairs_total`` whether that is all of them. ``known`` holds results already
    computed (the window's) by :attr:`Pair.key`, reused instead of compared again. ``header`` adds fields to
    ``summary.json`` (the CLI's ``change_model``: the name asked for and what ran).
    """
    options = options or ChangeOptions()
    pairs = pair_inputs(before, after)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threshold = options.threshold if options.threshold is not None else detector.config.threshold
    summaries: list[dict[str, Any]] = []
    writer = _SummaryWriter(out, {"model": detector.model_name, **(header or {}), "threshold": threshold,
                                  "min_area_px": options.min_area_px}, len(pairs))  # fmt: skip
    writer.write(summaries)  # at once: a previous run's summary in this folder must not pass for this one's
    try:
        for k, pair in enumerate(pairs, 1):
            if cancel is not None:
                cancel.raise_if_cancelled()
            try:
                result = (known or {}).get(pair.key)
                fresh = result is None
                if result is None:
                    result = yield from compare_pair(pair, detector, options, cancel, keep_after=False)
                summaries.append(write_outputs(result, out, threshold, options.min_area_px, consume=fresh))
                del result
            except (RasterError, AlignmentError, OSError) as exc:
                summaries.append({"name": pair.name, "before": pair.before, "after": pair.after, "error": str(exc)})
            writer.write_soon(summaries)
            yield Progress("Pairs", k, len(pairs), pair.name)
    except BaseException:
        with contextlib.suppress(OSError):  # the original exception matters more than a summary that failed too
            writer.write(summaries)
        raise
    writer.write(summaries)
    return summaries


class _SummaryWriter:
    """Writes ``summary.json`` and ``summary.csv`` atomically, with how many of the pairs they hold.

    ``write_soon`` (after each pair) skips a write while writing would take more than a tenth of the time since
    the last one: the files grow with every pair, so rewriting them after each of 10,000 tiles would cost more
    than the comparisons. A run that stops writes once more (``write``), so nothing finished is left out.
    """

    def __init__(self, out: Path, header: dict[str, Any], total: int) -> None:
        self.out, self.header, self.total = out, header, total
        self.last_end = 0.0
        self.last_cost = 0.0

    def write(self, summaries: list[dict[str, Any]]) -> None:
        """Write both files now, listing ``summaries`` (the pairs finished, in order)."""
        start = time.monotonic()
        done = len(summaries)
        data = {**self.header, "complete": done == self.total, "pairs_done": done, "pairs_total": self.total,
                "pairs": summaries}  # fmt: skip
        export.write_json(self.out / "summary.json", data)
        export.write_summary_csv(self.out / "summary.csv", summaries)
        self.last_end = time.monotonic()
        self.last_cost = self.last_end - start

    def write_soon(self, summaries: list[dict[str, Any]]) -> None:
        """Write now unless the last write was recent compared with what it cost (the last pair: see ``write``)."""
        if len(summaries) < self.total and time.monotonic() - self.last_end >= 10 * self.last_cost:
            self.write(summaries)


def pixel_scores(mask: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and IoU of changed pixels against a label mask."""
    pred, truth = mask > 0, label > 0
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return {
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r else 0.0,
        "iou": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }
