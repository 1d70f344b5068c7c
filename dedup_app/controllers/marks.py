"""Which file each group keeps and which files are ticked for removal: the rule's choice, then the user's.

The rule (``dedup_app.core.marking``) suggests; the user overrides with K (keep this one), Space (tick or untick)
and M (tick the whole group). The user's own choices are remembered by path, so they survive a regroup (a slider
move, a label, a trash) as long as the file is still in a group. Changing the rule drops them: the user asked for
the rule. Export writes exactly what is shown here (:meth:`MarkState.decisions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dedup_app.controllers.similar import SimilarGroup, similar_marks
from dedup_app.core.duplicates import DuplicateGroup
from dedup_app.core.marking import DEFAULT_RULE, SURE_SIMILARITY, Marks, in_folders, mark_groups


@dataclass
class Prepared:
    """Everything :meth:`MarkState.adopt` takes over for one list of groups, worked out by :func:`prepare_marks`
    (on any thread: at a million files this is seconds of Python that must not hold up the window)."""

    groups: list[DuplicateGroup]
    rule: str
    reference_folders: list[str]
    precomputed: dict[int, Marks]
    references: set[str]
    group_of: dict[str, DuplicateGroup]
    keep: dict[int, str]
    marked: set[str]
    review: dict[int, int]
    unsure: set[str]
    sizes: dict[str, int]
    marked_bytes: int
    #: :attr:`MarkState.choices_version` of the user's choices applied here
    choices_version: int


@dataclass(frozen=True)
class Choices:
    """A copy of the user's remembered choices, for :func:`prepare_marks` on another thread."""

    keep: frozenset[str]
    marks: dict[str, bool]
    version: int


def prepare_marks(
    groups: Sequence[DuplicateGroup],
    rule: str,
    reference_folders: Sequence[str],
    rule_marks: Sequence[Marks] | None,
    choices: Choices,
    sure: float = SURE_SIMILARITY,
) -> Prepared:
    """Mark ``groups`` by ``rule``, then apply the user's remembered ``choices`` where they still fit.

    ``rule_marks`` may bring what the rule does to each group (worked out with this rule, these reference folders
    and ``sure``). Pure: reads nothing but its arguments, so it may run off the UI thread."""
    groups = list(groups)
    precomputed = {id(g): m for g, m in zip(groups, rule_marks, strict=True)} if rule_marks is not None else {}
    folders = list(reference_folders)
    references = (
        {m.image.path for g in groups for m in g.members if in_folders(m.image.path, folders)}
        if folders
        else set()  # the common case: no path checks at all
    )
    # a file both in a Find similar result (shown first) and in a duplicate group belongs to the latter
    group_of = {m.image.path: g for g in groups for m in g.members}
    sizes = {m.image.path: m.image.size for g in groups for m in g.members}
    keeps: dict[int, str] = {}
    marked: set[str] = set()
    review: dict[int, int] = {}
    unsure: set[str] = set()
    missing = [g for g in groups if id(g) not in precomputed]
    worked_out = dict(zip(map(id, missing), _rule_marks(missing, rule, folders, references, sure), strict=True))
    for group in groups:
        marks = precomputed.get(id(group)) or worked_out[id(group)]
        if marks.review:
            review[id(group)] = len(marks.unsure)
            unsure |= marks.unsure
        keep = (
            marks.keep
            if isinstance(group, SimilarGroup)  # the query is always the reference
            else next((m.image.path for m in group.members if m.image.path in choices.keep), marks.keep)
        )
        keeps[id(group)] = keep
        for m in group.members:
            path = m.image.path
            if path == keep or path in references:
                continue
            if choices.marks.get(path, path in marks.marked):
                marked.add(path)
    return Prepared(groups, rule, folders, precomputed, references, group_of, keeps, marked, review, unsure, sizes,
                    sum(sizes[p] for p in marked), choices.version)  # fmt: skip


def _rule_marks(
    groups: Sequence[DuplicateGroup], rule: str, folders: Sequence[str], references: set[str], sure: float
) -> list[Marks]:
    """What the rule does to each of ``groups`` (a Find similar result keeps its query)."""
    duplicates = iter(mark_groups([g for g in groups if not isinstance(g, SimilarGroup)], rule, folders, references,
                                  sure))  # fmt: skip
    return [similar_marks(g) if isinstance(g, SimilarGroup) else next(duplicates) for g in groups]


