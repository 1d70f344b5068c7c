"""Starting the desktop application: the QApplication, the window, one global error handler, screenshots."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from types import TracebackType

from PySide6.QtCore import QRect, QSettings, Qt, QTimer
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox, QWidget

from dedup_app import __version__
from dedup_app.core.labels import LabelStore
from dedup_app.core.resources import resource_path
from dedup_app.ui import settings as S
from dedup_app.ui.main_window import AppContext, MainWindow

log = logging.getLogger(__name__)


def has_screen() -> bool:
    """Whether Qt can open a window here (a display, or a platform such as offscreen chosen explicitly)."""
    if os.environ.get("QT_QPA_PLATFORM") or sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def install_error_handler(window: MainWindow) -> None:
    """Uncaught exceptions on the UI thread go to the log and one error dialog, instead of killing the app."""

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            QApplication.quit()
            return
        details = "".join(traceback.format_exception(kind, value, tb))
        window.show_error("Unexpected error", f"{kind.__name__}: {value}", details)

    sys.excepthook = hook


class Screenshot:
    """One ``--screenshot`` run: the window is saved once (the first outcome wins) and the application quits, with
    exit status 0 when the picture shows the results, 1 when it shows why there are none (the reason goes to
    stderr too)."""

    def __init__(self, window: MainWindow, path: str, app: QApplication) -> None:
        self.window, self.path, self.app = window, path, app
        self.claimed = False

    def claim(self) -> bool:
        """Whether the caller is the first outcome (and so the one that saves)."""
        if self.claimed:
            return False
        self.claimed = True
        return True

    def take(self, error: str = "", settle_ms: int = 300) -> None:
        """Save once the window has settled (buttons, overlay, an error dialog), unless another outcome came first."""
        if self.claim():
            QTimer.singleShot(settle_ms, lambda: self.save(error))

    def save(self, error: str = "") -> None:
        """Save the window now, with its open dialogs drawn on it, and quit; ``error`` makes the exit status 1."""
        if not grab_window(self.window).save(self.path):
            print(f"dedup-app: error: --screenshot {self.path}: the picture could not be written", file=sys.stderr)
            self.app.exit(1)
            return
        log.info("screenshot saved to %s", self.path)
        if error:
            print(f"dedup-app: error: {error}; the window showing it is saved in {self.path}", file=sys.stderr)
        self.app.exit(1 if error else 0)

    def fail_when_idle(self, what: str) -> None:
        """Save with an error when a job ends and the window is then idle with no outcome: a job that failed, or
        one that never ran because the model it waited for did not load (instead of waiting forever)."""

        def check() -> None:
            if not self.claimed and self.window.worker is None:
                boxes = [d for d in open_dialogs(self.window) if isinstance(d, QMessageBox)]
                shown = [f"{box.windowTitle()}: {box.text()}" for box in boxes]
                self.take(what + (f" ({'; '.join(shown)})" if shown else ""))

        self.window.job_finished.connect(lambda _name: QTimer.singleShot(0, check))  # once a waiting job has started


def open_dialogs(window: QWidget) -> list[QDialog]:
    """The window's dialogs on screen (an error message, for one)."""
    return [d for d in window.findChildren(QDialog) if d.isVisible()]


def grab_window(window: QWidget) -> QPixmap:
    """The window as a picture, with its open dialogs drawn centred on it under a title bar (a grab of the window
    leaves them out, and an error shown in a dialog would be missing from the picture)."""
    picture = window.grab()
    dialogs = open_dialogs(window)
    if dialogs:
        painter = QPainter(picture)
        bar = painter.fontMetrics().height() + 8
        for dialog in dialogs:
            body = QRect((window.width() - dialog.width()) // 2, (window.height() - dialog.height() + bar) // 2,
                         dialog.width(), dialog.height())  # fmt: skip
            title = QRect(body.left(), body.top() - bar, body.width(), bar)
            painter.fillRect(title, QColor(70, 70, 70))
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(title.adjusted(8, 0, -8, 0), Qt.AlignmentFlag.AlignVCenter, dialog.windowTitle())
            painter.drawPixmap(body.topLeft(), dialog.grab())
            painter.setPen(QColor(70, 70, 70))
            painter.drawRect(title.united(body).adjusted(0, 0, -1, -1))
        painter.end()
    return picture


