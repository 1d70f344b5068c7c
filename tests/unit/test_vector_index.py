"""The persistent vector index beside a real SQLite cache: built once, brought up to date incrementally, rebuilt
when missing, damaged, stale or another cache's; exact and approximate searches; the cache's stable vector ids."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from dedup_app.core import vector_index
from dedup_app.core.cache import EmbeddingCache, move_aside
from dedup_app.core.files import FileEntry
from dedup_app.core.imageio import ImageInfo
from dedup_app.core.index import unit_rows
from dedup_app.core.vector_index import VectorIndex, index_folder

MODEL = "test-model-1"
DIM = 32


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit_rows(rng.standard_normal((n, DIM)).astype(np.float32))


def put(cache: EmbeddingCache, name: str, vector: np.ndarray, mtime_ns: int = 1) -> None:
    entry = FileEntry(f"/photos/{name}", 1000, mtime_ns)
    cache.put_file(entry, f"hash-{name}-{mtime_ns}", ImageInfo(64, 48, "JPEG", None, None))
    cache.put_embedding(entry.path, MODEL, vector)


def fill(cache: EmbeddingCache, x: np.ndarray, prefix: str = "p") -> None:
    for k, v in enumerate(x):
        put(cache, f"{prefix}{k:06d}.jpg", v)
    cache.commit()


@pytest.fixture()
def cache(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = EmbeddingCache(tmp_path / "cache.sqlite3")
    yield c
    c.close()


def nearest_paths(index: VectorIndex, cache: EmbeddingCache, q: np.ndarray, k: int = 1, **kw) -> list[str]:  # type: ignore[no-untyped-def]
    ids, _ = index.search(q[None], k, cache, **kw)[0]
    files = cache.files_of(MODEL, ids.tolist())
    return [files[int(i)].path for i in ids]


def test_built_once_then_loaded_and_updated_incrementally(cache: EmbeddingCache) -> None:
    x = vectors(300)
    fill(cache, x)
    index, report = VectorIndex.open(cache, MODEL, DIM)
    assert report.rebuilt and report.reason == "no index yet" and report.total == 300 and index.exact
    assert index.path is not None and index.path.parent == index_folder(cache.path)  # type: ignore[arg-type]
    assert index.path.exists() and index.path.with_suffix(".json").exists()

    again, report = VectorIndex.open(cache, MODEL, DIM)  # nothing changed: loaded, not rebuilt, nothing written
    saved = again.path.stat().st_mtime_ns  # type: ignore[union-attr]
    assert not report.changed and len(again) == 300

    new = vectors(10, seed=1)
    fill(cache, new, prefix="new")
    updated, report = VectorIndex.open(cache, MODEL, DIM)
    assert (report.rebuilt, report.added, report.removed, report.total) == (False, 10, 0, 310)
    assert updated.path.stat().st_mtime_ns != saved  # type: ignore[union-attr]
    assert nearest_paths(updated, cache, new[3]) == ["/photos/new000003.jpg"]


def test_changed_and_removed_files_leave_the_index(cache: EmbeddingCache) -> None:
    x = vectors(50)
    fill(cache, x)
    VectorIndex.open(cache, MODEL, DIM)
    # p000001 changed on disk: its new facts drop the old vector, a new one (the vector of p000002) is stored
    put(cache, "p000001.jpg", x[2], mtime_ns=2)
    # p000003 vanished: the scan forgets it
    cache.purge_missing(["/photos"], {f"/photos/p{k:06d}.jpg" for k in range(50) if k != 3})
    cache.commit()
    index, report = VectorIndex.open(cache, MODEL, DIM)
    assert (report.rebuilt, report.added, report.removed, report.total) == (False, 1, 2, 49)
    assert "/photos/p000003.jpg" not in nearest_paths(index, cache, x[3], k=49)
    top_two = nearest_paths(index, cache, x[2], k=2)
    assert sorted(top_two) == ["/photos/p000001.jpg", "/photos/p000002.jpg"]
    ids, sims = index.search(x[1][None], 1, cache)[0]
    assert cache.files_of(MODEL, ids.tolist())[int(ids[0])].path != "/photos/p000001.jpg"  # the old vector is gone


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.write_bytes(b"\x00garbage" * 50), "cannot be read"),
        (lambda p: p.unlink(), "no index yet"),
        (lambda p: p.with_suffix(".json").write_text("{not json", encoding="utf-8"), "cannot be read"),
        (
            lambda p: p.with_suffix(".json").write_text(
                p.with_suffix(".json").read_text(encoding="utf-8").replace('"count": 40', '"count": 41'),
                encoding="utf-8",
            ),
            "does not match its manifest",
        ),  # fmt: skip
    ],
    ids=["garbage", "missing", "bad-manifest", "wrong-count"],
)
def test_a_missing_or_damaged_index_is_rebuilt_from_the_cache(cache: EmbeddingCache, damage, reason) -> None:  # type: ignore[no-untyped-def]
    x = vectors(40)
    fill(cache, x)
    index, _ = VectorIndex.open(cache, MODEL, DIM)
    assert index.path is not None
    damage(index.path)
    rebuilt, report = VectorIndex.open(cache, MODEL, DIM)
    assert report.rebuilt and reason in (report.reason or "")
    assert len(rebuilt) == 40 and nearest_paths(rebuilt, cache, x[7]) == ["/photos/p000007.jpg"]
    assert VectorIndex.open(cache, MODEL, DIM)[1].changed is False  # and saved again, whole


def test_an_index_of_another_cache_is_not_trusted(tmp_path: Path) -> None:
    """A damaged cache moved aside starts again with ids from 1: the old index's ids would name other files."""
    path = tmp_path / "cache.sqlite3"
    x, y = vectors(30, seed=2), vectors(30, seed=3)
    with EmbeddingCache(path) as first:
        fill(first, x, prefix="old")
        VectorIndex.open(first, MODEL, DIM)
    move_aside(path)
    with EmbeddingCache(path) as second:
        fill(second, y, prefix="new")
        index, report = VectorIndex.open(second, MODEL, DIM)
        assert report.rebuilt and "another cache uid" in (report.reason or "")
        assert nearest_paths(index, second, y[5]) == ["/photos/new000005.jpg"]


