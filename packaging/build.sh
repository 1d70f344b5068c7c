#!/usr/bin/env bash
# Build the one-folder bundle dist/dedup-app/ with PyInstaller, check that it runs, and report its size.
#   packaging/build.sh            (uses ./.venv, creating it with the project installed if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# what the bundle ships: HEIC and GeoTIFF; torch (a dependency) only exports the shipped models to ONNX at build
# time and is left out of the bundle, as is training (the pip install's 'train' extra)
.venv/bin/pip install --quiet -e '.[heif,geo]' 'pyinstaller>=6.5'
# Qt's X11 plugin links to libraries that PySide6 does not ship and several distributions leave out (libxcb-cursor0
# and friends); the spec copies this machine's into the bundle, so install the missing ones first (Debian, Ubuntu).
if [ "$(uname -s)" = Linux ]; then
  missing=$(.venv/bin/python -c 'import ctypes
from dedup_app.ui.xcb import PACKAGES
def found(soname):
    try:
        return bool(ctypes.CDLL(soname))
    except OSError:
        return False
print(*(deb for soname, (deb, _) in PACKAGES.items() if not found(soname)))')
  if [ -n "$missing" ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null && { [ -z "$sudo" ] || command -v sudo >/dev/null; }; then
      echo "installing what Qt's X11 plugin needs, to bundle it: $missing"
      # shellcheck disable=SC2086
      $sudo apt-get install -y --no-install-recommends $missing \
        || { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends $missing; } \
        || echo "warning: could not install $missing: the bundle is built without them" >&2
    else
      echo "warning: $missing (Debian/Ubuntu names) not installed and no apt-get here: the bundle is built" \
           "without them; install them (Fedora: the xcb-util-* packages) and build again to bundle them" >&2
    fi
  fi
fi
rm -rf build/pyinstaller dist/dedup-app
.venv/bin/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller packaging/dedup-app.spec
dist/dedup-app/dedup-app --version
echo "bundle: dist/dedup-app ($(du -sh dist/dedup-app | cut -f1))"
