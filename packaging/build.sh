#!/usr/bin/env bash
# Build the one-folder bundle dist/dedup-app/ with PyInstaller, check that it runs, and report its size.
#   packaging/build.sh            (uses ./.venv, creating it with the project installed if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# what the bundle ships: HEIC, GeoTIFF and the training module (the window's Train action)
.venv/bin/pip install --quiet -e '.[heif,geo,train]' 'pyinstaller>=6.5'
rm -rf build/pyinstaller dist/dedup-app
.venv/bin/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller packaging/dedup-app.spec
dist/dedup-app/dedup-app --version
echo "bundle: dist/dedup-app ($(du -sh dist/dedup-app | cut -f1))"