def test_another_model_has_its_own_index(cache: EmbeddingCache) -> None:
    fill(cache, vectors(20))
    VectorIndex.open(cache, MODEL, DIM)
    entry = FileEntry("/photos/p000000.jpg", 1000, 1)
    cache.put_embedding(entry.path, "other-model", vectors(1, seed=9)[0])
    cache.commit()
    other, report = VectorIndex.open(cache, "other-model", DIM)
    assert report.rebuilt and len(other) == 1
    assert VectorIndex.open(cache, MODEL, DIM)[1].changed is False


def test_exact_search_agrees_with_brute_force_and_respects_allowed_ids(cache: EmbeddingCache) -> None:
    x = vectors(200, seed=4)
    fill(cache, x)
    index, _ = VectorIndex.open(cache, MODEL, DIM)
    q = vectors(5, seed=5)
    stored = unit_rows(x)
    for (_ids, sims), query in zip(index.search(q, 7, cache), q, strict=True):
        truth = np.sort(stored @ query)[::-1][:7]
        np.testing.assert_allclose(sims, truth, atol=1e-5)
    allowed = cache.ids_under(MODEL, ["/photos/p000010.jpg", "/photos/p000011.jpg"])
    assert len(allowed) == 2
    ids, _ = index.search(q[:1], 5, cache, allowed=allowed)[0]
    assert sorted(ids.tolist()) == sorted(allowed.tolist())


