"""The set-apart logic of the geometric check on a scripted checker: transitivity, trusted pairs, the cache."""

from __future__ import annotations

import numpy as np
import pytest

from dedup_app.core import pair_check
from dedup_app.core.cache import EmbeddingCache
from dedup_app.core.progress import drive


@pytest.fixture()
def scripted(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[frozenset[str], int], list[tuple[str, str]]]:
    """PairChecker.check answers from a table of inlier counts by path pair, and records what it was asked."""
    table: dict[frozenset[str], int] = {}
    asked: list[tuple[str, str]] = []

    def check(self, pairs):  # type: ignore[no-untyped-def]
        asked.extend(pairs)
        return np.array([table[frozenset(p)] for p in pairs], np.int32)

    monkeypatch.setattr(pair_check.PairChecker, "check", check)
    return table, asked


def _edges(*edges: tuple[int, int, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j, s = zip(*edges, strict=True)
    return np.array(i), np.array(j), np.array(s, np.float32)


PATHS = ["p0", "p1", "p2", "p3"]
KEYS = ["h0", "h1", "h2", "h3"]
PASS, FAIL = pair_check.MIN_INLIERS + 30, 3


def test_a_pair_implied_by_two_passes_is_not_checked(scripted) -> None:  # type: ignore[no-untyped-def]
    table, asked = scripted
    table.update({frozenset(("p0", "p1")): PASS, frozenset(("p0", "p2")): PASS})
    i, j, s = _edges((0, 1, 0.90), (0, 2, 0.89), (1, 2, 0.85))
    apart = drive(pair_check.apart_edges(i, j, s, PATHS, KEYS, 0.83))
    assert not apart.any()
    assert sorted(map(frozenset, asked)) == sorted([frozenset(("p0", "p1")), frozenset(("p0", "p2"))])


def test_a_failed_pair_is_restored_when_both_are_copies_of_a_third(scripted) -> None:  # type: ignore[no-untyped-def]
    table, _ = scripted
    # (0, 1) fails directly (a tight crop and a noisy copy), but 1 is 2 (trusted, >= VERIFY_BELOW) and 0 passes with 2
    table.update({frozenset(("p0", "p1")): FAIL, frozenset(("p0", "p2")): PASS})
    i, j, s = _edges((0, 1, 0.90), (1, 2, 0.95), (0, 2, 0.88), (0, 3, 0.87))
    table[frozenset(("p0", "p3"))] = FAIL  # a look-alike of 0 with no copy in common: set apart
    apart = drive(pair_check.apart_edges(i, j, s, PATHS, KEYS, 0.83))
    assert apart.tolist() == [False, False, False, True]


def test_only_the_band_is_checked_and_unjudged_pairs_stand(scripted) -> None:  # type: ignore[no-untyped-def]
    table, asked = scripted
    table.update({frozenset(("p0", "p1")): pair_check.PLAIN, frozenset(("p2", "p3")): pair_check.UNCHECKED})
    i, j, s = _edges((0, 1, 0.86), (2, 3, 0.84), (0, 2, 0.97), (1, 3, 0.80))  # 0.97 trusted, 0.80 under threshold
    apart = drive(pair_check.apart_edges(i, j, s, PATHS, KEYS, 0.83))
    assert not apart.any()
    assert {frozenset(p) for p in asked} == {frozenset(("p0", "p1")), frozenset(("p2", "p3"))}


def test_results_are_kept_by_content_and_reused(scripted) -> None:  # type: ignore[no-untyped-def]
    table, asked = scripted
    table.update({frozenset(("p0", "p1")): FAIL, frozenset(("p2", "p3")): pair_check.UNCHECKED})
    i, j, s = _edges((0, 1, 0.90), (2, 3, 0.88))
    with EmbeddingCache(":memory:") as cache:
        first = drive(pair_check.apart_edges(i, j, s, PATHS, KEYS, 0.83, cache))
        assert first.tolist() == [True, False]
        # the unreadable pair is not remembered (it is tried again); the judged one is, in either order
        assert cache.pair_checks(pair_check.METHOD, [("h1", "h0"), ("h2", "h3")]) == {("h1", "h0"): FAIL}
        asked.clear()
        again = drive(pair_check.apart_edges(i, j, s, ["q0", "q1", "p2", "p3"], KEYS, 0.83, cache))
        assert again.tolist() == [True, False]
        assert asked == [("p2", "p3")]
