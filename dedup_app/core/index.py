"""Similarity search with FAISS: the pairs of embeddings at or above a threshold, at most K per image.

Embeddings are unit vectors, so inner product is cosine similarity. Up to ``exact_max`` vectors (about 100k) the
search is exact, and uses its symmetry: each block of queries is searched only against the vectors from the
block's start on, which halves the work. Above that, an inverted-file index gives each vector its candidates (8-bit
scalar codes; from half a million vectors on, 4-bit fast-scan product-quantiser codes), whose similarities are then
computed exactly from the vectors. The finder hands its vectors over as :class:`UnitRows` (float16 as the cache keeps
them, and each row's length), so no float32 copy of a million vectors is made.

A uniform collection (scanned documents, screenshots, a burst of thousands of frames) can have every pair above the
threshold, so the number of pairs is bounded: each image keeps at most ``max_neighbors`` (K) neighbours, its most
similar ones; a pair stays when it is among the K best of either of its images, so there are at most n * K pairs.
The exact search counts each image's neighbours as it goes; the K best of a "crowded" image (more than K) come from
a k-nearest-neighbour search afterwards, and a pair of two crowded images is not even searched once both are known
to be crowded. No search call returns more than one query block times one stripe of the database.

The result is a :class:`SimilarityGraph`: the edge list (i < j, similarity) found at the lowest threshold the user
may ask for, so regrouping at any higher threshold is a filter, not a new search.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dedup_app.core.progress import CancelToken, Progress

log = logging.getLogger(__name__)

#: Collections up to this size are searched exactly.
EXACT_MAX = 100_000
#: Slack in "at or above the threshold": a pair this much under it still counts as at it. Float32 dot products of
#: 256-d unit vectors are accurate to about 1e-6, so the same picture in two files (similarity 1 up to rounding)
#: is kept at a threshold of 1.0; no two different pictures are told apart by 1e-5 of similarity.
SIMILARITY_TOLERANCE = 1e-5
#: Most neighbours kept per image, its most similar ones: an image with more of them above the search floor loses
#: its weakest pairs, so only a group of more than K + 1 images can be split. On 100k near-uniform images (every
#: pair above the floor; docs/benchmarks.md, "Uniform collections") K = 50 / 100 / 200 keep 4.6 / 9.1 / 17.9
#: million pairs and peak at 1.4 / 2.4 / 4.5 GB through search and grouping (73 / 83 / 125 s): cost grows with K,
#: mostly in the grouping, and groups of 100 near-identical images are already more than anyone reviews by hand.
MAX_NEIGHBORS = 100
#: The pair search's approximate index above EXACT_MAX: inverted lists with 8-bit scalar codes (4 lists per square
#: root of the collection's size, 16 probed per query) up to FAST_SCAN_FROM vectors; on 200,000 clustered
#: embeddings it finds 99.6-99.9 % of the exact pairs at 0.80-0.95 (docs/benchmarks.md, "Approximate index recall").
#: From FAST_SCAN_FROM on, 4-bit fast-scan product-quantiser codes (one list per square root, 48 probed): at
#: 1,000,000 the 8-bit index found only 94.7 % of the edited copies, in about 124 s of search; the fast-scan one
#: finds 99.4 % of them and groups the million in 100 s, 1.6 GB (docs/benchmarks.md, "Index choice at a million").
#: Its scores are rough (up to 0.36 off), which costs pairs between similar shots: on 200,000 vectors it finds 94 %
#: of the exact pairs at 0.80 and 98.4 % at 0.829 (the default threshold), so it is kept for the sizes that need it.
IVF_LISTS_PER_SQRT = 4
IVF_NPROBE = 16
FAST_SCAN_FROM = 500_000
FAST_SCAN_NPROBE = 48
#: Vectors added to the approximate index at once (FAISS computes residuals for a whole call).
_ADD_BLOCK = 65_536

_QUERY_BLOCK = 4096
#: Database vectors per exact range-search call: no call returns more than _QUERY_BLOCK x _STRIPE pairs.
_STRIPE = 1024


class UnitRows:
    """Embeddings as the finder compares them, without a float32 copy of them all: the float16 rows as the cache
    stores them (not copied when they come as float16) and the inverse of each row's length. Indexing with a row,
    a slice or an array of rows gives float32 rows of unit length; at a million 256-d embeddings this keeps 4 MB
    beside the 512 MB of float16 where a float32 copy was another gigabyte."""

    def __init__(self, vectors: np.ndarray) -> None:
        x = np.asarray(vectors)
        #: the rows as stored (float16)
        self.raw = np.ascontiguousarray(x if x.dtype == np.float16 else x.astype(np.float16))
        if self.raw.ndim != 2:
            raise ValueError(f"embeddings must be a 2-d array, got shape {self.raw.shape}")
        norms = np.empty(len(self.raw), np.float32)
        for start in range(0, len(self.raw), _ADD_BLOCK):  # no float32 copy of all of them at once
            block = self.raw[start : start + _ADD_BLOCK].astype(np.float32)
            norms[start : start + _ADD_BLOCK] = np.sqrt(np.einsum("ij,ij->i", block, block))
        #: 1 / the length of each row (1 for a zero row, which stays zero)
        self.inverse = (1.0 / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return self.raw.shape  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, rows: Any) -> np.ndarray:
        out = self.raw[rows].astype(np.float32)
        out *= self.inverse[rows][..., None]
        return out


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as the finder compares them (:class:`UnitRows`), all of them as float32 rows of unit length:
    rounded to float16 as the cache stores them, then scaled (float16 vectors are unit length only to about 1e-3; a
    same-picture pair must score 1.0)."""
    return UnitRows(vectors)[:]


