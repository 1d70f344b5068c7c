"""Where the window opens: the first window fits its screen (a 1366 x 768 laptop too), a saved place that no
longer fits is brought back onto the screen. Screens of any size come from the offscreen plugin's configfile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QByteArray, QRect, QSize
from PySide6.QtWidgets import QMainWindow

from dedup_app.ui.geometry import FIRST_SIZE, first_geometry, fit, place_window
from tests.conftest import REPO

pytestmark = pytest.mark.gui


def screens_config(tmp_path: Path, *sizes: tuple[int, int]) -> str:
    """QT_QPA_PLATFORM for the offscreen plugin with these screens side by side (the first is the primary)."""
    screens, x = [], 0
    for i, (width, height) in enumerate(sizes):
        screens.append({"name": f"screen{i}", "x": x, "y": 0, "width": width, "height": height,
                        "logicalDpi": 96, "logicalBaseDpi": 96, "dpr": 1})  # fmt: skip
        x += width
    path = tmp_path / f"screens-{'-'.join(f'{w}x{h}' for w, h in sizes)}.json"
    path.write_text(json.dumps({"screens": screens}))
    return f"offscreen:configfile={path}"


def run_qt(code: str, platform: str, *args: str) -> str:
    """Run ``code`` in a fresh Python on the screens of ``platform``; its last line of output."""
    env = {**os.environ, "QT_QPA_PLATFORM": platform}
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.splitlines()[-1]


SAVE = """
import base64, sys
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication([])
window = QMainWindow()
window.setGeometry(700, 200, 1800, 1100)
window.show()
app.processEvents()
print(base64.b64encode(bytes(window.saveGeometry())).decode())
"""


@pytest.fixture(scope="module")
def saved_on_a_large_monitor(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What ``saveGeometry`` stored for an 1800 x 1100 window on a 2560 x 1440 monitor, in base64."""
    platform = screens_config(tmp_path_factory.mktemp("big"), (2560, 1440))
    return run_qt(SAVE, platform)


def test_the_first_window_takes_its_size_or_most_of_a_small_screen() -> None:
    laptop = QRect(0, 0, 1366, 736)  # 1366 x 768 with a 32-pixel panel
    rect = first_geometry(laptop)
    assert laptop.contains(rect) and rect.size() == QSize(1229, 662) and rect.center() == laptop.center()
    monitor = QRect(0, 0, 2560, 1400)
    assert first_geometry(monitor).size() == FIRST_SIZE and first_geometry(monitor).center() == monitor.center()
    right = QRect(2560, 0, 1366, 768)  # a second screen, right of the first
    assert right.contains(first_geometry(right))


@pytest.mark.parametrize(
    ("rect", "available", "expected"),
    [
        (QRect(100, 50, 800, 600), QRect(0, 0, 1366, 736), QRect(100, 50, 800, 600)),  # fits: unchanged
        (QRect(300, 200, 1800, 1100), QRect(0, 0, 1366, 736), QRect(0, 0, 1366, 736)),  # too large: the screen
        (QRect(900, 500, 800, 600), QRect(0, 0, 1366, 736), QRect(566, 136, 800, 600)),  # hangs over: moved back
        (QRect(5000, -900, 800, 600), QRect(0, 32, 1366, 736), QRect(566, 32, 800, 600)),  # on no screen
        (QRect(-500, 10, 800, 600), QRect(1366, 0, 1920, 1080), QRect(1366, 10, 800, 600)),  # second screen
    ],
)
def test_a_restored_place_is_fitted_inside_the_screen(rect: QRect, available: QRect, expected: QRect) -> None:
    assert fit(rect, available) == expected


def test_place_window_sizes_a_first_window_to_its_screen(qtbot) -> None:  # type: ignore[no-untyped-def]
    window = QMainWindow()
    qtbot.addWidget(window)
    place_window(window, None)
    window.show()
    available = window.screen().availableGeometry()
    assert available.width() < FIRST_SIZE.width()  # (the offscreen plugin's screen is a small one)
    assert available.contains(window.frameGeometry()), (window.frameGeometry(), available)
    assert window.geometry() == first_geometry(available)


def test_place_window_fits_a_place_saved_on_a_larger_monitor(  # type: ignore[no-untyped-def]
    qtbot, saved_on_a_large_monitor: str
) -> None:
    window = QMainWindow()
    qtbot.addWidget(window)
    place_window(window, QByteArray.fromBase64(saved_on_a_large_monitor.encode()))
    window.show()
    available = window.screen().availableGeometry()
    assert available.contains(window.frameGeometry()), (window.frameGeometry(), available)
    assert window.width() >= 0.85 * available.width() and window.height() >= 0.85 * available.height()


def test_place_window_keeps_a_place_that_fits(qtbot) -> None:  # type: ignore[no-untyped-def]
    window = QMainWindow()
    qtbot.addWidget(window)
    window.setGeometry(40, 60, 500, 400)
    saved = window.saveGeometry()
    again = QMainWindow()
    qtbot.addWidget(again)
    place_window(again, saved)
    assert again.geometry() == QRect(40, 60, 500, 400)


OPEN = """
import json, sys
from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QApplication
from dedup_app.core.labels import LabelStore
from dedup_app.ui import settings as S
from dedup_app.ui.main_window import AppContext, MainWindow
app = QApplication([])
folder = sys.argv[1]
state = QSettings(folder + "/state.ini", QSettings.Format.IniFormat)
if len(sys.argv) > 2:
    state.setValue("window/geometry", QByteArray.fromBase64(sys.argv[2].encode()))
prefs = S.Preferences(QSettings(folder + "/prefs.ini", QSettings.Format.IniFormat))
window = MainWindow(AppContext(prefs, state, LabelStore(":memory:"), ":memory:", registry_root=folder))
window.show()
app.processEvents()
rect = lambda r: [r.x(), r.y(), r.width(), r.height()]
print(json.dumps({"frame": rect(window.frameGeometry()), "screen": rect(window.screen().availableGeometry())}))
"""


@pytest.mark.parametrize("saved", [False, True], ids=["first run", "saved on a 2560 x 1440 monitor"])
def test_on_a_1366_x_768_laptop_the_whole_window_is_on_the_screen(
    tmp_path: Path, saved_on_a_large_monitor: str, saved: bool
) -> None:
    platform = screens_config(tmp_path, (1366, 768))
    args = [saved_on_a_large_monitor] if saved else []
    shown = json.loads(run_qt(OPEN, platform, str(tmp_path), *args))
    frame, screen = QRect(*shown["frame"]), QRect(*shown["screen"])
    assert screen.size() == QSize(1366, 768)
    assert screen.contains(frame), (frame, screen)
    assert frame.width() >= 0.85 * 1366 and frame.height() >= 0.85 * 768
