"""Grouping on hand-built similarity graphs: cliques, no chaining, stable hubs."""

from __future__ import annotations

import numpy as np
import pytest

from dedup_app.core.grouping import clique_groups
from dedup_app.core.index import SimilarityGraph


def graph(n: int, edges: dict[tuple[int, int], float], t: float = 0.8) -> SimilarityGraph:
    keys = sorted(edges)
    return SimilarityGraph(
        n,
        np.array([a for a, _ in keys], dtype=np.int64),
        np.array([b for _, b in keys], dtype=np.int64),
        np.array([edges[k] for k in keys], dtype=np.float32),
        t,
        True,
    )


def as_sets(groups: list[list[int]]) -> set[frozenset[int]]:
    return {frozenset(g) for g in groups}


def test_chain_is_not_one_group() -> None:
    # A~B and B~C, but A and C are unrelated: never one group.
    groups = clique_groups(graph(3, {(0, 1): 0.95, (1, 2): 0.90}))
    assert len(groups) == 1
    assert as_sets(groups) == {frozenset({0, 1})}  # the stronger pair wins, C stays alone


def test_long_chain_breaks_into_pairs() -> None:
    edges = {(k, k + 1): 0.9 for k in range(9)}
    groups = clique_groups(graph(10, edges))
    assert all(len(g) == 2 for g in groups)
    for g in groups:
        assert abs(g[0] - g[1]) == 1


def test_clique_is_one_group_and_singletons_are_dropped() -> None:
    edges = {(a, b): 0.9 for a in range(4) for b in range(a + 1, 4)}
    groups = clique_groups(graph(6, edges))
    assert as_sets(groups) == {frozenset({0, 1, 2, 3})}


def test_two_cliques_joined_by_a_bridge_stay_apart() -> None:
    edges = {(a, b): 0.9 for a in range(3) for b in range(a + 1, 3)}
    edges |= {(a, b): 0.9 for a in range(3, 6) for b in range(a + 1, 6)}
    edges[(2, 3)] = 0.85  # one bridge between the cliques
    groups = clique_groups(graph(6, edges))
    assert as_sets(groups) == {frozenset({0, 1, 2}), frozenset({3, 4, 5})}


def test_member_must_match_every_member() -> None:
    # Hub 0 matches 1, 2, 3; 3 does not match 1: 3 must not join 0's group with 1.
    edges = {(0, 1): 0.99, (0, 2): 0.98, (1, 2): 0.97, (0, 3): 0.9, (2, 3): 0.9}
    groups = clique_groups(graph(4, edges))
    for g in groups:
        members = set(g)
        for a in members:
            for b in members - {a}:
                assert (min(a, b), max(a, b)) in edges
    assert frozenset({0, 1, 2}) in as_sets(groups)


def test_filtering_a_graph_by_threshold() -> None:
    g = graph(3, {(0, 1): 0.95, (1, 2): 0.85, (0, 2): 0.82}, t=0.8)
    assert as_sets(clique_groups(g)) == {frozenset({0, 1, 2})}
    assert as_sets(clique_groups(g.at(0.9))) == {frozenset({0, 1})}
    with pytest.raises(ValueError, match="cannot filter"):
        g.at(0.5)


def test_groups_are_stable_across_runs() -> None:
    rng = np.random.default_rng(1)
    edges = {(a, b): float(rng.uniform(0.8, 1.0)) for a in range(20) for b in range(a + 1, 20) if rng.random() < 0.3}
    assert clique_groups(graph(20, edges)) == clique_groups(graph(20, dict(reversed(list(edges.items())))))