def screenshot_changes_when_ready(window: MainWindow, path: str, app: QApplication) -> None:
    """After the comparison: save a PNG of the window, quit. When the pair cannot be compared (unreadable, not
    lined up, inputs that do not pair, no model), the window showing why is saved and the exit status is 1."""
    shot = Screenshot(window, path, app)
    tab = window.changes
    tab.compared.connect(lambda: shot.take("" if tab.current is not None else tab.info.text()))
    tab.refused.connect(lambda: shot.take(tab.info.text()))
    shot.fail_when_idle("the comparison did not finish")


def take_screenshot_when_ready(window: MainWindow, path: str, app: QApplication, timeout_s: float = 120) -> None:
    """After the scan: pick the first group, show its differences, wait for the pictures, save a PNG, quit. When
    the scan fails (or the model does not load), the window showing the error is saved and the exit status is 1."""
    shot = Screenshot(window, path, app)
    state = {"waited": 0.0}

    def ready() -> bool:
        compare = window.compare
        pictures = [m for m in (compare.a, compare.b) if m is not None]
        loaded = all(window.loader.get(m.image.path, 1600) is not None for m in pictures)
        diff_done = not compare.diff_button.isChecked() or compare.diff_label.text() not in (
            "",
            "aligning...",
            "waiting for the pictures...",
        )
        return loaded and diff_done and not window.loader.busy

    def poll() -> None:
        state["waited"] += 0.2
        if ready() or state["waited"] > timeout_s:
            shot.save()
        else:
            QTimer.singleShot(200, poll)

    def on_scan() -> None:
        if not shot.claim():
            return
        if window.model.groups:
            group = window.model.index(0, 0)
            window.tree.setCurrentIndex(window.model.index(1, 0, group) if window.model.rowCount(group) > 1 else group)
            window.compare.diff_button.setChecked(True)
        QTimer.singleShot(200, poll)

    window.scan_finished.connect(on_scan)
    shot.fail_when_idle("the scan did not finish")


def app_icon() -> QIcon:
    """The application icon at every size shipped in resources/icons (an empty icon if they are missing)."""
    icon = QIcon()
    try:
        folder = resource_path("icons", "hicolor")
    except FileNotFoundError:
        log.warning("icons not found; the window has no icon")
        return icon
    for png in sorted(folder.glob("*/apps/dedup-app.png")):
        icon.addFile(str(png))
    return icon


def run_gui(
    paths: Sequence[str] = (),
    screenshot: str | None = None,
    model: str | None = None,
    device: str = "auto",
    cache: str | None = None,
    compare: Sequence[str] | None = None,
) -> int:
    """Open the window (and scan ``paths``, or compare the two images/folders of ``compare`` in the Changes tab);
    with ``screenshot`` save the window once the results are shown, and exit."""
    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    app.setApplicationName("dedup-app")
    app.setOrganizationName("dedup-app")
    app.setApplicationVersion(__version__)
    app.setWindowIcon(app_icon())
    app.setDesktopFileName("org.dedupapp.DedupApp")
    if screenshot:
        # a screenshot must not depend on (or change) the user's saved folders and layout
        tmp = tempfile.mkdtemp(prefix="dedup-shot-")
        prefs = QSettings(os.path.join(tmp, "prefs.ini"), QSettings.Format.IniFormat)
        state = QSettings(os.path.join(tmp, "state.ini"), QSettings.Format.IniFormat)
        labels = LabelStore(":memory:")
    else:
        prefs, state = S.default_stores()
        labels = LabelStore()
    ctx = AppContext(S.Preferences(prefs), state, labels, cache, model, device)
    window = MainWindow(ctx)
    install_error_handler(window)
    app.aboutToQuit.connect(window.shutdown)
    if screenshot:
        window.resize(1600, 900)
        if compare:
            screenshot_changes_when_ready(window, screenshot, app)
        else:
            take_screenshot_when_ready(window, screenshot, app)
    window.show()
    QTimer.singleShot(0, window.preload_model)
    if compare:
        window.tabs.setCurrentWidget(window.changes)
        QTimer.singleShot(0, lambda: window.changes.handle_drop(list(compare)))
    elif paths:
        QTimer.singleShot(0, lambda: window.add_sources(list(paths)))
    code = app.exec()
    labels.close()
    return code
