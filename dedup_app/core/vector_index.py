"""The persistent vector index: one FAISS index per model beside the embedding cache, for find-by-example.

Grouping a folder searches its own vectors once (:mod:`dedup_app.core.index`); finding the copies of one image
among everything ever scanned needs an index that outlives the scan. It lives in ``<cache file>.index/``, one file
per model (named by a hash of the model id) and a small JSON manifest beside it, and holds every vector the cache
stores for that model, keyed by the cache's vector ids (ids SQLite never hands out twice, see
:mod:`dedup_app.core.cache`).

- **Exact up to 200,000 vectors** (``IndexIDMap2`` over ``IndexFlatIP``): one query costs a pass over the vectors.
- **Approximate above** (inverted lists with 8-bit codes, the grouping's own :func:`~dedup_app.core.index.
  train_ivf_index`, 128 lists probed per query): the candidates it returns are re-scored exactly from the cache's
  vectors, so similarities are the ones ``scan`` and ``verify`` give. It is retrained (rebuilt) when the collection
  has grown fourfold since it was trained, and turned back into an exact one when it shrinks under 100,000.

**Kept up to date, never trusted blindly.** :meth:`VectorIndex.open` compares the index's ids with the cache's ids
for the model: vectors the cache dropped (files removed or changed) are removed, new ones added, so a scan that adds
10 images to an indexed 100,000 costs reading those 10 vectors. The index is rebuilt from the cache (never from the
images) when its file is missing or cannot be read, when the manifest disagrees with it (vector count, model id,
dimension) or names another cache (the cache's ``uid``), or when more than half of it would change. The files are
written to a temporary name and renamed, so a crash leaves the old index or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dedup_app.core.cache import EmbeddingCache
from dedup_app.core.index import EXACT_MAX, ivf_lists, ivf_training_rows, train_ivf_index, unit_rows

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: Collections up to this size get an exact index; an approximate one turns exact again under half of it. An exact
#: query costs a pass over the vectors: 12 ms at 100,000 on 2 cores (docs/benchmarks.md, "Find by example"), so
#: about 25 ms here, well within a query's budget. (Grouping switches to its approximate search at half this size:
#: its cost grows with the square of the collection, a query's only linearly.)
INDEX_EXACT_MAX = 2 * EXACT_MAX
#: An approximate index is retrained once the collection has grown this many times the size it was trained on.
RETRAIN_GROWTH = 4.0
#: Lists probed per query of the approximate index. Grouping probes 16 (it searches every vector); a query can afford
#: more: on 1,000,000 clustered vectors (4,000 lists) 16 / 32 / 64 / 128 / 256 probes find 0.85 / 0.93 / 0.98 /
#: 0.99 / 0.997 of the exact top 10 in 0.4 / 0.6 / 1.0 / 1.8 / 3.4 ms, and every match at or above 0.829 at all of
#: them (docs/benchmarks.md, "Find by example").
QUERY_NPROBE = 128
#: A restricted search (``--in``) over at most this many vectors is done exactly on them, whatever the index.
RESTRICTED_EXACT_MAX = 200_000
_ADD_CHUNK = 65_536


@dataclass(frozen=True)
class SyncReport:
    """What :meth:`VectorIndex.open` had to do: ``rebuilt`` (with the ``reason``) or ``added``/``removed``."""

    total: int
    added: int = 0
    removed: int = 0
    rebuilt: bool = False
    reason: str | None = None
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return self.rebuilt or bool(self.added or self.removed)


def index_folder(cache_path: Path) -> Path:
    """The folder of a cache's vector indexes: ``<cache file>.index``."""
    return cache_path.with_name(cache_path.name + ".index")


def _file_stem(model_id: str) -> str:
    return "model-" + hashlib.sha256(model_id.encode()).hexdigest()[:16]


def _ids_of(index: Any) -> np.ndarray:
    """Every id stored in an exact (``IndexIDMap2``) or inverted-list index, sorted."""
    import faiss

    if isinstance(index, faiss.IndexIDMap2):
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    else:
        invlists = index.invlists
        parts = []
        for lst in range(index.nlist):
            size = invlists.list_size(lst)
            if size:
                parts.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).astype(np.int64).copy())
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return np.sort(ids)


