"""Pair labels for the window: label what is on screen, and the "not duplicate" pairs grouping must honour.

The store is read once and then kept in memory (the slider regroups many times a second and must not query SQLite
each time); a label written here updates that copy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dedup_app.core.duplicates import GroupMember
from dedup_app.core.labels import DUPLICATE, LABELS, NOT_DUPLICATE, LabelledFile, LabelStore
from dedup_app.core.units import count_of


def labelled(member: GroupMember) -> LabelledFile:
    """A group member as one side of a labelled pair (labels are kept by content hash)."""
    return LabelledFile(member.image.content_hash, member.image.path)


class LabelsController:
    """Labels the user gives to pairs and groups, and the counts the status bar and the training dialog show."""

    def __init__(self, store: LabelStore) -> None:
        self.store = store
        self._not_duplicates: frozenset[frozenset[str]] | None = None
        self._counts: dict[str, int] | None = None

    def not_duplicates(self) -> frozenset[frozenset[str]]:
        """Content-hash pairs labelled "not duplicate": never in one group."""
        if self._not_duplicates is None:
            self._not_duplicates = frozenset(self.store.not_duplicate_pairs())
        return self._not_duplicates

    def counts(self) -> dict[str, int]:
        """Pairs per label."""
        if self._counts is None:
            self._counts = self.store.counts()
        return dict(self._counts)

    def summary(self) -> str:
        """'labels: 12 (9 duplicate, 3 not)' for the status bar."""
        c = self.counts()
        text = f"labels: {c[DUPLICATE] + c[NOT_DUPLICATE]} ({c[DUPLICATE]} duplicate, {c[NOT_DUPLICATE]} not)"
        return text if self.store.saved else text + ", not saved: see the labels warning"

    def label_pair(self, a: GroupMember, b: GroupMember, label: str) -> str:
        """Label the pair shown; returns the status line."""
        self.store.put_pair(labelled(a), labelled(b), label)
        self._changed()
        return (f"Labelled {os.path.basename(a.image.path)} and {os.path.basename(b.image.path)} as "
                f"{_words(label)}")  # fmt: skip

    def label_group(self, members: Sequence[GroupMember], number: int, label: str) -> str:
        """Label every pair of a group (one transaction); returns the status line."""
        n = self.store.put_group([labelled(m) for m in members], label)
        self._changed()
        return f"Labelled {count_of(n, 'pair')} of group {number} as {_words(label)}"

    def refresh(self) -> None:
        """Read the store again on the next question (another dedup-app, or the command line, may have written)."""
        self._not_duplicates = None
        self._counts = None

    _changed = refresh


def _words(label: str) -> str:
    assert label in LABELS
    return label.replace("_", " ")
