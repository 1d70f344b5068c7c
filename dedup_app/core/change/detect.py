"""Change probability from the Siamese encoder: the same network looks at both dates, and where its features
disagree, something changed.

Out of the box (no change-labelled training) the probability comes from multi-scale feature differences: the
backbone's feature maps at strides 8, 16 and 32 are L2-normalised per position, their cosine distance between the
two dates is averaged over scales and mapped to [0, 1] by a logistic curve calibrated on the LEVIR-CD dev tiles.
A trained head replaces that mapping with a small learned network on the same features: the format-1
:class:`~dedup_app.core.change.torch_maps.ChangeHead`, or the format-2 UNet of :mod:`dedup_app.core.change.head`
(what ``model_training.change_train`` writes, full resolution); :func:`load_change_head` loads either.

This module does not import torch: the maps run as ONNX exports where they can (:class:`ChangeDetector`), and
their torch modules live in :mod:`dedup_app.core.change.torch_maps`.

Large rasters are processed in overlapping tiles; each tile's map is weighted by a 2-D Hann window so seams blend,
and the maps are accumulated at 1/4 resolution (a format-2 head's: at its ``output_stride``), so memory stays
bounded whatever the raster size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from dedup_app.core.progress import CancelToken, Progress

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the head module imports this one (ChangeConfig); torch is imported only where it runs
    from pathlib import Path

    from dedup_app.core.change.head import UNetHeadCheckpoint
    from dedup_app.core.change.torch_maps import ChangeHead, PixelPair

CHANGE_FORMAT_VERSION = 1
NEWEST_CHANGE_FORMAT = 2  # format 2: dedup_app.core.change.head
OUTPUT_STRIDE = 4


@dataclass(frozen=True)
class ChangeConfig:
    """How the change map is computed; stored in change-head checkpoints."""

    stages: tuple[int, ...] = (2, 4, 6)  # timm EfficientNet block indices: strides 8, 16, 32
    stage_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    tile: int = 512
    overlap: int = 64
    # training-free mapping of the mean cosine distance to a probability: sigmoid((d - center) / scale);
    # center is the F1-best distance on the LEVIR-CD dev tiles (../shared/data/change/levir_samples), scale a
    # quarter of the distances' spread there (python -m benchmarks.change --calibrate reproduces both)
    center: float = 0.75
    scale: float = 0.06
    threshold: float = 0.5
    output_stride: int = OUTPUT_STRIDE  # of the probability map: format-2 heads predict at full resolution

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChangeConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        known: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**known)


@dataclass
class ChangeHeadCheckpoint:
    """A trained change head with its config, threshold and metrics."""

    config: ChangeConfig
    state: dict[str, Any]  # torch tensors
    channels: tuple[int, ...]
    width: int
    metrics: dict[str, Any] = field(default_factory=dict)
    name: str = "change-head"

    def save(self, path: str | os.PathLike[str]) -> None:
        from dedup_app.core.model_files import atomic_torch_save

        atomic_torch_save(
            {
                "kind": "change-head",
                "format_version": CHANGE_FORMAT_VERSION,
                "name": self.name,
                "config": dataclasses.asdict(self.config),
                "channels": list(self.channels),
                "width": self.width,
                "state": self.state,
                "metrics": self.metrics,
            },
            path,
        )

    def build(self) -> ChangeHead:
        from dedup_app.core.change.torch_maps import ChangeHead

        head = ChangeHead(self.channels, self.width)
        head.load_state_dict(self.state)
        return head.eval()


def load_change_head(path: str | os.PathLike[str]) -> ChangeHeadCheckpoint | UNetHeadCheckpoint:
    """Read a change-head file of format 1 or 2; one ``ValueError`` naming the file and the reason when it is not a
    usable one (not a torch file, no change-head marker, too new, fields missing or malformed, weights that do not
    fit)."""
    from dedup_app.core.model_files import read_torch_file

    data = read_torch_file(path, "change model")
    if not isinstance(data, dict) or data.get("kind") != "change-head":
        raise ValueError(f"{path}: not a dedup-app change model file (no 'change-head' marker)")
    try:
        version = int(data.get("format_version", 0))
    except (TypeError, ValueError):
        raise ValueError(f"{path}: damaged change model file (format_version {data.get('format_version')!r})") from None
    if version > NEWEST_CHANGE_FORMAT:
        raise ValueError(f"{path}: change model format is newer than this dedup-app reads; update dedup-app")
    if version == 2:
        from dedup_app.core.change.head import checkpoint_from_dict

        return checkpoint_from_dict(data, path)
    try:
        config = data["config"]
        if not isinstance(config, dict):
            raise TypeError(f"'config' is a {type(config).__name__}, not a mapping")
        checkpoint = ChangeHeadCheckpoint(
            ChangeConfig.from_dict(config),
            dict(data["state"]),
            tuple(int(c) for c in data["channels"]),
            int(data["width"]),
            dict(data.get("metrics", {})),
            str(data.get("name", "change-head")),
        )
        checkpoint.build()  # weights that do not fit the head fail here, not on the first tile
    except KeyError as exc:
        raise ValueError(f"{path}: damaged change model file (no {exc.args[0]!r})") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:300] or type(exc).__name__
        raise ValueError(f"{path}: damaged change model file ({reason})") from None
    return checkpoint


def _hann(n: int) -> np.ndarray:
    """One side of the blending window: a Hann curve lifted so its products never reach zero (the raster's own
    borders, covered by one tile, still count). The window is the outer product of two, so the blended weight of a
    grid of tiles is the outer product of two sums, and no raster-sized weight array is needed."""
    return np.hanning(n + 2)[1:-1].astype(np.float32) + 0.03


METHODS = ("features", "pixels")


def pixel_change_probability(a: np.ndarray, b: np.ndarray, center: float = 3.0, scale: float = 0.5) -> np.ndarray:
    """Change-vector analysis: per-pixel colour-difference magnitude, robustly standardised (median/MAD), mapped
    through a logistic curve, at 1/4 resolution like the feature maps. For coarse imagery (Landsat, Sentinel-2)
    where changes are a few pixels wide, after radiometric normalisation."""
    import cv2

    diff = a.astype(np.float32) - b.astype(np.float32)
    mag = np.sqrt((diff**2).sum(-1))
    med = float(np.median(mag))
    mad = float(np.median(np.abs(mag - med))) * 1.4826 + 1e-6
    z = (mag - med) / mad
    h, w = a.shape[:2]
    small = cv2.resize(z, (-(-w // OUTPUT_STRIDE), -(-h // OUTPUT_STRIDE)), interpolation=cv2.INTER_AREA)
    return (1.0 / (1.0 + np.exp(-(small - center) / scale))).astype(np.float32)


@dataclass(frozen=True)
class HeadFacts:
    """What the detector needs of a format-2 change head whose ONNX export is at hand: its settings, name and the
    export's key, read from the facts kept when it was first exported (the bundle ships them for its heads), so the
    head's file need not be read with torch."""

    config: ChangeConfig
    name: str
    key: str
    export: Path  # the export, found whole

    @property
    def threshold(self) -> float:
        return float(self.config.threshold)

    @classmethod
    def find(cls, head_file: Path, model_id: str) -> HeadFacts | None:
        """The facts of ``head_file`` for the encoder ``model_id`` when its export is there, else None."""
        from dedup_app.core import onnx_encoder

        try:
            data = onnx_encoder.read_file_facts(head_file)
            if not data or data.get("kind") != "change-head" or data.get("model_id") != model_id:
                return None
            config, name, key = ChangeConfig.from_dict(data["config"]), str(data["name"]), str(data["key"])
        except (OSError, KeyError, TypeError, ValueError):
            return None
        export = onnx_encoder.find_export(key)
        return cls(config, name, key, export) if export is not None else None


