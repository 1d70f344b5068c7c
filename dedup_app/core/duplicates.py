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

from dedup_app.core.bulk import drain, flat_array, text_array
from dedup_app.core.cache import EmbeddingCache
from dedup_app.core.grouping import clique_groups
from dedup_app.core.index import EXACT_MAX, SIMILARITY_TOLERANCE, SimilarityGraph, UnitRows, similarity_graph
from dedup_app.core.keep import keep_ranking
from dedup_app.core.progress import CancelToken, Progress
from dedup_app.core.scan import ImageRecord, ScanOptions, ScanResult, scan

if TYPE_CHECKING:  # torch stays out of the import of this module (the GUI imports it at start-up)
    from dedup_app.core.embedder import Embedder

log = logging.getLogger(__name__)

#: How far under the checked threshold a pair that fails the geometric check is put: it joins a group again only
#: when the user lowers the threshold by more than this.
APART = 0.001
#: Member similarities worked out per NumPy call when groups are made (64 MB of gathered vectors per side)
_DOT_BLOCK = 65_536


@dataclass(frozen=True, slots=True)
class GroupMember:
    """A file in a group and its similarity to the group's representative (the file suggested to keep)."""

    image: ImageRecord
    similarity: float


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Files that are copies of each other. ``members[0]`` is the keep suggestion and the representative."""

    kind: str  # "exact" or "near"
    members: tuple[GroupMember, ...]
    #: the members' embeddings as rows of a matrix all groups of one search share: ``(matrix, row per member)``
    #: (no copy per group: at a million files the groups' own copies were half a gigabyte)
    rows: tuple[UnitRows, tuple[int, ...]] | None = field(default=None, compare=False, repr=False)

    @property
    def vectors(self) -> np.ndarray | None:
        """The members' embeddings (row k belongs to members[k]), for similarities between any two of them."""
        return None if self.rows is None else self.rows[0][list(self.rows[1])]

    def similarities_to(self, k: int) -> np.ndarray:
        """Cosine similarity of every member to member ``k`` (1.0 for byte copies of it, and for ``k`` itself).

        Without stored vectors, only the representative's (``k == 0``) are known; other rows are NaN. (For many
        groups at once: :func:`similarities_to_members`.)"""
        return similarities_to_members([self], [k])[0]

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


def similarities_to_members(groups: Sequence[DuplicateGroup], ks: Sequence[int]) -> list[np.ndarray]:
    """``groups[g].similarities_to(ks[g])`` for every group, the vector arithmetic of all of them in a few large
    NumPy calls (:func:`row_dots`)."""
    out: list[np.ndarray] = []
    work: dict[int, list[int]] = defaultdict(list)  # groups with vectors, by the matrix they share
    for g, (group, k) in enumerate(zip(groups, ks, strict=True)):
        if k != 0 and group.rows is not None:  # from the vectors, below
            work[id(group.rows[0])].append(g)
            out.append(np.empty(0, np.float32))
            continue
        # the representative's were worked out when the group was made; without vectors no other member's are known
        sims = np.array([m.similarity for m in group.members] if k == 0 else [np.nan] * len(group.members), np.float32)
        ref = group.members[k].image.content_hash
        sims[[m.image.content_hash == ref for m in group.members]] = 1.0
        out.append(sims)
    for todo in work.values():
        matrix = groups[todo[0]].rows[0]  # type: ignore[index]
        rows = np.fromiter((r for g in todo for r in groups[g].rows[1]), np.int64)  # type: ignore[index]
        sizes = [len(groups[g].members) for g in todo]
        refs = np.repeat([groups[g].rows[1][ks[g]] for g in todo], sizes)  # type: ignore[index]
        for g, part in zip(todo, np.split(_similarities(matrix, rows, refs), np.cumsum(sizes)[:-1]), strict=True):
            out[g] = part
    return out


