"""Grouping many groups without holding Python's interpreter lock for long: the batched vector arithmetic must give
what one group at a time gave, and the slice-at-a-time helpers what the one-call versions gave."""

from __future__ import annotations

import numpy as np

from dedup_app.core import bulk
from dedup_app.core.duplicates import DuplicateFinder, similarities_to_members
from dedup_app.core.imageio import ImageInfo
from dedup_app.core.marking import mark_group, mark_groups
from dedup_app.core.progress import drive
from dedup_app.core.scan import ImageRecord, ScanResult


def test_text_rank_and_flat_array_match_the_one_call_versions(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(bulk, "STEP", 7)  # many slices, and slices of different string widths
    rng = np.random.default_rng(1)
    strings = ["/p/" + "x" * int(rng.integers(0, 30)) + str(int(v)) for v in rng.integers(0, 50, 100)]
    rank = bulk.text_rank(strings)
    assert sorted(range(100), key=lambda k: (strings[k], k)) == np.argsort(rank).tolist()
    lists = [list(range(k, k + k % 4)) for k in range(50)]
    assert bulk.flat_array(lists).tolist() == [v for part in lists for v in part]
    assert bulk.flat_array([]).dtype == np.int64
    items, table = list(range(10)), {k: [k] for k in range(10)}
    bulk.drain(items)
    bulk.drain(table)
    assert items == [] and table == {}


def many_groups(groups: int = 300, seed: int = 0) -> DuplicateFinder:
    """``groups`` clusters of 2-4 close vectors, some with a byte copy (same content hash), newer files later."""
    rng = np.random.default_rng(seed)
    images, vectors = [], []
    for g in range(groups):
        centre = rng.normal(size=64)
        for m in range(2 + g % 3):
            v = centre + rng.normal(scale=0.15, size=64)
            content = f"g{g}m{m}"
            copies = 2 if (g + m) % 7 == 0 else 1
            for c in range(copies):
                path = f"/photos/{g:04d}-{m}-{c}.jpg"
                images.append(ImageRecord(path, 1000 + 10 * m + c, len(images), content,
                                          ImageInfo(400 * (m + 1), 300 * (m + 1), "JPEG")))  # fmt: skip
                vectors.append(v / np.linalg.norm(v))
    finder = DuplicateFinder(ScanResult(["/photos"], "m", 0.8, images, np.array(vectors, np.float16), []))
    drive(finder.search(0.8))
    return finder


def test_groups_share_the_finders_vectors_and_their_similarities_are_exact() -> None:
    finder = many_groups()
    groups = finder.groups(0.8)
    assert len(groups) > 200
    unit = finder._vectors
    for group in groups:
        matrix, rows = group.rows  # type: ignore[misc]
        assert matrix is unit  # no copy per group
        v = unit[list(rows)]
        expected = np.minimum(v @ v[0], 1.0)
        hashes = [m.image.content_hash for m in group.members]
        expected[[h == hashes[0] for h in hashes]] = 1.0
        assert np.allclose([m.similarity for m in group.members], expected, atol=1e-6)
        assert group.kind == ("exact" if len(set(hashes)) == 1 else "near")


def test_batched_similarities_and_marks_match_one_group_at_a_time() -> None:
    finder = many_groups(seed=2)
    groups = finder.groups(0.8)
    ks = [len(g.members) - 1 for g in groups]  # the last member: not the representative
    batched = similarities_to_members(groups, ks)
    for group, k, sims in zip(groups, ks, batched, strict=True):
        v = group.vectors
        assert v is not None
        one = np.minimum(v @ v[k], 1.0)
        ref = group.members[k].image.content_hash
        one[[m.image.content_hash == ref for m in group.members]] = 1.0
        assert np.allclose(sims, one, atol=1e-6)
        assert sims[k] == 1.0
    for rule in ("best", "oldest", "largest"):  # "oldest" keeps the later files here: not the representative
        marks = mark_groups(groups, rule, (), None, 0.975)
        assert marks == [mark_group(g, rule, (), None, 0.975) for g in groups]
        assert any(m.keep != g.members[0].image.path for m, g in zip(marks, groups, strict=True)) == (rule != "best")
        assert any(m.unsure for m in marks) and any(m.marked for m in marks)
