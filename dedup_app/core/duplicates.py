"""Duplicate groups from a scan result: exact copies, near-duplicates, and which file to keep.

A :class:`DuplicateFinder` searches once, at the lowest threshold the caller may want (the GUI's slider minimum),
and then regroups at any higher threshold from memory, without touching the model or the index again.

Near-duplicate grouping works on distinct contents (byte-identical files share one embedding), so exact copies
never inflate a group's similarity structure; a content's copies all land in the group of that content. Content
that has copies but no near-duplicate forms an ``exact`` group. No file is in two groups.

Each group's members are in :func:`dedup_app.core.keep.keep_ranking` order: the first is the likeliest original,
the file suggested to keep, and the representative the similarities are measured to.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import defaultdict
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from dedup_app.core.cache import EmbeddingCache
from dedup_app.core.grouping import clique_groups
from dedup_app.core.index import EXACT_MAX, SIMILARITY_TOLERANCE, SimilarityGraph, similarity_graph, unit_rows
from dedup_app.core.keep import keep_ranking
from dedup_app.core.progress import CancelToken, Progress
from dedup_app.core.scan import ImageRecord, ScanOptions, ScanResult, scan

if TYPE_CHECKING:  # torch stays out of the import of this module (the GUI imports it at start-up)
    from dedup_app.core.embedder import Embedder

log = logging.getLogger(__name__)

#: How far under the checked threshold a pair that fails the geometric check is put: it joins a group again only
#: when the user lowers the threshold by more than this.
APART = 0.001


@dataclass(frozen=True)
class GroupMember:
    """A file in a group and its similarity to the group's representative (the file suggested to keep)."""

    image: ImageRecord
    similarity: float


@dataclass(frozen=True)
class DuplicateGroup:
    """Files that are copies of each other. ``members[0]`` is the keep suggestion and the representative."""

    kind: str  # "exact" or "near"
    members: tuple[GroupMember, ...]
    #: the members' embeddings (row k belongs to members[k]), for similarities between any two of them
    vectors: np.ndarray | None = field(default=None, compare=False, repr=False)

    def similarities_to(self, k: int) -> np.ndarray:
        """Cosine similarity of every member to member ``k`` (1.0 for byte copies of it, and for ``k`` itself).

        Without stored vectors, only the representative's (``k == 0``) are known; other rows are NaN."""
        ref = self.members[k].image.content_hash
        if self.vectors is not None:
            v = self.vectors.astype(np.float32)
            sims = np.minimum(v @ v[k], 1.0)
        elif k == 0:
            sims = np.array([m.similarity for m in self.members], np.float32)
        else:
            sims = np.full(len(self.members), np.nan, np.float32)
        identical = np.array([m.image.content_hash == ref for m in self.members])
        sims[identical] = 1.0
        return sims

    @property
    def keep(self) -> ImageRecord:
        """The file suggested to keep: the likeliest original (:func:`dedup_app.core.keep.keep_ranking`)."""
        return self.members[0].image

    @property
    def reclaimable_bytes(self) -> int:
        """Bytes freed by removing every member except the keep suggestion."""
        return sum(m.image.size for m in self.members[1:])

    @property
    def min_similarity(self) -> float:
        """Lowest similarity of a member to the representative."""
        return min(m.similarity for m in self.members[1:]) if len(self.members) > 1 else 1.0


def keep_order(image: ImageRecord) -> tuple[int, int, int, str]:
    """Sort key of the "resolution" rule: most pixels, then most bytes, then oldest, then path. (The suggestion
    before the keep evidence: it keeps a framed copy over its source, a sharpened or PNG copy on a tie.)"""
    return (-image.pixels, -image.size, image.mtime_ns, image.path)


