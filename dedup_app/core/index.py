"""Similarity search with FAISS: all pairs of embeddings at or above a threshold.

Embeddings are unit vectors, so inner product is cosine similarity. Up to ``exact_max`` vectors (about 100k) the
search is exact (``IndexFlatIP``), and uses its symmetry: each block of queries is searched only against the
vectors from the block's start on, which halves the work. Above that, an inverted-file index with an 8-bit scalar
quantiser keeps memory and time in bounds at the cost of a small recall loss.

The result is a :class:`SimilarityGraph`: the edge list (i < j, similarity) found at the lowest threshold the user
may ask for, so regrouping at any higher threshold is a filter, not a new search.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from dedup_app.core.progress import CancelToken, Progress

log = logging.getLogger(__name__)

#: Collections up to this size are searched exactly.
EXACT_MAX = 100_000
#: Slack in "at or above the threshold": a pair this much under it still counts as at it. Float32 dot products of
#: 256-d unit vectors are accurate to about 1e-6, so the same picture in two files (similarity 1 up to rounding)
#: is kept at a threshold of 1.0; no two different pictures are told apart by 1e-5 of similarity.
SIMILARITY_TOLERANCE = 1e-5
_QUERY_BLOCK = 4096


@dataclass(frozen=True)
class SimilarityGraph:
    """Edges ``(i[k], j[k])`` with ``i < j`` and similarity ``s[k] >= min_threshold``, over ``n`` vectors."""

    n: int
    i: np.ndarray
    j: np.ndarray
    s: np.ndarray
    min_threshold: float
    exact: bool

    def at(self, threshold: float) -> SimilarityGraph:
        """The sub-graph of edges at or above ``threshold`` (within :data:`SIMILARITY_TOLERANCE`), which must not be
        below ``min_threshold``."""
        if threshold < self.min_threshold - 1e-9:
            raise ValueError(f"graph was searched at {self.min_threshold:.3f}; cannot filter at {threshold:.3f}")
        keep = self.s >= threshold - SIMILARITY_TOLERANCE
        return SimilarityGraph(self.n, self.i[keep], self.j[keep], self.s[keep], threshold, self.exact)


def _build_index(x: np.ndarray, exact: bool):  # type: ignore[no-untyped-def]
    import faiss

    d = x.shape[1]
    index: faiss.Index
    if exact:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(min(65536, max(64, 4 * math.sqrt(len(x)))))
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFScalarQuantizer(
            quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        rng = np.random.default_rng(0)
        sample = x[rng.choice(len(x), size=min(len(x), nlist * 64), replace=False)]
        ivf.train(sample)
        ivf.nprobe = min(nlist, 16)
        index = ivf
    index.add(x)
    return index


def similarity_graph(
    embeddings: np.ndarray,
    min_threshold: float,
    exact_max: int = EXACT_MAX,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, SimilarityGraph]:
    """Find every pair with similarity >= ``min_threshold`` (within :data:`SIMILARITY_TOLERANCE`) among unit vectors;
    yields progress per block of queries."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(x)
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return SimilarityGraph(n, empty, empty, np.zeros(0, np.float32), min_threshold, True)
    exact = n <= exact_max
    index = None if exact else _build_index(x, exact=False)
    ii: list[np.ndarray] = []
    jj: list[np.ndarray] = []
    ss: list[np.ndarray] = []
    for start in range(0, n, _QUERY_BLOCK):
        if cancel is not None:
            cancel.raise_if_cancelled()
        stop = min(n, start + _QUERY_BLOCK)
        if exact:
            # Exact search is symmetric: a block only needs the vectors from its own start on (half the work).
            offset, block_index = start, _build_index(x[start:], exact=True)
        else:
            offset, block_index = 0, index
        # range_search keeps similarities strictly above the radius
        lims, dist, labels = block_index.range_search(x[start:stop], float(min_threshold) - SIMILARITY_TOLERANCE)
        rows = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(lims).astype(np.int64))
        labels = labels.astype(np.int64) + offset
        keep = rows != labels
        ii.append(np.minimum(rows[keep], labels[keep]))
        jj.append(np.maximum(rows[keep], labels[keep]))
        ss.append(dist[keep].astype(np.float32))
        yield Progress("Comparing", stop, n)
    # Each pair is found from both sides (an approximate index may find it from one side only): keep it once.
    key, first = np.unique(np.concatenate(ii) * n + np.concatenate(jj), return_index=True)
    i, j = key // n, key % n
    s = np.concatenate(ss)[first]
    return SimilarityGraph(n, i, j, s, float(min_threshold), exact)
