"""Painting change labels on the Changes tab: the user corrects the change map, and the correction is kept (by the
pair's content hashes, in the label store) as training data for change heads.

The label is a mask on the before image's pixel grid, shown as its own layer (blue, over the map's red) on the
swipe view. Tools work like QGIS's map tools and an image editor's: one tool is active at a time; **Pan** (H) is
the default and drags the view as before; **Brush** (B), **Eraser** (E) and **Fill region** (G) use the left
button, while the middle button or Space + drag still pan and the wheel zooms, whatever the tool (H goes back to
Pan; Escape stays the window's Cancel). [ and ] change the brush size, Ctrl+Z / Ctrl+Shift+Z undo and redo, L
shows or hides the label, Ctrl+S saves it. The label is saved by the Save button and, so that painting is never
lost, whenever another pair is shown, the inputs change or the window closes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QColor,
    QImage,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPen,
    QTransform,
)
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QStyleOptionGraphicsItem,
    QToolBar,
    QWidget,
)

from dedup_app.core.labels import ChangeMaskLabel, DamagedMaskError, LabelledFile, LabelStore
from dedup_app.ui.background import BackgroundCalls

log = logging.getLogger(__name__)

LABEL_COLOUR = QColor(0, 150, 255)  # the painted label: blue, apart from the map's red overlay
LABEL_OPACITY = 0.55
PAN, BRUSH, ERASER, FILL = "pan", "brush", "eraser", "fill"
UNSAVED_STYLE = "QLabel { color: #b45309; font-weight: bold; }"
ERROR_STYLE = "QLabel { color: #b02a37; font-weight: bold; }"
UNDO_STEPS = 100
UNDO_BYTES = 256 * 1024 * 1024  # older steps are forgotten past this (a 10,000 x 10,000 clear is 100 MB)


class MaskLayer(QGraphicsItem):
    """Shows a uint8 mask (0 unchanged, anything else changed) in one colour, drawing only what is exposed, so a
    stroke on a 10,000 x 10,000 label repaints a few hundred pixels, not the whole picture.

    The item's coordinates are the mask's pixels; it is scaled onto the before picture when that is shown at
    another size, so :meth:`QGraphicsItem.mapFromScene` gives image pixels whatever the view or the picture.
    """

    def __init__(self, colour: QColor = LABEL_COLOUR) -> None:
        super().__init__()
        self.colour = colour
        self.mask = np.zeros((0, 0), np.uint8)
        self._image = QImage()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def set_mask(self, mask: np.ndarray, shown_size: tuple[float, float] | None = None) -> None:
        """Show ``mask`` (kept, not copied: edits to it show after :meth:`changed`); ``shown_size`` is the
        (width, height) of the picture it lies on, in scene units (the mask's own size by default)."""
        self.prepareGeometryChange()
        self.mask = mask
        h, w = mask.shape
        if h and w:
            self._image = QImage(mask.data, w, h, w, QImage.Format.Format_Indexed8)
            self._image.setColorTable([0] + [self.colour.rgba()] * 255)
        else:
            self._image = QImage()
        sw, sh = shown_size or (w, h)
        self.setTransform(QTransform.fromScale(sw / w, sh / h) if h and w else QTransform())
        self.update()

    def changed(self, rect: QRect | None = None) -> None:
        """Repaint the pixels of ``rect`` (image pixels), or all."""
        self.update(QRectF(rect) if rect is not None else self.boundingRect())

    def boundingRect(self) -> QRectF:  # noqa: N802
        h, w = self.mask.shape
        return QRectF(0, 0, w, h)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        if self._image.isNull():
            return
        exposed = option.exposedRect.intersected(self.boundingRect()).toAlignedRect()  # type: ignore[attr-defined]
        if exposed.isEmpty():
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)  # label pixels stay crisp
        painter.drawImage(QRectF(exposed), self._image, QRectF(exposed))


@dataclass
class _Step:
    """One undo (or redo) step: the pixels at (x, y) before the edit, and the state they belong to."""

    x: int
    y: int
    pixels: np.ndarray
    state: int


@dataclass
class _Pair:
    """The pair being labelled: its paths, A's shape, and its files by content once they are hashed."""

    before: str
    after: str
    shape: tuple[int, int]
    files: tuple[LabelledFile, LabelledFile] | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.before)


