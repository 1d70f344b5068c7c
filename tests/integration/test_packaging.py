"""Packaging: the wheel carries the resources, the desktop files are valid, the bundle builds and scans (slow)."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from dedup_app.core import resources
from tests.conftest import REPO, photo

LINUX = REPO / "packaging" / "linux"
APP_ID = "org.dedupapp.DedupApp"


def test_resources_are_found_from_source_and_from_a_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resources.default_model_path().is_file()
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resources.resources_dir() == tmp_path / "resources"
    with pytest.raises(FileNotFoundError, match="resource not found"):
        resources.default_model_path()


def test_wheel_carries_model_and_icons_but_no_tests(tmp_path: Path) -> None:
    # built from the tracked files alone, as from a fresh clone: the checkout's egg-info (left by `pip install -e`)
    # lists every file and would hide a package missing from pyproject's list
    source = tmp_path / "src"
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    wheel = next(tmp_path.glob("dedup_app-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "dedup_app/_resources/models/dedup-default-v1.pt" in names
    assert "dedup_app/_resources/models/dedup-default-v1.md" in names
    for head in ("general", "buildings"):  # the shipped change heads and their model cards
        assert f"dedup_app/_resources/models/change-{head}.pt" in names
        assert f"dedup_app/_resources/models/change-{head}.md" in names
    assert "dedup_app/_resources/icons/hicolor/256x256/apps/dedup-app.png" in names
    assert "dedup_app/ui/main_window.py" in names and "dedup_app/cli.py" in names
    # every module of the source tree is in the wheel (a package missing from pyproject's list is silently left out
    # of a non-editable install: dedup_app.core.change was, so `pip install .` had no change detection)
    sources = {p.relative_to(REPO).as_posix() for top in ("dedup_app", "model_training")
               for p in (REPO / top).rglob("*.py")}  # fmt: skip
    assert sources <= set(names), sorted(sources - set(names))
    assert not any(n.startswith("tests/") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)  # the licence travels with the wheel
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dedup-app = dedup_app.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_desktop_entry_and_appstream_metadata() -> None:
    desktop = configparser.ConfigParser(interpolation=None, strict=True)
    desktop.optionxform = str  # type: ignore[assignment,method-assign]
    desktop.read(LINUX / f"{APP_ID}.desktop")
    entry = desktop["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Exec"].startswith("dedup-app gui")
    assert entry["Categories"].endswith(";") and "Graphics" in entry["Categories"]
    icon = REPO / "resources" / "icons" / "hicolor" / "256x256" / "apps" / f"{entry['Icon']}.png"
    assert icon.is_file()
    for size in (16, 32, 48, 64, 128, 256):
        assert (REPO / "resources" / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "dedup-app.png").is_file()
    meta = ET.parse(LINUX / f"{APP_ID}.metainfo.xml").getroot()
    assert meta.findtext("id") == APP_ID
    assert meta.find("launchable").text == f"{APP_ID}.desktop"  # type: ignore[union-attr]
    from dedup_app import __version__

    assert meta.find("releases/release").get("version") == __version__  # type: ignore[union-attr]
    if shutil.which("appstreamcli"):
        check = subprocess.run(
            ["appstreamcli", "validate", "--no-net", str(LINUX / f"{APP_ID}.metainfo.xml")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


def test_the_bundle_excludes_nothing_the_app_imports() -> None:
    """Every module the spec leaves out of the bundle (torch among them) is blocked; the commands and the window must
    still load (a fast stand-in for the slow bundle test: an excluded module that the app imports breaks every
    command). That they also run is tests/integration/test_torch_free.py's job."""
    import ast

    spec = (REPO / "packaging" / "dedup-app.spec").read_text()
    tree = ast.parse(spec)
    excludes = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "excludes"
    )
    code = f"""
import sys
class Hide:  # as if the excluded packages were not installed at all
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(excludes)!r}:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
from dedup_app import cli
import dedup_app.ui.app, dedup_app.ui.main_window, dedup_app.ui.train_dialog, dedup_app.ui.change_train_dialog
import dedup_app.core.change.pipeline, dedup_app.core.change.detect, dedup_app.core.onnx_encoder, model_training.cli
for argv in (["--version"], ["scan", "--help"], ["train", "--help"], ["train-change", "--help"], ["change", "--help"],
             ["find", "--help"], ["verify", "--help"], ["models", "--help"], ["gui", "--help"]):
    try:
        cli.main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), (argv, exc.code)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt's X11 plugin is Linux only")
def test_the_bundle_carries_the_x11_libraries_of_qts_xcb_plugin_and_the_onnx_exports() -> None:
    """PySide6 does not ship the X11 helper libraries of Qt's xcb plugin (libxcb-cursor0 and friends): the spec
    adds this machine's copies to the bundle's top folder, and warns about each one it does not find. It also
    exports the shipped models to ONNX for the torch-free bundle."""
    pytest.importorskip("PyInstaller")
    code = """
