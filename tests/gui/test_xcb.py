"""Qt's X11 plugin without its libraries (libxcb-cursor0 and friends): one line naming the packages, then the
command line instead of Qt's abort (exit 134)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dedup_app import cli
from dedup_app.ui import app as ui_app
from dedup_app.ui import xcb

pytestmark = [pytest.mark.gui, pytest.mark.skipif(sys.platform != "linux", reason="X11 (xcb) is Linux only")]

# what dlopen says (through ctypes) when a library is not installed
NOT_FOUND = "{}: cannot open shared object file: No such file or directory"


def loader(*missing: str):  # type: ignore[no-untyped-def]
    """A stand-in for ctypes.CDLL on a machine without ``missing``: loading the plugin fails on the first one."""

    def load(name: str) -> object:
        if name.endswith("libqxcb.so") and missing:
            raise OSError(NOT_FOUND.format(missing[0]))
        if Path(name).name in missing:
            raise OSError(NOT_FOUND.format(Path(name).name))
        return object()

    return load


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"DISPLAY": ":0"}, True),
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, True),
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb:nograb"}, True),
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, False),
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland;xcb"}, False),
        ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, False),  # Qt tries Wayland first
        ({"DISPLAY": ":0", "XDG_SESSION_TYPE": "wayland"}, False),
        ({"DISPLAY": ":0", "XDG_SESSION_TYPE": "x11"}, True),
        ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0", "QT_QPA_PLATFORM": "xcb"}, True),
        ({}, False),
    ],
)
def test_xcb_is_checked_only_where_qt_would_use_it(environ: dict[str, str], expected: bool) -> None:
    assert xcb.qt_would_use_xcb(environ, "linux") is expected
    assert xcb.qt_would_use_xcb(environ, "darwin") is False


def test_a_missing_cursor_library_names_its_packages() -> None:
    problem = xcb.xcb_problem({"DISPLAY": ":0"}, loader("libxcb-cursor.so.0"))
    assert problem is not None and "\n" not in problem
    assert "libxcb-cursor.so.0" in problem and "libxcb-cursor0" in problem and "xcb-util-cursor" in problem
    assert "icccm" not in problem


def test_every_missing_library_is_named_not_only_the_first() -> None:
    problem = xcb.xcb_problem({"DISPLAY": ":0"}, loader("libxcb-icccm.so.4", "libxkbcommon-x11.so.0"))
    assert problem is not None
    assert "libxcb-icccm4 libxkbcommon-x11-0 (Debian, Ubuntu)" in problem
    assert "xcb-util-wm libxkbcommon-x11 (Fedora)" in problem


def test_an_unknown_library_or_other_error_is_reported_as_the_loader_says() -> None:
    assert "the package that provides libfoo.so.3" in (xcb.xcb_problem({"DISPLAY": ":0"}, loader("libfoo.so.3")) or "")

    def broken(name: str) -> object:
        if name.endswith("libqxcb.so"):
            raise OSError("libQt6XcbQpa.so.6: undefined symbol: _ZN7QObject4eventEP6QEvent")
        return object()

    problem = xcb.xcb_problem({"DISPLAY": ":0"}, broken)
    assert problem is not None and "does not load (libQt6XcbQpa.so.6: undefined symbol" in problem


def test_nothing_is_said_when_the_plugin_loads_or_is_not_used() -> None:
    assert xcb.xcb_problem({"DISPLAY": ":0"}, loader()) is None
    assert xcb.xcb_problem({"DISPLAY": ":0", "WAYLAND_DISPLAY": "w"}, loader("libxcb-cursor.so.0")) is None


def test_a_library_shipped_beside_qt_counts_as_found(tmp_path: Path) -> None:
    """In the bundle, libxcb-cursor.so.0 sits beside Qt's libraries, where the plugin finds it: not missing."""
    (tmp_path / "libxcb-cursor.so.0").write_bytes(b"")
    seen: list[str] = []

    def load(name: str) -> object:
        seen.append(name)
        if name.endswith("libqxcb.so"):
            raise OSError(NOT_FOUND.format("libxcb-icccm.so.4"))
        if name in ("libxcb-cursor.so.0", "libxcb-icccm.so.4"):  # not on the system's search path
            raise OSError(NOT_FOUND.format(name))
        return object()

    missing, _ = xcb.missing_libraries(tmp_path / "libqxcb.so", [tmp_path], load)
    assert missing == ["libxcb-icccm.so.4"]
    assert str(tmp_path / "libxcb-cursor.so.0") in seen


@pytest.fixture()
def x11_without_cursor_library(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """An X11 desktop (DISPLAY set, no platform chosen) where libxcb-cursor.so.0 is not installed; the window
    must not be opened (``run_gui`` records the call instead of opening it)."""
    for name in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(xcb, "xcb_problem", functools.partial(xcb.xcb_problem, load=loader("libxcb-cursor.so.0")))
    opened: list[object] = []

    def run_gui(*args: object) -> int:
        opened.append(args)
        return 0

    monkeypatch.setattr(ui_app, "run_gui", run_gui)
    return opened


def test_gui_command_without_the_xcb_libraries_scans_on_the_command_line(
    x11_without_cursor_library: list[object], photos_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["gui", str(photos_dir), "--cache", ":memory:", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert x11_without_cursor_library == []
    assert "Found 3 groups" in out
    lines = [line for line in err.splitlines() if "libxcb-cursor0" in line]
    assert len(lines) == 1 and "xcb-util-cursor (Fedora)" in lines[0] and "scanning on the command line" in lines[0]


def test_gui_command_without_the_xcb_libraries_or_paths_says_what_to_install(
    x11_without_cursor_library: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert x11_without_cursor_library == []
    assert err.count("\n") == 1 and "install libxcb-cursor0 (Debian, Ubuntu) or xcb-util-cursor (Fedora)" in err
    assert "dedup-app scan PATH" in err


@pytest.mark.skipif(
    sys.platform != "linux" or xcb.xcb_problem({"DISPLAY": ":99"}) is None,
    reason="this machine has every library of Qt's xcb plugin",
)
def test_on_this_machine_the_real_missing_libraries_are_named_instead_of_qt_aborting() -> None:
    """Where the xcb plugin really does not load (no libxcb-cursor0, libxcb-icccm4, ...): Qt would abort (134)."""
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")}
    env["DISPLAY"] = ":99"
    proc = subprocess.run([sys.executable, "-m", "dedup_app"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "(Debian, Ubuntu) or" in proc.stderr and "(Fedora)" in proc.stderr