@dataclass(frozen=True)
class SimilarityGraph:
    """Edges ``(i[k], j[k])`` with ``i < j`` and similarity ``s[k] >= min_threshold``, over ``n`` vectors.

    Each image kept at most ``max_neighbors`` (K) neighbours, its most similar ones; an edge stays when it is among
    the K best of either end. ``overflow[v]`` is the similarity of image ``v``'s (K+1)-th most similar neighbour
    where it had more than K above ``min_threshold`` (``-inf`` elsewhere): pairs of such an image under its K best
    may be missing, so a group of more than K + 1 images may be split. ``max_neighbors`` and ``overflow`` are
    ``None`` for a graph built without a bound.
    """

    n: int
    i: np.ndarray
    j: np.ndarray
    s: np.ndarray
    min_threshold: float
    exact: bool
    max_neighbors: int | None = None
    overflow: np.ndarray | None = field(default=None, repr=False)

    @property
    def capped(self) -> int:
        """Number of images with more than ``max_neighbors`` neighbours at ``min_threshold`` (only the most similar
        of them kept). At a higher threshold (:meth:`at`) fewer images are affected: their best pairs are all there.
        """
        if self.overflow is None:
            return 0
        return int(np.count_nonzero(self.overflow >= self.min_threshold - SIMILARITY_TOLERANCE))

    def at(self, threshold: float) -> SimilarityGraph:
        """The sub-graph of edges at or above ``threshold`` (within :data:`SIMILARITY_TOLERANCE`), which must not be
        below ``min_threshold``."""
        if threshold < self.min_threshold - 1e-9:
            raise ValueError(f"graph was searched at {self.min_threshold:.3f}; cannot filter at {threshold:.3f}")
        keep = self.s >= threshold - SIMILARITY_TOLERANCE
        return dataclasses.replace(self, i=self.i[keep], j=self.j[keep], s=self.s[keep], min_threshold=threshold)


def ivf_lists(n: int) -> int:
    """Number of inverted lists of ``find``'s persistent index over ``n`` vectors."""
    return int(min(65536, max(64, IVF_LISTS_PER_SQRT * math.sqrt(n))))


def ivf_training_rows(n: int, nlist: int) -> np.ndarray:
    """Which of ``n`` vectors train an approximate index of ``nlist`` lists: a seeded sample of up to 64 per list."""
    rng = np.random.default_rng(0)
    return rng.choice(n, size=min(n, nlist * 64), replace=False)


def train_ivf_index(sample: np.ndarray, nlist: int) -> Any:
    """An empty approximate index (inverted lists with 8-bit scalar codes) trained on the unit vectors ``sample``
    (float32): ``find``'s persistent index."""
    import faiss

    quantizer = faiss.IndexFlatIP(sample.shape[1])
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, sample.shape[1], nlist, faiss.ScalarQuantizer.QT_8bit,
                                        faiss.METRIC_INNER_PRODUCT)  # fmt: skip
    ivf.train(sample)
    return ivf


def fast_scan(n: int) -> bool:
    """Whether the pair search over ``n`` vectors uses the 4-bit fast-scan index (else 8-bit scalar codes)."""
    return n >= FAST_SCAN_FROM


def pair_lists(n: int) -> int:
    """Number of inverted lists of the pair search's approximate index over ``n`` vectors."""
    return int(min(65536, max(64, math.sqrt(n)))) if fast_scan(n) else ivf_lists(n)


