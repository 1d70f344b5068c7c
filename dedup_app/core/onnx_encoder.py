"""The duplicate encoder in ONNX Runtime: the same network, about twice as fast on the CPU.

torch is the reference and stays for training and CUDA. On the CPU, when ``onnxruntime`` is installed, the
:class:`~dedup_app.core.embedder.Embedder` runs an ONNX export of the encoder instead. The export is made once per
model (a few seconds, with torch and the ``onnx`` package) and kept in the user cache folder, named by the model
id, with a JSON sidecar carrying the model id, the file's SHA-256, the opset and the measured difference to torch.
An export is used only when its embeddings agree with torch's within :data:`TOLERANCE` on probe images, so both
paths share one embedding cache (same model id); otherwise the Embedder stays on torch and says why in the log.

The graph takes the scanner's own input, a batch of uint8 RGB images (B, S, S, 3), and does the rest inside:
scaling, ImageNet normalisation, the four quarter-turn views, the backbone (batch norms folded), GeM pooling,
the head and L2 normalisation. Batch size is dynamic.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dedup_app.core.checkpoint import Checkpoint

log = logging.getLogger(__name__)

#: ONNX opset of the exports (ONNX Runtime 1.16 and later run it).
OPSET = 17
#: Largest difference of one embedding component, ONNX Runtime against torch, at which the two share a cache. The
#: export of the shipped model differs by about 3e-7 (float32 rounding); a similarity moves by at most 2 * this.
TOLERANCE = 1e-4
#: Bump when the graph's inputs, outputs or preprocessing change: older exports are then made again.
EXPORT_VERSION = 1
#: Images per ONNX Runtime call (2 cores: 80-87 images/s at any batch from 4 to 64).
ONNX_BATCH = 16
#: Environment variable choosing the CPU backend: ``auto`` (ONNX Runtime when installed), ``torch``, ``onnxruntime``.
BACKEND_ENV = "DEDUP_APP_BACKEND"


class ExportError(RuntimeError):
    """The model could not be exported, or its export does not match torch."""


#: What to do for the features that need torch, when it is not installed.
NO_TORCH = "install dedup-app with pip ('pip install dedup-app[train]') for training and models of your own"


def torch_installed() -> bool:
    """Whether torch can be imported (the bundle leaves it out: ONNX Runtime serves the shipped models there)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def available() -> bool:
    """Whether ONNX Runtime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def wanted_backend() -> str:
    """The CPU backend asked for by :data:`BACKEND_ENV` (``auto`` when unset or unknown)."""
    value = os.environ.get(BACKEND_ENV, "auto").strip().lower()
    return value if value in ("auto", "torch", "onnxruntime") else "auto"


def export_folder() -> Path:
    """Where exports are kept: ``onnx/`` in the user cache folder (``DEDUP_APP_ONNX_DIR`` overrides it)."""
    override = os.environ.get("DEDUP_APP_ONNX_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dedup-app", appauthor=False)) / "onnx"


def shipped_folder() -> Path:
    """Exports made when the app was built (``resources/onnx``: the bundle's, made by ``packaging/dedup-app.spec``
    with :func:`dedup_app.core.shipped_exports.make_shipped_exports`): read-only, consulted after the user's
    folder. With them the bundle embeds, and maps changes with its shipped heads, without torch."""
    from dedup_app.core.resources import resources_dir

    return resources_dir() / "onnx"


def paths_for(model_id: str, folder: Path | None = None) -> tuple[Path, Path]:
    """The export of ``model_id`` and its JSON sidecar."""
    folder = folder or export_folder()
    return folder / f"{model_id}.onnx", folder / f"{model_id}.json"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def probe_images(size: int, n: int = 8, seed: int = 0) -> np.ndarray:
    """Deterministic test images (n, size, size, 3) uint8: smooth colour fields with edges and noise, so every
    layer sees photo-like statistics rather than a constant."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for k in range(n):
        waves = [np.sin(xx * rng.uniform(1, 9) + yy * rng.uniform(1, 9) + rng.uniform(0, 6)) for _ in range(3)]
        base = np.stack(waves, -1)
        img = (base * 80 + 128 + rng.normal(0, 12, (size, size, 3))).clip(0, 255)
        x0, y0 = rng.integers(0, size // 2, 2)
        img[y0 : y0 + size // 3, x0 : x0 + size // 4] = rng.integers(0, 256, 3)
        out[k] = img.astype(np.uint8)
    return out


def export(checkpoint: Checkpoint, encoder: Any, folder: Path | None = None) -> Path:
    """Export ``encoder`` (the torch network of ``checkpoint``, in eval mode) and check it against torch on probe
    images; returns the ONNX file. Raises :class:`ExportError` when torch's ONNX exporter or the ``onnx`` package
    is missing, or when the export's embeddings differ by more than :data:`TOLERANCE`. Written atomically."""
    import torch

    class Pixels(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.net(images.permute(0, 3, 1, 2).float() / 255.0)  # type: ignore[no-any-return]

    size = checkpoint.config.input_size
    probe = probe_images(size)
    return export_module(
        Pixels(encoder), checkpoint.model_id, probe[:2], [probe], "images", "embeddings", {0: "batch"},
        {0: "batch"}, folder, {"input_size": size, "dim": checkpoint.config.embed_dim},
    )  # fmt: skip


def export_module(
    module: Any,
    key: str,
    example: np.ndarray,
    checks: list[np.ndarray],
    input_name: str,
    output_name: str,
    input_axes: dict[int, str],
    output_axes: dict[int, str],
    folder: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Export a torch ``module`` of one array input and one output as ``key``.onnx (with its JSON sidecar), after
    checking that ONNX Runtime gives torch's outputs within :data:`TOLERANCE` on every array of ``checks``.
    Dynamic axes as torch's exporter takes them. Raises :class:`ExportError`; written atomically."""
    import torch

    onnx_file, meta_file = paths_for(key, folder)
    net = copy.deepcopy(module).to(torch.device("cpu")).to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    net.eval()
    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=onnx_file.parent)
    os.close(fd)
    try:
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # the exporter's advice on dynamo and constant folding
                torch.onnx.export(
                    net, (torch.from_numpy(example),), tmp, dynamo=False, opset_version=OPSET,
                    input_names=[input_name], output_names=[output_name],
                    dynamic_axes={input_name: input_axes, output_name: output_axes},
                )  # fmt: skip
        except Exception as exc:  # the exporter raises many types (missing onnx package, unsupported operator)
            raise ExportError(f"ONNX export of {key} failed: {exc}") from None
        session = Session(Path(tmp), threads=1, input_name=input_name, output_name=output_name)
        diff = 0.0
        for arr in checks:
            with torch.inference_mode():
                reference = net(torch.from_numpy(arr)).float().numpy()
            diff = max(diff, float(np.abs(session.run(arr) - reference).max()))
        if not diff <= TOLERANCE:
            raise ExportError(f"the ONNX export of {key} differs from torch by {diff:.2g}")
        meta = {"model_id": key, "export_version": EXPORT_VERSION, "opset": OPSET, "sha256": file_sha256(Path(tmp)),
                "max_difference_to_torch": diff, "torch": torch.__version__, **(extra or {})}  # fmt: skip
        os.chmod(tmp, 0o644)
        os.replace(tmp, onnx_file)
        meta_tmp = meta_file.with_suffix(".json.tmp")
        meta_tmp.write_text(json.dumps(meta, indent=1))
        os.replace(meta_tmp, meta_file)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    log.info("exported %s to ONNX (%s), max difference to torch %.2g", key, onnx_file, diff)
    return onnx_file


def find_export(model_id: str, folder: Path | None = None) -> Path | None:
    """The export of ``model_id`` if one is there, whole (checksum) and of this version; else None (a damaged or
    older one is removed, to be made again). Without ``folder``: the user's folder, then the shipped one."""
    if folder is None:
        found = _checked_export(model_id, export_folder(), remove=True)
        return found if found is not None else _checked_export(model_id, shipped_folder(), remove=False)
    return _checked_export(model_id, folder, remove=True)


def _checked_export(model_id: str, folder: Path, remove: bool) -> Path | None:
    onnx_file, meta_file = paths_for(model_id, folder)
    if not onnx_file.exists() or not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        good = (meta.get("model_id") == model_id and meta.get("export_version") == EXPORT_VERSION
                and meta.get("sha256") == file_sha256(onnx_file) and _weights_whole(meta, folder)
                and float(meta.get("max_difference_to_torch", 1.0)) <= TOLERANCE)  # fmt: skip
    except (OSError, ValueError, TypeError, AttributeError):
        good = False
    if not good and not remove:
        log.warning("the shipped ONNX export %s is damaged or out of date; not used", onnx_file)
        return None
    if not good:
        log.warning("the ONNX export %s is damaged or out of date; it is made again", onnx_file)
        for p in (onnx_file, meta_file):
            with contextlib.suppress(OSError):
                p.unlink()
        return None
    return onnx_file


def _weights_whole(meta: dict[str, Any], folder: Path) -> bool:
    """Whether the weights file an export keeps its tensors in (the shipped ones pool them), if any, is whole."""
    weights = meta.get("weights")
    if weights is None:
        return True
    pool = folder / Path(str(weights["file"])).name
    return pool.is_file() and file_sha256(pool) == weights["sha256"]


class Session:
    """An ONNX Runtime session of an export on the CPU: one uint8 array in, one float32 array out (the encoder:
    images (B, S, S, 3) in, unit vectors out)."""

    def __init__(
        self, path: Path, threads: int | None = None, input_name: str = "images", output_name: str = "embeddings"
    ) -> None:
        import onnxruntime as ort

        self._names = (input_name, output_name)

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # idle intra-op threads sleep instead of spinning: the scan's decode threads need those cores (reading 200
        # 12 MP JPEGs: 6.1-6.4 s against 6.7-7.3 s spinning, 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types
            raise ExportError(f"ONNX Runtime cannot load {path}: {exc}") from None

    def run(self, images: np.ndarray) -> np.ndarray:
        """The output (for the encoder: embeddings (B, dim)) as float32, of a uint8 input (B, S, S, 3)."""
        out = self._session.run([self._names[1]], {self._names[0]: np.ascontiguousarray(images, np.uint8)})[0]
        return np.asarray(out, np.float32)

    def run_batches(self, images: Any, batch: int) -> np.ndarray:
        """:meth:`run` on a sequence of S x S x 3 uint8 images, ``batch`` at a time."""
        pixels = np.stack(images)
        return np.concatenate([self.run(pixels[k : k + batch]) for k in range(0, len(pixels), batch)])


# -- a start without torch -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFacts:
    """What the scan, ``find`` and ``verify`` need of a model file besides its network: read from a small JSON
    written the first time the file was loaded with torch, so later starts need not import torch at all."""

    model_id: str
    name: str
    threshold: float
    input_size: int
    dim: int
    metrics: dict[str, Any]  # only the probability calibration, when the file has one


def cuda_may_be_present() -> bool:
    """Whether an NVIDIA driver is installed (then ``--device auto`` asks torch, which may pick CUDA)."""
    import sys

    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")
    if sys.platform == "win32":
        import ctypes.util

        return ctypes.util.find_library("nvcuda") is not None
    return False


def _facts_file(model_file: Path, folder: Path | None = None) -> Path:
    return (folder or export_folder()) / f"file-{file_sha256(model_file)[:32]}.json"


def read_file_facts(model_file: Path) -> dict[str, Any] | None:
    """The facts kept of a model or change-head file (by its SHA-256): the user's folder's, else the shipped
    ones; None when there are none or they cannot be read."""
    name = _facts_file(model_file).name
    for folder in (export_folder(), shipped_folder()):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


def write_file_facts(model_file: Path, facts: dict[str, Any], folder: Path | None = None) -> None:
    """Keep ``facts`` of ``model_file`` for torch-free starts (atomically; a failure is logged, not raised)."""
    try:
        target = _facts_file(model_file, folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(facts, default=float))
        os.replace(tmp, target)
    except (OSError, TypeError, ValueError) as exc:
        log.info("facts of %s not kept (%s): the next start loads torch again", model_file, exc)


def write_model_facts(model_file: Path, checkpoint: Checkpoint, folder: Path | None = None) -> None:
    """Keep the facts :func:`open_embedder` needs of ``model_file`` (the model id, threshold, sizes, calibration)."""
    from dedup_app.core.calibration import CALIBRATION_KEY

    calibration = checkpoint.metrics.get(CALIBRATION_KEY) if isinstance(checkpoint.metrics, dict) else None
    facts = {"model_id": checkpoint.model_id, "name": checkpoint.name, "threshold": float(checkpoint.threshold),
             "input_size": checkpoint.config.input_size, "dim": checkpoint.config.embed_dim,
             "metrics": {CALIBRATION_KEY: calibration} if calibration else {}}  # fmt: skip
    write_file_facts(model_file, facts, folder)


def read_model_facts(model_file: Path) -> ModelFacts | None:
    """The facts kept of the model file ``model_file`` (:func:`read_file_facts`), or None."""
    data = read_file_facts(model_file)
    if data is None or data.get("kind", "model") != "model":
        return None
    try:
        facts = ModelFacts(str(data["model_id"]), str(data["name"]), float(data["threshold"]),
                           int(data["input_size"]), int(data["dim"]), dict(data["metrics"]))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return None
    return facts if 0 < facts.threshold <= 1 and facts.dim > 0 and facts.input_size > 0 else None


class OrtEmbedder:
    """:class:`~dedup_app.core.embedder.Embedder`'s interface (``model_id``, ``threshold``, ``input_size``, ``dim``,
    ``embed``, ``prepare``, ``checkpoint.metrics``) on an ONNX export, without importing torch."""

    backend = "onnxruntime"
    device = "cpu"

    def __init__(self, facts: ModelFacts, onnx_file: Path, model_file: Path | None = None) -> None:
        import threading

        self.model_file = model_file
        self._torch: Any = None
        self.checkpoint = facts
        self.model_id = facts.model_id
        self.threshold = facts.threshold
        self.input_size = facts.input_size
        self.dim = facts.dim
        self.onnx_batch = ONNX_BATCH
        self._file = onnx_file
        self._lock = threading.Lock()
        self._session: Session | None = None

    def prepare(self) -> None:
        """Load the ONNX session now."""
        with self._lock:
            self._get()

    def _get(self) -> Session:
        if self._session is None:
            self._session = Session(self._file)
        return self._session

    def embed(self, images: Any) -> np.ndarray:
        """Embed a batch of S x S x 3 uint8 arrays; returns (N, dim) float32, rows of unit length."""
        if not len(images):
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            return self._get().run_batches(images, self.onnx_batch)

    def torch_embedder(self) -> Any:
        """torch's :class:`~dedup_app.core.embedder.Embedder` of the same model file, made on first use, for what
        has no export (a format-1 change head, a change map not exported yet). ``ValueError`` saying so when torch
        is not installed (the bundle leaves it out)."""
        with self._lock:
            if self._torch is None:
                if not torch_installed():
                    raise ValueError(f"this needs torch, which this installation of dedup-app leaves out ({NO_TORCH})")
                from dedup_app.core.embedder import Embedder, load_checkpoint

                self._torch = Embedder(load_checkpoint(self.model_file), "cpu", backend="torch")
            return self._torch


def open_embedder(path: str | os.PathLike[str] | None = None, device: str = "auto") -> Any:
    """The embedder for the model file at ``path`` (default: the active model) on ``device``.

    On the CPU with ONNX Runtime, a model file seen before is served by its export without importing torch (a
    scan of an empty folder then starts in well under a second). Otherwise, the first time, or when CUDA may be
    used: torch's :class:`~dedup_app.core.embedder.Embedder`, which exports the model and leaves the facts for the
    next start. Raises ``ValueError`` (a bad model file or device) as the Embedder does.
    """
    device = (device or "auto").lower()
    lite = device in ("auto", "cpu") and wanted_backend() != "torch" and available()
    if lite and device == "auto" and cuda_may_be_present() and torch_installed():
        lite = False
    model_file: Path | None = None
    if lite:
        try:
            if path is not None:
                model_file = Path(path)
            else:
                from dedup_app.core.registry import ModelRegistry

                model_file = ModelRegistry().active_path()
            facts = read_model_facts(model_file)
            onnx_file = find_export(facts.model_id) if facts is not None else None
            if facts is not None and onnx_file is not None:
                return OrtEmbedder(facts, onnx_file, model_file)
        except (OSError, ValueError) as exc:  # an unreadable file: torch's loader below says why, properly
            log.info("no torch-free start (%s)", exc)
            model_file = None
    if not torch_installed():
        what = f"the model {model_file or path}" if (model_file or path) else "the active model"
        raise ValueError(f"{what} has no ONNX export here, and running it needs torch, which this installation "
                         f"leaves out ({NO_TORCH})")  # fmt: skip
    from dedup_app.core.embedder import Embedder, load_checkpoint

    checkpoint = load_checkpoint(path)
    embedder = Embedder(checkpoint, device)
    if lite and model_file is not None and embedder.backend == "onnxruntime":
        embedder.prepare()  # the export, made once
        if embedder.backend == "onnxruntime":
            write_model_facts(model_file, checkpoint)
    return embedder
