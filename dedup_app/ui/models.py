"""The Qt item model of the duplicate groups: groups as top-level rows, their files as children.

Marks live here as plain data (which path is kept per group, which paths are marked for removal); the rules that
set them come from ``dedup_app.core.marking``. Thumbnails come from an :class:`ImageLoader` and are asked for
only when a row is painted.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPalette, QPixmap
from PySide6.QtWidgets import QApplication

from dedup_app.controllers.marks import MarkState
from dedup_app.controllers.similar import SimilarGroup, probability_text
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
        self._rows_of_path: dict[str, QModelIndex] = {}
        self._group_rows: dict[int, int] = {}  # id of a group -> its row
        self._placeholder = QPixmap(THUMB, THUMB)
        self._placeholder.fill(Qt.GlobalColor.transparent)
        loader.loaded.connect(self._thumbnail_loaded)

    # -- content ------------------------------------------------------------------------------------------------

    @property
    def groups(self) -> list[DuplicateGroup]:
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
    def keep(self) -> dict[int, str]:
        """The kept path per group row."""
        return {gi: self.marks.keep_of(g) for gi, g in enumerate(self.groups)}

    def set_groups(
        self,
        groups: Sequence[DuplicateGroup],
        rule: str,
        reference_folders: Sequence[str],
        rule_marks: Sequence[Marks] | None = None,
    ) -> None:
        """Show ``groups`` marked by ``rule``, with the user's remembered choices applied again where they fit
        (see :class:`MarkState`); ``rule_marks`` may bring the rule's marks worked out off the UI thread."""
        self.beginResetModel()
        self.marks.set_groups(groups, rule, reference_folders, rule_marks)
        self._sort_groups()
        self.endResetModel()
        self._index_paths()
        self.marks_changed.emit()

    def set_rule(self, rule: str) -> None:
        """Re-mark every group with ``rule`` (the user's own choices are dropped: they asked for the rule)."""
        self.beginResetModel()
        self.marks.set_rule(rule)
        self.endResetModel()
        self._index_paths()
        self.marks_changed.emit()

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
        gi = self.groups.index(group)
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

    def _index_paths(self) -> None:
        self._group_rows = {id(g): gi for gi, g in enumerate(self.groups)}
        self._rows_of_path = {
            m.image.path: self.createIndex(r, 0, gi + 1)
            for gi, g in enumerate(self.groups)
            for r, m in enumerate(g.members)
        }

    def _changed(self, path: str) -> None:
        idx = self._rows_of_path.get(path)
        if idx is not None:
            self.dataChanged.emit(idx, idx.siblingAtColumn(len(COLUMNS) - 1))
            self.dataChanged.emit(idx.parent(), idx.parent())

    def _thumbnail_loaded(self, path: str, size: int) -> None:
        if size == THUMB and path in self._rows_of_path:
            idx = self._rows_of_path[path]
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
            return self.createIndex(row, column, 0) if row < len(self.groups) else QModelIndex()
        if parent.internalId() != 0 or parent.row() >= len(self.groups):
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
            return len(self.groups)
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
        if own is not None and own is not group and id(own) in self._group_rows:
            state += f" (also in group {self._group_rows[id(own)] + 1})"
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
        self._sort = (column, order)
        self.layoutAboutToBeChanged.emit()
        before = {id(g): gi for gi, g in enumerate(self.groups)}
        self._sort_groups()
        moved_to = {before[id(g)]: gi for gi, g in enumerate(self.groups)}
        # the selection and current row follow their groups (members keep their order within a group)
        old = self.persistentIndexList()
        new = [
            self.createIndex(moved_to[i.row()], i.column(), 0)
            if i.internalId() == 0
            else self.createIndex(i.row(), i.column(), moved_to[i.internalId() - 1] + 1)
            for i in old
        ]
        self.changePersistentIndexList(old, new)
        self.layoutChanged.emit()
        self._index_paths()

    def _sort_groups(self) -> None:
        column, order = self._sort
        keys = {
            COL_FILE: lambda g: len(g.members),
            COL_SIM: lambda g: g.min_similarity,
            COL_SIZE: lambda g: g.reclaimable_bytes,
        }
        key = keys.get(column, lambda g: g.keep.path)
        self.groups.sort(key=key, reverse=order == Qt.SortOrder.DescendingOrder)  # kept files follow (by group)
        pinned = [g for g in self.groups if isinstance(g, SimilarGroup)]
        if pinned:  # a Find similar result stays on top
            self.groups[:] = pinned + [g for g in self.groups if not isinstance(g, SimilarGroup)]