import json, sys, types
stub = lambda *args, **kwargs: types.SimpleNamespace(pure=[], scripts=[], binaries=[], datas=[])
seen = {}
def analysis(scripts, **kwargs):
    seen.update(kwargs)
    return stub()
spec = sys.argv[1]
exec(compile(open(spec).read(), spec, "exec"), {"SPECPATH": sys.argv[2], "Analysis": analysis, "PYZ": stub,
                                                "EXE": stub, "COLLECT": stub})
print(json.dumps(seen["datas"]))
print(json.dumps(seen["binaries"]))
"""
    run = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "packaging" / "dedup-app.spec"), str(REPO / "packaging")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    bundled = {Path(src).name: dest for src, dest in json.loads(run.stdout.splitlines()[-1])}
    # the shipped models' ONNX exports, made by the spec with the build environment's torch, go to resources/onnx
    exports = [Path(src) for src, dest in json.loads(run.stdout.splitlines()[-2]) if dest == "resources/onnx"]
    assert len(exports) == 1 and len(list(exports[0].glob("*.onnx"))) == 4
    assert len(list(exports[0].glob("file-*.json"))) == 3  # facts of the model file and of the two shipped heads
    from PyInstaller.depend.bindepend import resolve_library_path

    from dedup_app.ui.xcb import PACKAGES

    assert "libxcb-cursor.so.0" in PACKAGES
    for soname, (deb, _) in PACKAGES.items():
        if resolve_library_path(soname):
            assert bundled.get(soname) == ".", soname
        else:
            assert f"WARNING: {soname} not found ({deb}" in run.stdout


@pytest.mark.slow
def test_bundle_builds_and_scans(tmp_path: Path, shared_data: Path) -> None:
    pytest.importorskip("PyInstaller")
    build = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
         "--distpath", str(tmp_path / "dist"), "--workpath", str(tmp_path / "build"),
         str(REPO / "packaging" / "dedup-app.spec")],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-4000:]
    exe = tmp_path / "dist" / "dedup-app" / "dedup-app"
    assert subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120).returncode == 0
    bundle = exe.parent
    # torch is left out (ONNX Runtime runs the shipped models), and the bundle stays under 600 MB
    assert not list(bundle.glob("_internal/torch")) and not list(bundle.rglob("libtorch_cpu*"))
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file() and not p.is_symlink())
    assert size < 600e6, f"bundle is {size / 1e6:.0f} MB"
    assert len(list(bundle.rglob("resources/onnx/*.onnx"))) == 4
    assert any(p.parent.name in ("dedup-app", "_internal") for p in bundle.rglob("LICENSE"))  # ours, at the top
    assert any(bundle.rglob("licenses/PySide6*/*"))  # third-party notices (Qt is LGPL)
    folder = tmp_path / "pics"
    folder.mkdir()
    img = photo(shared_data, "kodim23.png")
    img.save(folder / "a.jpg", quality=92)
    img.resize((384, 256)).save(folder / "a_small.jpg", quality=80)
    photo(shared_data, "kodim08.png").save(folder / "b.jpg", quality=90)
    out_json = tmp_path / "r.json"
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),  # no change head the user activated
           "XDG_CACHE_HOME": str(tmp_path / "cache")}  # no ONNX exports of the user's: the shipped ones  # fmt: skip
    run = subprocess.run(
        [exe, "scan", str(folder), "--cache", ":memory:", "--json", str(out_json), "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,  # not the source tree: its resources
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert [sorted(Path(f["path"]).name for f in g["files"]) for g in report["groups"]] == [["a.jpg", "a_small.jpg"]]
    # the change map runs from the bundle with its shipped default head (not the training-free fall-back)
    levir = shared_data / "change" / "levir_samples"
    tile = "train_36_0512_0512.png"
    run = subprocess.run(
        [exe, "change", str(levir / "A" / tile), str(levir / "B" / tile), "--out", str(tmp_path / "chg"),
         "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "chg" / "summary.json").read_text())
    assert summary["change_model"] == "general" and not summary.get("change_model_note")
    assert (tmp_path / "chg" / "train_36_0512_0512_mask.png").is_file()
    assert summary["pairs"][0]["changed_fraction"] > 0.05  # new buildings on this tile
    # the window opens, scans and shows its groups (offscreen)
    shot = tmp_path / "window.png"
    run = subprocess.run([exe, "gui", "--screenshot", str(shot), str(folder)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path, env={**env, "QT_QPA_PLATFORM": "offscreen"})  # fmt: skip
    assert run.returncode == 0 and shot.stat().st_size > 10_000, run.stderr[-3000:]
    # training needs torch: the bundle says so and how to get it
    run = subprocess.run([exe, "train", "--images", str(folder)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)  # fmt: skip
    assert run.returncode == 2 and "training needs torch" in run.stderr
