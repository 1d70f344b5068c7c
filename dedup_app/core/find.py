"""Find by example: where are the copies of this image among everything scanned?

The Siamese model's one-shot search. Each query image is embedded as the scan embeds a file (any format the scanner
reads, EXIF orientation applied, the vector rounded as the cache stores it), and looked up in the model's persistent
vector index (:mod:`dedup_app.core.vector_index`), which holds every file the cache has a vector for. With ``roots``
the search is limited to files under them, and a root with nothing cached yet is scanned first (``rescan`` scans
every root again: changed and new files are picked up, vanished ones dropped).

A match is a file the index holds, other than the query itself, that still exists with the size and time it was
scanned with; files changed or removed since their scan are left out and counted (``stale``), since their vector no
longer describes them. Each match has its similarity (the one ``scan`` groups by), whether that is at or above the
model's threshold, and the calibrated probability that it is a copy (:mod:`dedup_app.core.calibration`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dedup_app.core.cache import EmbeddingCache
from dedup_app.core.calibration import calibration_of
from dedup_app.core.index import SIMILARITY_TOLERANCE, unit_rows
from dedup_app.core.progress import CancelToken, Progress
from dedup_app.core.scan import ScanOptions, scan
from dedup_app.core.vector_index import SyncReport, VectorIndex

if TYPE_CHECKING:
    from dedup_app.core.embedder import Embedder

#: Default number of matches per query.
DEFAULT_TOP = 10
#: Candidates asked of the index beyond ``top``, for the query itself and files gone since their scan.
_SLACK = 8


@dataclass(frozen=True)
class Match:
    """One file similar to a query."""

    path: str
    similarity: float
    probability: float | None  # None when the model file carries no calibration
    duplicate: bool  # at or above the model's threshold, and not set apart by the geometric check
    width: int | None
    height: int | None
    bytes: int
    content_hash: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "similarity": round(self.similarity, 6),
            "probability": None if self.probability is None else round(self.probability, 6),
            "duplicate": self.duplicate,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class QueryResult:
    """The matches of one query, most similar first, or why the query could not be read."""

    query: str
    matches: tuple[Match, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "matches": [m.to_json() for m in self.matches], "error": self.error}


@dataclass
class FindResult:
    """What :func:`find_similar` returns; :meth:`to_json` is the ``find`` command's JSON."""

    model_id: str
    threshold: float
    queries: list[QueryResult]
    indexed: int  # vectors searched (all the index holds, or those under the roots)
    stale: int = 0  # candidates left out because their file changed or vanished since its scan
    sync: SyncReport | None = None
    scanned: list[str] = field(default_factory=list)  # roots scanned first

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model_id, "threshold": self.threshold, "queries": [q.to_json() for q in self.queries]}


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def find_similar(
    embedder: Embedder,
    cache: EmbeddingCache,
    queries: Sequence[str | os.PathLike[str]],
    roots: Sequence[str | os.PathLike[str]] | None = None,
    top: int = DEFAULT_TOP,
    min_similarity: float | None = None,
    threshold: float | None = None,
    rescan: bool = False,
    options: ScanOptions | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, FindResult]:
    """Search the indexed collection (limited to ``roots`` when given) for the ``top`` files most similar to each
    query, at or above ``min_similarity`` when given; yields progress, returns a :class:`FindResult`. A query that
    cannot be read gets ``error`` set; the others go on."""
    from dedup_app.core.imageio import DEFAULT_MAX_PIXELS, ImageLoadError, load_for_embedding

    options = options or ScanOptions()
    cancel = cancel or CancelToken()
    model_id = embedder.model_id
    threshold = embedder.threshold if threshold is None else threshold
    abs_roots = [os.path.abspath(os.fspath(r)) for r in roots or ()]
    to_scan = [r for r in abs_roots if rescan or not len(cache.ids_under(model_id, [r]))]
    if to_scan:
        yield from scan(to_scan, embedder, cache, options, cancel)
    cancel.raise_if_cancelled()
    yield Progress("Loading the index", 0, None)
    index, sync = VectorIndex.open(cache, model_id, embedder.dim)
    allowed = cache.ids_under(model_id, abs_roots) if abs_roots else None
    indexed = len(index) if allowed is None else len(allowed)

    results: list[QueryResult | None] = [None] * len(queries)
    pixels, rows = [], []
    for k, query in enumerate(queries):
        path = os.fspath(query)
        try:
            loaded = load_for_embedding(path, embedder.input_size, options.max_pixels or DEFAULT_MAX_PIXELS)
            pixels.append(loaded.pixels)
            rows.append(k)
        except ImageLoadError as exc:
            results[k] = QueryResult(path, error=str(exc))
        except OSError as exc:
            results[k] = QueryResult(path, error=f"cannot read file: {exc.strerror or exc}")
        cancel.raise_if_cancelled()
        yield Progress("Reading the queries", k + 1, len(queries))
    calibration = calibration_of(embedder.checkpoint.metrics)
    stale = 0
    if rows:
        vectors = unit_rows(embedder.embed(pixels))
        found = index.search(vectors, top + _SLACK, cache, allowed)
        for row, (ids, sims) in zip(rows, found, strict=True):
            query = os.fspath(queries[row])
            matches, gone = _matches(cache, model_id, query, ids, sims, top, min_similarity, threshold, calibration)
            stale += gone
            results[row] = QueryResult(query, tuple(matches))
    yield from _check_geometry(results, cancel)
    done = [r for r in results if r is not None]
    return FindResult(model_id, threshold, done, indexed, stale, sync, to_scan)


