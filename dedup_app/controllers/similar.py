"""Find similar in the window: the files most like one image, shown as a group the user reviews like the others.

The search is :func:`dedup_app.core.find.find_similar` over the persistent index of everything the cache has scanned,
run as one job on the worker (load the model if needed, search, read what the view shows about each file). The
result is kept here and turned into a :class:`SimilarGroup` each time the window regroups: the query first, as the
group's reference (never marked, whatever the rule), then the matches most similar first: every copy (at or above
the threshold the window shows, so the slider moves the line between copies and the rest) and the next few files
below it, for contrast. Files trashed or moved since leave it; undo brings them back.

A query the cache has not scanned (a file from elsewhere, a pasted image saved to a temporary file) is *external*:
it is only ever the reference, never in another group, so nothing offers it for removal.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dedup_app.core.duplicates import APART, DuplicateGroup, GroupMember
from dedup_app.core.files import FileEntry
from dedup_app.core.imageio import ImageInfo
from dedup_app.core.index import SIMILARITY_TOLERANCE
from dedup_app.core.marking import Marks
from dedup_app.core.progress import CancelToken, Job, Progress
from dedup_app.core.scan import ImageRecord
from dedup_app.core.units import count_of

if TYPE_CHECKING:
    from dedup_app.controllers.models import ModelService
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.find import Match

#: ``DuplicateGroup.kind`` of a Find similar result.
SIMILAR = "similar"
#: Matches asked of the index: every copy of the query, in all but extreme collections.
TOP = 100
#: Matches below the threshold shown after the copies, so the user sees where the copies end.
NEAR_MISSES = 5


@dataclass(frozen=True)
class SimilarGroup(DuplicateGroup):
    """A Find similar result as a group: ``members[0]`` is the query (kept, never marked), then the matches shown,
    most similar first, each with its similarity to the query."""

    title: str = ""  # the query as the user knows it: its file name, or "the pasted image"
    external: bool = False  # the query is not among the scanned files
    probabilities: tuple[float | None, ...] = ()  # per member (the query's is None): the calibrated P(copy)
    copies: frozenset[str] = frozenset()  # matches at or above ``threshold``
    threshold: float = 0.0
    more: int = 0  # matches found below the threshold and not shown

    def probability(self, path: str) -> float | None:
        """The calibrated probability that ``path`` is a copy of the query (None: not known)."""
        for member, p in zip(self.members, self.probabilities, strict=False):
            if member.image.path == path:
                return p
        return None

    @property
    def query(self) -> ImageRecord:
        return self.members[0].image


def probability_text(p: float) -> str:
    """A probability as people read it: ``99.6%``, and ``>99.9%`` / ``<0.1%`` rather than a certainty it is not."""
    if p >= 0.9995:
        return ">99.9%"
    if p < 0.0005:
        return "<0.1%"
    return f"{p:.1%}"


def similar_marks(group: SimilarGroup) -> Marks:
    """What a rule does to a Find similar result: keep the query, mark nothing (the user ticks)."""
    return Marks(group.query.path, frozenset())


@dataclass(frozen=True)
class SimilarResult:
    """A finished search: the query, its ranked matches (with what the view shows of each file), how many files
    were searched, or why it could not be done (``error``, naming the file; ``indexed == 0``: nothing scanned)."""

    query: str
    title: str
    model_id: str = ""
    record: ImageRecord | None = None
    external: bool = True
    matches: tuple[tuple[ImageRecord, Match], ...] = ()
    indexed: int = 0
    stale: int = 0
    error: str | None = None
    threshold: float = 0.0


class SimilarSearch:
    """The Find similar result on screen (one at a time; a new search replaces it)."""

    def __init__(self) -> None:
        self.result: SimilarResult | None = None

    def job(self, query: str, models: ModelService, cache_path: str | None, title: str | None = None) -> Job:
        """The job searching the files most similar to ``query`` (a path) with the active model; it returns a
        :class:`SimilarResult` (pass it to :meth:`done`). ``title`` names the query for the user (default: its
        file name)."""
        query = os.path.abspath(query)
        name = title or os.path.basename(query)

        def job(cancel: CancelToken) -> Generator[Progress, None, SimilarResult]:
            from dedup_app.core.cache import EmbeddingCache
            from dedup_app.core.find import find_similar

            if models.embedder is None:
                yield Progress("Loading the model", 0, None)
            embedder = models.load()
            threshold = models.threshold_for(embedder)
            yield Progress("Opening the cache", 0, None)
            cache = EmbeddingCache(cache_path)
            try:
                found = yield from find_similar(embedder, cache, [query], top=TOP, threshold=threshold, cancel=cancel)
                answer = found.queries[0]
                if answer.error is not None:
                    return SimilarResult(query, name, embedder.model_id, error=f"{query}: {answer.error}")
                if found.indexed == 0:
                    return SimilarResult(query, name, embedder.model_id, threshold=threshold)
                yield Progress("Reading the matches", 0, None)
                paths = [query] + [m.path for m in answer.matches]
                records, cached = _records(cache, embedder.model_id, paths)
            finally:
                cache.close()
            if query not in records:
                return SimilarResult(query, name, embedder.model_id, error=f"{query}: could not be read again")
            matches = tuple((records[m.path], m) for m in answer.matches if m.path in records)
            return SimilarResult(query, name, embedder.model_id, records[query], query not in cached, matches,
                                 found.indexed, found.stale, threshold=threshold)  # fmt: skip

        return job

    def done(self, result: SimilarResult, threshold: float | None = None) -> str:
        """A search finished: keep it when it can be shown; returns the status line, counting the copies at
        ``threshold`` (default: the one the search used)."""
        if result.error is not None:
            return f"Find similar: {result.error}"
        if result.indexed == 0 or result.record is None:
            return "Nothing has been scanned yet: scan a folder first, then find similar images among it."
        self.result = result
        line = result.threshold if threshold is None else threshold
        copies = sum(1 for _, m in result.matches if m.similarity >= line - SIMILARITY_TOLERANCE)
        text = (f"{count_of(copies, 'copy', 'copies')} of {result.title} among "
                f"{count_of(result.indexed, 'scanned image')}")  # fmt: skip
        if result.stale:
            text += f" ({count_of(result.stale, 'file')} changed since the scan left out: scan again to include them)"
        return text

    def clear(self) -> None:
        """Close the result (a new scan, the user closed it)."""
        self.result = None

    def group(self, threshold: float, removed: Collection[str] = ()) -> SimilarGroup | None:
        """The result as a group at ``threshold``: the query, every copy, then up to :data:`NEAR_MISSES` files below
        the threshold; without ``removed`` files. None when there is no result or its query was removed."""
        result = self.result
        if result is None or result.record is None or result.record.path in removed:
            return None
        left = [(r, m) for r, m in result.matches if r.path not in removed]
        # a match the geometric check set apart (alike, not the same picture) is no copy, unless the user lowers
        # the threshold past the one searched at, as with the duplicate groups
        strict = threshold >= result.threshold - APART / 2
        apart = {r.path for r, m in left if not m.duplicate and m.similarity >= result.threshold - SIMILARITY_TOLERANCE}
        copies = [r.path for r, m in left
                  if m.similarity >= threshold - SIMILARITY_TOLERANCE and not (strict and r.path in apart)]  # fmt: skip
        shown = left[: len(copies) + NEAR_MISSES]
        members = (GroupMember(result.record, 1.0),) + tuple(GroupMember(r, m.similarity) for r, m in shown)
        probabilities = (None,) + tuple(m.probability for _, m in shown)
        return SimilarGroup(SIMILAR, members, None, result.title, result.external, probabilities,
                            frozenset(copies), threshold, len(left) - len(shown))  # fmt: skip


def _records(cache: EmbeddingCache, model_id: str, paths: list[str]) -> tuple[dict[str, ImageRecord], set[str]]:
    """What the view shows about each file (size, time, content hash, dimensions, format), from the cache where it
    has the file as it is now, else read from the file. Returns the records (files that cannot be read are left
    out) and the paths the cache holds a vector of (the scanned collection)."""
    from dedup_app.core.imageio import ImageLoadError, decode, hash_file, read_bytes

    entries = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        entries.append(FileEntry(path, st.st_size, st.st_mtime_ns))
    known = cache.lookup(entries, model_id)
    records: dict[str, ImageRecord] = {}
    scanned: set[str] = set()
    for entry in entries:
        row = known.get(entry.path)
        if row is not None and row.vector is not None:
            scanned.add(entry.path)
        if row is not None and row.info is not None and row.content_hash is not None:
            records[entry.path] = ImageRecord(entry.path, entry.size, entry.mtime_ns, row.content_hash, row.info)
            continue
        try:
            digest = hash_file(entry.path)
            _image, info = decode(read_bytes(entry.path), target=64)
        except (OSError, ImageLoadError):
            if row is None or row.content_hash is None:
                continue
            digest, info = row.content_hash, ImageInfo(0, 0, "unknown")
        records[entry.path] = ImageRecord(entry.path, entry.size, entry.mtime_ns, digest, info)
    return records, scanned
