"""Turning a similarity graph into duplicate groups that do not chain unrelated images together.

Connected components are the obvious grouping and the wrong one: with A~B and B~C, a component holds A and C
even when they are unrelated (a burst of photos, a slowly panning series), and a long chain can pull hundreds of
different pictures into one group. Here every group is a *clique* of the threshold graph: each member is at or
above the threshold with every other member. Groups are grown greedily from the best-connected image (the hub),
adding its neighbours in order of similarity as long as each one matches all members already in the group; what
does not fit is left for a later group.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from dedup_app.core.bulk import drain
from dedup_app.core.index import SimilarityGraph


def adjacency(graph: SimilarityGraph) -> dict[int, dict[int, float]]:
    """Neighbour map ``{node: {neighbour: similarity}}`` of the graph's edges (only nodes with edges)."""
    adj: dict[int, dict[int, float]] = defaultdict(dict)
    for a, b, s in zip(graph.i.tolist(), graph.j.tolist(), graph.s.tolist(), strict=True):
        adj[a][b] = s
        adj[b][a] = s
    return adj


def clique_groups(graph: SimilarityGraph) -> list[list[int]]:
    """Partition the nodes with edges into groups in which every pair is an edge of ``graph``.

    Hubs are taken in order of degree (then total similarity, then index, for stable results); each group is
    the hub plus its unassigned neighbours, most similar first, kept only if they match every member so far.
    Singletons are not returned. Each node is in at most one group.
    """
    adj = adjacency(graph)
    # hubs by degree, then total similarity, then index: sorted by NumPy, which does not hold Python's interpreter
    # lock while it sorts (at a million images this runs on a pool thread beside the window)
    ends = np.concatenate([graph.i, graph.j]).astype(np.int64)
    sims = np.concatenate([graph.s, graph.s]).astype(np.float64)
    degree = np.bincount(ends, minlength=graph.n)
    total = np.bincount(ends, weights=sims, minlength=graph.n)
    nodes = np.flatnonzero(degree)
    order = nodes[np.lexsort((nodes, -total[nodes], -degree[nodes]))].tolist()
    assigned: set[int] = set()
    groups: list[list[int]] = []
    for hub in order:
        if hub in assigned:
            continue
        members = [hub]
        candidates = sorted((v for v in adj[hub] if v not in assigned), key=lambda v: (-adj[hub][v], v))
        for v in candidates:
            nv = adj[v]
            if all(m in nv for m in members):
                members.append(v)
        if len(members) > 1:
            assigned.update(members)
            groups.append(members)
    drain(adj)  # a neighbour map per image: freed at once, at a million images the window would wait for it
    return groups