def _similarities(matrix: UnitRows, rows: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """The similarity of each row to its reference row as a group shows it: 1.0 for the same content (a byte copy,
    or the reference itself), never above 1.0."""
    return np.where(rows == refs, np.float32(1.0), np.minimum(row_dots(matrix, rows, refs), np.float32(1.0)))


def row_dots(matrix: UnitRows, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``matrix[a[i]] . matrix[b[i]]`` for every i, in blocks of :data:`_DOT_BLOCK` (float32).

    One small matrix product per group lets go of Python's interpreter lock and takes it back thousands of times a
    second, and a window waiting for the lock meanwhile (a slider regroup runs on a pool thread) waited for a
    quarter of a second; a few large products let it in."""
    out = np.empty(len(a), np.float32)
    for start in range(0, len(a), _DOT_BLOCK):
        part = slice(start, start + _DOT_BLOCK)
        out[part] = np.einsum("ij,ij->i", matrix[a[part]], matrix[b[part]], dtype=np.float32)
    return out


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
        #: contents with byte copies (an "exact" group where no near group holds them)
        self._copied = [c for c, ks in enumerate(self.contents) if len(ks) > 1]
        firsts = [c[0] for c in self.contents]
        distinct = len(firsts) == len(result.embeddings)  # every file its own content: rows in scan order already
        # the cache's float16 vectors themselves where every file is its own content (no copy; see UnitRows)
        self._vectors = UnitRows(
            (result.embeddings if distinct else result.embeddings[firsts])
            if self.contents
            else np.zeros((0, result.embeddings.shape[1] if result.embeddings.ndim == 2 else 1), np.float16)
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
        in_near = np.zeros(len(self.contents), bool)
        in_near[flat_array(near)] = True
        candidates = [("near", group) for group in near]
        del near
        candidates += [("exact", [c]) for c in self._copied if not in_near[c]]
        picked = [(kind, members) for kind, ids in candidates if (members := self._members(ids, removed)) is not None]
        drain(candidates)
        out = self._made(picked)
        # largest reclaimable size, then most members, then path: sorted by NumPy (it sorts without holding Python's
        # interpreter lock; a list sort of 200,000 tuples holds it for a good part of a second)
        freed = np.fromiter((g.reclaimable_bytes for g in out), np.int64, len(out))
        count = np.fromiter((len(g.members) for g in out), np.int64, len(out))
        paths = text_array([g.keep.path for g in out])
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

    def _members(self, content_ids: list[int], removed: set[str]) -> list[int] | None:
        """The images of ``content_ids`` not removed, best to keep first (None: fewer than two)."""
        images = self.result.images
        members = [k for c in content_ids for k in self.contents[c] if images[k].path not in removed]
        if len(members) < 2:
            return None
        return [members[i] for i in keep_ranking([images[k] for k in members])]

    def _made(self, picked: list[tuple[str, list[int]]]) -> list[DuplicateGroup]:
        """The groups of ``picked`` (kind, image indices best first; emptied), each member's similarity to the
        first, worked out for all groups at once (:func:`row_dots`)."""
        images = self.result.images
        sizes = np.fromiter((len(members) for _, members in picked), np.int64, len(picked))
        flat = np.fromiter((k for _, members in picked for k in members), np.int64, int(sizes.sum()))
        rows = self._content_of[flat]
        starts = np.cumsum(sizes) - sizes
        firsts = np.repeat(rows[starts], sizes)
        sims = _similarities(self._vectors, rows, firsts).tolist()
        row_list = rows.tolist()
        # what is left of a near group may be copies of one content only
        one_content = np.logical_and.reduceat(rows == firsts, starts).tolist() if len(picked) else []
        out = []
        at = 0
        picked.reverse()  # emptied as it goes (see drain)
        for copies in one_content:
            kind, members = picked.pop()
            end = at + len(members)
            out.append(DuplicateGroup(
                "exact" if copies else kind,
                tuple(GroupMember(images[k], s) for k, s in zip(members, sims[at:end], strict=True)),
                (self._vectors, tuple(row_list[at:end])),
            ))  # fmt: skip
            at = end
        return out


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