class VectorIndex:
    """A model's vectors from one cache in a FAISS index keyed by the cache's vector ids.

    Use :meth:`open`; :meth:`search` answers queries. Not safe for concurrent use from several threads."""

    def __init__(self, index: Any, model_id: str, dim: int, cache_uid: str, trained_on: int, path: Path | None):
        self.index = index
        self.model_id = model_id
        self.dim = dim
        self.cache_uid = cache_uid
        self.trained_on = trained_on  # vectors the approximate index was trained on (0 for an exact index)
        self.path = path  # the index file, or None for a cache in memory (then nothing is saved)

    # -- properties ---------------------------------------------------------------------------------------------

    @property
    def exact(self) -> bool:
        import faiss

        return isinstance(self.index, faiss.IndexIDMap2)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # -- opening, building, keeping up to date ------------------------------------------------------------------

    @classmethod
    def open(cls, cache: EmbeddingCache, model_id: str, dim: int) -> tuple[VectorIndex, SyncReport]:
        """The index of ``model_id``'s vectors in ``cache``, loaded from beside the cache and brought up to date
        with it (or rebuilt from it, see the module's text); saved again when anything changed."""
        started = time.monotonic()
        path = None if cache.path is None else index_folder(cache.path) / (_file_stem(model_id) + ".faiss")
        uid = cache.uid()
        cache_ids = cache.embedding_ids(model_id)
        loaded, why = cls._load(path, model_id, dim, uid)
        if loaded is None:
            built = cls._build(cache, model_id, dim, uid, path)
            report = SyncReport(len(built), rebuilt=True, reason=why)
        else:
            built, report = loaded._update(cache, cache_ids)
        if report.changed and path is not None:
            built.save()
        report = SyncReport(report.total, report.added, report.removed, report.rebuilt, report.reason,
                            time.monotonic() - started)  # fmt: skip
        if report.rebuilt:
            log.info("vector index of %s rebuilt from the cache (%s): %d vectors",
                     model_id, report.reason, report.total)  # fmt: skip
        return built, report

    @classmethod
    def _load(cls, path: Path | None, model_id: str, dim: int, uid: str) -> tuple[VectorIndex | None, str]:
        """The saved index, or ``None`` and why it cannot be used."""
        import faiss

        if path is None:
            return None, "the cache is in memory"
        manifest_path = path.with_suffix(".json")
        if not path.exists():
            return None, "no index yet"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            index = faiss.read_index(str(path))
        except (OSError, ValueError, RuntimeError) as exc:
            return None, f"the index cannot be read ({type(exc).__name__})"
        expected = {"format": FORMAT_VERSION, "model_id": model_id, "dim": dim, "cache_uid": uid}
        for key, value in expected.items():
            if manifest.get(key) != value:
                return None, f"the index was built for another {key.replace('_', ' ')}"
        if manifest.get("count") != index.ntotal or index.d != dim:
            return None, "the index does not match its manifest"
        if not isinstance(index, faiss.IndexIDMap2 | faiss.IndexIVF):
            return None, "the index is of an unknown kind"
        return cls(index, model_id, dim, uid, int(manifest.get("trained_on", 0)), path), ""

    @classmethod
    def _build(cls, cache: EmbeddingCache, model_id: str, dim: int, uid: str, path: Path | None) -> VectorIndex:
        """A new index of every vector ``cache`` holds for the model, read from the cache only."""
        import faiss

        chunks = list(cache.iter_vectors(model_id, dim=dim))
        all_ids = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, np.int64)
        if len(all_ids) <= INDEX_EXACT_MAX:
            index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
            for chunk_ids, vectors in chunks:
                index.add_with_ids(unit_rows(vectors), chunk_ids)
            return cls(index, model_id, dim, uid, 0, path)
        stacked = np.concatenate([c[1] for c in chunks])  # float16, as cached
        del chunks
        nlist = ivf_lists(len(all_ids))
        index = train_ivf_index(unit_rows(stacked[ivf_training_rows(len(all_ids), nlist)]), nlist)
        for start in range(0, len(all_ids), _ADD_CHUNK):
            index.add_with_ids(unit_rows(stacked[start : start + _ADD_CHUNK]), all_ids[start : start + _ADD_CHUNK])
        return cls(index, model_id, dim, uid, len(all_ids), path)

    def _update(self, cache: EmbeddingCache, cache_ids: np.ndarray) -> tuple[VectorIndex, SyncReport]:
        """Remove what the cache dropped, add what it gained; or rebuild when that would be most of the index or
        the collection outgrew the index's kind."""
        import faiss

        mine = _ids_of(self.index)
        if len(mine) > 1 and bool((mine[1:] == mine[:-1]).any()):
            return self._rebuilt(cache, "the index holds a vector twice")
        stale = np.setdiff1d(mine, cache_ids, assume_unique=True)
        new = np.setdiff1d(cache_ids, mine, assume_unique=True)
        n = len(cache_ids)
        why = None
        if len(stale) + len(new) > max(1000, n // 2):
            why = f"{len(stale) + len(new):,} of {n:,} vectors changed"
        elif self.exact and n > INDEX_EXACT_MAX:
            why = f"the collection grew past {INDEX_EXACT_MAX:,} vectors"
        elif not self.exact and n < INDEX_EXACT_MAX // 2:
            why = f"the collection shrank under {INDEX_EXACT_MAX // 2:,} vectors"
        elif not self.exact and n > RETRAIN_GROWTH * self.trained_on:
            why = f"the collection grew {n / max(1, self.trained_on):.1f} times since the index was trained"
        if why is not None:
            return self._rebuilt(cache, why)
        if len(stale):
            self.index.remove_ids(faiss.IDSelectorBatch(stale))
        added = 0
        for chunk_ids, vectors in cache.iter_vectors(self.model_id, new, dim=self.dim):
            self.index.add_with_ids(unit_rows(vectors), chunk_ids)
            added += len(chunk_ids)
        return self, SyncReport(len(self), added=added, removed=len(stale))

    def _rebuilt(self, cache: EmbeddingCache, why: str) -> tuple[VectorIndex, SyncReport]:
        rebuilt = self._build(cache, self.model_id, self.dim, self.cache_uid, self.path)
        return rebuilt, SyncReport(len(rebuilt), rebuilt=True, reason=why)

    def save(self) -> None:
        """Write the index and its manifest (temporary names, then renamed); a failure is logged, not raised:
        the index is rebuilt from the cache next time."""
        import faiss

        if self.path is None:
            return
        manifest = {
            "format": FORMAT_VERSION,
            "model_id": self.model_id,
            "dim": self.dim,
            "cache_uid": self.cache_uid,
            "count": len(self),
            "kind": "exact" if self.exact else "ivf-sq8",
            "trained_on": self.trained_on,
            "saved": time.time(),
        }
        tmp_index = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        manifest_path = self.path.with_suffix(".json")
        tmp_manifest = manifest_path.with_name(manifest_path.name + f".tmp-{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            faiss.write_index(self.index, str(tmp_index))
            tmp_manifest.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            os.replace(tmp_index, self.path)
            os.replace(tmp_manifest, manifest_path)
        except (OSError, RuntimeError) as exc:
            log.warning("vector index %s could not be saved (%s); it is rebuilt from the cache next time",
                        self.path, exc)  # fmt: skip
            for tmp in (tmp_index, tmp_manifest):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    # -- searching ----------------------------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        cache: EmbeddingCache,
        allowed: np.ndarray | None = None,
        nprobe: int = QUERY_NPROBE,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``k`` most similar stored vectors to each query (unit rows, float32), as ``(ids, similarities)``
        per query, most similar first. ``allowed`` limits the search to those ids. Similarities are exact: an
        approximate index's candidates are re-scored from the cache's vectors."""
        import faiss

        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if len(q) == 0 or k < 1:
            return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(len(q))]
        if allowed is not None and len(allowed) <= RESTRICTED_EXACT_MAX:
            return self._search_among(q, k, cache, np.asarray(allowed, np.int64))
        params: Any
        ask = k if self.exact else max(2 * k, k + 20)
        selector = None if allowed is None else faiss.IDSelectorBatch(np.asarray(allowed, np.int64))
        if self.exact:
            params = faiss.SearchParameters() if selector is not None else None
        else:
            params = faiss.SearchParametersIVF()
            params.nprobe = min(nprobe, self.index.nlist)
        if params is not None and selector is not None:
            params.sel = selector
        sims, labels = self.index.search(q, min(ask, max(1, len(self))), params=params)
        out = []
        for row in range(len(q)):
            ids = labels[row][labels[row] >= 0]
            if self.exact:
                out.append((ids.astype(np.int64), sims[row][: len(ids)].astype(np.float32)))
            else:
                out.append(self._rescore(q[row], ids, k, cache))
        return out

    def _rescore(
        self, query: np.ndarray, ids: np.ndarray, k: int, cache: EmbeddingCache
    ) -> tuple[np.ndarray, np.ndarray]:
        found = list(cache.iter_vectors(self.model_id, ids, dim=self.dim))
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        got = np.concatenate([f[0] for f in found])
        sims = unit_rows(np.concatenate([f[1] for f in found])) @ query
        order = np.argsort(-sims, kind="stable")[:k]
        return got[order], sims[order].astype(np.float32)

    def _search_among(
        self, q: np.ndarray, k: int, cache: EmbeddingCache, allowed: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exact search over the ``allowed`` vectors only, read from the cache."""
        import faiss

        found = list(cache.iter_vectors(self.model_id, allowed, dim=self.dim))
        if not found:
            return [(np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in range(len(q))]
        ids = np.concatenate([f[0] for f in found])
        vectors = unit_rows(np.concatenate([f[1] for f in found]))
        sims, rows = faiss.knn(q, vectors, min(k, len(ids)), faiss.METRIC_INNER_PRODUCT)
        return [(ids[r[r >= 0]], s[r >= 0].astype(np.float32)) for s, r in zip(sims, rows, strict=True)]