def pair_nprobe(n: int) -> int:
    """Lists probed per query by the pair search's approximate index over ``n`` vectors."""
    return FAST_SCAN_NPROBE if fast_scan(n) else IVF_NPROBE


def build_pair_index(x: np.ndarray | UnitRows, nlist: int | None = None) -> Any:
    """The pair search's approximate index over the unit vectors ``x`` (float32, or :class:`UnitRows`): inverted
    lists with 8-bit scalar codes, or from :data:`FAST_SCAN_FROM` vectors on with 4-bit fast-scan PQ codes (4
    dimensions per code; 8-bit codes where the dimension does not allow them); trained on a seeded sample, filled in
    blocks.

    Over :class:`UnitRows` it is a ``faiss.IndexRefine`` whose second index holds the float16 rows as stored (its
    float16 codes hold them exactly): the candidates are scored from them, in FAISS, without a float32 copy of all
    the vectors (:func:`_approximate_pairs` scales the scores by the rows' lengths)."""
    import faiss

    n, d = x.shape
    nlist = pair_lists(n) if nlist is None else nlist
    if not fast_scan(n) or d % 8:
        index = train_ivf_index(np.ascontiguousarray(x[np.sort(ivf_training_rows(n, nlist))], np.float32), nlist)
    else:
        rows = np.sort(np.random.default_rng(0).choice(n, size=min(n, nlist * 40), replace=False))
        index = faiss.index_factory(d, f"IVF{nlist},PQ{d // 4}x4fs", faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(x[rows], np.float32))
    stored = None
    if isinstance(x, UnitRows):
        stored = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    for start in range(0, n, _ADD_BLOCK):
        index.add(np.ascontiguousarray(x[start : start + _ADD_BLOCK], np.float32))
        if stored is not None:
            stored.add(x.raw[start : start + _ADD_BLOCK].astype(np.float32))  # type: ignore[union-attr]
    if stored is None:
        return index
    refined = faiss.IndexRefine(index, stored)  # (FAISS's Python layer keeps both alive with it)
    refined.k_factor = 1.0  # every candidate scored, none dropped (the caller asks for as many as it wants)
    return refined


def similarity_graph(
    embeddings: np.ndarray | UnitRows,
    min_threshold: float,
    exact_max: int = EXACT_MAX,
    cancel: CancelToken | None = None,
    max_neighbors: int | None = None,
    *,
    nprobe: int | None = None,
    ivf_index: Any = None,
) -> Generator[Progress, None, SimilarityGraph]:
    """Find the pairs of unit vectors with similarity >= ``min_threshold`` (within :data:`SIMILARITY_TOLERANCE`),
    at most ``max_neighbors`` (default :data:`MAX_NEIGHBORS`) per vector; yields progress per block of queries.

    Above ``exact_max`` vectors the search is approximate, with ``nprobe`` lists probed per query (default:
    :func:`pair_nprobe`); ``ivf_index`` is an index from :func:`build_pair_index` over the same vectors, to reuse
    one across searches.
    """
    x = embeddings if isinstance(embeddings, UnitRows) else np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(x)
    k = MAX_NEIGHBORS if max_neighbors is None else max_neighbors
    if k < 1:
        raise ValueError(f"max_neighbors must be at least 1, got {k}")
    exact = n <= exact_max
    radius = float(min_threshold) - SIMILARITY_TOLERANCE
    overflow = np.full(n, -np.inf, np.float32)
    if n < 2:
        i, j, s = _no_pairs()
    elif exact:  # (up to EXACT_MAX vectors: a float32 copy of them is at most 100 MB)
        i, j, s = yield from _exact_pairs(x[:] if isinstance(x, UnitRows) else x, k, radius, overflow, cancel)
    else:
        index = build_pair_index(x) if ivf_index is None else ivf_index
        probes = pair_nprobe(n) if nprobe is None else nprobe
        i, j, s = yield from _approximate_pairs(x, index, probes, k, radius, overflow, cancel)
    graph = SimilarityGraph(n, i, j, s, float(min_threshold), exact, k, overflow)
    if graph.capped:
        log.info("%d of %d images have more than %d neighbours at %.3f; kept the %d most similar of each",
                 graph.capped, n, k, min_threshold, k)  # fmt: skip
    return graph


_Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


def _no_pairs() -> _Pairs:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)


