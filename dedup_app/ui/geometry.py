"""Where the window opens: sized to its screen the first time, and kept on a screen when a saved place is restored.

A fixed first size (1500 x 880) put the compare pane and the status bar off a 1366 x 768 laptop's screen. And
``QWidget.restoreGeometry`` gives up (returns False, leaving the window as it is) when the screen is much narrower
or wider than the one the geometry was saved on, such as a window saved on a large monitor and restored on a laptop.
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QMargins, QRect, QSize
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QWidget

FIRST_SIZE = QSize(1500, 880)  # the first window on a screen with room for it
SCREEN_SHARE = 0.9  # at most this share of the screen's free area, in each direction


def first_geometry(available: QRect, preferred: QSize = FIRST_SIZE, share: float = SCREEN_SHARE) -> QRect:
    """The first window on a screen whose free area (without panels and docks) is ``available``: ``preferred``,
    at most ``share`` of that area in each direction, centred on it."""
    size = QSize(min(preferred.width(), int(available.width() * share)),
                 min(preferred.height(), int(available.height() * share)))  # fmt: skip
    rect = QRect(available.topLeft(), size)
    rect.moveCenter(available.center())
    return rect


def fit(rect: QRect, available: QRect) -> QRect:
    """``rect`` inside ``available``: made no larger than it, then moved as little as needed to lie within it."""
    width, height = min(rect.width(), available.width()), min(rect.height(), available.height())
    x = min(max(rect.x(), available.left()), available.left() + available.width() - width)
    y = min(max(rect.y(), available.top()), available.top() + available.height() - height)
    return QRect(x, y, width, height)


def place_window(window: QWidget, saved: QByteArray | None) -> None:
    """Restore ``saved`` (from ``window.saveGeometry()``) if it can be, kept inside the free area of the screen it
    is on (or of the window's screen, when it is on none); otherwise size the window as :func:`first_geometry`."""
    if saved is None or not window.restoreGeometry(saved):
        window.setGeometry(first_geometry(window.screen().availableGeometry()))
        return
    if window.isMaximized() or window.isFullScreen():
        return  # the window system sizes it
    inner, outer = window.geometry(), window.frameGeometry()  # the frame is known once the window was shown
    frame = QMargins(inner.left() - outer.left(), inner.top() - outer.top(),
                     outer.right() - inner.right(), outer.bottom() - inner.bottom())  # fmt: skip
    screen = QGuiApplication.screenAt(inner.center()) or window.screen()
    fitted = fit(inner, screen.availableGeometry().marginsRemoved(frame))
    if fitted != inner:
        window.setGeometry(fitted)
