"""The app without torch, as the bundle ships it: the shipped models run from build-time ONNX exports.

The spec's excluded packages are hidden from a subprocess (as if not installed), the exports that the spec makes
(``dedup_app.core.shipped_exports``) are put where the bundle has them, and the commands must work: a scan, change
maps with the shipped default head, a shipped head by name and the training-free map, the window's scan, and
training saying that it needs torch. The results must be the ones of the app with torch.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup_app import cli
from tests.conftest import REPO, photo


def spec_excludes() -> set[str]:
    """The modules the bundle's spec leaves out."""
    tree = ast.parse((REPO / "packaging" / "dedup-app.spec").read_text())
    return set(
        next(
            ast.literal_eval(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "excludes"
        )
    )


HIDE = """
import sys
class Hide:  # as if the packages the bundle leaves out were not installed
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
from pathlib import Path
from dedup_app.core import onnx_encoder
onnx_encoder.shipped_folder = lambda: Path(SHIPPED)  # where the bundle has them: resources/onnx
"""


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exports the spec makes at build time."""
    from dedup_app.core.shipped_exports import POOL, make_shipped_exports, pool_weights

    folder = tmp_path_factory.mktemp("shipped-onnx")
    made = make_shipped_exports(folder)
    assert len(made) == 4 and all(p.is_file() for p in made)  # the encoder, the feature map, two shipped heads
    sizes = sum(p.stat().st_size for p in made)
    saved = pool_weights(folder)  # the backbone's weights stored once for the four graphs
    assert saved > 0.6 * sizes and (folder / POOL).stat().st_size < 0.4 * sizes
    return folder


def run_without_torch(code: str, shipped: Path, tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``code`` in a subprocess with the bundle's excluded packages hidden and ``shipped`` as the shipped exports;
    a fresh user cache and data folder (nothing exported or kept before)."""
    assert "torch" in spec_excludes()
    prelude = f"HIDDEN = {sorted(spec_excludes())!r}\nSHIPPED = {str(shipped)!r}\n" + HIDE
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
           "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"), "QT_QPA_PLATFORM": "offscreen"}  # fmt: skip
    env.pop("DEDUP_APP_ONNX_DIR", None)
    env.pop("DEDUP_APP_BACKEND", None)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=timeout,
                          cwd=tmp_path, env=env)  # fmt: skip


def test_scan_change_maps_and_the_window_run_without_torch(
    tmp_path: Path, shared_data: Path, shipped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    img = photo(shared_data, "kodim23.png")
    img.save(pics / "a.jpg", quality=92)
    img.resize((384, 256)).save(pics / "a_small.jpg", quality=80)
    img.transpose(Image.Transpose.ROTATE_90).save(pics / "a_turned.jpg", quality=85)
    photo(shared_data, "kodim08.png").save(pics / "b.jpg", quality=90)
    levir = shared_data / "change" / "levir_samples"
    tile = "train_36_0512_0512.png"
    before, after = str(levir / "A" / tile), str(levir / "B" / tile)
    out = tmp_path / "out"
    out.mkdir()
    code = f"""
import json
from dedup_app import cli
pics, out = {str(pics)!r}, Path({str(out)!r})
assert cli.main(["scan", pics, "--cache", str(out / "cache.sqlite3"), "--json", str(out / "scan.json"),
                 "--no-progress"]) == 0
for model in ("default", "buildings", "features"):
    extra = [] if model == "default" else ["--model", model]
    assert cli.main(["change", {before!r}, {after!r}, "--out", str(out / model), "--no-progress", *extra]) == 0
assert cli.main(["train", "--images", pics, "--out", str(out / "trained.pt")]) == 2  # says that training needs torch

assert cli.main(["gui", "--screenshot", str(out / "window.png"), pics]) == 0
assert cli.main(["gui", "--screenshot", str(out / "changes.png"), "--compare", {before!r}, {after!r}]) == 0
print("modules:", json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN)))
"""
    run = run_without_torch(code, shipped, tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "modules: []" in run.stdout  # nothing the bundle leaves out was imported (or tried and failed)
    assert "training needs torch" in run.stderr

    # the same groups and change maps as the app with torch (here: this process, torch installed)
    report = json.loads((out / "scan.json").read_text())
    groups = [sorted(Path(f["path"]).name for f in g["files"]) for g in report["groups"]]
    assert groups == [["a.jpg", "a_small.jpg", "a_turned.jpg"]]
    assert (out / "window.png").stat().st_size > 10_000 and (out / "changes.png").stat().st_size > 10_000
    for model in ("default", "buildings", "features"):
        extra = [] if model == "default" else ["--model", model]
        ref = tmp_path / "with-torch" / model
        assert cli.main(["change", before, after, "--out", str(ref), "--no-progress", *extra]) == 0
        got = json.loads((out / model / "summary.json").read_text())["pairs"][0]
        want = json.loads((ref / "summary.json").read_text())["pairs"][0]
        assert got["changed_fraction"] == pytest.approx(want["changed_fraction"], abs=2e-4), model
        assert got["changed_fraction"] > 0.01  # the tile has new buildings
        masks = [np.asarray(Image.open(next(d.glob("*mask*.png")))) > 0 for d in (out / model, ref)]
        assert (masks[0] != masks[1]).mean() < 1e-3, model
    capsys.readouterr()