def test_the_approximate_index_above_the_exact_limit(cache: EmbeddingCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the exact limit the index is inverted lists; its candidates are re-scored exactly; it is updated in
    place, retrained when the collection grows fourfold, and exact again once it shrinks under half the limit."""
    monkeypatch.setattr(vector_index, "INDEX_EXACT_MAX", 400)
    rng = np.random.default_rng(6)
    centres = vectors(20, seed=7)
    x = unit_rows(centres[rng.integers(0, 20, 1200)] + 0.3 * rng.standard_normal((1200, DIM)).astype(np.float32))
    fill(cache, x)
    index, report = VectorIndex.open(cache, MODEL, DIM)
    assert report.rebuilt and not index.exact and index.trained_on == 1200
    found = 0
    for k in range(0, 1200, 60):
        ids, sims = index.search(x[k][None], 3, cache)[0]
        found += cache.files_of(MODEL, [int(ids[0])])[int(ids[0])].path == f"/photos/p{k:06d}.jpg"
        assert sims[0] == pytest.approx(1.0, abs=2e-3)  # re-scored from the cache's vectors, not the 8-bit codes
    assert found >= 19
    fill(cache, vectors(10, seed=8), prefix="more")
    index, report = VectorIndex.open(cache, MODEL, DIM)
    assert (report.rebuilt, report.added, report.total) == (False, 10, 1210) and not index.exact
    reopened, report = VectorIndex.open(cache, MODEL, DIM)
    assert not report.changed and not reopened.exact and len(reopened) == 1210
    kept = {f"/photos/p{k:06d}.jpg" for k in range(150)} | {f"/photos/more{k:06d}.jpg" for k in range(10)}
    cache.purge_missing(["/photos"], kept)
    index, report = VectorIndex.open(cache, MODEL, DIM)
    assert report.rebuilt and index.exact and len(index) == 160


def test_an_old_cache_keeps_its_vectors_and_gets_ids(tmp_path: Path) -> None:
    """Caches written before vectors had ids (primary key on path and model) are migrated in place."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE files (path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
            content_hash TEXT, width INTEGER, height INTEGER, format TEXT, exif_datetime TEXT, camera TEXT,
            error TEXT, updated REAL NOT NULL, frames INTEGER);
        CREATE TABLE embeddings (path BLOB NOT NULL, model_id TEXT NOT NULL, vector BLOB NOT NULL,
            PRIMARY KEY (path, model_id));
        CREATE INDEX embeddings_model ON embeddings (model_id);
        """
    )
    x = vectors(5)
    for k, v in enumerate(x):
        key = os.fsencode(f"/photos/p{k}.jpg")
        conn.execute("INSERT INTO files VALUES (?, 10, 1, 'h', 64, 48, 'JPEG', NULL, NULL, NULL, 0, 1)", (key,))
        conn.execute("INSERT INTO embeddings VALUES (?, ?, ?)", (key, MODEL, v.astype(np.float16).tobytes()))
    conn.execute("PRAGMA application_id = 1684305264")
    conn.commit()
    conn.close()
    with EmbeddingCache(path) as cache:
        assert cache.uid() and cache.count(MODEL) == 5
        ids = cache.embedding_ids(MODEL)
        assert len(np.unique(ids)) == 5
        index, _ = VectorIndex.open(cache, MODEL, DIM)
        assert nearest_paths(index, cache, x[3]) == ["/photos/p3.jpg"]
        put(cache, "p9.jpg", x[0])
        assert cache.embedding_ids(MODEL).max() > ids.max()  # ids are never handed out twice


def test_ids_are_never_reused(cache: EmbeddingCache) -> None:
    fill(cache, vectors(3))
    before = cache.embedding_ids(MODEL)
    put(cache, "p000002.jpg", vectors(1, seed=3)[0], mtime_ns=5)  # the newest row replaced
    cache.commit()
    after = cache.embedding_ids(MODEL)
    assert before[-1] not in after and after.max() > before.max()


def test_an_in_memory_cache_gets_an_index_that_is_not_saved() -> None:
    with EmbeddingCache(":memory:") as cache:
        fill(cache, vectors(10))
        index, report = VectorIndex.open(cache, MODEL, DIM)
        assert index.path is None and report.rebuilt and len(index) == 10
