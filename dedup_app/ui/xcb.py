"""Whether Qt's X11 platform plugin (xcb) can load, found out before the QApplication exists.

PySide6 carries Qt but not the X11 helper libraries its xcb plugin links to, and since Qt 6.5 these include
libxcb-cursor, which several distributions do not install by default. When one is missing, creating the
QApplication aborts the whole process (exit 134) with "Could not load the Qt platform plugin xcb", and Qt's own
hint always names xcb-cursor, whichever library is missing. :func:`xcb_problem` loads the plugin first and, if it
does not load, says in one line which packages to install.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# The libraries of Qt's xcb plugin that distributions package apart from libxcb itself:
# soname -> (Debian and Ubuntu package, Fedora package)
PACKAGES = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
}

_MISSING = re.compile(r"([^\s:/]+\.so[.\d]*): cannot open shared object file")

Loader = Callable[[str], object]


def qt_would_use_xcb(environ: Mapping[str, str] = os.environ, system: str = sys.platform) -> bool:
    """Whether Qt would try the xcb plugin first.

    As QGuiApplication chooses (Qt 6.5 and later): QT_QPA_PLATFORM when set (a list such as ``wayland;xcb`` is
    tried in order; ``xcb:arguments`` carries plugin options); otherwise Wayland first when WAYLAND_DISPLAY is set
    or XDG_SESSION_TYPE is ``wayland``, then xcb when DISPLAY is set.
    """
    if not system.startswith("linux"):
        return False
    chosen = environ.get("QT_QPA_PLATFORM", "")
    if chosen:
        return chosen.split(";")[0].split(":")[0].strip() == "xcb"
    if environ.get("WAYLAND_DISPLAY") or environ.get("XDG_SESSION_TYPE") == "wayland":
        return False
    return bool(environ.get("DISPLAY"))


def _loads(soname: str, lib_dirs: Sequence[Path], load: Loader) -> bool:
    """Whether ``soname`` loads as the plugin would find it: beside Qt's libraries (its run path, or the
    bundle's folder) or else on the system's search path."""
    here = [d / soname for d in lib_dirs if (d / soname).is_file()]
    try:
        load(str(here[0]) if here else soname)
    except OSError:
        return False
    return True


def missing_libraries(plugin: Path, lib_dirs: Sequence[Path] = (), load: Loader = ctypes.CDLL) -> tuple[list[str], str]:
    """The libraries that keep ``plugin`` from loading and the loader's message; ``([], "")`` when it loads.

    The loader names only the first library it misses, so each of :data:`PACKAGES` is tried on its own as well.
    """
    try:
        load(str(plugin))
    except OSError as exc:
        message = str(exc)
    else:
        return [], ""
    named = _MISSING.search(message)
    missing = [soname for soname in PACKAGES if not _loads(soname, lib_dirs, load)]
    if named and named.group(1) not in missing:
        missing.insert(0, named.group(1))
    return missing, message


def describe(missing: Sequence[str], message: str) -> str:
    """One line: what the xcb plugin misses and which packages provide it."""
    if not missing:
        return f"Qt's X11 plugin (xcb) does not load ({message.strip()})"
    known = [PACKAGES[s] for s in missing if s in PACKAGES]
    unknown = [s for s in missing if s not in PACKAGES]
    line = f"Qt's X11 plugin (xcb) is missing {', '.join(missing)}; install "
    if known:
        line += " ".join(d for d, _ in known) + " (Debian, Ubuntu) or " + " ".join(f for _, f in known) + " (Fedora)"
    if unknown:
        line += (" and " if known else "") + "the package that provides " + ", ".join(unknown)
    return line


def _qt_folders(environ: Mapping[str, str]) -> tuple[list[Path], list[Path]]:
    """Where Qt looks for the platform plugins, and where the plugin's own libraries are (Qt's lib folder; in
    the PyInstaller bundle also its top folder)."""
    from PySide6.QtCore import QLibraryInfo

    plugins = [Path(p) for p in environ.get("QT_QPA_PLATFORM_PLUGIN_PATH", "").split(os.pathsep) if p]
    plugins += [Path(p) / "platforms" for p in environ.get("QT_PLUGIN_PATH", "").split(os.pathsep) if p]
    plugins.append(Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms")
    libs = [Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.LibrariesPath))]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        libs.append(Path(bundle))
    return plugins, libs


def xcb_problem(environ: Mapping[str, str] = os.environ, load: Loader = ctypes.CDLL) -> str | None:
    """Why Qt's xcb plugin would not load, in one line; None when it loads or Qt would not use it."""
    if not qt_would_use_xcb(environ):
        return None
    plugin_dirs, lib_dirs = _qt_folders(environ)
    plugin = next((d / "libqxcb.so" for d in plugin_dirs if (d / "libqxcb.so").is_file()), None)
    if plugin is None:
        return None  # nothing to try: Qt says itself which plugins it has
    missing, message = missing_libraries(plugin, lib_dirs, load)
    if not message:
        return None
    return describe(missing, message)
