"""The main window: sources on the left, duplicate groups in the middle, the comparison on the right.

The window is wiring (dupeGuru's ``qt/app.py``, napari's ``_qt``): the state and the user's actions live in Qt-free
controllers (``dedup_app.controllers``): the model service owns the active model and its threshold, the actions
controller the trash/move/undo stack, the labels controller the pair labels, the review the scan's results, the
mark state what is kept and ticked. Long work (scans, trash/move, undo, model switches) runs through one
:class:`JobRunner`, one job at a time; the window stays live throughout.
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QModelIndex, QObject, QPoint, QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QImage, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QFileDialog,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QSlider,
    QSplitter,
    QStackedWidget,
    QStyle,
    QTabWidget,
    QToolBar,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from dedup_app.controllers.actions import ActionsController, Outcome
from dedup_app.controllers.labels import LabelsController
from dedup_app.controllers.models import ChangeHeadService, ModelService, SwitchResult, load_embedder
from dedup_app.controllers.review import Grouping, Review, ScanOutcome, grouping
from dedup_app.controllers.similar import SimilarGroup, SimilarResult, SimilarSearch, similar_marks
from dedup_app.core.actions import ActionRecord, default_trash, write_record_csv
from dedup_app.core.calibration import calibration_of
from dedup_app.core.duplicates import DuplicateFinder, DuplicateGroup, GroupMember
from dedup_app.core.files import FileError, display_path
from dedup_app.core.labels import DUPLICATE, NOT_DUPLICATE, LabelStore
from dedup_app.core.marking import RULES
from dedup_app.core.progress import CancelToken, Job, Progress
from dedup_app.core.units import count_of, format_bytes
from dedup_app.ui import gc as garbage_collector
from dedup_app.ui import settings as S
from dedup_app.ui.background import BackgroundCalls
from dedup_app.ui.changes import ChangesTab
from dedup_app.ui.compare import PREVIEW, CompareWidget
from dedup_app.ui.find_similar import FindSimilarField
from dedup_app.ui.geometry import place_window
from dedup_app.ui.jobs import PRELOAD, JobRunner
from dedup_app.ui.models import (
    COL_DATE,
    COL_DIMS,
    COL_FILE,
    COL_SIM,
    COL_SIZE,
    THUMB,
    GroupsModel,
    PreparedGroups,
    release_all,
)
from dedup_app.ui.panels import ErrorsDialog, ProgressPanel
from dedup_app.ui.sources import SourcesPanel
from dedup_app.ui.thumbnails import ImageLoader
from dedup_app.ui.worker import Worker

log = logging.getLogger(__name__)

SLIDER_MIN, SLIDER_MAX = 0.70, 0.99
#: How long the similarity slider must rest before the groups are worked out again at its value.
SLIDER_REST_MS = 150
#: From this many scanned files a change of the rule or of the reference folders regroups on a pool thread, as the
#: slider does (below it, at once: the result is there before the next paint).
BACKGROUND_FROM = 20_000
#: what the slider shows before any model was ever loaded (the shipped model's calibrated threshold)
FIRST_THRESHOLD = 0.829
#: images the file picker of Find similar offers
IMAGE_FILTER = ("Images (*.jpg *.jpeg *.png *.webp *.bmp *.gif *.tif *.tiff *.heic *.heif *.avif *.jxl);;"
                "All files (*)")  # fmt: skip


@dataclass
class AppContext:
    """What the window depends on, passed in (tests give temporary files and a temporary trash)."""

    prefs: S.Preferences
    state: QSettings
    labels: LabelStore
    cache_path: str | None = None
    model_path: str | None = None
    device: str = "auto"
    trash: Callable[[str], None] = field(default=default_trash)
    registry_root: str | None = None
    #: builds an embedder from a model file and a device (tests hand over a loaded one)
    load_embedder: Callable[[str, str], Any] = field(default=load_embedder)
    change_registry_root: str | None = None

    def registry(self) -> Any:
        """The duplicate models' registry (a new object: it re-reads its index)."""
        from dedup_app.core.registry import ModelRegistry

        return ModelRegistry(self.registry_root)

    def change_registry(self) -> Any:
        """The change heads' registry (a new object: it re-reads its index)."""
        from dedup_app.core.registry import ChangeHeadRegistry

        return ChangeHeadRegistry(self.change_registry_root)


