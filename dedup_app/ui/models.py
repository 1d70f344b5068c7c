"""The Qt item model of the duplicate groups: groups as top-level rows, their files as children.

Marks live here as plain data (which path is kept per group, which paths are marked for removal); the rules that
set them come from ``dedup_app.core.marking``. Thumbnails come from an :class:`ImageLoader` and are asked for
only when a row is painted.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractItemModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPalette, QPixmap
from PySide6.QtWidgets import QApplication

from dedup_app.controllers.marks import Choices, MarkState, Prepared, prepare_marks
from dedup_app.controllers.similar import SimilarGroup, probability_text
from dedup_app.core.bulk import drain, text_array, text_rank
from dedup_app.core.duplicates import DuplicateGroup, GroupMember
from dedup_app.core.marking import Marks
from dedup_app.core.units import format_bytes
from dedup_app.ui.thumbnails import ImageLoader

THUMB = 64
COLUMNS = ("File", "Similarity", "Size", "Dimensions", "Modified", "Folder")
HEADER_TIPS = (
    "File name; groups list the kept file first",
    "Similarity to the kept file (groups: the lowest in the group)",
    "File size (groups: the space freed by removing all but the kept file)",
    "Width x height, upright",
    "Last modified",
    "Folder",
)
COL_FILE, COL_SIM, COL_SIZE, COL_DIMS, COL_DATE, COL_FOLDER = range(len(COLUMNS))

AnyIndex = QModelIndex | QPersistentModelIndex
_DISPLAY = Qt.ItemDataRole.DisplayRole
_SIMILAR_ROLES = (Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.ToolTipRole)
_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
_FLAGS_CHECKABLE = _FLAGS | Qt.ItemFlag.ItemIsUserCheckable

#: Group rows handed to the view at a time (:meth:`GroupsModel.fetchMore`): a few screens' worth. The view lays out,
#: expands and indexes only the rows it has been given, so a million files open as fast as a hundred.
CHUNK = 64
#: After a sort or a regroup the selected file stays selected when its group lands within this many rows of the
#: top; further down, the view starts at the top (each chunk handed over and expanded costs the UI thread some
#: 15 ms at a million files, so following a file 2,000 rows down held it for over 200 ms).
FOLLOW = 3 * CHUNK


@dataclass
class PreparedGroups:
    """Groups ready to show: the marks (:func:`prepare_marks`) and the display order, worked out on any thread by
    :meth:`GroupsModel.prepare`, taken over by :meth:`GroupsModel.adopt` in constant time."""

    marks: Prepared
    #: sort key per group (in ``marks.groups`` order) for each sortable column, and the rank of each kept path
    keys: dict[int, np.ndarray]
    sort: tuple[int, Qt.SortOrder]
    order: np.ndarray  # display row -> index into marks.groups
    base_index: dict[int, int]  # id of a group -> its index in marks.groups
    pinned: int  # Find similar results at the top, whatever the order
    reclaimable: int  # bytes freed by removing all but the kept suggestion of every duplicate group
    #: whether these are the groups already on screen (the slider moved within a range where nothing changes)
    same_as_shown: bool = False


def release_all(retired: list[PreparedGroups]) -> None:
    """Free groups no longer shown (:attr:`GroupsModel.retired`) a piece at a time, on a pool thread
    (:mod:`dedup_app.core.bulk`): dropped at once, the 270,000 members of 74,000 groups held Python's interpreter
    lock, and so the window, for 200 ms."""
    while retired:
        prepared = retired.pop()
        marks = prepared.marks
        for part in (marks.groups, marks.precomputed, marks.group_of, marks.keep, marks.review, marks.sizes,
                     prepared.base_index, marks.marked, marks.unsure, marks.references):  # fmt: skip
            drain(part)  # type: ignore[arg-type]


class DisplayOrder(Sequence[DuplicateGroup]):
    """The groups in display order, as a view of the prepared list through a permutation: a sort makes no new list
    of a hundred thousand groups on the UI thread."""

    def __init__(self, base: list[DuplicateGroup], order: np.ndarray) -> None:
        self._base, self._order = base, order.tolist()

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, i):  # type: ignore[no-untyped-def,override]
        if isinstance(i, slice):
            return [self._base[k] for k in self._order[i]]
        return self._base[self._order[i]]

    def __iter__(self) -> Iterator[DuplicateGroup]:
        return map(self._base.__getitem__, self._order)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or len(other) != len(self):
            return False
        return all(a is b or a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]


def _sort_keys(groups: Sequence[DuplicateGroup]) -> dict[int, np.ndarray]:
    """The sort key of each group per column: members, lowest similarity, bytes freed, and (for the other columns)
    the rank of the kept suggestion's path. (NumPy sorts without holding Python's interpreter lock, so the window
    stays live while a pool thread prepares.)"""
    rank = text_rank([g.keep.path for g in groups])
    return {
        COL_FILE: np.fromiter((len(g.members) for g in groups), np.int64, len(groups)),
        COL_SIM: np.fromiter((g.min_similarity for g in groups), np.float64, len(groups)),
        COL_SIZE: np.fromiter((g.reclaimable_bytes for g in groups), np.int64, len(groups)),
        -1: rank,
    }


def _order(keys: dict[int, np.ndarray], pinned: int, sort: tuple[int, Qt.SortOrder]) -> np.ndarray:
    """Display order: the pinned groups first, then the others by ``sort`` (stable; NumPy, so a few milliseconds at
    100,000 groups)."""
    column, order = sort
    key = keys.get(column, keys[-1])[pinned:]
    descending = order == Qt.SortOrder.DescendingOrder
    rest = np.argsort(-key if descending else key, kind="stable") + pinned
    return np.concatenate([np.arange(pinned), rest]).astype(np.int64)


class GroupsModel(QAbstractItemModel):
    """Groups and their members. Internal ids: 0 for a group row, group index + 1 for its file rows.

    What is kept and marked lives in a Qt-free :class:`MarkState` (``marks``); this model shows it and tells the
    views what changed. ``marks_changed`` fires when the kept or marked files change (not on every repaint).
    """

    marks_changed = Signal()

    def __init__(self, loader: ImageLoader, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.loader = loader
        self.marks = MarkState()
        self._sort = (COL_SIZE, Qt.SortOrder.DescendingOrder)
        self._fetched = 0  # group rows the view has been given
        #: what adopting replaced: the window lets it go on a pool thread after each reset (freeing a million objects
        #: takes a good part of a second, and on the UI thread that is a stall)
        self.retired: list[PreparedGroups] = []
        self._shown = self.prepare([], "best", [], None, self.marks.choices(), self._sort)
        self._row_of = np.zeros(0, np.int64)  # index into the prepared groups -> display row
        self._placeholder = QPixmap(THUMB, THUMB)
        self._placeholder.fill(Qt.GlobalColor.transparent)
        loader.loaded.connect(self._thumbnail_loaded)

    # -- content ------------------------------------------------------------------------------------------------

    @property
    def groups(self) -> Sequence[DuplicateGroup]:
        """The groups shown, in display order."""
        return self.marks.groups

    @property
    def marked(self) -> set[str]:
        return self.marks.marked

    @property
    def unsure(self) -> set[str]:
        return self.marks.unsure

    @property
    def review(self) -> dict[int, int]:
        return self.marks.review

    @property
    def reference_folders(self) -> list[str]:
        return self.marks.reference_folders

    @property
    def sort_order(self) -> tuple[int, Qt.SortOrder]:
        """The column and order the groups are sorted by."""
        return self._sort

    @property
    def reclaimable_bytes(self) -> int:
        """Bytes freed by removing all but the kept suggestion of every duplicate group shown."""
        return self._shown.reclaimable

    def duplicate_count(self) -> int:
        """How many duplicate groups are shown (a Find similar result on top is not one)."""
        return len(self.groups) - self._shown.pinned

    @staticmethod
    def prepare(
        groups: Sequence[DuplicateGroup],
        rule: str,
        reference_folders: Sequence[str],
        rule_marks: Sequence[Marks] | None,
        choices: Choices,
        sort: tuple[int, Qt.SortOrder],
        shown: Sequence[DuplicateGroup] | None = None,
    ) -> PreparedGroups:
        """Everything :meth:`adopt` needs to show ``groups``, worked out on any thread (it reads only its
        arguments). ``shown``: the groups on screen now, to tell whether anything changed."""
        marks = prepare_marks(groups, rule, reference_folders, rule_marks, choices)
        groups = marks.groups
        pinned = sum(1 for _ in itertools.takewhile(lambda g: isinstance(g, SimilarGroup), groups))
        keys = _sort_keys(groups)
        reclaim = int(keys[COL_SIZE][pinned:].sum())
        same = shown is not None and same_groups(groups, shown)
        return PreparedGroups(marks, keys, sort, _order(keys, pinned, sort), {id(g): i for i, g in enumerate(groups)},
                              pinned, reclaim, same)  # fmt: skip

    def set_groups(
        self,
        groups: Sequence[DuplicateGroup],
        rule: str,
        reference_folders: Sequence[str],
        rule_marks: Sequence[Marks] | None = None,
    ) -> None:
        """Show ``groups`` marked by ``rule``, with the user's remembered choices applied again where they fit
        (see :class:`MarkState`); ``rule_marks`` may bring the rule's marks worked out off the UI thread. Works
        everything out here: the window prepares large results off the UI thread (:meth:`prepare`, :meth:`adopt`)."""
        self.adopt(self.prepare(groups, rule, reference_folders, rule_marks, self.marks.choices(), self._sort))

    def adopt(self, prepared: PreparedGroups) -> None:
        """Show ``prepared`` (see :meth:`prepare`): a model reset that hands the view only the first rows."""
        if not self.marks.fresh(prepared.marks):  # the user changed a mark while it was worked out
            m = prepared.marks
            prepared = self.prepare(m.groups, m.rule, m.reference_folders, list(m.precomputed.values()) or None,
                                    self.marks.choices(), self._sort)  # fmt: skip
        elif prepared.sort != self._sort:  # or the sort
            prepared.order, prepared.sort = _order(prepared.keys, prepared.pinned, self._sort), self._sort
        self.beginResetModel()
        self.marks.adopt(prepared.marks)
        self.retired.append(self._shown)
        self._shown = prepared
        self._apply_order(prepared.order)
        self.endResetModel()
        self.marks_changed.emit()

    def _apply_order(self, order: np.ndarray) -> None:
        """Show the prepared groups in ``order``, from the first chunk (inside a model reset)."""
        self._shown.order = order
        self.marks.groups = DisplayOrder(self._shown.marks.groups, order)
        self._row_of = np.empty(len(order), np.int64)
        self._row_of[order] = np.arange(len(order))
        self._fetched = min(CHUNK, len(order))

    def set_rule(self, rule: str) -> None:
        """Re-mark every group with ``rule`` (the user's own choices are dropped: they asked for the rule)."""
        self.marks.forget_user_choices()
        self.set_groups(self._shown.marks.groups, rule, self.marks.reference_folders)

    def row_of(self, group: DuplicateGroup) -> int:
        """The display row of a shown group (-1 when it is not shown)."""
        i = self._shown.base_index.get(id(group))
        return -1 if i is None else int(self._row_of[i])

    def fetched(self) -> int:
        """How many group rows the view has been given."""
        return self._fetched

    def ensure_fetched(self, row: int) -> bool:
        """Hand the view group rows up to ``row`` (a whole chunk more); False when there is no such row."""
        if not 0 <= row < len(self.groups):
            return False
        if row >= self._fetched:
            self._fetch_to(min(len(self.groups), (row // CHUNK + 1) * CHUNK))
        return True

    def locate(self, path: str, limit: int = FOLLOW) -> QModelIndex:
        """The row of ``path`` in its group (its group's row for a group's kept-file row), fetching rows up to it
        when it lies within ``limit`` group rows of the top; invalid otherwise."""
        group = self.marks.group_of(path)
        gi = -1 if group is None else self.row_of(group)
        if gi < 0 or gi >= max(limit, self._fetched) or not self.ensure_fetched(gi):
            return QModelIndex()
        row = next(r for r, m in enumerate(group.members) if m.image.path == path)  # type: ignore[union-attr]
        return self.createIndex(row, 0, gi + 1)

    def canFetchMore(self, parent: AnyIndex) -> bool:  # noqa: N802
        return not parent.isValid() and self._fetched < len(self.groups)

    def fetchMore(self, parent: AnyIndex) -> None:  # noqa: N802
        if not parent.isValid():
            self._fetch_to(min(len(self.groups), self._fetched + CHUNK))

    def _fetch_to(self, rows: int) -> None:
        if rows <= self._fetched:
            return
        self.beginInsertRows(QModelIndex(), self._fetched, rows - 1)
        self._fetched = rows
        self.endInsertRows()

    def member(self, index: AnyIndex) -> tuple[int, GroupMember | None]:
        """(group index, member or None for a group row) of an index."""
        if not index.isValid():
            return -1, None
        parent_id = index.internalId()
        if parent_id == 0:
            return index.row(), None
        gi = parent_id - 1
        return gi, self.groups[gi].members[index.row()]

    def kept(self, gi: int) -> str:
        """The path kept in group row ``gi``."""
        return self.marks.keep_of(self.groups[gi])

    def is_reference(self, path: str) -> bool:
        return self.marks.is_reference(path)

    def toggle_mark(self, path: str) -> bool:
        """Flip the removal mark of a file (the kept file and reference files cannot be marked)."""
        if not self.marks.toggle(path):
            return False
        self._user_marked([path])
        return True

    def set_keep(self, path: str) -> None:
        """Keep ``path`` in its group: it is unmarked, and the previously kept file is marked instead."""
        group = self.marks.set_keep(path)
        if group is None:
            return
        gi = self.row_of(group)
        if not 0 <= gi < self._fetched:
            self.marks_changed.emit()
            return
        self.dataChanged.emit(self.index(0, 0, self.index(gi, 0)),
                              self.index(len(group.members) - 1, len(COLUMNS) - 1, self.index(gi, 0)))  # fmt: skip
        self.dataChanged.emit(self.index(gi, 0), self.index(gi, len(COLUMNS) - 1))
        self.marks_changed.emit()

    def similarity_to_kept(self, gi: int) -> dict[str, float]:
        """Each member's similarity to the file kept in group ``gi``."""
        return self.marks.similarity_to_kept(self.groups[gi])

    def mark_all_in_group(self, gi: int) -> int:
        """Mark every member of group ``gi`` but the kept file and reference files; returns how many changed."""
        if not 0 <= gi < len(self.groups):
            return 0
        changed = self.marks.mark_all(self.groups[gi])
        self._user_marked(changed)
        return len(changed)

    def unmark_group(self, gi: int) -> int:
        """Untick every member of group ``gi``; returns how many changed."""
        if not 0 <= gi < len(self.groups):
            return 0
        changed = self.marks.unmark_all(self.groups[gi])
        self._user_marked(changed)
        return len(changed)

    def _user_marked(self, paths: list[str]) -> None:
        """After the user ticked or unticked ``paths``: repaint those rows, tell the window."""
        if not paths:
            return
        for path in paths:
            self._changed(path)
        self.marks_changed.emit()

    def marked_in_view(self) -> list[str]:
        """Marked files of the groups shown, in display order."""
        return self.marks.marked_in_view()

    def marked_bytes(self) -> int:
        return self.marks.marked_bytes()

    def _changed(self, path: str) -> None:
        idx = self.locate(path, limit=0)  # only a row the view has
        if idx.isValid():
            self.dataChanged.emit(idx, idx.siblingAtColumn(len(COLUMNS) - 1))
            self.dataChanged.emit(idx.parent(), idx.parent())

    def _thumbnail_loaded(self, path: str, size: int) -> None:
        idx = self.locate(path, limit=0) if size == THUMB else QModelIndex()
        if idx.isValid():
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])
            gi = idx.internalId() - 1
            if self.kept(gi) == path:
                group_idx = self.index(gi, 0)
                self.dataChanged.emit(group_idx, group_idx, [Qt.ItemDataRole.DecorationRole])

    # -- QAbstractItemModel -------------------------------------------------------------------------------------

    def index(self, row: int, column: int, parent: AnyIndex = QModelIndex()) -> QModelIndex:  # noqa: B008
        # bounds checked here rather than with hasIndex(), which calls back into Python twice per index
        if row < 0 or not 0 <= column < len(COLUMNS):
            return QModelIndex()
        if not parent.isValid():
            return self.createIndex(row, column, 0) if row < self._fetched else QModelIndex()
        if parent.internalId() != 0 or parent.row() >= self._fetched:
            return QModelIndex()
        if row >= len(self.groups[parent.row()].members):
            return QModelIndex()
        return self.createIndex(row, column, parent.row() + 1)

    def parent(self, index: AnyIndex = QModelIndex()) -> QModelIndex:  # type: ignore[override]  # noqa: B008
        if not index.isValid() or index.internalId() == 0:
            return QModelIndex()
        return self.createIndex(index.internalId() - 1, 0, 0)

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008,N802
        if not parent.isValid():
            return self._fetched
        if parent.internalId() == 0 and parent.column() == 0:
            return len(self.groups[parent.row()].members)
        return 0

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008,N802
        return len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TIPS[section]
        return None

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if index.column() != COL_FILE or index.internalId() == 0:
            return _FLAGS
        gi, member = self.member(index)
        if member is not None and self.kept(gi) != member.image.path and self.marks.can_mark(member.image.path):
            return _FLAGS_CHECKABLE
        return _FLAGS

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        gi, member = self.member(index)
        if gi < 0:
            return None
        col = index.column()
        if member is None:
            return self._group_data(gi, col, role)
        image = member.image
        path = image.path
        kept = self.kept(gi) == path
        group = self.groups[gi]
        if isinstance(group, SimilarGroup) and (role in _SIMILAR_ROLES or (role == _DISPLAY and col == COL_FILE)):
            return self._similar_member_data(group, member, col, role)
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_FILE:
                name = os.path.basename(path)
                if image.info.frames > 1:  # only its first page was compared; it is never marked by a rule
                    name += f"  ({image.info.frames} pages)"
                group = self.groups[gi]
                if not kept and group.kind != "exact" and image.content_hash == self.marks.kept_hash(group):
                    name += "  (identical)"  # a byte copy of the kept file inside a near-duplicate group
                if kept:
                    return f"{name}  (keep)"
                return f"{name}  (reference)" if self.is_reference(path) else name
            if col == COL_SIM:
                sim = self.similarity_to_kept(gi).get(path, member.similarity)
                return "1.000" if sim >= 0.9995 else f"{sim:.3f}"
            if col == COL_SIZE:
                return format_bytes(image.size)
            if col == COL_DIMS:
                return f"{image.info.width} x {image.info.height}"
            if col == COL_DATE:
                return dt.datetime.fromtimestamp(image.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M")
            if col == COL_FOLDER:
                return os.path.dirname(path)
        elif role == Qt.ItemDataRole.CheckStateRole and col == COL_FILE and not kept and self.marks.can_mark(path):
            return Qt.CheckState.Checked if path in self.marked else Qt.CheckState.Unchecked
        elif role == Qt.ItemDataRole.DecorationRole and col == COL_FILE:
            return self.loader.get(path, THUMB) or self._placeholder
        elif role == Qt.ItemDataRole.FontRole and kept:
            font = QFont()
            font.setBold(True)
            return font
        elif role == Qt.ItemDataRole.ToolTipRole:
            state = "kept" if kept else "marked for removal" if path in self.marked else "not marked"
            if path in self.unsure and path not in self.marked:
                state += f": similar but below {self.marks.sure:.2f}, perhaps another photo; compare before ticking it"
            return f"{path}\n{state}"
        elif role == Qt.ItemDataRole.ForegroundRole and col == COL_SIM and path in self.unsure:
            return QColor(170, 100, 0)
        elif role == Qt.ItemDataRole.UserRole:
            return path
        return None

    def _similar_member_data(self, group: SimilarGroup, member: GroupMember, col: int, role: int) -> Any:
        """What a Find similar result shows of a file beyond a group's, on a second line: the image searched for
        named as such, each match's probability of being a copy and where else it is shown; the files below the
        threshold greyed."""
        path = member.image.path
        query = path == group.query.path
        copy = path in group.copies
        p = group.probability(path)
        if role == Qt.ItemDataRole.DisplayRole:
            if query:
                return f"{group.title}\nsearched for" + (" · not scanned" if group.external else "")
            name = os.path.basename(path)
            if member.image.content_hash == group.query.content_hash:
                name += "  (identical)"
            notes = [] if p is None else [f"copy {probability_text(p)}"]
            if self.is_reference(path):
                notes.append("reference")
            elif not self.marks.can_mark(path):  # the file its own group keeps: no tick box here either
                notes.append("kept")
            return f"{name}\n{' · '.join(notes)}" if notes else name
        if role == Qt.ItemDataRole.ForegroundRole:
            if query or copy or col not in (COL_FILE, COL_SIM):
                return None
            return QApplication.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
        # the tooltip
        if query:
            where = ("not among the scanned files: only the reference here, never marked" if group.external
                     else "the reference of this result: never marked here")  # fmt: skip
            return f"{path}\nthe image searched for, {where}"
        verdict = (f"a copy (at or above the threshold {group.threshold:.3f})" if copy
                   else f"below the threshold {group.threshold:.3f}: not a copy")  # fmt: skip
        chance = "" if p is None else f", probability of a copy {probability_text(p)}"
        state = ("marked for removal" if path in self.marked else "not marked" if self.marks.can_mark(path)
                 else "in a reference folder: never marked" if self.is_reference(path)
                 else "kept in its own group: never marked")  # fmt: skip
        own = self.marks.group_of(path)
        if own is not None and own is not group and self.row_of(own) >= 0:
            state += f" (also in group {self.row_of(own) + 1})"
        return f"{path}\nsimilarity {member.similarity:.3f}{chance}: {verdict}\n{state}"

    def _similar_group_data(self, group: SimilarGroup, col: int, role: int) -> Any:
        copies = len(group.copies)
        shown_below = len(group.members) - 1 - copies
        below = shown_below + group.more
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_FILE:
                return (f"Similar to {group.title}\n{copies} {'copy' if copies == 1 else 'copies'}"
                        + (f", {below} less similar" if below else ""))  # fmt: skip
            if col == COL_SIM:
                return f"{group.members[1].similarity:.3f}" if len(group.members) > 1 else ""
            if col == COL_SIZE:
                return format_bytes(sum(m.image.size for m in group.members if m.image.path in group.copies))
            if col == COL_FOLDER:
                return os.path.dirname(group.query.path)
        elif role == Qt.ItemDataRole.ToolTipRole:
            more = f", {group.more} more not shown" if group.more else ""
            return (f"Find similar: the scanned files most similar to {group.query.path}, most similar first.\n"
                    f"{copies} at or above the threshold {group.threshold:.3f} (copies); the next {shown_below} "
                    f"below it are greyed{more}.\nTick the copies to remove (M ticks them all), label pairs with "
                    "D / N; the image searched for is never marked here.")  # fmt: skip
        return None

    def _group_data(self, gi: int, col: int, role: int) -> Any:
        group = self.groups[gi]
        if isinstance(group, SimilarGroup) and role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return self._similar_group_data(group, col, role)
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_FILE:
                review = self.review.get(id(group), 0)
                if review:  # short: the column is narrow on a laptop screen
                    return f"{gi + 1}: {len(group.members)} files, {review} to review"
                kind = "exact copies" if group.kind == "exact" else "near-duplicates"
                return f"{gi + 1}: {len(group.members)} {kind}"
            if col == COL_SIM:
                others = [v for p, v in self.similarity_to_kept(gi).items() if p != self.kept(gi)]
                return f"{min(others, default=group.min_similarity):.3f}"
            if col == COL_SIZE:
                return format_bytes(group.reclaimable_bytes)
            if col == COL_FOLDER:
                return os.path.commonpath([m.image.path for m in group.members]) if len(group.members) else ""
        elif role == Qt.ItemDataRole.DecorationRole and col == COL_FILE:
            return self.loader.get(self.kept(gi), THUMB) or self._placeholder
        elif role == Qt.ItemDataRole.FontRole:
            font = QFont()
            font.setBold(True)
            return font
        elif role == Qt.ItemDataRole.ForegroundRole and id(group) in self.review and col == COL_FILE:
            return QColor(170, 100, 0)
        elif role == Qt.ItemDataRole.ToolTipRole:
            note = (
                f"\n{self.review[id(group)]} files are similar but not surely the same picture (below "
                f"{self.marks.sure:.2f}): not ticked. Compare, then tick them with Space, or the whole group with M."
                if id(group) in self.review
                else ""
            )
            return (
                f"Group {gi + 1}: {len(group.members)} files; removing all but the kept one frees "
                f"{format_bytes(group.reclaimable_bytes)}; lowest similarity to the kept file "
                f"{group.min_similarity:.3f}{note}"
            )
        return None

    def setData(self, index: AnyIndex, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:  # noqa: N802
        gi, member = self.member(index)
        if member is None or role != Qt.ItemDataRole.CheckStateRole:
            return False
        want = Qt.CheckState(value) == Qt.CheckState.Checked if not isinstance(value, bool) else value
        if (member.image.path in self.marked) != want:
            return self.toggle_mark(member.image.path)
        return True

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort the groups (members keep their order within a group): a reset, so the view is handed the first
        rows again; the window keeps the selected file selected (see :data:`FOLLOW`)."""
        if (column, order) == self._sort == self._shown.sort:
            return  # QTreeView.sortByColumn asks twice (through the header's sort indicator, then itself)
        self._sort = (column, order)
        self._shown.sort = self._sort
        self.beginResetModel()
        self._apply_order(_order(self._shown.keys, self._shown.pinned, self._sort))
        self.endResetModel()


def same_groups(a: Sequence[DuplicateGroup], b: Sequence[DuplicateGroup]) -> bool:
    """Whether two lists hold the same groups (same kind and members, in any order)."""
    if len(a) != len(b):
        return False
    return all(
        ga.kind == gb.kind
        and [m.image.path for m in ga.members] == [m.image.path for m in gb.members]
        and getattr(ga, "copies", None) == getattr(gb, "copies", None)  # a Find similar result at another threshold
        for ga, gb in zip(_by_key(a), _by_key(b), strict=True)
    )


def _by_key(groups: Sequence[DuplicateGroup]) -> Iterator[DuplicateGroup]:
    """``groups`` in the order of their first member's path, sorted by NumPy (a list sort of 200,000 paths holds
    Python's interpreter lock, and the window waiting on a pool thread's regroup, for 80 ms)."""
    order = np.argsort(text_array([_group_key(g) for g in groups]), kind="stable")
    return map(groups.__getitem__, order.tolist())


def _group_key(group: DuplicateGroup) -> str:
    return group.members[0].image.path
