"""The FAISS similarity graph: exact and approximate paths find the same planted pairs."""

from __future__ import annotations

import numpy as np
import pytest

from dedup_app.core.index import similarity_graph
from dedup_app.core.progress import Cancelled, CancelToken, Progress, drive


def planted(n: int, pairs: int, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    src = rng.choice(n // 2, size=pairs, replace=False)
    dst = src + n // 2
    x[dst] = x[src] + 0.1 * rng.standard_normal((pairs, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, {(int(a), int(b)) for a, b in zip(src, dst, strict=True)}


def test_exact_graph_matches_brute_force() -> None:
    x, _ = planted(3000, 40)
    g = drive(similarity_graph(x, 0.5))
    assert g.exact
    sims = x @ x.T
    i, j = np.nonzero(np.triu(sims >= 0.5, 1))
    assert set(zip(g.i.tolist(), g.j.tolist(), strict=True)) == set(zip(i.tolist(), j.tolist(), strict=True))
    assert np.allclose(g.s, sims[g.i, g.j], atol=1e-5)
    assert (g.i < g.j).all()


def test_blocks_cover_pairs_across_block_boundaries() -> None:
    # 10,000 vectors span three query blocks; a pair straddling blocks must be found exactly once.
    x, truth = planted(10_000, 30)
    g = drive(similarity_graph(x, 0.9))
    found = set(zip(g.i.tolist(), g.j.tolist(), strict=True))
    assert truth <= found
    assert len(found) == len(g.i)


def test_approximate_index_above_exact_max_finds_planted_pairs() -> None:
    x, truth = planted(4000, 50)
    g = drive(similarity_graph(x, 0.9, exact_max=1000))
    assert not g.exact
    found = set(zip(g.i.tolist(), g.j.tolist(), strict=True))
    assert len(truth & found) >= 0.95 * len(truth)


def test_progress_and_cancel() -> None:
    x, _ = planted(9000, 10)
    reports: list[Progress] = []
    drive(similarity_graph(x, 0.9), reports.append)
    assert reports[-1].done == reports[-1].total == 9000
    token = CancelToken()
    gen = similarity_graph(x, 0.9, cancel=token)
    next(gen)
    token.cancel()
    with pytest.raises(Cancelled):
        next(gen)


def test_tiny_inputs() -> None:
    assert drive(similarity_graph(np.zeros((0, 8), np.float32), 0.5)).n == 0
    one = drive(similarity_graph(np.ones((1, 8), np.float32) / np.sqrt(8), 0.5))
    assert len(one.i) == 0