def _exact_pairs(
    x: np.ndarray, k: int, radius: float, overflow: np.ndarray, cancel: CancelToken | None
) -> Generator[Progress, None, _Pairs]:
    """Exact search in two passes. First all pairs above ``radius``, symmetrically (each block of queries against
    the vectors from its own start on, half the work), counting each image's neighbours; a pair whose two images
    both turn out to have more than ``k`` is dropped, and not even searched once both are known to. Then the ``k``
    best neighbours of those crowded images, from a k-nearest-neighbour search over all vectors (which also gives
    their ``overflow``, the (k+1)-th best)."""
    n = len(x)
    degree = np.zeros(n, np.int64)
    crowded = np.zeros(n, bool)  # more than k neighbours above the radius
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, n, _QUERY_BLOCK):
        if cancel is not None:
            cancel.raise_if_cancelled()
        stop = min(n, start + _QUERY_BLOCK)
        for first in range(start, n, _STRIPE):
            last = min(n, first + _STRIPE)
            rows, cols, sims = _tile_pairs(x, start, stop, first, last, crowded, radius)
            if first < stop:  # the stripe overlaps the block: each pair is there twice, and each vector with itself
                upper = rows < cols
                rows, cols, sims = rows[upper], cols[upper], sims[upper]
            degree[start:stop] += np.bincount(rows - start, minlength=stop - start)
            degree[first:last] += np.bincount(cols - first, minlength=last - first)
            crowded[start:stop] |= degree[start:stop] > k
            crowded[first:last] |= degree[first:last] > k
            keep = ~(crowded[rows] & crowded[cols])
            found.append((rows[keep], cols[keep], sims[keep]))
        yield Progress("Comparing", stop, n)
    rows, cols, sims = (np.concatenate(p) for p in zip(*found, strict=True))
    del found
    keep = ~(crowded[rows] & crowded[cols])
    parts = [(rows[keep], cols[keep], sims[keep])]
    del rows, cols, sims, keep
    many = np.flatnonzero(crowded)
    for start in range(0, len(many), _QUERY_BLOCK):
        if cancel is not None:
            cancel.raise_if_cancelled()
        queries = many[start : start + _QUERY_BLOCK]
        sims, labels = _knn(x[queries], x, k + 2)
        pairs, overflow[queries] = _best_others(queries, sims, labels, k, radius)
        parts.append(pairs)
        yield Progress("Ranking crowded neighbours", min(len(many), start + _QUERY_BLOCK), len(many))
    return _unique_pairs(parts, n)