class MarkState:
    """The kept file per group, the ticked files, and the files left for review, for the groups on screen.

    Groups are identified by object (``id``), so sorting the list does not disturb what is kept where. The user's
    departures from the rule are noted as they are made (not by walking every group before a regroup), and the
    marked files' bytes are kept up to date the same way: at a million files nothing here walks the groups on the
    UI thread but :meth:`set_groups` itself, which the window does off it (:func:`prepare_marks`, :meth:`adopt`).
    """

    def __init__(self, sure: float = SURE_SIMILARITY) -> None:
        self.sure = sure
        self.manual_keep: set[str] = set()
        self.manual_marks: dict[str, bool] = {}
        #: counts changes of the remembered choices: a preparation made with older ones is out of date
        self.choices_version = 0
        self.adopt(prepare_marks([], DEFAULT_RULE, [], None, self.choices(), sure))

    # -- content ------------------------------------------------------------------------------------------------

    def choices(self) -> Choices:
        """The user's remembered choices as they are now (a copy, for another thread)."""
        return Choices(frozenset(self.manual_keep), dict(self.manual_marks), self.choices_version)

    def set_groups(
        self,
        groups: Sequence[DuplicateGroup],
        rule: str,
        reference_folders: Sequence[str],
        rule_marks: Sequence[Marks] | None = None,
    ) -> None:
        """Mark ``groups`` by ``rule``, then re-apply the user's remembered choices where they still fit.

        ``rule_marks`` may bring what the rule does to each group, worked out off the UI thread with this rule,
        these reference folders and the same sure level; otherwise it is worked out here."""
        self.adopt(prepare_marks(groups, rule, reference_folders, rule_marks, self.choices(), self.sure))

    def adopt(self, prepared: Prepared) -> None:
        """Show what :func:`prepare_marks` worked out (in constant time). It must have been made with the current
        choices (:meth:`fresh`)."""
        self.groups: Sequence[DuplicateGroup] = prepared.groups
        self.rule, self.reference_folders = prepared.rule, prepared.reference_folders
        self._precomputed = prepared.precomputed
        #: paths of the shown files that lie in reference folders (worked out once per set_groups)
        self.references = prepared.references
        self._group_of = prepared.group_of
        self._keep = prepared.keep  # id of a group -> the kept path
        self.marked = prepared.marked
        self.review = prepared.review  # id of a group -> how many of its files wait for review
        self.unsure = prepared.unsure  # files the rule left unmarked: similar, perhaps not the same picture
        self._sizes = prepared.sizes
        self._marked_bytes = prepared.marked_bytes
        self._to_kept: dict[int, dict[str, float]] = {}

    def fresh(self, prepared: Prepared) -> bool:
        """Whether ``prepared`` was made with the user's choices as they are now."""
        return prepared.choices_version == self.choices_version

    def set_rule(self, rule: str) -> None:
        """Re-mark every group with ``rule``; the user's own choices are dropped (they asked for the rule)."""
        self.forget_user_choices()
        self.set_groups(self.groups, rule, self.reference_folders)

    def rule_marks(self, group: DuplicateGroup) -> Marks:
        """What the rule alone does to ``group`` (keep, marks, review), before the user's own choices."""
        known = self._precomputed.get(id(group))
        if known is not None:
            return known
        return _rule_marks([group], self.rule, self.reference_folders, self.references, self.sure)[0]

    def forget_user_choices(self) -> None:
        """Drop the remembered choices (a new scan, another rule)."""
        self.manual_keep.clear()
        self.manual_marks.clear()
        self.choices_version += 1

    # -- queries ------------------------------------------------------------------------------------------------

    def keep_of(self, group: DuplicateGroup) -> str:
        """The path kept in ``group``."""
        return self._keep.get(id(group), group.keep.path)

    def group_of(self, path: str) -> DuplicateGroup | None:
        """The group holding ``path``, if shown."""
        return self._group_of.get(path)

    def is_reference(self, path: str) -> bool:
        """Whether ``path`` lies in a reference folder (never marked)."""
        return path in self.references

    def similarity_to_kept(self, group: DuplicateGroup) -> dict[str, float]:
        """Each member's similarity to the file kept in ``group`` (computed once per kept file)."""
        cached = self._to_kept.get(id(group))
        if cached is None:
            keep = self.keep_of(group)
            k = next((i for i, m in enumerate(group.members) if m.image.path == keep), 0)
            sims = group.similarities_to(k)
            cached = {m.image.path: float(v) for m, v in zip(group.members, sims, strict=True) if v == v}  # not NaN
            self._to_kept[id(group)] = cached
        return cached

    def kept_hash(self, group: DuplicateGroup) -> str | None:
        """The content hash of the kept file."""
        keep = self.keep_of(group)
        return next((m.image.content_hash for m in group.members if m.image.path == keep), None)

    def marked_in_view(self) -> list[str]:
        """Marked files of the groups shown, in display order, each once (a file may be in a Find similar result
        and in its own group). Walks the groups: for acting on them, not for every repaint (see :meth:`count`)."""
        paths = (m.image.path for g in self.groups for m in g.members if m.image.path in self.marked)
        return list(dict.fromkeys(paths))

    def count(self) -> int:
        """How many files are marked (every marked file is in a shown group)."""
        return len(self.marked)

    def marked_bytes(self) -> int:
        """Bytes of the marked files (kept up to date as marks change)."""
        return self._marked_bytes

    def decisions(self) -> list[Marks]:
        """What is shown, per group (in display order): the kept file, the ticked files, the files left for review
        (similar but below the sure level, and not ticked)."""
        out = []
        for group in self.groups:
            paths = {m.image.path for m in group.members}
            marked = frozenset(self.marked & paths)
            out.append(Marks(self.keep_of(group), marked, frozenset((self.unsure & paths) - marked)))
        return out

    # -- the user's changes -------------------------------------------------------------------------------------

    def can_mark(self, path: str) -> bool:
        """Whether ``path`` may be marked: not the kept file of its group (nor the query of a Find similar result),
        not in a reference folder."""
        group = self.group_of(path)
        return group is not None and self.keep_of(group) != path and not self.is_reference(path)

    def toggle(self, path: str) -> bool:
        """Flip the removal mark of a file (the kept file and reference files cannot be marked)."""
        if not self.can_mark(path):
            return False
        self._set_marked(path, path not in self.marked)
        return True

    def _set_marked(self, path: str, on: bool) -> None:
        """Tick or untick ``path`` for the user, and note it where it departs from the rule."""
        if on == (path in self.marked):
            return
        if on:
            self.marked.add(path)
            self._marked_bytes += self._sizes.get(path, 0)
        else:
            self.marked.discard(path)
            self._marked_bytes -= self._sizes.get(path, 0)
        group = self.group_of(path)
        if group is None:
            return
        # in two groups (a Find similar result, and its own): its own group's rule counts (group_of gives that)
        by_rule = path in self.rule_marks(group).marked
        if path == self.keep_of(group) or on == by_rule:
            self.manual_marks.pop(path, None)
        else:
            self.manual_marks[path] = on
        self.choices_version += 1

    def set_keep(self, path: str) -> DuplicateGroup | None:
        """Keep ``path`` in its group: it is unmarked, and the previously kept file is marked instead. Returns the
        group (its similarities to the kept file changed)."""
        group = self.group_of(path)
        if group is None or isinstance(group, SimilarGroup):  # a Find similar result keeps its query
            return None
        old = self.keep_of(group)
        self._keep[id(group)] = path
        self.manual_keep.discard(old)
        if path != self.rule_marks(group).keep:
            self.manual_keep.add(path)
        self.choices_version += 1
        self._set_marked(path, False)
        if old != path and not self.is_reference(old):
            self._set_marked(old, True)
        self._to_kept.pop(id(group), None)  # similarities are shown to the kept file: recomputed
        sims = self.similarity_to_kept(group)
        paths = {m.image.path for m in group.members}
        self.unsure = (self.unsure - paths) | {p for p, v in sims.items() if v < self.sure and p != path}
        return group

    def mark_all(self, group: DuplicateGroup) -> list[str]:
        """Mark every member but the kept file and reference files (of a Find similar result: its copies); returns
        the paths that changed."""
        keep = self.keep_of(group)
        copies = group.copies if isinstance(group, SimilarGroup) else None  # not the files below the threshold
        # can_mark: in a Find similar result, a file its own group keeps stays kept (each group keeps one file)
        changed = [m.image.path for m in group.members
                   if m.image.path != keep and self.can_mark(m.image.path)
                   and m.image.path not in self.marked and (copies is None or m.image.path in copies)]  # fmt: skip
        for path in changed:
            self._set_marked(path, True)
        return changed

    def unmark_all(self, group: DuplicateGroup) -> list[str]:
        """Untick every member; returns the paths that changed."""
        changed = [m.image.path for m in group.members if m.image.path in self.marked]
        for path in changed:
            self._set_marked(path, False)
        return changed
