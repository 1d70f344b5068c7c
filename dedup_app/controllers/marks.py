"""Which file each group keeps and which files are ticked for removal: the rule's choice, then the user's.

The rule (``dedup_app.core.marking``) suggests; the user overrides with K (keep this one), Space (tick or untick)
and M (tick the whole group). The user's own choices are remembered by path, so they survive a regroup (a slider
move, a label, a trash) as long as the file is still in a group. Changing the rule drops them: the user asked for
the rule. Export writes exactly what is shown here (:meth:`MarkState.decisions`).
"""

from __future__ import annotations

from collections.abc import Sequence

from dedup_app.controllers.similar import SimilarGroup, similar_marks
from dedup_app.core.duplicates import DuplicateGroup
from dedup_app.core.marking import DEFAULT_RULE, SURE_SIMILARITY, Marks, in_folders, mark_group


class MarkState:
    """The kept file per group, the ticked files, and the files left for review, for the groups on screen.

    Groups are identified by object (``id``), so sorting the list does not disturb what is kept where.
    """

    def __init__(self, sure: float = SURE_SIMILARITY) -> None:
        self.groups: list[DuplicateGroup] = []
        self.rule = DEFAULT_RULE
        self.reference_folders: list[str] = []
        self.sure = sure
        #: paths of the shown files that lie in reference folders (worked out once per set_groups)
        self.references: set[str] = set()
        self.marked: set[str] = set()
        self.unsure: set[str] = set()  # files the rule left unmarked: similar, perhaps not the same picture
        self.review: dict[int, int] = {}  # id of a group -> how many of its files wait for review
        self._keep: dict[int, str] = {}  # id of a group -> the kept path
        self._precomputed: dict[int, Marks] = {}
        self._to_kept: dict[int, dict[str, float]] = {}
        #: whether the user changed a mark or the kept file since the last set_groups
        self.user_changed = False
        self.manual_keep: set[str] = set()
        self.manual_marks: dict[str, bool] = {}
        self._group_of: dict[str, DuplicateGroup] = {}

    # -- content ------------------------------------------------------------------------------------------------

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
        self.groups = list(groups)
        self._precomputed = (
            {id(g): m for g, m in zip(self.groups, rule_marks, strict=True)} if rule_marks is not None else {}
        )
        self.rule, self.reference_folders = rule, list(reference_folders)
        self.references = (
            {m.image.path for g in self.groups for m in g.members if in_folders(m.image.path, self.reference_folders)}
            if self.reference_folders
            else set()  # the common case: no path checks at all
        )
        # a file both in a Find similar result (shown first) and in a duplicate group belongs to the latter
        self._group_of = {m.image.path: g for g in self.groups for m in g.members}
        self._keep.clear()
        self.marked = set()
        self.review = {}
        self.unsure = set()
        self._to_kept = {}
        for group in self.groups:
            marks = self.rule_marks(group)
            if marks.review:
                self.review[id(group)] = len(marks.unsure)
                self.unsure |= marks.unsure
            keep = (
                marks.keep
                if isinstance(group, SimilarGroup)  # the query is always the reference
                else next((m.image.path for m in group.members if m.image.path in self.manual_keep), marks.keep)
            )
            self._keep[id(group)] = keep
            for m in group.members:
                path = m.image.path
                if path == keep or self.is_reference(path):
                    continue
                if self.manual_marks.get(path, path in marks.marked):
                    self.marked.add(path)
        self.user_changed = False

    def set_rule(self, rule: str) -> None:
        """Re-mark every group with ``rule``; the user's own choices are dropped (they asked for the rule)."""
        self.forget_user_choices()
        self.set_groups(self.groups, rule, self.reference_folders)

    def rule_marks(self, group: DuplicateGroup) -> Marks:
        """What the rule alone does to ``group`` (keep, marks, review), before the user's own choices."""
        known = self._precomputed.get(id(group))
        if known is not None:
            return known
        if isinstance(group, SimilarGroup):
            return similar_marks(group)
        return mark_group(group, self.rule, self.reference_folders, self.references, self.sure)

    def remember_user_choices(self) -> None:
        """Before the groups are rebuilt (threshold, labels, removals): note where the user departed from the
        rule, so :meth:`set_groups` can apply it again."""
        if not self.groups or not self.user_changed:
            return
        for group in self.groups:
            by_rule = self.rule_marks(group)
            keep = self._keep.get(id(group))
            if keep and keep != by_rule.keep:
                self.manual_keep.add(keep)
            for m in group.members:
                path = m.image.path
                if self._group_of.get(path) is not group:
                    continue  # in two groups (a Find similar result, and its own): its own group's rule counts
                if (path in self.marked) != (path in by_rule.marked) and path != keep:
                    self.manual_marks[path] = path in self.marked

    def forget_user_choices(self) -> None:
        """Drop the remembered choices (a new scan, another rule)."""
        self.manual_keep.clear()
        self.manual_marks.clear()

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
        and in its own group)."""
        paths = (m.image.path for g in self.groups for m in g.members if m.image.path in self.marked)
        return list(dict.fromkeys(paths))

    def marked_bytes(self) -> int:
        """Bytes of the marked files."""
        sizes = {m.image.path: m.image.size for g in self.groups for m in g.members if m.image.path in self.marked}
        return sum(sizes.values())

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
        if path in self.marked:
            self.marked.discard(path)
        else:
            self.marked.add(path)
        self.user_changed = True
        return True

    def set_keep(self, path: str) -> DuplicateGroup | None:
        """Keep ``path`` in its group: it is unmarked, and the previously kept file is marked instead. Returns the
        group (its similarities to the kept file changed)."""
        group = self.group_of(path)
        if group is None or isinstance(group, SimilarGroup):  # a Find similar result keeps its query
            return None
        old = self.keep_of(group)
        self._keep[id(group)] = path
        self.user_changed = True
        self.marked.discard(path)
        if old != path and not self.is_reference(old):
            self.marked.add(old)
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
        self.marked.update(changed)
        self.user_changed = self.user_changed or bool(changed)
        return changed

    def unmark_all(self, group: DuplicateGroup) -> list[str]:
        """Untick every member; returns the paths that changed."""
        changed = [m.image.path for m in group.members if m.image.path in self.marked]
        self.marked.difference_update(changed)
        self.user_changed = self.user_changed or bool(changed)
        return changed