class DuplicateFinder:
    """Groups of a :class:`ScanResult` at any threshold >= ``min_threshold`` after one :meth:`search`."""

    def __init__(self, result: ScanResult, exact_max: int = EXACT_MAX) -> None:
        self.result = result
        self.exact_max = exact_max
        by_hash: dict[str, list[int]] = defaultdict(list)
        for k, image in enumerate(result.images):
            by_hash[image.content_hash].append(k)
        #: image indices per distinct content, in scan order
        self.contents: list[list[int]] = list(by_hash.values())
        self._content_of = np.zeros(len(result.images), np.int64)  # image index -> its content's row in _vectors
        for c, ks in enumerate(self.contents):
            self._content_of[ks] = c
        firsts = [c[0] for c in self.contents]
        distinct = len(firsts) == len(result.embeddings)  # every file its own content: rows in scan order already
        self._vectors = (
            unit_rows(result.embeddings if distinct else result.embeddings[firsts])
            if self.contents
            else np.zeros((0, result.embeddings.shape[1] if result.embeddings.ndim == 2 else 1), np.float32)
        )
        del firsts
        self.graph: SimilarityGraph | None = None
        #: the threshold the geometric check ran at (None: not run)
        self.checked_at: float | None = None
        self._apart = np.zeros(0, np.float32)  # similarities of the pairs the check set apart

    def search(self, min_threshold: float, cancel: CancelToken | None = None) -> Generator[Progress, None, None]:
        """Find all pairs of distinct contents at or above ``min_threshold`` (yields progress)."""
        self.graph = yield from similarity_graph(self._vectors, min_threshold, self.exact_max, cancel)

    def check_geometry(
        self, threshold: float, cache: EmbeddingCache | None = None, cancel: CancelToken | None = None
    ) -> Generator[Progress, None, int]:
        """Check the pairs at ``threshold`` and under :data:`~dedup_app.core.pair_check.VERIFY_BELOW` geometrically
        (:mod:`dedup_app.core.pair_check`): a pair whose files do not map onto each other (two photos of one subject,
        not copies, nor both copies of a third image) has its similarity set just under ``threshold``, so it groups
        only when the user lowers the threshold past it. Results are kept in ``cache`` by content and method, so a
        rescan checks only new pairs.
        Returns the number of pairs set apart (also in :attr:`set_apart`)."""
        from dedup_app.core import pair_check

        if self.graph is None:
            raise RuntimeError("call search() before check_geometry()")
        g = self.graph
        images = self.result.images
        first = [images[c[0]] for c in self.contents]
        paths, keys = [im.path for im in first], [im.content_hash for im in first]
        apart = yield from pair_check.apart_edges(g.i, g.j, g.s, paths, keys, threshold, cache, cancel)
        self._apart = g.s[apart].copy()
        if apart.any():
            s = g.s.copy()
            s[apart] = np.float32(threshold - APART)
            self.graph = dataclasses.replace(g, s=s)
        self.checked_at = threshold
        return self.set_apart

    @property
    def set_apart(self) -> int:
        """Pairs the geometric check set apart."""
        return len(self._apart)

    def apart_at(self, threshold: float) -> int:
        """Pairs at or above ``threshold`` by similarity that the geometric check keeps out of the groups (0 under
        the threshold it ran at, where they group again)."""
        if self.checked_at is None or threshold < self.checked_at - APART / 2:
            return 0
        return int(np.count_nonzero(self._apart >= threshold - SIMILARITY_TOLERANCE))

    def groups(
        self,
        threshold: float,
        not_duplicates: set[frozenset[str]] | None = None,
        removed: set[str] | None = None,
    ) -> list[DuplicateGroup]:
        """Exact and near-duplicate groups at ``threshold``, largest reclaimable size first.

        ``not_duplicates`` holds content-hash pairs the user labelled "not duplicate": such a pair is never in one
        group. Files in ``removed`` (trashed or moved away) are left out *before* grouping: with x~y and y~z but
        not x~z, removing x lets y and z form a group.
        """
        if self.graph is None:
            raise RuntimeError("call search() before groups()")
        removed = removed or set()
        graph = self.graph.at(threshold)
        if not_duplicates:
            graph = self._without_pairs(graph, not_duplicates)
        if removed:
            graph = self._without_contents(graph, self._gone(removed))
        near = clique_groups(graph)
        in_near = {c for group in near for c in group}
        candidates = [("near", group) for group in near]
        candidates += [
            ("exact", [c]) for c in range(len(self.contents)) if len(self.contents[c]) > 1 and c not in in_near
        ]
        out = [g for kind, ids in candidates if (g := self._group(kind, ids, removed)) is not None]
        # largest reclaimable size, then most members, then path: sorted by NumPy (it sorts without holding Python's
        # interpreter lock; a list sort of 200,000 tuples holds it for a good part of a second)
        freed = np.fromiter((g.reclaimable_bytes for g in out), np.int64, len(out))
        count = np.fromiter((len(g.members) for g in out), np.int64, len(out))
        paths = np.array([g.keep.path for g in out], dtype=str)
        return [out[k] for k in np.lexsort((paths, -count, -freed)).tolist()]

    def labelled_apart(self, threshold: float, not_duplicates: set[frozenset[str]]) -> int:
        """How many pairs at or above ``threshold`` the "not duplicate" labels keep out of the groups."""
        if self.graph is None:
            raise RuntimeError("call search() before labelled_apart()")
        if not not_duplicates:
            return 0
        graph = self.graph.at(threshold)
        return len(graph.s) - len(self._without_pairs(graph, not_duplicates).s)

    def _without_pairs(self, graph: SimilarityGraph, pairs: set[frozenset[str]]) -> SimilarityGraph:
        images = self.result.images
        content_of = {images[c[0]].content_hash: k for k, c in enumerate(self.contents)}
        keys = []
        for pair in pairs:
            ids = sorted(content_of[h] for h in pair if h in content_of)
            if len(ids) == 2:
                keys.append(ids[0] * graph.n + ids[1])
        if not keys:
            return graph
        keep = ~np.isin(graph.i * graph.n + graph.j, np.array(keys, dtype=np.int64))
        return dataclasses.replace(graph, i=graph.i[keep], j=graph.j[keep], s=graph.s[keep])

    def _gone(self, removed: set[str]) -> np.ndarray:
        """Contents none of whose files is left (all trashed or moved away)."""
        images = self.result.images
        return np.array([c for c, ks in enumerate(self.contents) if all(images[k].path in removed for k in ks)],
                        dtype=np.int64)  # fmt: skip

    @staticmethod
    def _without_contents(graph: SimilarityGraph, gone: np.ndarray) -> SimilarityGraph:
        if not len(gone):
            return graph
        keep = ~(np.isin(graph.i, gone) | np.isin(graph.j, gone))
        return dataclasses.replace(graph, i=graph.i[keep], j=graph.j[keep], s=graph.s[keep])

    def _group(self, kind: str, content_ids: list[int], removed: set[str]) -> DuplicateGroup | None:
        images = self.result.images
        members = [k for c in content_ids for k in self.contents[c] if images[k].path not in removed]
        if len(members) < 2:
            return None
        members = [members[i] for i in keep_ranking([images[k] for k in members])]
        rep_hash = images[members[0]].content_hash
        if all(images[k].content_hash == rep_hash for k in members):
            kind = "exact"  # what is left of a near group may be copies of one content only
        vectors = self._vectors[self._content_of[members]]  # unit length, as searched: a same-picture pair is 1.0
        sims = vectors @ vectors[0]
        return DuplicateGroup(
            kind,
            tuple(
                GroupMember(images[k], 1.0 if images[k].content_hash == rep_hash else float(min(1.0, s)))
                for k, s in zip(members, sims, strict=True)
            ),
            vectors,
        )


