"""Shared fixtures: the shared data folder, one CPU embedder per session, and synthetic image writers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Never touch the real trash or the user's data: send2trash reads XDG_DATA_HOME when it is imported.
_SANDBOX = tempfile.mkdtemp(prefix="dedup-tests-")
os.environ["XDG_DATA_HOME"] = os.path.join(_SANDBOX, "data")
os.environ["XDG_CONFIG_HOME"] = os.path.join(_SANDBOX, "config")
os.environ["XDG_CACHE_HOME"] = os.path.join(_SANDBOX, "cache")  # ONNX exports of the model land here

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (CI always has it; a missing folder is an error, not a skip)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED_DATA}; clone the project beside ../shared")
    return SHARED_DATA


@pytest.fixture(scope="session")
def checkpoint():  # type: ignore[no-untyped-def]
    """The shipped default model checkpoint."""
    from dedup_app.core.embedder import load_checkpoint

    return load_checkpoint()


@pytest.fixture(scope="session")
def embedder(checkpoint):  # type: ignore[no-untyped-def]
    """One CPU embedder with the shipped model for the whole session."""
    from dedup_app.core.embedder import Embedder

    return Embedder(checkpoint, "cpu")


def photo(shared: Path, name: str = "kodim23.png") -> Image.Image:
    """A real photo from the shared Kodak set, RGB."""
    with Image.open(shared / "photos" / "kodak" / name) as im:
        return im.convert("RGB")


def noise_image(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A smooth random colour field: distinct per seed, like an abstract photo."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


@pytest.fixture()
def resources_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``resources`` folder of the test's own, used by the code under test: the shipped files are linked in, except
    change heads, so a test puts in (or leaves out) ``models/change-*.pt`` whatever the real folder holds."""
    from dedup_app.core import resources

    real = resources.resources_dir()
    root = tmp_path / "resources"
    (root / "models").mkdir(parents=True)
    for f in (real / "models").iterdir():
        if not f.name.startswith("change-"):
            (root / "models" / f.name).symlink_to(f)
    (root / "icons").symlink_to(real / "icons")
    monkeypatch.setattr(resources, "resources_dir", lambda: root)
    return root


def write_change_head(path: Path, name: str) -> Path:
    """A real change-head file (today's format) whose head calls everything changed, so its use is visible."""
    import torch

    from dedup_app.core.change.detect import ChangeConfig, ChangeHeadCheckpoint
    from dedup_app.core.change.torch_maps import ChangeHead

    torch.manual_seed(0)
    head = ChangeHead()
    with torch.no_grad():
        head.fuse[-1].weight.zero_()
        head.fuse[-1].bias.fill_(5.0)
    state = {k: v.clone() for k, v in head.state_dict().items()}
    ChangeHeadCheckpoint(ChangeConfig(), state, head.channels, head.width, {}, name).save(path)
    return path


def tiny_change_pair(folder: Path, shared: Path, name: str, y0: int, size: int = 128) -> tuple[str, str, np.ndarray]:
    """A small real aerial before tile (rows from ``y0`` of the shared demo image) and an after tile with houses
    pasted in; the label (255 changed) marks the houses. Returns the two paths and the label."""
    demo = np.asarray(Image.open(shared / "change" / "demo_pair" / "A" / "demo.png").convert("RGB"))
    houses = np.asarray(Image.open(shared / "change" / "levir_samples" / "B" / "train_36_0512_0512.png")
                        .convert("RGB"))[60:60 + size // 2, 140:140 + size // 2]  # fmt: skip
    before = demo[y0 : y0 + size, 100 : 100 + size].copy()
    after = before.copy()
    q = size // 4
    after[q : q + size // 2, q : q + size // 2] = houses
    label = np.zeros((size, size), np.uint8)
    label[q : q + size // 2, q : q + size // 2] = 255
    folder.mkdir(parents=True, exist_ok=True)
    b, a = folder / f"{name}_before.png", folder / f"{name}_after.png"
    Image.fromarray(before).save(b)
    Image.fromarray(after).save(a)
    return str(b), str(a), label


def paint_labels(store, pairs: list[tuple[str, str, np.ndarray]]) -> None:  # type: ignore[no-untyped-def]
    """Store each pair's label as a painted change mask, as the Changes tab does."""
    from dedup_app.core.change.painted import labelled_raster

    for before, after, label in pairs:
        store.put_change_mask(labelled_raster(before), labelled_raster(after), label)