def open_change_detector(embedder: Any, head_file: Path | None, method: str = "features") -> ChangeDetector:
    """The change detector for ``method`` with the change head in ``head_file`` (None: the training-free map).

    With an embedder on ONNX Runtime, a head exported before (or shipped with its export) is used from its kept
    facts without reading its file, so neither needs torch; otherwise the file is read (:func:`load_change_head`).
    ``ValueError`` naming the file when it is not a usable change head, or when it needs torch and torch is not
    installed."""
    head: ChangeHeadCheckpoint | UNetHeadCheckpoint | HeadFacts | None = None
    if head_file is not None and method == "features":
        from dedup_app.core import onnx_encoder

        if getattr(embedder, "backend", "torch") == "onnxruntime":
            head = HeadFacts.find(head_file, embedder.model_id)
        if head is None:
            if not onnx_encoder.torch_installed():
                raise ValueError(f"{head_file}: this change head has no ONNX export here, and reading it needs "
                                 f"torch, which this installation leaves out ({onnx_encoder.NO_TORCH})")  # fmt: skip
            head = load_change_head(head_file)
    return ChangeDetector(embedder, head, method, head_file=head_file)


class ChangeDetector:
    """Change probability maps for aligned pairs, with the encoder of an embedder (shared weights).

    ``method`` "features" (default) compares the encoder's multi-scale features (or uses a trained head);
    "pixels" is change-vector analysis on the normalised colours, for coarse land-cover imagery.

    On the CPU with ONNX Runtime the tile map (the training-free one, or a format-2 head's) runs as an ONNX export,
    made once and checked against torch to 1e-4 on probe pairs of two sizes, or shipped with the app; torch
    (:mod:`dedup_app.core.change.torch_maps`) runs it on CUDA, for format-1 heads, with ``DEDUP_APP_BACKEND=torch``
    and when an export fails (the reason logged). ``head_file``: where the head was read from, so the facts of its
    export are kept for the next, torch-free, start.
    """

    def __init__(
        self,
        embedder: Any,
        head: ChangeHeadCheckpoint | UNetHeadCheckpoint | HeadFacts | None = None,
        method: str = "features",
        head_file: Path | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        self.embedder = embedder
        self.config = head.config if head is not None else ChangeConfig()
        self.head_checkpoint = head
        self.head_file = head_file
        self.method = method
        self.output_stride = self.config.output_stride if method == "features" else OUTPUT_STRIDE
        self._head: Any = None  # a format-1 head's module
        self._backbone: Any = None  # a format-2 head's backbone
        self._tile: Any = None  # the torch tile map (torch_maps.PixelPair)
        self._session: Any = None  # ONNX Runtime session of the tile map; False: torch runs it

    @property
    def model_name(self) -> str:
        if self.method == "pixels":
            return "change-vector analysis (pixels)"
        if self.head_checkpoint is not None:
            return f"{self.embedder.model_id} + {self.head_checkpoint.name}"
        return f"{self.embedder.model_id} (feature difference, no change training)"

    @property
    def device(self) -> Any:
        return self.embedder.device

    def torch_embedder(self) -> Any:
        """The embedder's torch side (an ONNX Runtime embedder makes one on demand: ``ValueError`` without torch)."""
        return self.embedder.torch_embedder() if hasattr(self.embedder, "torch_embedder") else self.embedder

    def format1_head(self) -> Any:
        """A format-1 head's module, built on first use."""
        if self._head is None:
            assert isinstance(self.head_checkpoint, ChangeHeadCheckpoint)
            self._head = self.head_checkpoint.build().to(self.device)
        return self._head

    def _unet_parts(self) -> tuple[Any, Any]:
        """A format-2 head's backbone and decoder (both built on first use)."""
        from dedup_app.core.change.head import UNetHeadCheckpoint, head_backbone

        head = self.head_checkpoint
        assert isinstance(head, UNetHeadCheckpoint)
        if self._backbone is None:  # the embedder's own backbone unless it was fine-tuned away from the packaged one
            embedder = self.torch_embedder()
            shared = None if embedder.checkpoint.backbone_state else embedder.encoder.backbone
            self._backbone = head_backbone(shared, head).to(self.device)
            self._head = head.build().to(self.device)
        return self._backbone, self._head

    def torch_tile(self) -> PixelPair | None:
        """The tile map as a torch module of the pair's pixels, built on first use; None for a format-1 head."""
        from dedup_app.core.change.torch_maps import exportable_tile

        if self._tile is None and not isinstance(self.head_checkpoint, ChangeHeadCheckpoint):
            self._tile = exportable_tile(self)
        return self._tile  # type: ignore[no-any-return]

    def _tile_session(self) -> Any:
        """ONNX Runtime's session of the tile map on the CPU, or None: torch runs it (a format-1 head, CUDA, no
        onnxruntime, ``DEDUP_APP_BACKEND=torch``, or an export that failed, with the reason logged). Without torch,
        a map that has no export is a ``ValueError`` saying so."""
        from dedup_app.core import onnx_encoder

        if self._session is None:
            self._session = False
            head = self.head_checkpoint
            on_cpu = str(self.device).startswith("cpu")
            has_torch = onnx_encoder.torch_installed()
            if isinstance(head, ChangeHeadCheckpoint) or not on_cpu or not onnx_encoder.available():
                return None
            if onnx_encoder.wanted_backend() == "torch" and has_torch and not isinstance(head, HeadFacts):
                return None
            try:
                key, path = self.export_tile()
                if head is not None and not isinstance(head, HeadFacts) and self.head_file is not None:
                    self.keep_facts(self.head_file, key)
                self._session = onnx_encoder.Session(path, input_name="pair", output_name="probability")
                log.info("change map of %s through ONNX Runtime", self.model_name)
            except (onnx_encoder.ExportError, OSError) as exc:
                if not has_torch or isinstance(head, HeadFacts):  # nothing else can run it
                    raise ValueError(f"{self.model_name}: {exc}; running it needs torch, which this installation "
                                     f"leaves out ({onnx_encoder.NO_TORCH})") from None  # fmt: skip
                log.warning("%s; the change map runs in torch", exc)
        return self._session or None

    def _tile_key(self) -> str:
        """Names the ONNX export of the tile map: the encoder's model id with a hash of the training-free config, or
        of a format-2 head's config and weights (:func:`~dedup_app.core.change.torch_maps.head_key`), and the
        output stride."""
        head = self.head_checkpoint
        if head is None:
            h = hashlib.sha256(json.dumps(dataclasses.asdict(self.config), sort_keys=True, default=str).encode())
            return f"features-{self.embedder.model_id}-{h.hexdigest()[:12]}-s{self.output_stride}"
        from dedup_app.core.change.torch_maps import head_key

        return head_key(self)

    def export_tile(self, folder: Path | None = None) -> tuple[str, Path]:
        """The ONNX export of the tile map (made now, with torch, unless it is there already, in ``folder`` when
        given): its key and file. Checked against torch to 1e-4 on probe pairs of two sizes. ``ExportError`` when
        it cannot be made: a format-1 head, or no torch (the bundle) for a map that has no export."""
        from dedup_app.core import onnx_encoder

        head = self.head_checkpoint
        if isinstance(head, HeadFacts):  # found whole when the facts were read
            return head.key, head.export
        key = self._tile_key()
        path = onnx_encoder.find_export(key, folder)
        if path is None:
            if not onnx_encoder.torch_installed():
                raise onnx_encoder.ExportError(f"the change map {key} has no ONNX export here")
            module = self.torch_tile()
            if module is None:
                raise onnx_encoder.ExportError(f"{self.model_name}: a format-1 change head is not exported")
            path = onnx_encoder.export_module(
                module, key, probe_pair(256, 256), [probe_pair(256, 256), probe_pair(192, 320)],
                "pair", "probability", {1: "height", 2: "width"}, {0: "rows", 1: "columns"}, folder,
            )  # fmt: skip
        return key, path

    def keep_facts(self, head_file: Path, key: str, folder: Path | None = None) -> None:
        """Keep what :class:`HeadFacts` reads of ``head_file``, whose tile map is exported as ``key``."""
        from dedup_app.core import onnx_encoder

        assert self.head_checkpoint is not None
        facts = {"kind": "change-head", "key": key, "model_id": self.embedder.model_id,
                 "name": self.head_checkpoint.name, "config": dataclasses.asdict(self.config)}  # fmt: skip
        onnx_encoder.write_file_facts(head_file, facts, folder)

    def _tile_map(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Change probability of one tile pair (uint8 RGB, same size, multiple of 32) at the output stride."""
        session = self._tile_session()
        if session is not None:
            return session.run(np.stack([a, b]))  # type: ignore[no-any-return]
        from dedup_app.core.change.torch_maps import tile_map

        return tile_map(self, a, b)

    def probability(
        self, a: np.ndarray, b: np.ndarray, cancel: CancelToken | None = None
    ) -> Generator[Progress, None, np.ndarray]:
        """Blend tile maps over the whole pair; returns float32 probabilities at 1/:attr:`output_stride` of A's size
        (ceil): 1/4 for the training-free map and format-1 heads."""
        if self.method == "pixels":
            yield Progress("Comparing pixels", 0, 1)
            return pixel_change_probability(a, b)
        cfg = self.config
        h, w = a.shape[:2]
        tile = min(cfg.tile, _round_up(max(h, w), 32))
        step = max(32, tile - cfg.overlap)
        ys = _starts(h, tile, step)
        xs = _starts(w, tile, step)
        stride = self.output_stride
        oh, ow = -(-h // stride), -(-w // stride)
        acc = np.zeros((oh, ow), np.float32)
        side = _hann(tile // stride)
        window = np.outer(side, side)
        weight_y, weight_x = np.zeros(oh, np.float32), np.zeros(ow, np.float32)
        total = len(ys) * len(xs)
        done = 0
        for y in ys:
            for x in xs:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                ta, tb = _crop(a, y, x, tile), _crop(b, y, x, tile)
                m = self._tile_map(ta, tb)
                oy, ox = y // stride, x // stride
                hh, ww = min(m.shape[0], oh - oy), min(m.shape[1], ow - ox)
                acc[oy : oy + hh, ox : ox + ww] += (m * window)[:hh, :ww]
                if x == xs[0]:
                    weight_y[oy : oy + hh] += side[:hh]
                if y == ys[0]:
                    weight_x[ox : ox + ww] += side[:ww]
                done += 1
                yield Progress("Comparing tiles", done, total)
        acc /= np.maximum(weight_y, 1e-6)[:, None]  # in place: a raster-sized temporary would double the map
        acc /= np.maximum(weight_x, 1e-6)[None, :]
        return acc


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _crop(img: np.ndarray, y: int, x: int, tile: int) -> np.ndarray:
    """A tile x tile crop, reflect-padded where the image is smaller."""
    crop = img[y : y + tile, x : x + tile]
    ph, pw = tile - crop.shape[0], tile - crop.shape[1]
    if ph or pw:
        mode: Literal["reflect", "edge"] = "reflect" if crop.shape[0] > ph and crop.shape[1] > pw else "edge"
        crop = np.pad(crop, ((0, ph), (0, pw), (0, 0)), mode=mode)
    return np.ascontiguousarray(crop)


def probe_pair(height: int, width: int) -> np.ndarray:
    """A deterministic before/after tile pair (2, height, width, 3) uint8 with a changed block, for export checks."""
    from dedup_app.core.onnx_encoder import probe_images

    a, b = probe_images(max(height, width), 2, seed=7)
    a, b = a[:height, :width], b[:height, :width]
    after = a.copy()
    rows, cols = slice(height // 4, height // 2), slice(width // 3, 2 * width // 3)
    after[rows, cols] = b[rows, cols]
    return np.ascontiguousarray(np.stack([a, after]))
