#!/usr/bin/env bash
# Install the bundle built by packaging/build.sh for the current user: the program in ~/.local/opt/dedup-app,
# a `dedup-app` command in ~/.local/bin, the desktop entry, AppStream metadata and icons.
#   packaging/install-linux.sh            (after packaging/build.sh)
#   packaging/install-linux.sh --remove
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${XDG_DATA_HOME:-$HOME/.local/share}"
opt="$HOME/.local/opt/dedup-app"
bin="$HOME/.local/bin/dedup-app"
id=org.dedupapp.DedupApp
if [ "${1:-}" = "--remove" ]; then
  rm -rf "$opt" "$bin" "$prefix/applications/$id.desktop" "$prefix/metainfo/$id.metainfo.xml"
  find "$prefix/icons/hicolor" -name dedup-app.png -delete 2>/dev/null || true
  echo "removed"; exit 0
fi
[ -x dist/dedup-app/dedup-app ] || { echo "build the bundle first: packaging/build.sh" >&2; exit 1; }
mkdir -p "$opt" "$(dirname "$bin")" "$prefix/applications" "$prefix/metainfo"
rm -rf "$opt" && cp -a dist/dedup-app "$opt"
ln -sf "$opt/dedup-app" "$bin"
install -m 644 "packaging/linux/$id.desktop" "$prefix/applications/$id.desktop"
install -m 644 "packaging/linux/$id.metainfo.xml" "$prefix/metainfo/$id.metainfo.xml"
for png in resources/icons/hicolor/*/apps/dedup-app.png; do
  size=$(basename "$(dirname "$(dirname "$png")")")
  install -D -m 644 "$png" "$prefix/icons/hicolor/$size/apps/dedup-app.png"
done
command -v update-desktop-database >/dev/null && update-desktop-database "$prefix/applications" || true
echo "installed: $bin (make sure ~/.local/bin is on PATH)"