def _tile_pairs(
    x: np.ndarray, a: int, b: int, c: int, d: int, crowded: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs above ``radius`` between vectors ``[a, b)`` and ``[c, d)``, leaving out pairs of two crowded ones.

    The common case, no crowded vector in the tile, is one call on views of ``x``; otherwise the queries are the
    uncrowded rows against the stripe, then the crowded rows against the uncrowded columns."""
    row_crowded, col_crowded = crowded[a:b], crowded[c:d]
    if not row_crowded.any():
        return _range_search(x[a:b], x[c:d], radius, a, c)
    sparse_rows, dense_rows = np.flatnonzero(~row_crowded) + a, np.flatnonzero(row_crowded) + a
    sparse_cols = np.flatnonzero(~col_crowded) + c
    pieces = []
    if len(sparse_rows):
        pieces.append(_range_search(x[sparse_rows], x[c:d], radius, sparse_rows, c))
    if len(sparse_cols):
        rows, cols, sims = _range_search(x[dense_rows], x[sparse_cols], radius, dense_rows, 0)
        pieces.append((rows, sparse_cols[cols].astype(np.int32), sims))
    if not pieces:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    rows, cols, sims = (np.concatenate(p) for p in zip(*pieces, strict=True))
    return rows, cols, sims


def _range_search(
    xq: np.ndarray, xb: np.ndarray, radius: float, rows: int | np.ndarray, col_offset: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inner products of ``xq`` with ``xb`` strictly above ``radius``, as (row, column, similarity) arrays; query
    ``q`` is vector ``rows + q`` (an int) or ``rows[q]`` (an array), database vector ``b`` is ``col_offset + b``."""
    import faiss

    xq, xb = np.ascontiguousarray(xq), np.ascontiguousarray(xb)
    result = faiss.RangeSearchResult(len(xq))
    faiss.range_search_inner_product(
        faiss.swig_ptr(xq), faiss.swig_ptr(xb), xq.shape[1], len(xq), len(xb), radius, result
    )
    lims: np.ndarray = faiss.rev_swig_ptr(result.lims, len(xq) + 1).astype(np.int64)
    counts = lims[1:] - lims[:-1]
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    query_ids = np.arange(rows, rows + len(xq), dtype=np.int32) if isinstance(rows, int) else rows.astype(np.int32)
    return (
        np.repeat(query_ids, counts),
        faiss.rev_swig_ptr(result.labels, total).astype(np.int32) + np.int32(col_offset),
        faiss.rev_swig_ptr(result.distances, total).copy(),
    )


def _knn(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    return faiss.knn(xq, xb, min(k, len(xb)), faiss.METRIC_INNER_PRODUCT)  # type: ignore[no-any-return]


def _best_others(
    queries: np.ndarray, sims: np.ndarray, labels: np.ndarray, k: int, radius: float
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Each query's ``k`` most similar results other than itself above ``radius``, as pairs ``(i < j)``, and the
    similarity of its (k+1)-th where that is above ``radius`` too (``-inf`` otherwise)."""
    sims = np.where((labels >= 0) & (labels != queries[:, None]), sims, -np.inf).astype(np.float32)
    order = np.argsort(-sims, axis=1, kind="stable")[:, : k + 1]
    sims, labels = np.take_along_axis(sims, order, axis=1), np.take_along_axis(labels, order, axis=1)
    more = sims[:, k] if sims.shape[1] > k else np.full(len(sims), -np.inf, np.float32)
    sims, labels = sims[:, :k], labels[:, :k]
    take = sims > radius
    rows = np.broadcast_to(queries[:, None], labels.shape)[take].astype(np.int32)
    cols = labels[take].astype(np.int32)
    pairs = (np.minimum(rows, cols), np.maximum(rows, cols), sims[take])
    return pairs, np.where(more > radius, more, -np.inf).astype(np.float32)


def _unique_pairs(parts: list[_Pairs], n: int) -> _Pairs:
    """Pairs ``(i < j)`` found once or more, each once, sorted, with int64 indices; empties ``parts``."""
    keys, sims = [], []
    while parts:  # one sort key per pair, letting go of the index arrays as it goes
        i, j, s = parts.pop(0)
        keys.append(i.astype(np.int64) * n + j)
        sims.append(s)
    if not keys:
        return _no_pairs()
    key, s = np.concatenate(keys), np.concatenate(sims)
    del keys, sims
    order = np.argsort(key, kind="stable")
    key, s = key[order], s[order]
    del order
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    key, s = key[first], s[first]
    return key // n, key % n, s


def _approximate_pairs(
    x: np.ndarray | UnitRows,
    index: Any,
    nprobe: int,
    k: int,
    radius: float,
    overflow: np.ndarray,
    cancel: CancelToken | None,
) -> Generator[Progress, None, _Pairs]:
    """Each vector's ``k`` best neighbours above ``radius`` by the approximate index, every candidate re-scored
    exactly (the codes' scores only choose the candidates): from the float16 rows inside a refining index
    (:func:`build_pair_index` over :class:`UnitRows`), or from the float32 vectors."""
    import faiss

    n = len(x)
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = min(ivf.nlist, nprobe)
    refined = isinstance(x, UnitRows) and isinstance(index, faiss.IndexRefine)
    ask = min(n, k + 2)  # the vector itself, its k best, and one more to tell whether it has more than k
    parts = []
    for start in range(0, n, _QUERY_BLOCK):
        if cancel is not None:
            cancel.raise_if_cancelled()
        stop = min(n, start + _QUERY_BLOCK)
        queries = np.arange(start, stop)
        scores, labels = index.search(np.ascontiguousarray(x[start:stop], np.float32), ask)
        if refined:  # query . stored row, exactly: scaled by the stored row's inverse length
            sims = scores * x.inverse[np.maximum(labels, 0)]  # type: ignore[union-attr]
            sims[(labels < 0) | (labels == queries[:, None])] = -np.inf
        else:
            sims = _rescored(x, queries, labels)  # type: ignore[arg-type]
        pairs, overflow[start:stop] = _best_others(queries, sims, labels, k, radius)
        parts.append(pairs)
        yield Progress("Comparing", stop, n)
    return _unique_pairs(parts, n)


def _rescored(x: np.ndarray, queries: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Exact similarities of each query with its candidates (``-inf`` for no candidate and for itself), computed
    by FAISS from the vectors in place (about 6x NumPy's gather at 64 candidates per query)."""
    import faiss

    xq = np.ascontiguousarray(x[queries])
    ids = np.ascontiguousarray(np.maximum(labels, 0), np.int64)
    sims = np.empty(labels.shape, np.float32)
    faiss.fvec_inner_products_by_idx(  # type: ignore[attr-defined]
        faiss.swig_ptr(sims), faiss.swig_ptr(xq), faiss.swig_ptr(x), faiss.swig_ptr(ids), x.shape[1], *labels.shape
    )
    sims[(labels < 0) | (labels == queries[:, None])] = -np.inf
    return sims
