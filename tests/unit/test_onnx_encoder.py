"""The ONNX Runtime path of the encoder: export, agreement with torch, damaged exports, fallback, same groups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dedup_app.core import onnx_encoder
from dedup_app.core.embedder import Embedder
from dedup_app.core.imageio import load_for_embedding
from tests.conftest import photo

pytestmark = pytest.mark.skipif(not onnx_encoder.available(), reason="onnxruntime is not installed")


@pytest.fixture()
def export_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "onnx"
    monkeypatch.setenv("DEDUP_APP_ONNX_DIR", str(folder))
    monkeypatch.delenv(onnx_encoder.BACKEND_ENV, raising=False)
    return folder


def _photos(shared_data: Path, size: int) -> list[np.ndarray]:
    folder = shared_data / "photos" / "kodak"
    return [load_for_embedding(str(p), size).pixels for p in sorted(folder.glob("*.png"))[:10]]


def test_the_export_agrees_with_torch_and_is_reused(checkpoint, export_dir: Path, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    fast = Embedder(checkpoint, "cpu")
    assert fast.backend == "onnxruntime"
    pixels = _photos(shared_data, fast.input_size)
    got = fast.embed(pixels)
    want = Embedder(checkpoint, "cpu", backend="torch").embed(pixels)
    assert fast.backend == "onnxruntime"  # it did not fall back
    assert np.abs(got - want).max() <= onnx_encoder.TOLERANCE
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    onnx_file, meta_file = onnx_encoder.paths_for(checkpoint.model_id)
    meta = json.loads(meta_file.read_text())
    assert meta["model_id"] == checkpoint.model_id and meta["opset"] == onnx_encoder.OPSET
    assert meta["max_difference_to_torch"] <= onnx_encoder.TOLERANCE
    assert onnx_encoder.find_export(checkpoint.model_id) == onnx_file
    # a second embedder loads the file, it does not export again
    stamp = onnx_file.stat().st_mtime_ns
    again = Embedder(checkpoint, "cpu")
    assert np.array_equal(again.embed(pixels[:3]), got[:3])
    assert onnx_file.stat().st_mtime_ns == stamp


def test_a_damaged_export_is_made_again(checkpoint, export_dir: Path, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    Embedder(checkpoint, "cpu").prepare()
    onnx_file, _ = onnx_encoder.paths_for(checkpoint.model_id)
    data = onnx_file.read_bytes()
    onnx_file.write_bytes(data[: len(data) // 2])  # a crash mid-copy, a full disk
    assert onnx_encoder.find_export(checkpoint.model_id) is None and not onnx_file.exists()
    fresh = Embedder(checkpoint, "cpu")
    out = fresh.embed([np.asarray(photo(shared_data).resize((160, 160)))])
    assert fresh.backend == "onnxruntime" and out.shape == (1, checkpoint.config.embed_dim)
    assert onnx_file.stat().st_size == len(data)


def test_a_failed_export_falls_back_to_torch(  # type: ignore[no-untyped-def]
    checkpoint, export_dir: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("Exporting the operator 'aten::something' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", broken)
    embedder = Embedder(checkpoint, "cpu")
    pixels = _photos(shared_data, embedder.input_size)[:2]
    out = embedder.embed(pixels)
    assert embedder.backend == "torch"
    assert np.allclose(out, Embedder(checkpoint, "cpu", backend="torch").embed(pixels), atol=1e-6)
    assert not any(export_dir.glob("*.onnx"))  # nothing half-made is left


def test_torch_can_be_chosen(checkpoint, export_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(onnx_encoder.BACKEND_ENV, "torch")
    assert Embedder(checkpoint, "cpu").backend == "torch"
    monkeypatch.setenv(onnx_encoder.BACKEND_ENV, "auto")
    assert Embedder(checkpoint, "cpu").backend == "onnxruntime"
    with pytest.raises(ValueError, match="backend"):
        Embedder(checkpoint, "cpu", backend="tensorrt")


def test_both_backends_group_the_shared_photos_alike(checkpoint, export_dir: Path, shared_data: Path) -> None:  # type: ignore[no-untyped-def]
    from dedup_app.core.duplicates import scan_and_search
    from dedup_app.core.progress import drive

    roots = [shared_data / "neardup" / "pdq_bridge_mods", shared_data / "neardup" / "jimagehash"]
    grouped = []
    for backend in ("onnxruntime", "torch"):
        finder = drive(scan_and_search(roots, Embedder(checkpoint, "cpu", backend=backend), ":memory:"))
        grouped.append(sorted(sorted(m.image.path for m in g.members) for g in finder.groups(checkpoint.threshold)))
    assert grouped[0] == grouped[1] and grouped[0]


def test_a_model_seen_before_starts_without_torch(  # type: ignore[no-untyped-def]
    checkpoint, export_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess
    import sys

    from dedup_app.core.embedder import Embedder as TorchEmbedder
    from dedup_app.core.resources import default_model_path

    model = default_model_path()
    first = onnx_encoder.open_embedder(model, "cpu")
    assert isinstance(first, TorchEmbedder) and first.backend == "onnxruntime"  # first time: torch exports
    second = onnx_encoder.open_embedder(model, "cpu")
    assert isinstance(second, onnx_encoder.OrtEmbedder)
    assert (second.model_id, second.threshold, second.dim) == (first.model_id, first.threshold, first.dim)
    assert second.checkpoint.metrics == {"calibration": checkpoint.metrics["calibration"]}  # find and verify use it
    pixels = [onnx_encoder.probe_images(second.input_size, 3, seed=9)[k] for k in range(3)]
    assert np.array_equal(second.embed(pixels), first.embed(pixels))
    # torch asked for: torch's loader
    monkeypatch.setenv(onnx_encoder.BACKEND_ENV, "torch")
    assert isinstance(onnx_encoder.open_embedder(model, "cpu"), TorchEmbedder)
    monkeypatch.delenv(onnx_encoder.BACKEND_ENV)
    # the facts go by the file's bytes: a copy elsewhere is known, a different file is not
    copy = tmp_path / "copy.pt"
    copy.write_bytes(model.read_bytes())
    assert isinstance(onnx_encoder.open_embedder(copy, "cpu"), onnx_encoder.OrtEmbedder)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(ValueError, match="broken.pt"):
        onnx_encoder.open_embedder(broken, "cpu")

    # the command line: a scan of an empty folder never imports torch
    empty = tmp_path / "empty"
    empty.mkdir()
    code = ("import sys; from dedup_app.cli import main; "
            f"rc = main(['scan', {str(empty)!r}, '--cache', ':memory:', '--no-progress', '--device', 'cpu']); "
            "print('torch' in sys.modules, rc)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DEDUP_APP_ONNX_DIR": str(export_dir)})  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "False 0", out.stdout + out.stderr


def test_an_unwritable_export_folder_falls_back_to_torch(  # type: ignore[no-untyped-def]
    checkpoint, tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the export folder should be")
    monkeypatch.setenv("DEDUP_APP_ONNX_DIR", str(blocker / "onnx"))
    embedder = Embedder(checkpoint, "cpu")
    out = embedder.embed(_photos(shared_data, embedder.input_size)[:2])
    assert embedder.backend == "torch" and out.shape == (2, checkpoint.config.embed_dim)


def test_a_change_head_runs_in_onnx_runtime_with_torchs_map(  # type: ignore[no-untyped-def]
    embedder, export_dir: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from dedup_app.core.change.detect import ChangeDetector, load_change_head
    from dedup_app.core.change.heads import shipped_head_path
    from dedup_app.core.progress import drive

    folder = shared_data / "change" / "levir_samples"
    name = sorted(p.name for p in (folder / "A").iterdir())[0]
    a, b = (np.asarray(Image.open(folder / side / name).convert("RGB")) for side in ("A", "B"))
    head = load_change_head(shipped_head_path("general"))
    fast = ChangeDetector(embedder, head, "features")
    got = drive(fast.probability(a, b))
    assert fast._session, "the head's tile map did not run in ONNX Runtime"
    assert any(export_dir.glob("change-*.onnx"))
    monkeypatch.setenv(onnx_encoder.BACKEND_ENV, "torch")
    slow = ChangeDetector(embedder, head, "features")
    want = drive(slow.probability(a, b))
    assert not slow._session
    assert got.shape == want.shape and np.abs(got - want).max() <= onnx_encoder.TOLERANCE


def test_shipped_exports_with_pooled_weights_are_read_only_and_checked(  # type: ignore[no-untyped-def]
    checkpoint, export_dir: Path, tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundle's exports keep their weights in one pooled file; they are used after the user's own, never
    removed, and not used when the pool is damaged."""
    from dedup_app.core.shipped_exports import POOL, pool_weights

    shipped = tmp_path / "shipped"
    want = Embedder(checkpoint, "cpu", backend="torch")
    onnx_encoder.export(checkpoint, want.encoder, shipped)
    size = onnx_encoder.paths_for(checkpoint.model_id, shipped)[0].stat().st_size
    pool_weights(shipped)  # one graph: nothing to share, but its weights leave the graph file
    onnx_file, meta_file = onnx_encoder.paths_for(checkpoint.model_id, shipped)
    assert onnx_file.stat().st_size < size / 20 and json.loads(meta_file.read_text())["weights"]["file"] == POOL
    monkeypatch.setattr(onnx_encoder, "shipped_folder", lambda: shipped)
    assert onnx_encoder.find_export(checkpoint.model_id) == onnx_file  # none of the user's: the shipped one
    pixels = _photos(shared_data, checkpoint.config.input_size)[:4]
    got = onnx_encoder.Session(onnx_file).run(np.stack(pixels))
    assert np.abs(got - want.embed(pixels)).max() <= onnx_encoder.TOLERANCE
    pool = shipped / POOL
    data = bytearray(pool.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pool.write_bytes(bytes(data))
    assert onnx_encoder.find_export(checkpoint.model_id) is None  # damaged: not used ...
    assert onnx_file.exists() and pool.exists()  # ... and not removed (it belongs to the installation)
