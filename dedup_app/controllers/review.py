"""The scan and what it found: the finder, the threshold in use, and groups with the rule's marks.

A scan runs as one job (load the model if needed, scan, search down to the slider's floor, group and mark at the
threshold), so the window gets results it can show at once. Regrouping at another threshold, without the removed
files or with new "not duplicate" labels, is a pure function of the finder's immutable search result: it may run
on any thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from dedup_app.controllers.models import ModelService
from dedup_app.core.duplicates import DuplicateFinder, DuplicateGroup
from dedup_app.core.files import FileError
from dedup_app.core.marking import SURE_SIMILARITY, Marks, mark_groups
from dedup_app.core.progress import CancelToken, Job, Progress
from dedup_app.core.units import count_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grouping:
    """Groups at one threshold and what ``rule`` (with these reference folders) marks in each."""

    groups: list[DuplicateGroup]
    rule: str
    references: tuple[str, ...]
    marks: list[Marks]


@dataclass(frozen=True)
class ScanOutcome:
    """A finished scan: the finder, the model it used (and that model's calibrated threshold), the threshold to
    show, the first grouping, and why the cache was not used (empty when it was)."""

    finder: DuplicateFinder
    model_id: str
    calibrated: float
    threshold: float
    grouping: Grouping
    cache_problem: str = ""
    #: the grouping made ready to show, on the worker (the window's ``prepare`` hook), or None
    prepared: Any = None


def grouping(
    finder: DuplicateFinder,
    threshold: float,
    rule: str,
    references: Sequence[str],
    removed: Collection[str] = (),
    not_duplicates: Collection[frozenset[str]] = (),
) -> Grouping:
    """Groups at ``threshold`` without the ``removed`` files and the ``not_duplicates`` pairs, with the rule's
    marks (files below :data:`SURE_SIMILARITY` to the kept one left for review). Thread-safe."""
    groups = finder.groups(threshold, set(not_duplicates), set(removed))
    refs = tuple(references)
    return Grouping(groups, rule, refs, mark_groups(groups, rule, refs, None, SURE_SIMILARITY))


class Review:
    """The current scan's results and the threshold the user looks at them with."""

    def __init__(self, slider_range: tuple[float, float] = (0.70, 0.99)) -> None:
        self.finder: DuplicateFinder | None = None
        self.model_id: str | None = None  # the model that embedded the finder's images
        self.slider_range = slider_range
        self._paths: tuple[DuplicateFinder, set[str]] | None = None  # the finder's paths, once files were removed

    def scan_job(
        self,
        roots: Sequence[str],
        models: ModelService,
        cache_path: str | None,
        not_duplicates: Collection[frozenset[str]],
        rule: str,
        references: Sequence[str],
        prepare: Callable[[Grouping], Any] | None = None,
    ) -> Job:
        """The job that scans ``roots`` with the active model and returns a :class:`ScanOutcome`; ``prepare``
        (optional, run on the worker too) turns the first grouping into what the window shows.

        With the default cache unusable (damaged and not movable, read-only) it scans without one and says why; a
        cache the user chose (``cache_path``) that cannot be used is an error.
        """
        roots = list(roots)
        low, high = self.slider_range

        def job(cancel: CancelToken) -> Generator[Progress, None, ScanOutcome]:
            from dedup_app.core.cache import CacheError
            from dedup_app.core.duplicates import scan_and_search

            if models.embedder is None:
                yield Progress("Loading the model", 0, None)
            embedder = models.load()
            wanted = models.threshold_for(embedder)
            problem = ""
            try:
                finder = yield from scan_and_search(roots, embedder, cache_path, cancel=cancel, threshold=wanted)
            except CacheError as exc:
                if cache_path is not None:
                    raise  # the user's own cache: say so (error dialog) rather than quietly not using it
                log.warning("%s; scanning without a cache this time", exc)
                problem = f"{exc}: nothing is remembered for the next scan"
                finder = yield from scan_and_search(roots, embedder, ":memory:", cancel=cancel, threshold=wanted)
            threshold = min(max(wanted, self.floor_of(finder)), high)
            yield Progress("Grouping", 0, None)
            first = grouping(finder, threshold, rule, references, (), not_duplicates)
            prepared = prepare(first) if prepare is not None else None
            return ScanOutcome(finder, embedder.model_id, float(embedder.threshold), threshold, first, problem,
                               prepared)  # fmt: skip

        return job

    def scan_done(self, outcome: ScanOutcome) -> None:
        """Keep a finished scan's finder (the window shows its grouping)."""
        self.finder, self.model_id = outcome.finder, outcome.model_id

    def floor_of(self, finder: DuplicateFinder) -> float:
        """The lowest threshold the slider may take for ``finder``: what was searched, rounded up to the slider's
        0.001 steps, and not below the slider's range."""
        assert finder.graph is not None
        searched = finder.graph.min_threshold
        return max(self.slider_range[0], math.ceil(round(searched * 1000, 6)) / 1000)

    def floor(self) -> float:
        """The slider's lowest threshold for the current scan (its range's bottom before any scan)."""
        return self.floor_of(self.finder) if self.finder is not None else self.slider_range[0]

    def apart_note(self, threshold: float) -> str:
        """How many look-alike pairs at ``threshold`` the geometric check keeps apart, as a short note, else ''."""
        n = self.finder.apart_at(threshold) if self.finder is not None else 0
        return f"{count_of(n, 'look-alike pair')} kept apart" if n else ""

    def crowded_note(self, threshold: float) -> str:
        """A short note when, at ``threshold``, some images had more similar images than the search keeps (their
        groups may be split), else ''."""
        graph = self.finder.graph if self.finder is not None else None
        n = graph.at(threshold).capped if graph is not None else 0
        if graph is None or not n:
            return ""
        return (f"{count_of(n, 'image')} with over {graph.max_neighbors} similar images: large groups may be "
                "split")  # fmt: skip

    def images_left(self, removed: Collection[str]) -> int:
        """Images of the scan still in place."""
        if self.finder is None:
            return 0
        images = self.finder.result.images
        if not removed:  # the common case, and the only cheap one at a million files
            return len(images)
        if self._paths is None or self._paths[0] is not self.finder:
            self._paths = (self.finder, {r.path for r in images})
        return len(images) - sum(1 for p in removed if p in self._paths[1])

    def errors(self) -> list[FileError]:
        """The files the last scan could not read."""
        return list(self.finder.result.errors) if self.finder is not None else []
