"""The Changes tab: before/after drop zones, a swipe view with the change overlay, live threshold, regions.

All the work (reading, aligning, the change map, exports) runs as core generators on the window's worker; the
tab keeps the last results in memory, so the threshold and minimum-area controls redraw without recomputing.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from dedup_app.core.labels import LabelStore
from dedup_app.core.progress import CancelToken
from dedup_app.ui.background import BackgroundCalls
from dedup_app.ui.painting import LabelPainter

MAX_RESULTS = 16  # change results computed up front and kept in memory (each holds both images at full size)
MAX_RESULT_BYTES = 1_500_000_000  # ... unless they hold more than this: the oldest go first, the newest always stays
OTHER_FILE = "<other file>"  # the Model box's "Other file…" entry
PIXELS = "pixels"  # the Model box's change-vector analysis entry (no model)


def resolve_choice(choice: str, registry: Any = None) -> tuple[str, str, Path | None, str]:
    """What a Model box entry asks for: ``(method, label, head file or None, note)``.

    ``general`` is the shipped default: it falls back to ``features`` while it is not installed, with the note saying
    so (and saying so when the change head the user activated cannot be used). A registered head's id resolves
    through ``registry`` (the change-head registry; default: the user's). Another missing head, an unknown name or a
    missing file raises ``ChangeModelError`` (a ``ValueError``) with a one-line message."""
    from dedup_app.core.change.heads import (
        DEFAULT_CHANGE_MODEL,
        default_change_model,
        resolve_change_model,
        shipped_default_change_model,
    )
    from dedup_app.core.registry import ChangeHeadRegistry

    if choice == PIXELS:
        return PIXELS, PIXELS, None, ""
    registry = registry if registry is not None else ChangeHeadRegistry()
    if choice == DEFAULT_CHANGE_MODEL:
        # nothing usable active: the default, with a note on an active head that cannot be used
        label, path, note = shipped_default_change_model() if registry.active_id else default_change_model(registry)
        return "features", label, path, note
    label, path = resolve_change_model(choice, registry)
    return "features", label, path, ""


def _held_bytes(results: Iterable[Any]) -> int:
    """Memory held by change results (an error message holds none)."""
    return sum(r.nbytes for r in results if not isinstance(r, str))


def rgb_pixmap(arr: np.ndarray) -> QPixmap:
    h, w = arr.shape[:2]
    img = QImage(np.ascontiguousarray(arr).data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(img.copy())


def mask_image(mask: np.ndarray, colour: tuple[int, int, int] = (255, 40, 40)) -> QImage:
    """The changed pixels in ``colour``, the rest transparent (a QImage: may be built off the UI thread)."""
    h, w = mask.shape
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = (mask > 0) * 255
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


def mask_pixmap(mask: np.ndarray, colour: tuple[int, int, int] = (255, 40, 40)) -> QPixmap:
    return QPixmap.fromImage(mask_image(mask, colour))


class DropZone(QFrame):
    """A labelled area that takes one dropped file or folder (or a click on Choose…)."""

    changed = Signal(str)

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.path = ""
        self.setAcceptDrops(True)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.label = QLabel(f"<b>{title}</b><br>drop an image or a folder of tiles")
        self.label.setWordWrap(True)
        choose = QPushButton("Choose…")
        choose.clicked.connect(self._choose)
        layout = QHBoxLayout(self)
        layout.addWidget(self.label, 1)
        layout.addWidget(choose)

    def set_path(self, path: str) -> None:
        self.path = path
        name = os.path.basename(path.rstrip("/")) or path
        self.label.setText(f"<b>{self.title}</b><br>{name}")
        self.label.setToolTip(path)
        self.changed.emit(path)

    def _choose(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"{self.title} image", "", "Images (*.png *.jpg *.jpeg *.tif "
                                              "*.tiff *.bmp *.webp);;All files (*)")  # fmt: skip
        if path:
            self.set_path(path)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            event.acceptProposedAction()
            self.set_path(urls[0])


class SwipeView(QGraphicsView):
    """Before under After; After is shown left of the swipe position only; the change overlay on top."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.before = QGraphicsPixmapItem()
        self.clip = QGraphicsRectItem()
        self.clip.setFlag(QGraphicsRectItem.GraphicsItemFlag.ItemClipsChildrenToShape)
        self.clip.setPen(QPen(Qt.PenStyle.NoPen))
        self.after = QGraphicsPixmapItem(self.clip)
        self.overlay = QGraphicsPixmapItem()
        self.highlight = QGraphicsRectItem()
        self.highlight.setPen(QPen(QColor(255, 220, 0), 0))
        for z, item in enumerate((self.before, self.clip, self.overlay, self.highlight)):
            item.setZValue(z)
            self.scene().addItem(item)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.swipe = 0.5

    def set_images(self, before: QPixmap, after: QPixmap) -> None:
        self.before.setPixmap(before)
        self.after.setPixmap(after)
        self.scene().setSceneRect(QRectF(before.rect()))
        self.set_swipe(self.swipe)
        self.highlight.setRect(QRectF())
        self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def set_swipe(self, fraction: float) -> None:
        """Show After on the left ``fraction`` of the picture, Before on the rest."""
        self.swipe = fraction
        rect = self.scene().sceneRect()
        self.clip.setRect(QRectF(rect.x(), rect.y(), rect.width() * fraction, rect.height()))

    def set_overlay(self, pixmap: QPixmap | None, opacity: float) -> None:
        self.overlay.setPixmap(pixmap or QPixmap())
        self.overlay.setOpacity(opacity)

    def zoom_to(self, rect: QRectF) -> None:
        margin = max(rect.width(), rect.height()) * 0.6 + 16
        self.highlight.setRect(rect)
        self.fitInView(rect.adjusted(-margin, -margin, margin, margin), Qt.AspectRatioMode.KeepAspectRatio)

    def wheelEvent(self, event) -> None:  # type: ignore[no-untyped-def]  # noqa: N802
        factor = 1.25 if event.angleDelta().y() > 0 else 0.8
        self.scale(factor, factor)


class ChangesTab(QWidget):
    """Compare before/after images or folders of tiles; ``run_job`` is the window's job runner, ``labels`` keeps
    the change labels the user paints (none: painting is not offered)."""

    compared = Signal()  # results shown (tests wait on it)
    refused = Signal()  # nothing compared: the inputs are missing or do not pair, or the model is unusable (says why)
    redrawn = Signal()  # the mask and regions at the current settings are on screen

    def __init__(self, run_job: Callable[..., bool], get_detector: Callable[[CancelToken, str, Path | None], Any],
                 parent: QWidget | None = None, labels: LabelStore | None = None,
                 change_registry: Callable[[], Any] | None = None) -> None:  # fmt: skip
        """``change_registry`` makes the change-head registry (default: the user's): its heads are offered by name,
        its active one selected."""
        super().__init__(parent)
        self.run_job = run_job
        self.get_detector = get_detector
        if change_registry is None:
            from dedup_app.core.registry import ChangeHeadRegistry

            change_registry = ChangeHeadRegistry
        self.change_registry = change_registry
        self._files: list[str] = []  # change-head files chosen with Other file…
        self.results: OrderedDict[tuple[str, str], Any] = OrderedDict()  # by Pair.key: names are for display
        self.pairs: list[Any] = []
        self.current: Any = None
        self.choice = ""  # the Model box entry the shown results were compared with
        self.model_note = ""  # what the model resolution said for them (the default fell back), or ""
        self._calls = BackgroundCalls(1, self)
        self._redraw_request = 0

        self.before_zone, self.after_zone = DropZone("Before"), DropZone("After")
        self.model = QComboBox()
        self.model.setToolTip("How change is measured: a change head on the network's features, the features' "
                              "difference without training, or colour differences per pixel")  # fmt: skip
        self._fill_models()
        self._model_index = self.model.currentIndex()
        self.model.activated.connect(self._model_activated)
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip("Align, normalise and map the changes (runs in the background)")
        self.compare_button.clicked.connect(self.compare)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write masks, overlays, heatmaps, GeoTIFF, GeoJSON and a summary")
        self.export_button.clicked.connect(self.choose_export)
        top = QHBoxLayout()
        top.addWidget(self.before_zone, 2)
        top.addWidget(self.after_zone, 2)
        top.addWidget(self.model)
        top.addWidget(self.compare_button)
        top.addWidget(self.export_button)

        self.pair_list = QListWidget()
        self.pair_list.setToolTip("Tile pairs; each row shows the changed fraction")
        self.pair_list.currentRowChanged.connect(self._pair_selected)
        self.view = SwipeView()
        self.painter = LabelPainter(self.view, labels, self._proposed_mask)
        self.painter.install_shortcuts(self)
        self.painter.setVisible(labels is not None)
        self.swipe = self._slider(50, "Swipe: After on the left, Before on the right")
        self.opacity = self._slider(60, "Opacity of the change overlay")
        self.threshold = self._slider(50, "Change probability above which a pixel counts as changed")
        self.threshold.setRange(1, 99)
        self.threshold_label = QLabel("0.50")
        self.min_area = QSpinBox()
        self.min_area.setRange(1, 1_000_000)
        self.min_area.setValue(64)
        self.min_area.setSuffix(" px")
        self.min_area.setToolTip("Smallest changed region kept")
        controls = QHBoxLayout()
        for label, widget in (("Swipe", self.swipe), ("Overlay", self.opacity), ("Threshold", self.threshold)):
            controls.addWidget(QLabel(label))
            controls.addWidget(widget)
        controls.addWidget(self.threshold_label)
        controls.addWidget(QLabel("Min. area"))
        controls.addWidget(self.min_area)
        self.info = QLabel("Drop a before and an after image (or two folders of tiles), then Compare.")
        self.info.setWordWrap(True)
        self.alignment_note = QLabel()  # shown over the pair when its registration could not be verified
        self.alignment_note.setWordWrap(True)
        self.alignment_note.setStyleSheet("QLabel { background: #fff3cd; color: #664d03; padding: 4px; }")
        self.alignment_note.hide()
        center = QWidget()
        center_layout = QVBoxLayout(center)
        center_layout.setContentsMargins(0, 0, 0, 0)
        center_layout.addWidget(self.alignment_note)
        center_layout.addWidget(self.painter)
        center_layout.addWidget(self.view, 1)
        center_layout.addLayout(controls)
        center_layout.addWidget(self.info)

        self.regions = QTableWidget(0, 3)
        self.regions.setHorizontalHeaderLabels(["Region", "Area (px)", "Area (m²)"])
        self.regions.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.regions.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.regions.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.regions.setToolTip("Changed regions, largest first; click one to zoom to it, double-click it to add "
                                "it to your label")  # fmt: skip
        self.regions.currentCellChanged.connect(lambda row, *_: self.zoom_to_region(row))
        self.regions.cellDoubleClicked.connect(lambda row, _col: self.take_region(row))

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.pair_list)
        split.addWidget(center)
        split.addWidget(self.regions)
        split.setSizes([200, 900, 260])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(split, 1)

        self.swipe.valueChanged.connect(lambda v: self.view.set_swipe(v / 100))
        self.opacity.valueChanged.connect(lambda v: self.view.overlay.setOpacity(v / 100))
        self.threshold.valueChanged.connect(lambda _v: self._redraw())
        self.min_area.valueChanged.connect(lambda _v: self._redraw())
        self.threshold.sliderReleased.connect(self._update_pair_rows)  # the other pairs once the user lets go
        self.min_area.editingFinished.connect(self._update_pair_rows)
        self.export_button.setEnabled(False)

    def _slider(self, value: int, tip: str) -> QSlider:
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, 100)
        slider.setValue(value)
        slider.setToolTip(tip)
        return slider

    def _fill_models(self) -> None:
        """The change models by name (a shipped head that is not installed is shown, greyed), the registered heads
        by name, Features, Pixels, Other file…; the default selected (the active head, else General)."""
        from dedup_app.core.change.heads import (
            DEFAULT_CHANGE_MODEL,
            DESCRIPTIONS,
            FEATURES,
            SHIPPED_HEADS,
            is_installed,
            shipped_head_path,
        )

        for name in SHIPPED_HEADS:
            installed = is_installed(name)
            text = name.capitalize()
            tip = DESCRIPTIONS[name]
            if not installed and name == DEFAULT_CHANGE_MODEL:
                text += " (not installed: Features for now)"
                tip += f"; not installed ({shipped_head_path(name)} is missing), so Features is used"
            elif not installed:
                text += " (not installed)"
                tip += f"; not installed ({shipped_head_path(name)} is missing)"
            self.model.addItem(text, name)
            self.model.setItemData(self.model.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
            if not installed and name != DEFAULT_CHANGE_MODEL:
                self._enable_item(self.model.count() - 1, False)
        registry = self.change_registry()
        heads = [e for e in registry.entries() if e.usable]
        names = [e.name for e in heads]
        for e in heads:
            f1 = e.metrics.get("validation", {}).get("f1") if isinstance(e.metrics.get("validation"), dict) else None
            self.model.addItem(e.name if names.count(e.name) == 1 else f"{e.name} ({e.model_id[-10:]})", e.model_id)
            tip = f"Your change head {e.model_id}" + (f": validation F1 {f1:.3f}" if isinstance(f1, float) else "")
            self.model.setItemData(self.model.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.model.addItem("Features (training-free)", FEATURES)
        self.model.setItemData(self.model.count() - 1, DESCRIPTIONS[FEATURES], Qt.ItemDataRole.ToolTipRole)
        self.model.addItem("Pixels (land cover, coarse imagery)", PIXELS)
        self.model.setItemData(self.model.count() - 1, "Colour differences per pixel (change-vector analysis), "
                               "for coarse imagery; no model", Qt.ItemDataRole.ToolTipRole)  # fmt: skip
        self.model.addItem("Other file…", OTHER_FILE)
        self.model.setItemData(self.model.count() - 1, "A change-head file", Qt.ItemDataRole.ToolTipRole)
        active = registry.active_id
        index = self.model.findData(active) if active else -1
        self.model.setCurrentIndex(index if index >= 0 else self.model.findData(DEFAULT_CHANGE_MODEL))

    def refresh_models(self) -> None:
        """Fill the Model box again (a head was registered, the active one switched) and select the default: the
        active change head. Files added with Other file… stay offered."""
        self.model.clear()
        self._fill_models()
        current = self.model.currentIndex()
        for path in self._files:
            self._insert_file(path)
        self.model.setCurrentIndex(current)
        self._model_index = current

    def _enable_item(self, index: int, enabled: bool) -> None:
        item = self.model.model().item(index)  # type: ignore[attr-defined]  # a combo box's QStandardItemModel
        item.setEnabled(enabled)

    def _model_activated(self, index: int) -> None:
        if self.model.itemData(index) != OTHER_FILE:
            self._model_index = index
            return
        path, _ = QFileDialog.getOpenFileName(self, "Change head file", "", "Change heads (*.pt);;All files (*)")
        if path:
            self.add_model_file(path)
        else:
            self.model.setCurrentIndex(self._model_index)

    def add_model_file(self, path: str) -> None:
        """Offer a change-head file in the Model box (just above Other file…) and select it."""
        index = self.model.findData(path)
        if index < 0:
            index = self._insert_file(path)
            self._files.append(path)
        self.model.setCurrentIndex(index)
        self._model_index = index

    def _insert_file(self, path: str) -> int:
        index = self.model.findData(OTHER_FILE)
        self.model.insertItem(index, os.path.basename(path) or path, path)
        self.model.setItemData(index, path, Qt.ItemDataRole.ToolTipRole)
        return index

    # -- inputs and jobs ----------------------------------------------------------------------------------------

    def handle_drop(self, paths: list[str]) -> None:
        """Files dropped on the window while this tab is shown: two fill Before and After, one the next empty."""
        if len(paths) >= 2:
            self.before_zone.set_path(paths[0])
            self.after_zone.set_path(paths[1])
            self.compare()
        elif paths:
            (self.after_zone if self.before_zone.path else self.before_zone).set_path(paths[0])
            if self.before_zone.path and self.after_zone.path:
                self.compare()

    def compare(self) -> None:
        from dedup_app.core.change.pipeline import ChangeInputError, pair_inputs

        before, after = self.before_zone.path, self.after_zone.path
        if not before or not after:
            self.info.setText("Choose both a before and an after image (or folder) first.")
            self.refused.emit()
            return
        try:
            pairs = pair_inputs(before, after)
        except ChangeInputError as exc:
            self.info.setText(f"Cannot compare: {exc}")
            self.refused.emit()
            return
        self.painter.leave()  # the label painted on the pair shown is saved before the pairs go
        self.pairs, self.results = pairs, OrderedDict()
        self.choice = self.model.currentData()  # a tile compared later (selected) uses the same model
        # quietly: emptying the list moves its current row to the next tile on the way, which would compare that
        # one alone (the full comparison then refused as the worker is busy) and show it instead of the first
        self.pair_list.blockSignals(True)
        self.pair_list.clear()
        self.pair_list.blockSignals(False)
        for pair in pairs:
            self.pair_list.addItem(QListWidgetItem(pair.name))
        self._compute(pairs[: min(len(pairs), MAX_RESULTS)], select=0)

    def _compute(self, pairs: list[Any], select: int | None = None) -> None:
        choice = self.choice
        get_detector, change_registry = self.get_detector, self.change_registry

        def job(cancel: CancelToken):  # type: ignore[no-untyped-def]
            # imported here, on the worker: the pipeline pulls in torch (seconds, holding the UI thread otherwise)
            from dedup_app.core.change.align import AlignmentError
            from dedup_app.core.change.pipeline import compare_pair
            from dedup_app.core.change.raster import RasterError

            try:
                method, _label, head_path, note = resolve_choice(choice, change_registry())
                detector = get_detector(cancel, method, head_path)
            except ValueError as exc:  # the model: not installed, not found, not a change head (one line each)
                return str(exc)
            out: dict[tuple[str, str], Any] = {}
            for pair in pairs:
                cancel.raise_if_cancelled()
                if _held_bytes(out.values()) > MAX_RESULT_BYTES:
                    break  # large rasters: the rest are compared when selected
                try:
                    out[pair.key] = yield from compare_pair(pair, detector, None, cancel)
                except (RasterError, AlignmentError) as exc:
                    out[pair.key] = str(exc)
            return out, note

        def done(outcome: tuple[dict[tuple[str, str], Any], str] | str) -> None:
            if isinstance(outcome, str):
                self.info.setText(f"Cannot compare: {outcome}")
                self.refused.emit()
                return
            out, self.model_note = outcome
            for key, result in out.items():
                self.results[key] = result
                self.results.move_to_end(key)
            while len(self.results) > 1 and (
                len(self.results) > MAX_RESULTS or _held_bytes(self.results.values()) > MAX_RESULT_BYTES
            ):
                self.results.popitem(last=False)
            self._update_pair_rows()
            if select is not None and self.pair_list.count():
                self.pair_list.setCurrentRow(select)
                self._pair_selected(select)
            self.export_button.setEnabled(True)
            self.compared.emit()

        self.run_job("change", job, done, "Comparing")

    def _update_pair_rows(self, rows: range | list[int] | None = None) -> None:
        """Rewrite the changed fraction of the given rows (all by default) at the current settings."""
        t, area = self.threshold.value() / 100, self.min_area.value()
        for row in rows if rows is not None else range(len(self.pairs)):
            pair = self.pairs[row]
            item = self.pair_list.item(row)
            result = self.results.get(pair.key)
            if isinstance(result, str):
                item.setText(f"{pair.name}: could not compare")
                item.setToolTip(result)
            elif result is not None:
                fraction = result.summary(t, area)["changed_fraction"]
                unverified = not result.alignment.verified
                item.setText(
                    f"{pair.name}: {fraction:.1%} changed" + (", alignment not verified" if unverified else "")
                )
                item.setToolTip(f"Alignment not verified: {result.alignment.note}" if unverified else "")
                item.setData(Qt.ItemDataRole.ForegroundRole, QColor(150, 100, 0) if unverified else None)

    def _pair_selected(self, row: int) -> None:
        if not 0 <= row < len(self.pairs):
            return
        pair = self.pairs[row]
        result = self.results.get(pair.key)
        if result is None:
            self._compute([pair], select=row)
            return
        if isinstance(result, str):
            self.current = None
            self.alignment_note.hide()
            self.info.setText(f"{pair.name}: could not compare: {result}")
            self.regions.setRowCount(0)
            self.painter.leave()
            self.view.set_images(QPixmap(), QPixmap())
            return
        if self.current is not result:
            first = self.current is None
            self.current = result
            if first:
                self.threshold.blockSignals(True)
                self.threshold.setValue(round(result.default_threshold * 100))
                self.threshold.blockSignals(False)
            self.view.set_images(rgb_pixmap(result.before.pixels), rgb_pixmap(result.after))
            self.painter.show_pair(pair.before, pair.after, result.before.shape)  # saves the label of the last one
            al = result.alignment
            self.alignment_note.setText(
                f"Alignment not verified: {al.note}. The map compares the images as shown; check that they line up "
                "(swipe)."
            )
            self.alignment_note.setVisible(not al.verified)
        self._redraw(now=True)

    def _redraw(self, now: bool = False) -> None:
        """Show the mask and regions at the current threshold and minimum area.

        While a slider moves, the mask and its regions (about a second for a 4096 x 4096 pair) are worked out on
        a pool thread and only the newest request is shown, so the window never stalls; ``now`` does it at once
        (a newly shown result)."""
        self.threshold_label.setText(f"{self.threshold.value() / 100:.2f}")
        result = self.current
        if result is None:
            return
        t, area = self.threshold.value() / 100, self.min_area.value()

        def compute() -> tuple[Any, list[Any], QImage]:
            mask, regions = result.regions_at(t, area)
            return mask, regions, mask_image(mask)

        if now:
            self._show_regions(result, t, area, compute())
            return
        self._redraw_request += 1
        request = self._redraw_request

        def show(out: Any, error: BaseException | None) -> None:
            if error is not None:
                raise error
            if request == self._redraw_request and result is self.current:
                self._show_regions(result, t, area, out)

        self._calls.submit(compute, show)

    def _show_regions(self, result: Any, t: float, area: int, computed: tuple[Any, list[Any], QImage]) -> None:
        _mask, regions, image = computed
        self.view.set_overlay(QPixmap.fromImage(image), self.opacity.value() / 100)
        self.regions.setUpdatesEnabled(False)
        self.regions.setRowCount(len(regions))
        for row, region in enumerate(regions):
            m2 = "" if region.area_m2 is None else f"{region.area_m2:,.0f}"
            for col, text in enumerate((str(region.id), f"{region.area_px:,}", m2)):
                self.regions.setItem(row, col, QTableWidgetItem(text))
        self.regions.setColumnHidden(2, result.before.geo is None)  # square metres only for georeferenced tiles
        self.regions.setUpdatesEnabled(True)
        s = result.summary(t, area)
        al = result.alignment
        self.info.setText(
            f"{s['name']}: {s['changed_fraction']:.1%} changed, {s['regions']} regions"
            + (f", {s['changed_m2']:,.0f} m²" if s["changed_m2"] is not None else "")
            + (
                f". Alignment: {al.method}, shift {al.dx:+.1f}, {al.dy:+.1f} px"
                if al.verified
                else f". Alignment not verified (correlation {al.correlation:.2f})"
            )
            + f". Model: {result.model}."
            + (f" Note: {self.model_note}." if self.model_note else "")
        )
        # only the pair shown while the slider moves: every other pair would mean a mask and regions per tile
        self._update_pair_rows([self.pair_list.currentRow()] if self.pair_list.currentRow() >= 0 else [])
        self.redrawn.emit()

    def shutdown(self) -> None:
        """Wait for a mask being worked out, and save a label being painted (at exit)."""
        self._calls.shutdown()
        self.painter.shutdown()

    def zoom_to_region(self, row: int) -> None:
        if self.current is None or row < 0:
            return
        _, regions = self.current.regions_at(self.threshold.value() / 100, self.min_area.value())
        if row < len(regions):
            x, y, w, h = regions[row].bbox
            self.view.zoom_to(QRectF(x, y, w, h))

    # -- painted labels -----------------------------------------------------------------------------------------

    def _proposed_mask(self) -> np.ndarray | None:
        """The map's changed pixels at the current threshold and minimum area (what Fill region takes from)."""
        if self.current is None:
            return None
        mask, _regions = self.current.regions_at(self.threshold.value() / 100, self.min_area.value())
        return mask  # type: ignore[no-any-return]

    def take_region(self, row: int) -> None:
        """Add the region of the regions list's ``row`` to the painted label."""
        if self.current is None or row < 0:
            return
        _, regions = self.current.regions_at(self.threshold.value() / 100, self.min_area.value())
        if row < len(regions):
            self.painter.fill_region(regions[row].bbox)

    # -- export -------------------------------------------------------------------------------------------------

    def choose_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export change maps to…", os.path.expanduser("~"))
        if folder:
            self.export_to(folder)

    def export_to(self, folder: str) -> None:
        from dedup_app.core.change.pipeline import ChangeOptions, run_change

        if not self.pairs:
            return
        before, after = self.before_zone.path, self.after_zone.path
        options = ChangeOptions(self.threshold.value() / 100, self.min_area.value())
        known = {k: v for k, v in self.results.items() if not isinstance(v, str)}
        choice = self.choice
        get_detector, change_registry = self.get_detector, self.change_registry

        def job(cancel: CancelToken):  # type: ignore[no-untyped-def]
            try:
                method, label, head_path, note = resolve_choice(choice, change_registry())
                detector = get_detector(cancel, method, head_path)
            except ValueError as exc:
                return str(exc)
            header = {"change_model": label, **({"change_model_note": note} if note else {})}
            return (yield from run_change(before, after, folder, detector, options, cancel, known, header))

        def done(summaries: list[dict[str, Any]] | str) -> None:
            if isinstance(summaries, str):
                self.info.setText(f"Cannot export: {summaries}")
                self.refused.emit()
                return
            failed = sum(1 for s in summaries if s.get("error"))
            self.info.setText(f"Exported {len(summaries) - failed} pairs to {folder}"
                              + (f" ({failed} could not be compared)" if failed else ""))  # fmt: skip
            self.compared.emit()

        self.run_job("change-export", job, done, "Exporting change maps")