def find_groups(
    result: ScanResult, threshold: float | None = None, cancel: CancelToken | None = None
) -> Generator[Progress, None, list[DuplicateGroup]]:
    """One-shot grouping at ``threshold`` (default: the model's calibrated threshold)."""
    t = result.threshold if threshold is None else threshold
    finder = DuplicateFinder(result)
    yield from finder.search(t, cancel)
    return finder.groups(t)


def update_index(cache: EmbeddingCache, model_id: str, dim: int) -> None:
    """Bring the model's persistent vector index up to date with the cache after a scan. A failure is logged, never
    raised: the scan's result stands, and the index is brought up to date (or rebuilt) at the next search."""
    from dedup_app.core.vector_index import VectorIndex

    try:
        VectorIndex.open(cache, model_id, dim)
    except (OSError, RuntimeError, MemoryError, ValueError) as exc:
        log.warning("the search index of %s could not be updated (%s); it is at the next search", model_id, exc)


def search_floor(n_images: int, threshold: float) -> float:
    """The lowest similarity searched up front, so a threshold slider regroups from memory down to it.

    Unrelated photos often score 0.6-0.8 with this kind of embedding, so the floor rises with collection size to
    keep the number of stored pairs in the low millions; it never exceeds the working threshold.
    """
    floor = 0.70 if n_images <= 5_000 else 0.75 if n_images <= 20_000 else 0.80
    return min(floor, threshold)


def scan_and_search(
    roots: Sequence[str | os.PathLike[str]],
    embedder: Embedder,
    cache: EmbeddingCache | str | os.PathLike[str] | None,
    options: ScanOptions | None = None,
    floor: float | None = None,
    cancel: CancelToken | None = None,
    threshold: float | None = None,
    check: bool = True,
) -> Generator[Progress, None, DuplicateFinder]:
    """Scan ``roots`` and search their similarity graph; the finder then groups at any threshold >= the floor.

    The one scan orchestration of the window and the command line. ``cache`` is an open cache (left open), or a
    path (``None``: the default cache) opened and closed inside, so the whole job can run on a worker thread.
    ``floor`` defaults to :func:`search_floor` for the number of images found and ``threshold`` (default: the
    model's calibrated threshold). With ``check``, the look-alike pairs at the working threshold are checked
    geometrically (:meth:`DuplicateFinder.check_geometry`).
    """
    own = not isinstance(cache, EmbeddingCache)
    store = EmbeddingCache(cache) if not isinstance(cache, EmbeddingCache) else cache
    try:
        result = yield from scan(roots, embedder, store, options, cancel)
        if store.path is not None:  # keep the find-by-example index of everything scanned up to date
            yield Progress("Updating the search index", 0, None)
            update_index(store, embedder.model_id, embedder.dim)
        finder = DuplicateFinder(result)
        working = result.threshold if threshold is None else threshold
        if floor is None:
            floor = search_floor(len(result.images), working)
        yield from finder.search(floor, cancel)
        if check:
            yield from finder.check_geometry(max(working, floor), store, cancel)
    finally:
        if own:
            store.close()
    return finder
