"""Starting the desktop application: the QApplication, the window, one global error handler, screenshots."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from types import TracebackType

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

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


def screenshot_changes_when_ready(window: MainWindow, path: str, app: QApplication) -> None:
    """After the comparison: save a PNG of the window, quit."""

    def save() -> None:
        window.grab().save(path)
        app.quit()

    def on_compared() -> None:
        QTimer.singleShot(300, save)  # let the window settle (buttons, overlay) before the picture

    window.changes.compared.connect(on_compared)
    window.job_finished.connect(lambda name: app.quit() if name == "change" and window.changes.current is None
                                else None)  # fmt: skip


def take_screenshot_when_ready(window: MainWindow, path: str, app: QApplication, timeout_s: float = 120) -> None:
    """After the scan: pick the first group, show its differences, wait for the pictures, save a PNG, quit."""
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
            window.grab().save(path)
            log.info("screenshot saved to %s", path)
            app.quit()
        else:
            QTimer.singleShot(200, poll)

    def on_scan() -> None:
        if window.model.groups:
            group = window.model.index(0, 0)
            window.tree.setCurrentIndex(window.model.index(1, 0, group) if window.model.rowCount(group) > 1 else group)
            window.compare.diff_button.setChecked(True)
        QTimer.singleShot(200, poll)

    window.scan_finished.connect(on_scan)
    window.job_finished.connect(lambda name: app.quit() if name == "scan" and window.finder is None else None)


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
