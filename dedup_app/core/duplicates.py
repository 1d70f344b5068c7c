"""Duplicate groups from a scan result: exact copies, near-duplicates, and which file to keep.

A :class:`DuplicateFinder` searches once, at the lowest threshold the caller may want (the GUI's slider minimum),
and then regroups at any higher threshold from memory, without touching the model or the index again.

Near-duplicate grouping works on distinct contents (byte-identical files share one embedding), so exact copies
never inflate a group's similarity structure; a content's copies all land in the group of that content. Content
that has copies but no near-duplicate forms an ``exact`` group. No file is in two groups.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from dedup_app.core.grouping import clique_groups
from dedup_app.core.index import EXACT_MAX, SimilarityGraph, similarity_graph
from dedup_app.core.progress import CancelToken, Progress
from dedup_app.core.scan import ImageRecord, ScanResult


@dataclass(frozen=True)
class GroupMember:
    """A file in a group and its similarity to the group's representative (the file suggested to keep)."""

    image: ImageRecord
    similarity: float


@dataclass(frozen=True)
class DuplicateGroup:
    """Files that are copies of each other. ``members[0]`` is the keep suggestion and the representative."""

    kind: str  # "exact" or "near"
    members: tuple[GroupMember, ...]

    @property
    def keep(self) -> ImageRecord:
        """The file suggested to keep: highest resolution, then largest file, then oldest."""
        return self.members[0].image

    @property
    def reclaimable_bytes(self) -> int:
        """Bytes freed by removing every member except the keep suggestion."""
        return sum(m.image.size for m in self.members[1:])

    @property
    def min_similarity(self) -> float:
        """Lowest similarity of a member to the representative."""
        return min(m.similarity for m in self.members[1:]) if len(self.members) > 1 else 1.0


def keep_order(image: ImageRecord) -> tuple[int, int, int, str]:
    """Sort key putting the best file to keep first: most pixels, then most bytes, then oldest, then path."""
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
        self._vectors = (
            result.embeddings[[c[0] for c in self.contents]].astype(np.float32)
            if self.contents
            else np.zeros((0, result.embeddings.shape[1] if result.embeddings.ndim == 2 else 1), np.float32)
        )
        self.graph: SimilarityGraph | None = None

    def search(self, min_threshold: float, cancel: CancelToken | None = None) -> Generator[Progress, None, None]:
        """Find all pairs of distinct contents at or above ``min_threshold`` (yields progress)."""
        self.graph = yield from similarity_graph(self._vectors, min_threshold, self.exact_max, cancel)

    def groups(self, threshold: float) -> list[DuplicateGroup]:
        """Exact and near-duplicate groups at ``threshold``, largest reclaimable size first."""
        if self.graph is None:
            raise RuntimeError("call search() before groups()")
        near = clique_groups(self.graph.at(threshold))
        in_near = {c for group in near for c in group}
        out = [self._group("near", group) for group in near]
        out += [
            self._group("exact", [c])
            for c in range(len(self.contents))
            if len(self.contents[c]) > 1 and c not in in_near
        ]
        out.sort(key=lambda g: (-g.reclaimable_bytes, -len(g.members), g.keep.path))
        return out

    def _group(self, kind: str, content_ids: list[int]) -> DuplicateGroup:
        images = self.result.images
        members = [k for c in content_ids for k in self.contents[c]]
        members.sort(key=lambda k: keep_order(images[k]))
        emb = self.result.embeddings
        rep = emb[members[0]].astype(np.float32)
        sims = emb[members].astype(np.float32) @ rep
        rep_hash = images[members[0]].content_hash
        return DuplicateGroup(
            kind,
            tuple(
                GroupMember(images[k], 1.0 if images[k].content_hash == rep_hash else float(min(1.0, s)))
                for k, s in zip(members, sims, strict=True)
            ),
        )


def find_groups(
    result: ScanResult, threshold: float | None = None, cancel: CancelToken | None = None
) -> Generator[Progress, None, list[DuplicateGroup]]:
    """One-shot grouping at ``threshold`` (default: the model's calibrated threshold)."""
    t = result.threshold if threshold is None else threshold
    finder = DuplicateFinder(result)
    yield from finder.search(t, cancel)
    return finder.groups(t)