def _check_geometry(results: list[QueryResult | None], cancel: CancelToken) -> Generator[Progress, None, None]:
    """The scan's geometric check on each query's look-alike matches (at the threshold, under VERIFY_BELOW), in
    place: a match whose keypoints do not map onto the query's is no duplicate (the same subject, not a copy)."""
    from dedup_app.core import pair_check

    todo = [(q, k) for q, r in enumerate(results) if r is not None for k, m in enumerate(r.matches)
            if m.duplicate and m.similarity < pair_check.VERIFY_BELOW]  # fmt: skip
    if not todo:
        return
    cancel.raise_if_cancelled()
    yield Progress(pair_check.STAGE, 0, len(todo))
    with pair_check.PairChecker() as checker:
        counts = checker.check([(r.query, r.matches[k].path) for q, k in todo if (r := results[q]) is not None])
    for (q, k), count in zip(todo, counts.tolist(), strict=True):
        r = results[q]
        if r is not None and pair_check.is_copy(count) is False:
            matches = list(r.matches)
            matches[k] = dataclasses.replace(matches[k], duplicate=False)
            results[q] = dataclasses.replace(r, matches=tuple(matches))
    yield Progress(pair_check.STAGE, len(todo), len(todo))


def _matches(
    cache: EmbeddingCache,
    model_id: str,
    query: str,
    ids: np.ndarray,
    sims: np.ndarray,
    top: int,
    min_similarity: float | None,
    threshold: float,
    calibration: Any,
) -> tuple[list[Match], int]:
    """The search hits as matches: the query itself, files gone or changed since their scan (counted) and hits
    under ``min_similarity`` left out, at most ``top``."""
    facts = cache.files_of(model_id, ids.tolist())
    out: list[Match] = []
    gone = 0
    for vid, sim in zip(ids.tolist(), sims.tolist(), strict=True):
        if len(out) >= top:
            break
        if min_similarity is not None and sim < min_similarity - SIMILARITY_TOLERANCE:
            break
        if vid not in facts:
            continue
        file = facts[vid]
        path, info = file.path, file.info
        try:
            st = os.stat(path)
        except OSError:
            gone += 1
            continue
        if st.st_size != file.size or st.st_mtime_ns != file.mtime_ns:
            gone += 1
            continue
        if _same_file(path, query):
            continue
        sim = min(1.0, float(sim))
        out.append(Match(
            path, sim, None if calibration is None else calibration.probability(sim),
            sim >= threshold - SIMILARITY_TOLERANCE, info.width if info else None, info.height if info else None,
            file.size, file.content_hash,
        ))  # fmt: skip
    return out, gone
