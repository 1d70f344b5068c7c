"""The Siamese encoder and its checkpoint format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dedup_app.core.checkpoint import CHECKPOINT_FORMAT_VERSION, Checkpoint
from dedup_app.core.embedder import Embedder, resolve_device
from dedup_app.core.model import EncoderConfig, GeM, SiameseEncoder, build_encoder, dihedral_views
from dedup_app.core.model_files import read_checkpoint, write_checkpoint
from tests.conftest import noise_image, photo


def test_gem_matches_hand_computed_value() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    expected = ((1 + 8 + 27 + 64) / 4) ** (1 / 3)
    assert GeM(3.0)(x).item() == pytest.approx(expected, rel=1e-5)
    assert GeM(1.0)(x).item() == pytest.approx(2.5, rel=1e-5)  # p = 1 is average pooling


def test_views_of_rot4_and_dihedral() -> None:
    x = torch.arange(4.0).view(1, 1, 2, 2)
    views = dihedral_views(x, "rot4")
    assert views.shape == (4, 1, 2, 2)
    assert torch.equal(views[2], torch.rot90(x[0], 2, dims=(-2, -1)))
    assert dihedral_views(x, "dihedral").shape[0] == 8


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="invariance"):
        EncoderConfig(invariance="sideways")
    with pytest.raises(ValueError, match="embed_dim"):
        EncoderConfig(embed_dim=512)
    cfg = EncoderConfig.from_dict({"input_size": 128, "mean": [0.5, 0.5, 0.5], "unknown_future_key": 1})
    assert cfg.input_size == 128 and cfg.mean == (0.5, 0.5, 0.5)


def test_shipped_checkpoint_is_complete(checkpoint: Checkpoint) -> None:
    assert checkpoint.format_version == CHECKPOINT_FORMAT_VERSION
    assert 0.5 < checkpoint.threshold < 1.0
    assert checkpoint.config.embed_dim <= 256
    assert checkpoint.metrics["calibrated_on"] == "dev"
    assert checkpoint.model_id.startswith("default-v1-")
    assert not checkpoint.backbone_state  # the backbone comes from the pip package


def test_embeddings_are_unit_float_vectors_and_shared_weights(embedder: Embedder, shared_data: Path) -> None:
    size = embedder.input_size
    a = np.asarray(photo(shared_data, "kodim01.png").resize((size, size)))
    b = np.asarray(photo(shared_data, "kodim02.png").resize((size, size)))
    out = embedder.embed([a, b, a])
    assert out.shape == (3, embedder.dim) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.allclose(out[0], out[2], atol=1e-6)  # deterministic
    assert out[0] @ out[1] < embedder.threshold  # two different photos
    # forward_pair runs both sides through the same network
    enc = embedder.encoder
    xa = torch.from_numpy(np.stack([a])).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        ea, eb = enc.forward_pair(xa, xa.clone())
    assert torch.allclose(ea, eb, atol=1e-6)


def test_rotation_invariance(embedder: Embedder, shared_data: Path) -> None:
    size = embedder.input_size
    a = np.asarray(photo(shared_data, "kodim05.png").resize((size, size)))
    turned = [np.ascontiguousarray(np.rot90(a, k)) for k in range(4)]
    out = embedder.embed(turned)
    assert (out @ out[0]).min() > 0.999


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    cfg = EncoderConfig(embed_dim=32, input_size=64)
    enc = SiameseEncoder(cfg)  # random backbone: no weights needed for a format test
    torch.nn.init.normal_(enc.head.proj.weight)
    ckpt = Checkpoint.from_encoder(enc, threshold=0.77, name="t", metrics={"f1": 0.5}, include_backbone=True)
    path = tmp_path / "m.pt"
    write_checkpoint(ckpt, path)
    loaded = read_checkpoint(path)
    assert loaded.model_id == ckpt.model_id
    assert loaded.threshold == pytest.approx(0.77) and loaded.metrics == {"f1": 0.5}
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(enc.eval()(x), build_encoder(loaded)(x), atol=1e-5)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary file


def test_model_id_changes_with_weights() -> None:
    cfg = EncoderConfig(embed_dim=16)
    head = {"center": torch.zeros(1280), "proj.weight": torch.zeros(16, 1280)}
    a = Checkpoint(cfg, head, 0.8, name="x")
    b = Checkpoint(cfg, {**head, "proj.weight": torch.ones(16, 1280)}, 0.8, name="x")
    assert a.model_id != b.model_id


def test_bad_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt: not a dedup-app model"):
        read_checkpoint(junk)
    with pytest.raises(ValueError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    future = tmp_path / "future.pt"
    torch.save({"format_version": CHECKPOINT_FORMAT_VERSION + 1, "config": {}}, future)
    with pytest.raises(ValueError, match="newer"):
        read_checkpoint(future)


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(checkpoint: Checkpoint) -> None:
    size = checkpoint.config.input_size
    imgs = [np.asarray(noise_image(k, (size, size))) for k in range(4)]
    cpu = Embedder(checkpoint, "cpu").embed(imgs)
    gpu = Embedder(checkpoint, "cuda").embed(imgs)
    assert (np.sum(cpu * gpu, axis=1) > 0.999).all()
