"""``dedup-app gui ... --screenshot F.png`` when there is nothing to show: the window with the error is saved all
the same and the exit status is 1 (it used to exit 0 without a picture, or wait forever)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.gui


@pytest.fixture()
def bad_inputs(tmp_path: Path, shared_data: Path) -> dict[str, Path]:
    """Inputs that cannot be compared or scanned: different shapes, a corrupt cache and model, a folder."""
    files = {
        "square": tmp_path / "square.png",
        "wide": tmp_path / "wide.png",
        "cache": tmp_path / "cache.sqlite3",
        "model": tmp_path / "model.pt",
        "photos": tmp_path / "photos",
    }
    Image.open(shared_data / "change" / "demo_pair" / "A" / "demo.png").convert("RGB").crop((0, 0, 512, 512)).save(
        files["square"]
    )
    Image.new("RGB", (900, 300), (40, 120, 60)).save(files["wide"])
    files["cache"].write_text("not a database " * 100)
    files["model"].write_text("not a model")
    files["photos"].mkdir()
    for name in ("kodim01.png", "kodim05.png"):
        Image.open(shared_data / "photos" / "kodak" / name).save(files["photos"] / name)
    return files


CASES = {
    # the pair is compared, and cannot be paired (no georeferencing): the Changes tab says why
    "compare-shapes": (["--compare", "{square}", "{wide}"], "cannot be paired: their shapes differ"),
    # the inputs do not pair at all: no comparison starts (it used to wait forever)
    "compare-file-and-folder": (["--compare", "{square}", "{photos}"], "give two files or two folders"),
    # the scan fails: its error dialog is in the picture
    "scan-bad-cache": (["{photos}", "--cache", "{cache}"], "not a dedup-app cache"),
    # the model does not load, so the scan waiting for it never starts (it used to wait forever)
    "scan-bad-model": (["{photos}", "--cache", ":memory:", "--model", "{model}"], "not a dedup-app model file"),
}


@pytest.mark.parametrize("case", CASES)
def test_screenshot_of_a_failure_is_saved_and_exits_1(case: str, bad_inputs: dict[str, Path], tmp_path: Path) -> None:
    args, reason = CASES[case]
    shot = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip
    argv = [sys.executable, "-m", "dedup_app", "gui", *(a.format(**bad_inputs) for a in args)]
    argv += ["--screenshot", str(shot)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert reason in proc.stderr and f"the window showing it is saved in {shot}" in proc.stderr
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1600, 900)
        im.load()


def test_screenshot_of_a_comparison_exits_0(shared_data: Path, tmp_path: Path) -> None:
    """The comparison works: the picture is saved once the results are shown, exit status 0."""
    demo = shared_data / "change" / "demo_pair"
    shot = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip
    argv = [sys.executable, "-m", "dedup_app", "gui", "--compare", str(demo / "A" / "demo.png"),
            str(demo / "B" / "demo.png"), "--screenshot", str(shot)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dedup-app: error" not in proc.stderr
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1600, 900)