class LabelPainter(QWidget):
    """The row of label tools over the swipe view, and the painting itself.

    ``view`` is the tab's swipe view (its ``before`` item is the picture painted on); ``store`` keeps the labels;
    ``proposal()`` gives the map's thresholded mask (or ``None``) for Fill region.
    """

    loaded = Signal()  # the shown pair's stored label, if any, is on screen and painting is possible
    saved = Signal()  # a label was written to the store
    edited = Signal()  # the label changed on screen

    def __init__(self, view: QGraphicsView, store: LabelStore | None,
                 proposal: Callable[[], np.ndarray | None], parent: QWidget | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.view = view
        self.store = store
        self.proposal = proposal
        self.pair: _Pair | None = None
        self.ready = False  # the stored label was looked up: painting now cannot be overwritten by it
        self.stored: ChangeMaskLabel | None = None
        self.tool = PAN
        self._calls = BackgroundCalls(1, self)
        self._request = 0
        self._state = self._saved_state = 0
        self._next_state = 1
        self._undo: list[_Step] = []
        self._redo: list[_Step] = []
        self._stroke: tuple[np.ndarray, QRect, QPointF] | None = None  # mask before the stroke, area, last point
        self._pan_from: QPointF | None = None
        self._space = False
        self._unsaved: dict[tuple[str, str], tuple[tuple[LabelledFile, LabelledFile], np.ndarray]] = {}
        self._hash_cache: dict[tuple[str, tuple[tuple[int, int], ...]], LabelledFile] = {}

        self.layer = MaskLayer()
        self.layer.setZValue(2.5)  # over the map's overlay, under the region highlight
        self.layer.setOpacity(LABEL_OPACITY)
        self.brush_outline = QGraphicsEllipseItem()  # white under black dashes: seen on light and dark ground
        self.brush_outline.setPen(QPen(QColor(255, 255, 255), 0))
        self.brush_outline.setZValue(10)
        self._outline_dashes = QGraphicsEllipseItem(self.brush_outline)
        self._outline_dashes.setPen(QPen(QColor(0, 0, 0), 0, Qt.PenStyle.DashLine))
        self.brush_outline.hide()
        view.scene().addItem(self.layer)
        view.scene().addItem(self.brush_outline)
        self._canvas = QImage()
        self._set_mask(np.zeros((0, 0), np.uint8))

        self.toolbar = QToolBar("Label")
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.toolbar.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.tools = QActionGroup(self)
        self.tools.setExclusive(True)
        self.act_pan = self._tool(PAN, "Pan", "H", "Pan (H): drag the picture; the wheel zooms")
        self.act_brush = self._tool(BRUSH, "Brush", "B", "Brush (B): paint change with the left button. Pan with "
                                    "the middle button or Space + drag; [ and ] change the size")  # fmt: skip
        self.act_eraser = self._tool(ERASER, "Eraser", "E", "Eraser (E): remove change with the left button. Pan "
                                     "with the middle button or Space + drag")  # fmt: skip
        self.act_fill = self._tool(FILL, "Fill", "G", "Fill region (G): click a region the map proposes "
                                   "(red) to add all of it to your label; double-clicking a row of the regions "
                                   "list does the same")  # fmt: skip
        self.act_pan.setChecked(True)
        self.brush_size = QSpinBox()
        self.brush_size.setRange(1, 2000)
        self.brush_size.setValue(16)
        self.brush_size.setSuffix(" px")
        self.brush_size.setToolTip("Brush and eraser diameter in image pixels ([ smaller, ] larger)")
        self.brush_size.valueChanged.connect(lambda _v: self._update_outline())
        self.toolbar.addWidget(self.brush_size)
        self.toolbar.addSeparator()
        self.act_take_all = self._action("Take all", "Shift+G", "Take all (Shift+G): add every region the map "
                                         "proposes at the current threshold to your label, then erase the wrong "
                                         "ones", self.take_all)  # fmt: skip
        self.act_clear = self._action("Clear", None, "Clear: remove all painting from this pair's label (Undo "
                                      "brings it back)", self.clear)  # fmt: skip
        self.act_undo = self._action("Undo", "Ctrl+Z", "Undo (Ctrl+Z): the last stroke, fill or clear", self.undo)
        self.act_redo = self._action("Redo", "Ctrl+Shift+Z", "Redo (Ctrl+Shift+Z or Ctrl+Y)", self.redo)
        self.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.act_show = self._action("Show", "L", "Show label (L): show or hide your painted label (blue)",
                                     self._show_toggled)  # fmt: skip
        self.act_show.setCheckable(True)
        self.act_show.setChecked(True)
        self.toolbar.addSeparator()
        self.act_save = self._action("Save label", "Ctrl+S", "Save label (Ctrl+S): keep it for training change "
                                     "heads; it is also saved when another pair is shown or the window closes",
                                     self.save)  # fmt: skip
        self.act_delete = self._action("Delete label", None, "Delete label: forget the saved label of this pair",
                                       self.delete_label)  # fmt: skip
        self.act_smaller = QAction("Smaller brush", self)
        self.act_smaller.setShortcut(QKeySequence("["))
        self.act_smaller.triggered.connect(lambda: self.resize_brush(-1))
        self.act_larger = QAction("Larger brush", self)
        self.act_larger.setShortcut(QKeySequence("]"))
        self.act_larger.triggered.connect(lambda: self.resize_brush(1))
        self.status = QLabel()
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setMinimumWidth(60)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.status, 1)
        self.tools.triggered.connect(self._tool_chosen)
        view.viewport().installEventFilter(self)
        view.installEventFilter(self)
        view.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._update_controls()

    # -- widgets ------------------------------------------------------------------------------------------------

    def _tool(self, tool: str, text: str, key: str, tip: str) -> QAction:
        act = self._action(text, key, tip, lambda: None)
        act.setCheckable(True)
        act.setData(tool)
        self.tools.addAction(act)
        return act

    def _action(self, text: str, key: str | None, tip: str, slot: Callable[[], Any]) -> QAction:
        act = QAction(text, self)
        act.setToolTip(tip)
        if key:
            act.setShortcut(QKeySequence(key))
        act.triggered.connect(lambda _checked=False: slot())
        self.toolbar.addAction(act)
        return act

    def install_shortcuts(self, host: QWidget) -> None:
        """Make the tools' keys work while ``host`` (the tab) is shown, wherever the focus is in the window, and
        not while another tab is (Qt's window shortcuts of a hidden widget are off). Escape is left to the
        window's Cancel: two enabled actions on one key would make Qt run neither."""
        for act in (*self.toolbar.actions(), self.act_smaller, self.act_larger):
            if act.shortcuts():
                act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
                host.addAction(act)

    def resize_brush(self, direction: int) -> None:
        """One step smaller (-1) or larger (+1): about a fifth of the size, at least a pixel."""
        size = self.brush_size.value()
        step = max(1, round(size * 0.2))
        self.brush_size.setValue(size + step if direction > 0 else max(1, size - step))

    def _tool_chosen(self, act: QAction) -> None:
        self.tool = str(act.data())
        painting = self.tool != PAN
        self._space = False
        self.view.setDragMode(QGraphicsView.DragMode.NoDrag if painting else QGraphicsView.DragMode.ScrollHandDrag)
        self.view.viewport().setCursor(Qt.CursorShape.CrossCursor if painting else Qt.CursorShape.OpenHandCursor)
        if painting:
            self.view.setFocus()
            if not self.act_show.isChecked():
                self.act_show.trigger()  # painting what cannot be seen helps nobody
        self._update_outline()

    def _show_toggled(self) -> None:
        self.layer.setVisible(self.act_show.isChecked())

    # -- the pair -----------------------------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether the label on screen differs from the one stored (or there is painting and nothing stored)."""
        return self.pair is not None and self._state != self._saved_state

    @property
    def label(self) -> np.ndarray:
        """The label on screen: uint8, the before image's size, 255 changed."""
        return self.layer.mask

    def show_pair(self, before: str, after: str, shape: tuple[int, int]) -> None:
        """Label the pair ``before``/``after`` (the before image is ``shape``, height x width): the label of the
        pair shown until now is saved if it changed, and this pair's stored label is looked up (by content, off
        the UI thread) and shown; ``loaded`` follows."""
        if self.pair is not None and (self.pair.before, self.pair.after, self.pair.shape) == (before, after, shape):
            return
        self.leave()
        self.pair = _Pair(before, after, (int(shape[0]), int(shape[1])))
        self._set_mask(np.zeros(self.pair.shape, np.uint8))
        self.ready = False
        self._update_controls()
        if self.store is None:
            self._say("No label store", "Labels cannot be kept: the tab has no label store")
            return
        self._request += 1
        request, pair, store = self._request, self.pair, self.store
        self._say("Reading label…", "Looking for a saved label of this pair (by the files' content)")

        def look_up() -> tuple[tuple[LabelledFile, LabelledFile], ChangeMaskLabel | None, np.ndarray | None, str]:
            files = self._labelled(pair.before), self._labelled(pair.after)
            stored = store.change_mask_label(files[0].content_hash, files[1].content_hash)
            mask, problem = None, ""
            if stored is not None and (stored.height, stored.width) != pair.shape:
                problem = (f"The saved label is {stored.width} x {stored.height}, this image {pair.shape[1]} x "
                           f"{pair.shape[0]}")  # fmt: skip
            elif stored is not None:
                try:
                    mask = stored.mask()
                except DamagedMaskError as exc:
                    problem = f"The saved label cannot be read: {exc}"
            if stored is not None and (stored.before.path, stored.after.path) != (pair.before, pair.after):
                store.move_change_mask(*files)  # renamed or moved since: training finds the files again
            return files, stored, mask, problem

        def done(out: Any, error: BaseException | None) -> None:
            if request != self._request or self.pair is not pair:
                return  # another pair is shown by now
            if error is not None:
                if not isinstance(error, (OSError, ValueError)):
                    raise error
                self._say("Cannot label this pair", f"This pair cannot be labelled: {error}", ERROR_STYLE)
                self.loaded.emit()
                return
            pair.files, self.stored, mask, problem = out
            pending = self._unsaved.pop((pair.before, pair.after), None)
            if pending is not None and pending[1].shape == pair.shape:
                np.copyto(self.label, pending[1])  # an earlier save failed: the painting is back, unsaved
                self._state = self._new_state()
            elif mask is not None:
                np.copyto(self.label, mask)
            self.layer.changed()
            self.ready = True
            self._update_controls()
            if problem:
                self._say("Saved label not shown", f"{problem}: it is not shown, and saving replaces it", ERROR_STYLE)
            self.loaded.emit()

        self._calls.submit(look_up, done)

    def _labelled(self, spec: str) -> LabelledFile:
        """A raster path with its content hash (on the pool thread), hashed again only when the file changed: a
        large GeoTIFF takes seconds, and a pair is shown again and again."""
        from dedup_app.core.change.painted import labelled_raster, raster_files

        try:
            stamp = tuple((st.st_size, st.st_mtime_ns) for st in map(os.stat, raster_files(spec)))
        except OSError:
            return labelled_raster(spec)  # says what is wrong with the file
        key = (spec, stamp)
        if key not in self._hash_cache:
            self._hash_cache[key] = labelled_raster(spec)
        return self._hash_cache[key]

    def leave(self) -> None:
        """Stop labelling the pair shown (its label is saved first if it changed); nothing is shown after."""
        self._end_stroke()  # a stroke under way belongs to the label being saved
        if self.pair is not None and self.dirty:
            self.save(auto=True)
        self._request += 1  # a lookup still running is for a pair no longer shown
        self.pair, self.stored, self.ready = None, None, False
        self._undo.clear()
        self._redo.clear()
        self._state = self._saved_state = 0
        self._set_mask(np.zeros((0, 0), np.uint8))
        self._update_controls()

    def shutdown(self) -> None:
        """At exit: wait for a lookup, then save the label shown if it changed."""
        self._calls.pool.waitForDone()
        if self.dirty:
            self.save(auto=True)

    def _set_mask(self, mask: np.ndarray) -> None:
        size = None
        before = getattr(self.view, "before", None)
        if before is not None and mask.size and not before.pixmap().isNull():
            pixmap = before.pixmap()
            size = (float(pixmap.width()), float(pixmap.height()))
        self.layer.set_mask(mask, size)
        h, w = mask.shape
        # the same memory as a greyscale picture: QPainter draws the strokes straight into the mask
        self._canvas = QImage(mask.data, w, h, w, QImage.Format.Format_Grayscale8) if mask.size else QImage()

    # -- saving -------------------------------------------------------------------------------------------------

    def save(self, auto: bool = False) -> bool:
        """Write the label shown to the store (an empty one too: "nothing changed here"); whether it was kept.
        A label that cannot be written stays in memory and comes back, unsaved, when its pair is shown again."""
        pair = self.pair
        if pair is None or self.store is None or not self.ready or pair.files is None:
            return False
        try:
            self.stored = self.store.put_change_mask(pair.files[0], pair.files[1], self.label)
        except Exception as exc:  # sqlite3.Error, a full disk: the painting must not vanish with the pair
            log.exception("saving the change label of %s failed", pair.before)
            self._unsaved[(pair.before, pair.after)] = (pair.files, self.label.copy())
            self._say(f"{pair.name}: NOT saved", f"The label of {pair.name} could not be saved ({exc}). It is kept "
                      "until you quit and comes back, unsaved, when you show this pair again", ERROR_STYLE)  # fmt: skip
            return False
        self._saved_state = self._state
        self._update_controls()
        session = "" if self.store.saved else " (this session only)"
        why = " for this session only: the labels file cannot be written (see the labels warning)" if session else ""
        self._say((f"{pair.name}: saved" if auto else "Saved") + session, f"The label of {pair.name} is saved{why}")
        self.saved.emit()
        return True

    def delete_label(self) -> None:
        """Forget the stored label of the pair shown and clear the painting (Undo brings the painting back)."""
        pair = self.pair
        if pair is None or self.store is None or pair.files is None:
            return
        self.store.remove_change_mask(pair.files[0].content_hash, pair.files[1].content_hash)
        self.stored = None
        self.clear()
        self._saved_state = self._state
        self._update_controls()
        self._say("Label deleted", f"The saved label of {pair.name} is deleted; Undo brings the painting back")

    def _update_controls(self) -> None:
        active = self.pair is not None and self.ready
        for act in (self.act_brush, self.act_eraser, self.act_fill, self.act_take_all, self.act_clear,
                    self.act_smaller, self.act_larger):  # fmt: skip
            act.setEnabled(active)
        self.brush_size.setEnabled(active)
        self.act_undo.setEnabled(active and bool(self._undo))
        self.act_redo.setEnabled(active and bool(self._redo))
        self.act_save.setEnabled(active and self.dirty)
        self.act_delete.setEnabled(active and self.stored is not None)
        if self.pair is None:
            self._say("")
        elif active and self.dirty:
            self._say("● Unsaved", "Your painting is saved when another pair is shown, the inputs change or the "
                      "window closes; Ctrl+S saves it now", UNSAVED_STYLE)  # fmt: skip
        elif active and self.stored is not None:
            session = self.store is not None and not self.store.saved
            why = ": the labels file cannot be written, see the labels warning" if session else ""
            self._say(
                "Saved label" + (" (this session only)" if session else ""), f"This pair's saved label is shown{why}"
            )
        elif active:
            self._say("No label yet", "Brush (B) paints change, Fill region (G) takes a region the map proposes, "
                      "Take all (Shift+G) every one")  # fmt: skip

    def _say(self, text: str, tip: str = "", style: str = "") -> None:
        """A short state next to the tools; the whole sentence in its tooltip."""
        self.status.setText(text)
        self.status.setToolTip(tip)
        self.status.setStyleSheet(style)

    # -- editing ------------------------------------------------------------------------------------------------

    def _new_state(self) -> int:
        self._next_state += 1
        return self._next_state

    def _record(self, before: np.ndarray, rect: QRect) -> None:
        """Keep the pixels of ``rect`` as they were (``before``: the whole mask, or the rect's pixels) for Undo."""
        rect = rect.intersected(QRect(0, 0, self.label.shape[1], self.label.shape[0]))
        if rect.isEmpty():
            return
        x, y, w, h = rect.x(), rect.y(), rect.width(), rect.height()
        pixels = before[y : y + h, x : x + w].copy() if before.shape == self.label.shape else before
        self._undo.append(_Step(x, y, pixels, self._state))
        self._redo.clear()
        self._state = self._new_state()
        while len(self._undo) > UNDO_STEPS or (
            len(self._undo) > 1 and sum(s.pixels.nbytes for s in self._undo) > UNDO_BYTES
        ):
            self._undo.pop(0)
        self.layer.changed(rect)
        self._update_controls()
        self.edited.emit()

    def _swap(self, source: list[_Step], target: list[_Step]) -> None:
        if not source or not self.ready:
            return
        step = source.pop()
        h, w = step.pixels.shape
        region = self.label[step.y : step.y + h, step.x : step.x + w]
        target.append(_Step(step.x, step.y, region.copy(), self._state))
        region[...] = step.pixels
        self._state = step.state
        self.layer.changed(QRect(step.x, step.y, w, h))
        self._update_controls()
        self.edited.emit()

    def undo(self) -> None:
        """Take back the last stroke, fill or clear of this pair."""
        self._swap(self._undo, self._redo)

    def redo(self) -> None:
        """Do again what Undo took back."""
        self._swap(self._redo, self._undo)

    def clear(self) -> None:
        """Remove all painting (one undo step)."""
        if not self.ready or not self.label.any():
            return
        before = self.label.copy()
        self.label[...] = 0
        self._record(before, QRect(0, 0, self.label.shape[1], self.label.shape[0]))

    def _add(self, region: np.ndarray, box: tuple[int, int, int, int]) -> None:
        x, y, w, h = box
        target = self.label[y : y + h, x : x + w]
        before = target.copy()
        target[region] = 255
        self._record(before, QRect(x, y, w, h))

    def _proposal(self) -> np.ndarray | None:
        proposed = self.proposal()
        if proposed is None or proposed.shape != self.label.shape:
            self._say("No change map", "There is no change map to take regions from")
            return None
        return proposed

    def fill_at(self, x: int, y: int) -> bool:
        """Add the proposed region under pixel (x, y) to the label; whether there was one."""
        from dedup_app.core.change.painted import region_at

        proposed = self._proposal() if self.ready else None
        if proposed is None:
            return False
        found = region_at(proposed, x, y)
        if found is None:
            self._say("No proposed region here", "Fill region takes the regions the map proposes (red)")
            return False
        self._add(*found)
        return True

    def fill_region(self, bbox: tuple[int, int, int, int]) -> bool:
        """Add the proposed region with bounding box ``bbox`` (a row of the regions list) to the label."""
        from dedup_app.core.change.painted import region_in_box

        proposed = self._proposal() if self.ready else None
        if proposed is None:
            return False
        try:
            self._add(*region_in_box(proposed, bbox))
        except ValueError:
            return False
        return True

    def take_all(self) -> None:
        """Add every proposed region to the label (one undo step)."""
        proposed = self._proposal() if self.ready else None
        if proposed is None or not proposed.any():
            return
        ys, xs = np.nonzero(proposed.any(axis=1))[0], np.nonzero(proposed.any(axis=0))[0]
        box = (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))
        x, y, w, h = box
        self._add(proposed[y : y + h, x : x + w] != 0, box)

    def _paint_segment(self, a: QPointF, b: QPointF) -> QRect:
        """Draw (brush) or erase a round-ended line between two pixel centres; returns the pixels touched."""
        size = self.brush_size.value()
        value = 255 if self.tool == BRUSH else 0
        painter = QPainter(self._canvas)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)  # the label stays 0 or 255
        painter.setPen(QPen(QColor(value, value, value), size, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                            Qt.PenJoinStyle.RoundJoin))  # fmt: skip
        if a == b:
            painter.drawPoint(a)
        else:
            painter.drawLine(a, b)
        painter.end()
        r = size // 2 + 2
        return QRectF(a, b).normalized().toAlignedRect().adjusted(-r, -r, r, r)

    def _end_stroke(self) -> None:
        if self._stroke is None:
            return
        before, rect, _ = self._stroke
        self._stroke = None
        rect = rect.intersected(QRect(0, 0, self.label.shape[1], self.label.shape[0]))
        x, y, w, h = rect.x(), rect.y(), rect.width(), rect.height()
        if not rect.isEmpty() and not np.array_equal(before[y : y + h, x : x + w], self.label[y : y + h, x : x + w]):
            self._record(before, rect)  # a stroke that changed nothing (erasing where nothing is) is no step

    # -- view events --------------------------------------------------------------------------------------------

    def image_pos(self, view_pos: QPointF) -> QPointF:
        """The image pixel position (column, row; fractional) under a point of the view's viewport."""
        scene = self.view.viewportTransform().inverted()[0].map(view_pos)
        return self.layer.mapFromScene(scene)

    def _pixel_centre(self, view_pos: QPointF) -> QPointF:
        p = self.image_pos(view_pos)
        return QPointF(np.floor(p.x()) + 0.5, np.floor(p.y()) + 0.5)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        kind = event.type()
        if watched is self.view and kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            return self._space_key(event)  # type: ignore[arg-type]
        if watched is not self.view.viewport():
            return False
        if kind == QEvent.Type.MouseButtonPress:
            return self._press(event)  # type: ignore[arg-type]
        if kind == QEvent.Type.MouseMove:
            return self._move(event)  # type: ignore[arg-type]
        if kind == QEvent.Type.MouseButtonRelease:
            return self._release(event)  # type: ignore[arg-type]
        if kind == QEvent.Type.Leave:
            self.brush_outline.hide()
        return False

    def _space_key(self, event: QKeyEvent) -> bool:
        """Space held: the view pans with the left button whatever the tool (as in QGIS and image editors)."""
        if event.key() != Qt.Key.Key_Space or self.tool == PAN:
            return False
        if not event.isAutoRepeat():
            self._space = event.type() == QEvent.Type.KeyPress
            self.view.setDragMode(
                QGraphicsView.DragMode.ScrollHandDrag if self._space else QGraphicsView.DragMode.NoDrag
            )
            self.view.viewport().setCursor(Qt.CursorShape.OpenHandCursor if self._space else Qt.CursorShape.CrossCursor)
        return True

    def _press(self, event: QMouseEvent) -> bool:
        if event.button() == Qt.MouseButton.MiddleButton:
            self._pan_from = event.position()
            self.view.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            return True
        if event.button() != Qt.MouseButton.LeftButton or self.tool == PAN or self._space:
            return False
        if not self.ready or not self.label.size:
            return True  # nothing to paint on (yet): neither paint nor start a pan the user did not ask for
        point = self._pixel_centre(event.position())
        if self.tool == FILL:
            self.fill_at(int(point.x()), int(point.y()))
            return True
        self._stroke = (self.label.copy(), QRect(), point)
        self._continue_stroke(point)
        return True

    def _continue_stroke(self, point: QPointF) -> None:
        assert self._stroke is not None
        before, rect, last = self._stroke
        touched = self._paint_segment(last, point)
        self._stroke = (before, rect.united(touched), point)
        self.layer.changed(touched)

    def _move(self, event: QMouseEvent) -> bool:
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            h, v = self.view.horizontalScrollBar(), self.view.verticalScrollBar()
            h.setValue(h.value() - round(delta.x()))
            v.setValue(v.value() - round(delta.y()))
            return True
        self._update_outline(event.position())
        if self._stroke is not None:
            self._continue_stroke(self._pixel_centre(event.position()))
            return True
        return False

    def _release(self, event: QMouseEvent) -> bool:
        if event.button() == Qt.MouseButton.MiddleButton and self._pan_from is not None:
            self._pan_from = None
            self.view.viewport().setCursor(
                Qt.CursorShape.OpenHandCursor if self.tool == PAN else Qt.CursorShape.CrossCursor
            )
            return True
        if event.button() == Qt.MouseButton.LeftButton and self._stroke is not None:
            self._end_stroke()
            return True
        return False

    def _update_outline(self, view_pos: QPointF | None = None) -> None:
        """The brush's circle under the pointer (image pixels, so it grows as the view zooms in)."""
        if self.tool not in (BRUSH, ERASER) or not self.label.size:
            self.brush_outline.hide()
            return
        if view_pos is not None:
            centre = self.layer.mapToScene(self._pixel_centre(view_pos))
            self.brush_outline.setData(0, centre)
        centre = self.brush_outline.data(0)
        if centre is None:
            return
        scale = self.layer.transform().m11()
        r = self.brush_size.value() * scale / 2
        self.brush_outline.setRect(QRectF(centre.x() - r, centre.y() - r, 2 * r, 2 * r))
        self._outline_dashes.setRect(self.brush_outline.rect())
        self.brush_outline.show()