class MainWindow(QMainWindow):
    """dedup-app's window. Signals let tests and the screenshot mode wait without sleeping."""

    scan_finished = Signal()
    groups_changed = Signal()
    job_finished = Signal(str)  # job name, after success, failure or cancel

    def __init__(self, ctx: AppContext) -> None:
        super().__init__()
        app = QApplication.instance()
        if app is not None:  # cycles are collected on this thread, never on a worker's (dedup_app.ui.gc)
            garbage_collector.install(app, self)
        self.ctx = ctx
        self.setWindowTitle("dedup-app")
        self.setAcceptDrops(True)
        self.thresholds = S.PrefsThresholds(ctx.prefs)
        self.models = ModelService(ctx.registry, self.thresholds, ctx.model_path, ctx.device, ctx.cache_path,
                                   ctx.load_embedder)  # fmt: skip
        self.change_heads = ChangeHeadService(ctx.change_registry)
        self.jobs = JobRunner(self.models, self, self.change_heads)
        self.file_actions = ActionsController(ctx.trash)
        self.labels = LabelsController(ctx.labels)
        self.review = Review((SLIDER_MIN, SLIDER_MAX))
        self.similar = SimilarSearch()
        self._paste_folder: str | None = None  # pasted images are saved here to be searched for; gone at exit
        self._pastes = 0
        self._regroup_request = 0
        self._regroup_calls = BackgroundCalls(1, self)
        # a slider drag regroups once it rests a moment, not at every value it passes (a regroup of a million files
        # takes seconds of a pool thread, and each one competes with the window for Python's interpreter lock)
        self._slider_rest = QTimer(self)
        self._slider_rest.setSingleShot(True)
        self._slider_rest.setInterval(SLIDER_REST_MS)
        self._slider_rest.timeout.connect(lambda: self.regroup(background=True))
        self.loader = ImageLoader(parent=self)

        self._build_actions()
        self._build_ui()
        self._connect_jobs()
        self._restore()
        self._update_enabled()
        if ctx.labels.warning:  # a damaged labels file set aside, a locked one: said once, the window opens anyway
            QTimer.singleShot(0, lambda: self.show_warning("Labels", ctx.labels.warning or ""))

    # -- what the controllers hold, for the views and tests -------------------------------------------------------

    @property
    def finder(self) -> DuplicateFinder | None:
        return self.review.finder

    @property
    def worker(self) -> Worker | None:
        return self.jobs.worker

    @property
    def embedder(self) -> Any:
        return self.models.embedder

    @property
    def undo_stack(self) -> list[ActionRecord]:
        return self.file_actions.undo_stack

    # -- construction -------------------------------------------------------------------------------------------

    def _action(
        self,
        text: str,
        slot: Callable[[], Any],
        shortcut: str | None = None,
        tip: str = "",
        icon: QStyle.StandardPixmap | None = None,
    ) -> QAction:
        act = QAction(text, self)
        if icon is not None:
            act.setIcon(self.style().standardIcon(icon))
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        act.setToolTip(f"{tip or text} ({shortcut})" if shortcut else (tip or text))
        act.setStatusTip(tip or text)
        act.triggered.connect(slot)
        self.addAction(act)
        return act

    def _build_actions(self) -> None:
        sp = QStyle.StandardPixmap
        self.act_add = self._action(
            "Add folder…", self.choose_and_add_folder, "Ctrl+O", "Add a folder to scan", sp.SP_DirOpenIcon
        )
        self.act_scan = self._action(
            "Scan", self.start_scan, "F5", "Scan the source folders for duplicates", sp.SP_BrowserReload
        )
        self.act_cancel = self._action("Cancel", self.cancel_job, "Esc", "Stop the running job", sp.SP_BrowserStop)
        self.act_trash = self._action(
            "Trash marked", self.trash_marked, "Delete", "Move the marked files to the trash", sp.SP_TrashIcon
        )
        self.act_move = self._action(
            "Move…", self.move_marked, "Ctrl+M", "Move the marked files to a folder", sp.SP_DirLinkIcon
        )
        self.act_undo = self._action(
            "Undo", self.undo_last, "Ctrl+Z", "Put back the files of the last trash or move", sp.SP_ArrowBack
        )
        self.act_export = self._action(
            "Export…", self.export, "Ctrl+E", "Export the groups as CSV or JSON", sp.SP_DialogSaveButton
        )
        self.act_errors = self._action("Errors", self.show_errors, None, "Files the scan could not read")
        self.act_toggle = self._action("Toggle mark", self.toggle_current, None, "Mark or unmark the file (Space)")
        self.act_keep = self._action("Keep this file", self.keep_current, "K", "Keep the selected file in its group")
        self.act_mark_group = self._action("Mark the group", self.mark_current_group, "M",
                                           "Mark every file of the selected group but the kept one")  # fmt: skip
        self.act_dup = self._action("Label: duplicate", lambda: self.label_pair(DUPLICATE), "D")
        self.act_notdup = self._action("Label: not duplicate", lambda: self.label_pair(NOT_DUPLICATE), "N")
        self.act_group_dup = self._action("Label group: duplicate", lambda: self.label_group(DUPLICATE), "Shift+D")
        self.act_group_notdup = self._action(
            "Label group: not duplicate", lambda: self.label_group(NOT_DUPLICATE), "Shift+N"
        )
        self.act_find = self._action("Find similar…", self.choose_and_find, "Ctrl+F",
                                     "Find the scanned images most similar to an image file",
                                     sp.SP_FileDialogContentsView)  # fmt: skip
        self.act_find_paste = self._action("Find similar to the pasted image", self.paste_and_find, "Ctrl+Shift+V",
                                           "Find the scanned images most similar to the image (or image file) on the "
                                           "clipboard")  # fmt: skip
        self.act_close_find = self._action("Close the Find similar result", self.close_similar, None,
                                           "Take the Find similar result off the groups")  # fmt: skip
        self.act_quit = self._action("Quit", self.close, "Ctrl+Q")
        self.act_train = self._action("Train on my labels…", self.open_training, "Ctrl+T",
                                      "Fine-tune the model on the pairs you labelled")  # fmt: skip
        self.act_rollback = self._action("Roll back to the previous model", self.rollback_model)
        self.act_train_change = self._action("Train change head…", self.open_change_training, None,
                                             "Train a change head on the change labels you painted")  # fmt: skip
        self.act_rollback_change = self._action("Roll back to the previous change head", self.rollback_change_head)
        # acting on the duplicate groups: only while they are on screen (Delete or N on the Changes tab, or in the
        # Sources list, must not trash or label files the user is not looking at)
        self.review_actions = (self.act_trash, self.act_move, self.act_keep, self.act_mark_group, self.act_toggle,
                               self.act_dup, self.act_notdup, self.act_group_dup, self.act_group_notdup)  # fmt: skip

    def _build_ui(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        file_menu.addAction(self.act_add)
        self.recent_menu = file_menu.addMenu("Recent folders")
        file_menu.addAction(self.act_scan)
        file_menu.addAction(self.act_export)
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)
        edit_menu = menu.addMenu("&Edit")
        for act in (self.act_undo, self.act_trash, self.act_move, self.act_keep, self.act_toggle, self.act_mark_group):
            edit_menu.addAction(act)
        edit_menu.addSeparator()
        for act in (self.act_find, self.act_find_paste, self.act_close_find):
            edit_menu.addAction(act)
        label_menu = menu.addMenu("&Label")
        for act in (self.act_dup, self.act_notdup, self.act_group_dup, self.act_group_notdup):
            label_menu.addAction(act)
        model_menu = menu.addMenu("&Model")
        model_menu.addAction(self.act_train)
        model_menu.addAction(self.act_rollback)
        self.models_menu = model_menu.addMenu("Use model")
        self.models_menu.aboutToShow.connect(self._fill_models_menu)
        model_menu.addSeparator()
        model_menu.addAction(self.act_train_change)
        model_menu.addAction(self.act_rollback_change)
        self.change_heads_menu = model_menu.addMenu("Use change head")
        self.change_heads_menu.aboutToShow.connect(self._fill_change_heads_menu)

        bar = self.toolbar = QToolBar("Main")
        bar.setObjectName("main-toolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(bar)
        bar.addAction(self.act_add)
        bar.addAction(self.act_scan)
        bar.addAction(self.act_cancel)
        bar.addSeparator()
        bar.addWidget(QLabel(" Similarity "))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(round(SLIDER_MIN * 1000), round(SLIDER_MAX * 1000))
        self.slider.setFixedWidth(180)
        self.slider.setToolTip("Minimum similarity of near-duplicates: right is stricter. Regroups at once.")
        self.slider_label = QLabel("0.829")
        self.slider_label.setMinimumWidth(40)
        bar.addWidget(self.slider)
        bar.addWidget(self.slider_label)
        bar.addSeparator()
        self.rule_box = QComboBox()
        for key, (label, _) in RULES.items():
            self.rule_box.addItem(label, key)
        self.rule_box.setToolTip("Which file each group keeps; the others are marked for removal")
        bar.addWidget(self.rule_box)
        bar.addSeparator()
        bar.addAction(self.act_trash)
        bar.addAction(self.act_move)
        bar.addAction(self.act_undo)
        bar.addAction(self.act_export)

        # sources
        self.source_panel = left = SourcesPanel()
        self.sources = left.list
        left.add_requested.connect(self.choose_and_add_folder)
        left.errors_requested.connect(self.show_errors)
        left.changed.connect(self._sources_changed)
        self.errors_button = left.errors_button
        self.find_field = FindSimilarField()
        left_layout = left.layout()
        assert left_layout is not None
        left_layout.addWidget(self.find_field)
        self.find_field.file_requested.connect(self.find_similar)
        self.find_field.image_requested.connect(self.find_similar_image)
        self.find_field.browse_requested.connect(self.choose_and_find)
        self.find_field.paste_requested.connect(self.paste_and_find)

        # groups
        self.model = GroupsModel(self.loader, self)
        self.tree = QTreeView()
        self.tree.setModel(self.model)
        self.tree.setIconSize(QSize(THUMB, THUMB))
        self.tree.setUniformRowHeights(True)
        self.tree.setSortingEnabled(True)
        self.tree.sortByColumn(COL_SIZE, Qt.SortOrder.DescendingOrder)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setAlternatingRowColors(True)
        self.tree.header().setSectionResizeMode(COL_FILE, QHeaderView.ResizeMode.Interactive)
        # every column fits a 1280-pixel screen's pane; long names and folders lose their middle, not their end
        for column, width in ((COL_FILE, 250), (COL_SIM, 70), (COL_SIZE, 72), (COL_DIMS, 92), (COL_DATE, 118)):
            self.tree.header().resizeSection(column, width)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.tree.installEventFilter(self)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._show_file_menu)
        self.empty = QLabel(
            "<h2>Drop folders here to find duplicates</h2>"
            "<p>or use <b>Add folder…</b> (Ctrl+O). Scanning starts at once; nothing is removed without asking.</p>"
            "<p>To see what changed between two images or two folders of tiles, drop them on the <b>Changes</b> "
            "tab.</p>"
            "<p>To find the copies of one image among the folders scanned before, drop it on <b>Find similar</b> "
            "(Ctrl+F).</p>"
        )
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.no_groups = QLabel()  # after a scan that found nothing: says why, and what to try
        self.no_groups.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.no_groups.setWordWrap(True)
        self.center = QStackedWidget()
        self.center.addWidget(self.empty)
        self.center.addWidget(self.tree)
        self.center.addWidget(self.no_groups)

        # compare
        self.compare = CompareWidget(self.loader)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.center)
        self.splitter.addWidget(self.compare)
        self.center.setMinimumWidth(320)  # the groups stay readable when the window is narrow
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setStretchFactor(2, 4)
        self.splitter.setSizes([220, 620, 760])

        self.changes = ChangesTab(self.run_job, self._change_detector, labels=self.ctx.labels,
                                  change_registry=self.ctx.change_registry)  # fmt: skip
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.splitter, "Duplicates")
        self.tabs.addTab(self.changes, "Changes")
        self.tabs.setTabToolTip(1, "Compare before/after images or satellite tiles and map what changed")
        self.tabs.currentChanged.connect(self._update_enabled)

        self.progress = ProgressPanel()
        self.progress.cancel_requested.connect(self.cancel_job)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.progress)
        self.setCentralWidget(central)

        self.summary = QLabel()
        self.statusBar().addPermanentWidget(self.summary)

        self.slider.valueChanged.connect(self._slider_moved)
        self.rule_box.currentIndexChanged.connect(self._rule_changed)
        self.tree.selectionModel().currentChanged.connect(self._current_changed)
        self.model.marks_changed.connect(self._update_enabled)
        # the model hands the view its group rows a chunk at a time: each arrives expanded, and a sort or a regroup
        # keeps the selected file selected
        self.model.rowsInserted.connect(self._expand_new_groups)
        self.model.modelAboutToBeReset.connect(self._remember_current)
        self.model.modelReset.connect(self._after_reset)
        self._current_path: tuple[str, bool] | None = None
        self.compare.label_requested.connect(self.label_pair)
        self.compare.find_similar_requested.connect(self.find_similar)

    def _restore(self) -> None:
        prefs = self.ctx.prefs
        self.source_panel.restore(prefs.get(S.SOURCES), prefs.get(S.REFERENCE_FOLDERS))
        rule = prefs.get(S.RULE)
        self.rule_box.setCurrentIndex(max(0, self.rule_box.findData(rule)))
        self._set_slider(self.thresholds.shown_at_start() or FIRST_THRESHOLD)  # not a choice: no signal
        self._rebuild_recent_menu()
        place_window(self, self.ctx.state.value("window/geometry"))
        splitter = self.ctx.state.value("window/splitter")
        if splitter is not None:
            self.splitter.restoreState(splitter)
        header = self.ctx.state.value("window/groups_header")
        if header is not None:
            self.tree.header().restoreState(header)
        self._update_summary()

    # -- sources ------------------------------------------------------------------------------------------------

    def source_folders(self) -> list[str]:
        return self.source_panel.folders()

    def reference_folders(self) -> list[str]:
        return self.source_panel.references()

    def add_sources(self, paths: list[str], scan: bool = True) -> None:
        """Add folders or files to the sources (once each) and, by default, start scanning at once."""
        _added, missing = self.source_panel.add(paths)
        for path in missing:
            self.statusBar().showMessage(f"Not found: {path}", 8000)
        folders = [os.path.abspath(p) for p in paths if os.path.isdir(p)]
        for folder in folders:
            self.ctx.prefs.add_recent(folder)
        if folders:
            self._rebuild_recent_menu()
        if scan and self.source_folders():
            self.start_scan()

    def remove_selected_sources(self) -> None:
        self.source_panel.remove_selected()

    def choose_and_add_folder(self) -> None:
        folder = self.choose_folder("Add a folder to scan")
        if folder:
            self.add_sources([folder])

    def choose_folder(self, title: str, start: str = "") -> str:
        """Ask for a folder (tests replace this)."""
        return QFileDialog.getExistingDirectory(self, title, start or os.path.expanduser("~"))

    def _sources_changed(self) -> None:
        self.ctx.prefs.set(S.SOURCES, self.source_folders())
        self.ctx.prefs.set(S.REFERENCE_FOLDERS, self.reference_folders())
        self._show_center()
        if self.review.finder is not None:
            self.regroup(background=self._large())

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        for folder in self.ctx.prefs.get(S.RECENT_FOLDERS):
            act = self.recent_menu.addAction(folder)
            act.triggered.connect(lambda _=False, f=folder: self.add_sources([f]))
        self.recent_menu.setEnabled(bool(self.ctx.prefs.get(S.RECENT_FOLDERS)))

    # -- drag and drop ------------------------------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            if self.tabs.currentWidget() is self.changes:
                self.changes.handle_drop(paths)
            else:
                self.add_sources(paths)

    def _connect_jobs(self) -> None:
        self.jobs.started.connect(self.progress.start)
        self.jobs.progress.connect(self.progress.update_progress)
        self.jobs.message.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.jobs.failed.connect(self.show_error)
        self.jobs.finished.connect(self._job_finished)
        self.jobs.switched.connect(self._switched)
        self.jobs.change_head_switched.connect(self._change_head_switched)

    # -- jobs ---------------------------------------------------------------------------------------------------

    def run_job(self, name: str, job: Job, on_success: Callable[[Any], None], text: str) -> bool:
        """Run ``job`` on the worker thread, one job at a time (see :class:`JobRunner`)."""
        started = self.jobs.run(name, job, on_success, text)
        self._update_enabled()
        return started

    def _job_finished(self, name: str) -> None:
        if not self.jobs.busy:
            self.progress.finish()
        self._update_enabled()
        self.job_finished.emit(name)

    def cancel_job(self) -> None:
        if self.jobs.busy:
            self.jobs.cancel()
            self.progress.cancel.setEnabled(False)
            self.progress.label.setText("Cancelling after the current batch…")

    def preload_model(self) -> None:
        """Load the model on the worker right after start, so the first scan does not wait for it."""
        if self.models.embedder is not None or self.jobs.busy:
            return
        models = self.models

        def job(cancel: CancelToken):  # type: ignore[no-untyped-def]
            yield Progress("Loading the model", 0, None)
            return models.load()

        self.run_job(PRELOAD, job, self._model_loaded, "Loading the model")

    def _change_detector(self, cancel: CancelToken, method: str, head_path: Path | None) -> Any:
        """The change detector, on the worker thread: the same encoder as the duplicate scan (loaded if needed), with
        the change head in ``head_path`` (None: the training-free feature difference). ``ValueError`` naming the
        file when it is not a change head."""
        from dedup_app.core.change.detect import open_change_detector

        return open_change_detector(self.models.load(), head_path, method)

    def _model_loaded(self, embedder: Any) -> None:
        how = " (ONNX Runtime)" if getattr(embedder, "backend", "torch") == "onnxruntime" else ""
        self.statusBar().showMessage(f"Model {embedder.model_id} ready on {embedder.device}{how}", 5000)
        if self.review.finder is None:  # nothing on screen yet: the slider shows this model's threshold
            self._set_slider(self.models.threshold_for(embedder))
        self._update_summary()

    def start_scan(self) -> None:
        roots = self.source_folders()
        if not roots:
            self.statusBar().showMessage("Add a folder first: drop it on the window or use Add folder (Ctrl+O)", 8000)
            return
        self.labels.refresh()  # labels written elsewhere meanwhile (the command line, another window) count too
        job = self.review.scan_job(roots, self.models, self.ctx.cache_path, self.labels.not_duplicates(),
                                   self.rule_box.currentData(), self.reference_folders(),
                                   self._preparer())  # fmt: skip
        self.center.setCurrentWidget(self.tree)
        self.run_job("scan", job, self._scan_done, "Scanning")

    def _scan_done(self, outcome: ScanOutcome) -> None:
        self.review.scan_done(outcome)
        self.file_actions.scan_finished()
        self.close_similar(regroup=False)  # found among the files as they were: a new scan starts afresh
        self.loader.clear()
        self.models.results_shown(outcome.model_id)
        self.thresholds.remember_model(outcome.model_id, outcome.calibrated)
        self.slider.blockSignals(True)
        self.slider.setMinimum(round(self.review.floor() * 1000))  # no regrouping below what was searched
        self.slider.blockSignals(False)
        self._set_slider(outcome.threshold)
        result = outcome.finder.result
        self.source_panel.set_error_count(len(result.errors))
        self._regroup_request += 1
        prepared = outcome.prepared if outcome.prepared is not None else self._preparer()(outcome.grouping)
        self._show_prepared(self._regroup_request, prepared)
        self._show_center()
        st = result.stats
        parts = [f"{st.decoded:,} read", f"{st.cached:,} from the cache"]
        if st.copies:
            parts.append(count_of(st.copies, "identical copy", "identical copies"))
        if result.errors:
            parts.append(f"{len(result.errors):,} could not be read")
        message = f"Scanned {count_of(st.files, 'image file')}: " + ", ".join(parts)
        if outcome.cache_problem:
            message += f". Cache not used: {outcome.cache_problem}"
            self.show_error("The cache could not be used", outcome.cache_problem)
        self.statusBar().showMessage(message, 15000)
        self.scan_finished.emit()

    # -- find similar -------------------------------------------------------------------------------------------

    def choose_image(self, title: str) -> str:
        """Ask for an image file (tests replace this)."""
        start = self.source_folders()[0] if self.source_folders() else os.path.expanduser("~")
        path, _ = QFileDialog.getOpenFileName(self, title, start, IMAGE_FILTER)
        return path

    def choose_and_find(self) -> None:
        """Find similar… (Ctrl+F, a click on the field): pick an image file and search for it."""
        path = self.choose_image("Find images similar to…")
        if path:
            self.find_similar(path)

    def find_similar(self, path: str, title: str | None = None) -> bool:
        """Search, on the worker, the scanned files most similar to the image ``path``; the result opens as a group
        at the top of the duplicates view. Returns whether the job started (or waits for the model)."""
        if self.tabs.currentWidget() is not self.splitter:
            self.tabs.setCurrentWidget(self.splitter)
        job = self.similar.job(path, self.models, self.ctx.cache_path, title)
        return self.run_job("find", job, self._similar_found,
                            f"Finding images similar to {title or os.path.basename(path)}")  # fmt: skip

    def find_similar_image(self, image: QImage) -> bool:
        """Search for an image that has no file (pasted, or dragged from a browser): it is saved as a PNG in a
        temporary folder of this window (on the worker) and searched for like a file; it is never marked."""
        if image.isNull():
            self.statusBar().showMessage("That is not an image", 8000)
            return False
        if self._paste_folder is None or not os.path.isdir(self._paste_folder):
            self._paste_folder = tempfile.mkdtemp(prefix="dedup-app-pasted-")
        self._pastes += 1
        path = os.path.join(self._paste_folder, f"pasted-{self._pastes}.png")
        title = "the pasted image"
        image = image.copy()  # the caller's image may change; this one is the worker's alone
        search = self.similar.job(path, self.models, self.ctx.cache_path, title)

        def job(cancel: CancelToken):  # type: ignore[no-untyped-def]
            yield Progress("Saving the pasted image", 0, None)
            if not image.save(path):  # QImage may be written on any thread
                return SimilarResult(path, title, error=f"{path}: the pasted image could not be saved")
            return (yield from search(cancel))

        if self.tabs.currentWidget() is not self.splitter:
            self.tabs.setCurrentWidget(self.splitter)
        return self.run_job("find", job, self._similar_found, "Finding images similar to the pasted image")

    def paste_and_find(self) -> bool:
        """Ctrl+Shift+V: search for the image on the clipboard; an image file copied in a file manager is searched
        for as that file."""
        clipboard = QApplication.clipboard()
        mime = clipboard.mimeData()
        if mime is not None and mime.hasUrls():
            files = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
            if files:
                return self.find_similar(files[0])
        image = clipboard.image()
        if image.isNull():
            self.statusBar().showMessage("The clipboard holds no image: copy an image or an image file first", 8000)
            return False
        return self.find_similar_image(image)

    def _similar_found(self, result: SimilarResult) -> None:
        message = self.similar.done(result, self.threshold)
        if result.error is not None:
            self.statusBar().showMessage(message, 15000)
            self.show_error("Find similar", result.error)
            return
        if self.similar.result is not result:  # nothing scanned yet
            self.statusBar().showMessage(message, 15000)
            self.show_warning("Find similar", message)
            return
        self.statusBar().showMessage(message, 15000)
        self.find_field.show_query(f"Showing: similar to {result.title}")
        self.regroup(background=self._large(), then=self._show_similar_result)

    def _show_similar_result(self) -> None:
        """The Find similar result on top of the groups, its best match selected."""
        self.center.setCurrentWidget(self.tree)
        if self.model.groups and isinstance(self.model.groups[0], SimilarGroup):
            first = self.model.index(0, 0)
            self.tree.expand(first)
            rows = self.model.rowCount(first)
            self.tree.setCurrentIndex(self.model.index(1, 0, first) if rows > 1 else first)  # the best match
            self.tree.scrollToTop()
        self._update_enabled()

    def close_similar(self, regroup: bool = True) -> None:
        """Take the Find similar result off the groups."""
        if self.similar.result is None:
            return
        self.similar.clear()
        self.find_field.show_query("")
        if regroup:
            self.regroup(background=self._large(), then=self._show_center)
        self._update_enabled()

    def file_menu(self, index: QModelIndex) -> QMenu | None:
        """The right-click menu of a row of the groups: Find similar to the file (a group row: its kept file), then
        what the keys do there."""
        gi, member = self.model.member(index)
        if gi < 0:
            return None
        group = self.model.groups[gi]
        path = member.image.path if member is not None else self.model.kept(gi)
        name = group.title if isinstance(group, SimilarGroup) and path == group.query.path else os.path.basename(path)
        menu = QMenu(self)
        act = menu.addAction(f"Find similar to {name}")
        act.setToolTip("Find the scanned images most similar to this one")
        act.triggered.connect(lambda: self.find_similar(path, name if name != os.path.basename(path) else None))
        menu.addSeparator()
        if member is not None:
            for action in (self.act_toggle, self.act_keep, self.act_dup, self.act_notdup):
                menu.addAction(action)
        else:
            menu.addAction(self.act_mark_group)
        if isinstance(group, SimilarGroup):
            menu.addSeparator()
            menu.addAction(self.act_close_find)
        return menu

    def _show_file_menu(self, pos: QPoint) -> None:
        index = self.tree.indexAt(pos)
        if not index.isValid():
            return
        self.tree.setCurrentIndex(index.siblingAtColumn(0))  # the menu's actions act on the current row
        menu = self.file_menu(index)
        if menu is not None:
            menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            menu.popup(self.tree.viewport().mapToGlobal(pos))

    # -- grouping and marks -------------------------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        return self.slider.value() / 1000

    def _set_slider(self, threshold: float) -> None:
        """Show ``threshold`` on the slider without treating it as the user's choice."""
        self.slider.blockSignals(True)
        self.slider.setValue(round(min(max(threshold, SLIDER_MIN), SLIDER_MAX) * 1000))
        self.slider.blockSignals(False)
        self.slider_label.setText(f"{self.threshold:.3f}")

    def _slider_moved(self, value: int) -> None:
        self.slider_label.setText(f"{value / 1000:.3f}")
        shown = self.review.model_id or (self.models.embedder.model_id if self.models.embedder else None)
        self.models.user_chose_threshold(shown, value / 1000)
        self._slider_rest.start()

    def _rule_changed(self) -> None:
        self.ctx.prefs.set(S.RULE, self.rule_box.currentData())
        if self._large():  # marking every group again is seconds of Python at a million files: a pool thread's
            self.model.marks.forget_user_choices()  # (the user asked for the rule)
            self.statusBar().showMessage("Marking the groups by the new rule...", 5000)
            self.regroup(background=True)
            return
        self.model.set_rule(self.rule_box.currentData())
        self._after_groups_changed()

    def _large(self) -> bool:
        """Whether the scan shown is large enough to regroup and re-mark on a pool thread (see
        :data:`BACKGROUND_FROM`) even where a small one is done at once."""
        finder = self.review.finder
        return finder is not None and len(finder.result.images) >= BACKGROUND_FROM

    def regroup(self, background: bool = False, then: Callable[[], None] | None = None) -> None:
        """Regroup from memory at the slider's threshold, without the removed files and the "not duplicate"
        pairs (no model, no index search); ``then`` runs once the new groups are shown.

        With ``background`` (slider moves; any regroup of a large scan, :meth:`_large`) the grouping, the marks and
        the order run on a pool thread and the newest request wins (an overtaken one's ``then`` is dropped), so
        the UI thread is never held up for seconds; otherwise it runs here and now.
        """
        self._regroup_request += 1
        request = self._regroup_request
        finder = self.review.finder
        similar = self.similar.group(self.threshold, self.file_actions.removed)
        if finder is None and similar is None and not self.model.groups:
            return  # no scan in this window, and no Find similar result to show either
        prepare = self._preparer(similar, shown=self.model.groups)
        rule, refs = self.rule_box.currentData(), self.reference_folders()
        threshold, removed, apart = self.threshold, frozenset(self.file_actions.removed), self.labels.not_duplicates()

        def group() -> Grouping:  # reads only what is copied above: may run on a pool thread
            if finder is None:  # no scan: only a Find similar result
                return Grouping([], rule, tuple(refs), [])
            return grouping(finder, threshold, rule, refs, removed, apart)

        if finder is None or not background:
            if self._show_prepared(request, prepare(group())) and then is not None:
                then()
        else:  # the finder's search results are immutable: grouping may run on a pool thread
            retired, self.model.retired = self.model.retired, []

            def work() -> PreparedGroups | None:
                # the groups the last reset replaced, freed first, while nothing is painted: freeing them as the
                # new ones are painted made each call of the view into the model wait for the interpreter lock
                release_all(retired)
                if request != self._regroup_request:
                    return None  # a newer one is queued behind this one: skip it
                return prepare(group())

            garbage_collector.pause()  # no collection walking what the pool thread builds
            self._regroup_calls.submit(work, lambda out, err: self._regrouped(request, out, err, then))

    def _preparer(
        self, similar: SimilarGroup | None = None, shown: Sequence[DuplicateGroup] | None = None
    ) -> Callable[[Grouping], PreparedGroups]:
        """What turns a grouping into groups ready to show, with the user's choices and the sort order as they are
        now (copied here, on the UI thread); the function may run on any thread."""
        choices, sort = self.model.marks.choices(), self.model.sort_order

        def prepare(result: Grouping) -> PreparedGroups:
            groups, marks = result.groups, result.marks
            if similar is not None:  # the Find similar result, on top
                groups, marks = [similar, *groups], [similar_marks(similar), *marks]
            return GroupsModel.prepare(groups, result.rule, result.references, marks, choices, sort, shown)

        return prepare

    def _regrouped(
        self,
        request: int,
        out: PreparedGroups | None,
        error: BaseException | None,
        then: Callable[[], None] | None = None,
    ) -> None:
        garbage_collector.resume()
        if error is not None:
            log.error("regrouping failed", exc_info=error)
        elif out is not None and self._show_prepared(request, out) and then is not None:  # (None: skipped)
            then()

    def _show_prepared(self, request: int, prepared: PreparedGroups) -> bool:
        """Show ``prepared`` unless a newer regroup is on its way (then False)."""
        if request != self._regroup_request:
            return False
        rule, references = self.rule_box.currentData(), self.reference_folders()
        if prepared.same_as_shown and (self.model.marks.rule, self.model.reference_folders) == (rule, references):
            self._update_summary()
            self.groups_changed.emit()
            return True  # the slider moved within a range where nothing changes: keep the view as it is
        self.tree.setUpdatesEnabled(False)  # one repaint for the reset and the expansion, not two
        if (prepared.marks.rule, prepared.marks.reference_folders) == (rule, references):
            self.model.adopt(prepared)
        else:  # the rule or the reference folders changed meanwhile: marked again, here
            self.model.set_groups(prepared.marks.groups, rule, references)
        self.tree.setUpdatesEnabled(True)
        if self.review.finder is not None:  # a large result: later collections need not walk it
            garbage_collector.settle(len(self.review.finder.result.images))
        self._after_groups_changed()
        return True

    def _expand_new_groups(self, parent: QModelIndex, first: int, last: int) -> None:
        if not parent.isValid():
            for row in range(first, last + 1):
                self.tree.expand(self.model.index(row, 0))

    def _remember_current(self) -> None:
        gi, member = self.model.member(self.tree.currentIndex())
        if member is not None:
            self._current_path = (member.image.path, False)
        elif gi >= 0:
            self._current_path = (self.model.kept(gi), True)
        else:
            self._current_path = None

    def _after_reset(self) -> None:
        # the result this reset replaced (any adopt: a regroup, a rule, a trash) is freed on the pool thread when
        # the next regroup starts there (see regroup); older ones, left by resets without a regroup since, now
        if len(self.model.retired) > 1:
            older, self.model.retired = self.model.retired[:-1], self.model.retired[-1:]
            self._regroup_calls.submit(lambda: release_all(older), lambda _out, _err: None)
        self._expand_new_groups(QModelIndex(), 0, self.model.fetched() - 1)
        remembered, self._current_path = self._current_path, None
        if remembered is None:
            return
        index = self.model.locate(remembered[0])
        if index.isValid():
            self.tree.setCurrentIndex(index.parent() if remembered[1] else index)
            self.tree.scrollTo(self.tree.currentIndex())

    def _show_center(self) -> None:
        """The groups; or, when there are none, a page saying why (no folders, no images, no duplicates)."""
        if self.model.groups:
            self.center.setCurrentWidget(self.tree)
        elif self.review.finder is not None:
            images = self.review.images_left(self.file_actions.removed)
            errors = len(self.review.errors())
            unread = f"<p>{count_of(errors, 'file')} could not be read: see <b>Errors</b>.</p>" if errors else ""
            if images <= 0:
                self.no_groups.setText("<h2>No images found</h2><p>in " + ", ".join(
                    html.escape(display_path(f)) for f in self.source_folders()) + ".</p>" + unread)  # fmt: skip
            else:
                lower = self.slider.value() > self.slider.minimum()
                hint = (f"Move the <b>Similarity</b> slider left (down to {self.slider.minimum() / 1000:.2f}) to "
                        "see less similar pairs." if lower else "")  # fmt: skip
                self.no_groups.setText(
                    f"<h2>No duplicates among {images:,} images</h2><p>at similarity {self.threshold:.3f}. {hint}</p>"
                    + unread
                )
            self.center.setCurrentWidget(self.no_groups)
        elif self.source_folders():
            self.no_groups.setText("<h2>Ready</h2><p>Press <b>Scan</b> (F5) to look for duplicates.</p>")
            self.center.setCurrentWidget(self.no_groups)
        else:
            self.center.setCurrentWidget(self.empty)

    def _after_groups_changed(self) -> None:
        self._show_center()
        if self.model.groups and not self.tree.currentIndex().isValid():
            self.tree.setCurrentIndex(self.model.index(0, 0))
        elif not self.model.groups:
            self.compare.show_pair(None, None)
        self._update_summary()
        self._update_enabled()
        self.groups_changed.emit()

    def duplicate_groups(self) -> list[DuplicateGroup]:
        """The duplicate groups shown, in display order (without a Find similar result)."""
        return [g for g in self.model.groups if not isinstance(g, SimilarGroup)]

    def _update_summary(self) -> None:
        groups = self.model.duplicate_count()
        images = self.review.images_left(self.file_actions.removed)
        reclaim = self.model.reclaimable_bytes
        notes = [n for n in (self.review.apart_note(self.threshold), self.review.crowded_note(self.threshold)) if n]
        self.summary.setText(
            f"{count_of(images, 'image')} · {count_of(groups, 'group')} · {format_bytes(reclaim)} reclaimable · "
            + "".join(f"{n} · " for n in notes)
            + f"{self.models.model_label()} · {self.labels.summary()}"
        )

    def _update_enabled(self) -> None:
        busy = self.jobs.busy
        marked = self.model.marks.count()
        reviewing = not hasattr(self, "tabs") or self.tabs.currentWidget() is self.splitter
        for act in self.review_actions:
            act.setEnabled(reviewing)
        self.act_scan.setEnabled(not busy)
        self.act_cancel.setEnabled(busy)
        self.act_trash.setEnabled(reviewing and not busy and bool(marked))
        self.act_move.setEnabled(reviewing and not busy and bool(marked))
        self.act_trash.setText(
            f"Trash {marked} ({format_bytes(self.model.marked_bytes())})" if marked else "Trash marked"
        )
        # on the Changes tab Ctrl+Z undoes painting (both enabled, Qt would run neither); trash/move undo waits
        self.act_undo.setEnabled(reviewing and not busy and self.file_actions.can_undo)
        self.act_export.setEnabled(self.model.duplicate_count() > 0)
        self.act_find.setEnabled(not busy)
        self.act_find_paste.setEnabled(not busy)
        self.act_close_find.setEnabled(self.similar.result is not None)

    def current_member(self) -> tuple[int, GroupMember | None]:
        return self.model.member(self.tree.currentIndex())

    def toggle_current(self) -> None:
        gi, member = self.current_member()
        if member is None and gi >= 0:  # on a group row: tick the whole group, or untick it when all are ticked
            if not self.model.mark_all_in_group(gi):
                self.model.unmark_group(gi)
            return
        if member is not None and self.model.kept(gi) == member.image.path:
            self.statusBar().showMessage("The kept file (or the image searched for) is never marked", 5000)
        elif member is not None and not self.model.toggle_mark(member.image.path):
            self.statusBar().showMessage("The kept file and files in reference folders are never marked", 5000)

    def mark_current_group(self) -> None:
        gi, _member = self.current_member()
        if gi >= 0 and not self.model.mark_all_in_group(gi):
            self.statusBar().showMessage("Nothing more to mark in this group", 5000)

    def keep_current(self) -> None:
        gi, member = self.current_member()
        if member is not None and isinstance(self.model.groups[gi], SimilarGroup):
            self.statusBar().showMessage("A Find similar result keeps the image searched for; press K on the file "
                                         "in its own group", 6000)  # fmt: skip
        elif member is not None:
            self.model.set_keep(member.image.path)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        """Below 1200 pixels the toolbar shows icons only (texts move to tooltips), so no action hides in the
        overflow menu on a small laptop screen."""
        narrow = event.size().width() < 1200
        style = Qt.ToolButtonStyle.ToolButtonIconOnly if narrow else Qt.ToolButtonStyle.ToolButtonTextBesideIcon
        if self.toolbar.toolButtonStyle() != style:
            self.toolbar.setToolButtonStyle(style)
        super().resizeEvent(event)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if obj is getattr(self, "tree", None) and event.type() == QEvent.Type.KeyPress:  # (events come early)
            key_event: QKeyEvent = event  # type: ignore[assignment]
            if key_event.key() == Qt.Key.Key_Space and not key_event.modifiers():
                self.toggle_current()
                return True
        return super().eventFilter(obj, event)

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        gi, member = self.model.member(current)
        if gi < 0:
            self.compare.show_pair(None, None)
            return
        group = self.model.groups[gi]
        keep_path = self.model.kept(gi)
        kept = next(m for m in group.members if m.image.path == keep_path)
        others = [m for m in group.members if m.image.path != keep_path]
        other = member if member is not None and member.image.path != keep_path else (others[0] if others else None)
        similarity = self.model.similarity_to_kept(gi).get(other.image.path) if other is not None else None
        embedder = self.models.embedder
        calibration = calibration_of(embedder.checkpoint.metrics) if embedder is not None else None
        self.compare.show_pair(kept, other, similarity, calibration)
        for m in group.members[:8]:  # warm the previews of the group
            self.loader.get(m.image.path, PREVIEW)

    # -- labels -------------------------------------------------------------------------------------------------

    def label_pair(self, label: str) -> None:
        a, b = self.compare.a, self.compare.b
        if a is None or b is None:
            return
        if self._labelled(lambda: self.labels.label_pair(a, b, label), label) and label != NOT_DUPLICATE:
            self._go_to_next_pair()  # (a "not duplicate" pair leaves the groups: regrouping moves the view)

    def _go_to_next_pair(self) -> None:
        """Select the next file that is not the kept one (the compare view then shows it against the kept file),
        in this group or the next, so labelling goes on with one key per pair."""
        gi, member = self.current_member()
        if gi < 0:
            return
        members = self.model.groups[gi].members
        if member is None and self.compare.b in members:  # a group row shows its kept file against this member
            member = self.compare.b
        row = -1 if member is None else members.index(member)
        for g in range(gi, len(self.model.groups)):
            members = self.model.groups[g].members
            for r in range(row + 1 if g == gi else 0, len(members)):
                if members[r].image.path != self.model.kept(g) and self.model.ensure_fetched(g):
                    self.tree.setCurrentIndex(self.model.index(r, 0, self.model.index(g, 0)))
                    return

    def label_group(self, label: str) -> None:
        gi, _ = self.current_member()
        if gi >= 0 and isinstance(self.model.groups[gi], SimilarGroup):  # it holds files below the threshold too
            self.statusBar().showMessage("Label the matches of a Find similar result one by one (D / N)", 6000)
        elif gi >= 0:
            self._labelled(lambda: self.labels.label_group(self.model.groups[gi].members, gi + 1, label), label)

    def _labelled(self, write: Callable[[], str], label: str) -> bool:
        """Write a label (``write`` returns the status line); a label store that fails (locked by another
        dedup-app, a full disk) is reported, never a crash. Regroups after a "not duplicate"."""
        try:
            message = write()
        except sqlite3.Error as exc:
            self.show_error("The label was not saved", f"{self.ctx.labels.path}: {exc}")
            return False
        self.statusBar().showMessage(message, 6000)
        if label == NOT_DUPLICATE:
            row = max(0, self.tree.currentIndex().parent().row() if self.tree.currentIndex().parent().isValid()
                      else self.tree.currentIndex().row())  # fmt: skip

            def select() -> None:  # the group now at the labelled one's place
                if self.model.groups:
                    self.tree.setCurrentIndex(self.model.index(min(row, len(self.model.groups) - 1), 0))

            self.regroup(background=self._large(), then=select)
        self._update_summary()
        return True

    # -- actions ------------------------------------------------------------------------------------------------

    def ask(self, title: str, text: str) -> bool:
        """A yes/no confirmation (tests replace this)."""
        answer = QMessageBox.question(
            self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel
        )
        return answer == QMessageBox.StandardButton.Yes

    def _marked_here(self) -> list[str]:
        """The marked files shown that are still here (a large scan shows trashed or moved files until its
        regroup on the pool thread lands)."""
        removed = self.file_actions.removed
        return [p for p in self.model.marked_in_view() if p not in removed]

    def trash_marked(self) -> None:
        paths = self._marked_here()
        if not paths:
            self.statusBar().showMessage("Nothing is marked", 5000)
            return
        size = format_bytes(self.model.marked_bytes())
        if not self.ask(
            "Move to trash",
            f"Move {len(paths):,} marked files ({size}) to the trash?\n\nNothing is deleted: you can undo this "
            "(Ctrl+Z) or restore the files from the system trash.",
        ):
            return
        self.run_job("trash", self.file_actions.trash_job(paths), self._action_done, "Moving to trash")

    def move_marked(self) -> None:
        paths = self._marked_here()
        if not paths:
            self.statusBar().showMessage("Nothing is marked", 5000)
            return
        dest = self.choose_folder("Move the marked files to…", self.ctx.prefs.get(S.MOVE_DESTINATION))
        if not dest:
            return
        size = format_bytes(self.model.marked_bytes())
        if not self.ask("Move files", f"Move {len(paths):,} marked files ({size}) to {dest}?\n\nYou can undo this."):
            return
        self.ctx.prefs.set(S.MOVE_DESTINATION, dest)
        self.run_job("move", self.file_actions.move_job(paths, dest), self._action_done, "Moving files")

    def _action_done(self, record: ActionRecord) -> None:
        self._show_outcome(self.file_actions.done(record))

    def undo_last(self) -> None:
        job = self.file_actions.undo_job()
        if job is None:
            self.statusBar().showMessage("Nothing to undo", 5000)
            return
        self.run_job("undo", job, lambda out: self._show_outcome(self.file_actions.undo_done(out)), "Restoring files")

    def _show_outcome(self, outcome: Outcome) -> None:
        """After an action or an undo: regroup without what is gone, say what happened, list what failed."""
        self.statusBar().showMessage(outcome.message, 15000)
        self.regroup(background=self._large())
        record = outcome.record
        if record is None:
            return

        def save(path: str) -> None:
            write_record_csv(path, record)

        if outcome.failures:
            self.show_failures(outcome.failure_title, outcome.failures, save)
        elif any(m.destination is None for m in record.moved):  # macOS, Windows: the trash does not say where
            where = [FileError(m.source, "in the system trash: restore it from there") for m in record.moved]
            self.show_failures(f"{count_of(len(where), 'file')} moved to the system trash", where, save)

    def export(self) -> None:
        if self.review.finder is None or not self.model.duplicate_count():
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Export groups", os.path.expanduser("~/duplicates.csv"), "CSV (*.csv);;JSON (*.json)"
        )
        if path:
            self.export_to(path)

    def export_to(self, path: str) -> None:
        """Write what the window shows: the groups at the slider's threshold, the file kept in each (by the rule or
        K), the ticks and what waits for review, so a script can act on exactly what the user saw."""
        from dedup_app.core.report import write_csv, write_json

        finder = self.review.finder
        assert finder is not None
        shown = [
            (g, d)
            for g, d in zip(self.model.groups, self.model.marks.decisions(), strict=True)
            if not isinstance(g, SimilarGroup)
        ]  # a Find similar result is not a group of duplicates
        groups, decisions, rule = [g for g, _ in shown], [d for _, d in shown], self.rule_box.currentData()
        try:
            if path.lower().endswith(".json"):
                apart = finder.apart_at(self.threshold) if finder.checked_at is not None else None
                write_json(path, finder.result, groups, self.threshold, decisions, rule, apart)
            else:
                write_csv(path, groups, decisions, rule)
        except OSError as exc:
            self.show_error("Export failed", f"{path}: {exc}")
            return
        self.statusBar().showMessage(f"Exported {count_of(len(groups), 'group')} to {path}", 8000)

    # -- models -------------------------------------------------------------------------------------------------

    def training_available(self) -> bool:
        """Whether torch is there to train with; if not (the app bundle leaves it out), says how to get it."""
        from dedup_app.core.onnx_encoder import NO_TORCH, torch_installed

        if torch_installed():
            return True
        box = QMessageBox(QMessageBox.Icon.Information, "Training needs torch",
            "This build of dedup-app runs its shipped models with ONNX Runtime and leaves torch out, so it cannot "
            f"train. To fine-tune models on your labels, {NO_TORCH}.\n\nYour labels are kept: a pip install of "
            "dedup-app reads the same labels and models.", QMessageBox.StandardButton.Ok, self,
        )  # fmt: skip
        box.setObjectName("training-needs-torch")
        box.open()
        return False

    def open_training(self) -> Any:
        from dedup_app.ui.train_dialog import TrainDialog

        if not self.training_available():
            return None
        self.labels.refresh()
        dialog = TrainDialog(
            self.run_job, lambda: self.jobs.worker, self.labels.counts(), self.ctx.labels,
            self.source_folders(), self.activate_trained, self,
        )  # fmt: skip
        dialog.open()
        return dialog

    def activate_trained(self, result: Any) -> None:
        """Register a training result and make it the active model."""
        self._switch(lambda: self.models.activate_trained(result.checkpoint))

    def rollback_model(self) -> None:
        self._switch(self.models.rollback)

    def use_model(self, model_id: str) -> None:
        self._switch(lambda: self.models.activate(model_id))

    def _switch(self, request: Callable[[], SwitchResult]) -> None:
        """Ask the model service for a switch: done now (and the old model's embeddings dropped on the worker),
        or once the running job is over."""
        try:
            result = request()
        except ValueError as exc:
            self.statusBar().showMessage(str(exc), 8000)
            return
        if result.deferred:
            self.statusBar().showMessage(result.message, 15000)
        else:
            self.jobs.apply_switch(result)

    def _switched(self, result: SwitchResult) -> None:
        self.statusBar().showMessage(result.message, 15000)
        self._update_summary()

    def _fill_models_menu(self) -> None:
        from dedup_app.core.registry import DEFAULT

        self.models_menu.clear()
        registry = self.ctx.registry()
        active = registry.active_id
        entries = [(DEFAULT, "Shipped default", None)]
        entries += [(e.model_id, e.model_id, e.problem) for e in registry.entries()]
        for model_id, label, problem in entries:
            act = self.models_menu.addAction(f"{label} (unusable: {problem})" if problem else label)
            act.setEnabled(problem is None)
            act.setCheckable(True)
            act.setChecked((active or DEFAULT) == model_id)
            act.triggered.connect(lambda _=False, m=model_id: self.use_model(m))

    # -- change heads -------------------------------------------------------------------------------------------

    def open_change_training(self) -> Any:
        """Model > Train change head…: the dialog, fine-tuning the active change head when there is one."""
        from dedup_app.core.change.heads import default_change_model
        from dedup_app.ui.change_train_dialog import ChangeTrainDialog

        if not self.training_available():
            return None
        label, path, _note = default_change_model(self.ctx.change_registry())
        entry = self.ctx.change_registry().entry(label)
        start_from = (entry.name if entry is not None else label, path) if path is not None else None
        dialog = ChangeTrainDialog(
            self.run_job, lambda: self.jobs.worker, self.ctx.labels, start_from, self.choose_folder,
            self.activate_change_head, self.ctx.device, self,
        )  # fmt: skip
        dialog.open()
        return dialog

    def activate_change_head(self, training: Any) -> str | None:
        """Register a trained change head and make it the Changes tab's default; returns what happened."""
        return self._switch_change_head(lambda: self.change_heads.activate_trained(training.result.checkpoint))

    def use_change_head(self, head_id: str) -> None:
        """Make a registered head (or a shipped change model, or ``default``) the Changes tab's default."""
        self._switch_change_head(lambda: self.change_heads.activate(head_id))

    def rollback_change_head(self) -> None:
        self._switch_change_head(self.change_heads.rollback)

    def _switch_change_head(self, request: Callable[[], SwitchResult]) -> str | None:
        """Ask the change-head service for a switch: done now, or once the running job is over (as model switches
        are). Returns the message shown, None when it was refused."""
        try:
            result = request()
        except ValueError as exc:
            self.statusBar().showMessage(str(exc), 8000)
            return None
        if result.deferred:
            self.statusBar().showMessage(result.message, 15000)
        else:
            self._change_head_switched(result)
        return result.message

    def _change_head_switched(self, result: SwitchResult) -> None:
        self.statusBar().showMessage(result.message, 15000)
        self.changes.refresh_models()

    def _fill_change_heads_menu(self) -> None:
        from dedup_app.core.change.heads import DEFAULT_CHANGE_MODEL, FEATURES, SHIPPED_HEADS, is_installed
        from dedup_app.core.registry import DEFAULT

        self.change_heads_menu.clear()
        registry = self.ctx.change_registry()
        active = registry.active_id
        shipped = DEFAULT_CHANGE_MODEL.capitalize() if is_installed(DEFAULT_CHANGE_MODEL) else FEATURES.capitalize()
        entries: list[tuple[str, str, str | None]] = [(DEFAULT, f"Shipped default (now {shipped})", None)]
        for name in SHIPPED_HEADS:
            problem = registry.problem(name)
            entries.append((name, f"{name.capitalize()} (shipped{', not installed' if problem else ''})", problem))
        entries.append((FEATURES, "Features (training-free)", None))
        heads = registry.entries()
        for model_id, label, problem in entries:
            self._head_action(model_id, label, problem, active)
        if heads:
            self.change_heads_menu.addSeparator()
        for e in heads:
            f1 = e.metrics.get("validation", {}).get("f1") if isinstance(e.metrics.get("validation"), dict) else None
            text = f"{e.name}  ({e.model_id}" + (f", validation F1 {f1:.3f})" if isinstance(f1, float) else ")")
            self._head_action(e.model_id, text + (f" (unusable: {e.problem})" if e.problem else ""), e.problem,
                              active)  # fmt: skip

    def _head_action(self, head_id: str, text: str, problem: str | None, active: str | None) -> None:
        from dedup_app.core.registry import DEFAULT

        act = self.change_heads_menu.addAction(text)
        act.setEnabled(problem is None)
        act.setToolTip(problem or "")
        act.setCheckable(True)
        act.setChecked((active or DEFAULT) == head_id)
        act.triggered.connect(lambda _=False, h=head_id: self.use_change_head(h))

    # -- errors -------------------------------------------------------------------------------------------------

    def show_errors(self) -> None:
        ErrorsDialog(self.review.errors(), self).exec()

    def show_failures(
        self, title: str, failures: list[FileError], save: Callable[[str], None] | None = None
    ) -> ErrorsDialog:
        """The files an action or an undo could not handle, with the reason, and **Save list…** when given."""
        dialog = ErrorsDialog(failures, self, save)
        dialog.setWindowTitle(title)
        dialog.open()
        return dialog

    def show_warning(self, title: str, message: str) -> None:
        """A warning that does not stop anything (non-modal), also logged."""
        log.warning("%s: %s", title, message)
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        box.open()
        self.statusBar().showMessage(message, 20000)

    def show_error(self, title: str, message: str, details: str = "") -> None:
        """One error dialog, also logged."""
        log.error("%s: %s\n%s", title, message, details)
        box = QMessageBox(QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, self)
        if details:
            box.setDetailedText(details)
        box.open()

    # -- closing ------------------------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the worker and the loaders, and save the window state. Safe to call twice."""
        self.jobs.shutdown()
        self._regroup_calls.shutdown()
        self.changes.shutdown()
        self.loader.shutdown()
        self.compare.shutdown()
        garbage_collector.release(self)  # no worker left: the interpreter may collect anywhere again
        if self._paste_folder is not None:
            shutil.rmtree(self._paste_folder, ignore_errors=True)
            self._paste_folder = None
        state = self.ctx.state
        state.setValue("window/geometry", self.saveGeometry())
        state.setValue("window/splitter", self.splitter.saveState())
        state.setValue("window/groups_header", self.tree.header().saveState())
        state.sync()
