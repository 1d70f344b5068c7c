"""Change probability from the Siamese encoder: the same network looks at both dates, and where its features
disagree, something changed.

Out of the box (no change-labelled training) the probability comes from multi-scale feature differences: the
backbone's feature maps at strides 8, 16 and 32 are L2-normalised per position, their cosine distance between the
two dates is averaged over scales and mapped to [0, 1] by a logistic curve calibrated on the LEVIR-CD dev tiles.
A trained head replaces that mapping with a small learned network on the same features: the format-1
:class:`ChangeHead` below, or the format-2 UNet of :mod:`dedup_app.core.change.head` (what
``model_training.change_train`` writes, full resolution); :func:`load_change_head` loads either.

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
import torch
import torch.nn.functional as F
from torch import nn

from dedup_app.core.progress import CancelToken, Progress

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the head module imports this one (ChangeConfig, stage_features)
    from dedup_app.core.change.head import UNetHeadCheckpoint

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


def stage_features(backbone: nn.Module, x: torch.Tensor, stages: tuple[int, ...]) -> list[torch.Tensor]:
    """Feature maps of a timm EfficientNet after the given block indices (ImageNet-normalised input)."""
    net: Any = backbone  # timm's EfficientNet: conv_stem, bn1 and blocks are modules (nn.Module types them loosely)
    out = []
    h = net.bn1(net.conv_stem(x))
    last = max(stages)
    for i, block in enumerate(net.blocks):
        h = block(h)
        if i in stages:
            out.append(h)
        if i == last:
            break
    return out


class ChangeHead(nn.Module):
    """A small learned change head on the shared encoder's features: per scale |fa - fb| and fa * fb, projected,
    upsampled to stride 4, fused, one logit per position."""

    def __init__(self, channels: tuple[int, ...] = (40, 112, 320), width: int = 32) -> None:
        super().__init__()
        self.channels, self.width = channels, width
        self.project = nn.ModuleList(nn.Conv2d(2 * c, width, kernel_size=1) for c in channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(width * len(channels), width, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, kernel_size=1),
        )

    def forward(self, fa: list[torch.Tensor], fb: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        parts = []
        for proj, a, b in zip(self.project, fa, fb, strict=True):
            z = proj(torch.cat([(a - b).abs(), a * b], dim=1))
            parts.append(F.interpolate(z, size=size, mode="bilinear", align_corners=False))
        out: torch.Tensor = self.fuse(torch.cat(parts, dim=1))
        return out


@dataclass
class ChangeHeadCheckpoint:
    """A trained change head with its config, threshold and metrics."""

    config: ChangeConfig
    state: dict[str, torch.Tensor]
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


class ChangeDetector:
    """Change probability maps for aligned pairs, with the encoder of an :class:`Embedder` (shared weights).

    ``method`` "features" (default) compares the encoder's multi-scale features (or uses a trained head);
    "pixels" is change-vector analysis on the normalised colours, for coarse land-cover imagery.
    """

    def __init__(
        self, embedder: Any, head: ChangeHeadCheckpoint | UNetHeadCheckpoint | None = None, method: str = "features"
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        self.embedder = embedder
        self.config = head.config if head is not None else ChangeConfig()
        self.head_checkpoint = head
        self.method = method
        self.output_stride = self.config.output_stride if method == "features" else OUTPUT_STRIDE
        self._head: nn.Module | None = None
        self._backbone: nn.Module | None = None
        self._session: Any = None  # ONNX Runtime session of a format-2 head's tile map; False: torch runs it

    @property
    def model_name(self) -> str:
        if self.method == "pixels":
            return "change-vector analysis (pixels)"
        if self.head_checkpoint is not None:
            return f"{self.embedder.model_id} + {self.head_checkpoint.name}"
        return f"{self.embedder.model_id} (feature difference, no change training)"

    @property
    def device(self) -> torch.device:
        return self.embedder.device  # type: ignore[no-any-return]

    def _head_module(self) -> nn.Module | None:
        if self.head_checkpoint is not None and self._head is None:
            self._head = self.head_checkpoint.build().to(self.device)
        return self._head

    def _unet_parts(self) -> tuple[nn.Module, Any]:
        """A format-2 head's backbone and decoder, built on first use."""
        from dedup_app.core.change.head import head_backbone

        assert self.head_checkpoint is not None and not isinstance(self.head_checkpoint, ChangeHeadCheckpoint)
        if self._backbone is None:  # the embedder's own backbone unless it was fine-tuned away from the packaged one
            shared = None if self.embedder.checkpoint.backbone_state else self.embedder.encoder.backbone
            self._backbone = head_backbone(shared, self.head_checkpoint).to(self.device)
        return self._backbone, self._head_module()

    def _unet_tile(self, x: torch.Tensor) -> torch.Tensor:
        """A format-2 head's probability of one tile pair at the output stride."""
        return _unet_probability(*self._unet_parts(), x, self.output_stride)

    def _head_key(self) -> str:
        """Names the ONNX export of this encoder + head + output stride (a hash of the head's weights)."""
        ck: Any = self.head_checkpoint
        h = hashlib.sha256()
        for part in (ck.config, ck.head_config):
            h.update(json.dumps(dataclasses.asdict(part), sort_keys=True, default=str).encode())
        for state in (ck.state, ck.encoder_state):
            for key in sorted(state):
                h.update(key.encode())
                h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
        return f"change-{self.embedder.model_id}-{h.hexdigest()[:12]}-s{self.output_stride}"

    def _tile_session(self) -> Any:
        """ONNX Runtime's session for a format-2 head's tile map on the CPU (exported once, checked against torch to
        1e-4 on probe pairs of two sizes), or None: torch runs it (another head format, CUDA, no onnxruntime,
        ``DEDUP_APP_BACKEND=torch``, or an export that failed, with the reason logged)."""
        from dedup_app.core import onnx_encoder

        if self._session is None:
            self._session = False
            unet = self.head_checkpoint is not None and not isinstance(self.head_checkpoint, ChangeHeadCheckpoint)
            on_cpu = torch.device(self.device).type == "cpu"
            if not (unet and on_cpu and onnx_encoder.available() and onnx_encoder.wanted_backend() != "torch"):
                return None
            try:
                key = self._head_key()
                path = onnx_encoder.find_export(key)
                if path is None:
                    path = onnx_encoder.export_module(
                        _UNetTile(self), key, _probe_pair(256, 256), [_probe_pair(256, 256), _probe_pair(192, 320)],
                        "pair", "probability", {1: "height", 2: "width"}, {0: "rows", 1: "columns"},
                    )  # fmt: skip
                self._session = onnx_encoder.Session(path, input_name="pair", output_name="probability")
                log.info("change map of %s through ONNX Runtime (%s)", self.model_name, path)
            except (onnx_encoder.ExportError, OSError) as exc:
                log.warning("%s; the change map runs in torch", exc)
        return self._session or None

    def _tile_map(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Change probability of one tile pair (uint8 RGB, same size, multiple of 32) at the output stride."""
        session = self._tile_session()
        if session is not None:
            return session.run(np.stack([a, b]))  # type: ignore[no-any-return]
        cfg = self.config
        encoder = self.embedder.encoder
        x = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).to(self.device).float().div_(255.0)
        x = ((x - encoder.mean) / encoder.std).contiguous(memory_format=torch.channels_last)
        size = (a.shape[0] // OUTPUT_STRIDE, a.shape[1] // OUTPUT_STRIDE)
        with torch.inference_mode():
            if self.head_checkpoint is not None and not isinstance(self.head_checkpoint, ChangeHeadCheckpoint):
                return self._unet_tile(x).cpu().numpy()
            feats = stage_features(encoder.backbone, x, cfg.stages)  # both dates in one batch: shared weights
            head = self._head_module()
            if head is not None:
                logits = head([f[:1] for f in feats], [f[1:] for f in feats], size)
                prob = torch.sigmoid(logits)[0, 0]
            else:
                dist = torch.zeros(size, device=x.device)
                for w, f in zip(cfg.stage_weights, feats, strict=True):
                    f = F.normalize(f.float(), dim=1)
                    d = 1.0 - (f[0] * f[1]).sum(0, keepdim=True)[None]
                    dist += w * F.interpolate(d, size=size, mode="bilinear", align_corners=False)[0, 0]
                dist /= sum(cfg.stage_weights)
                prob = torch.sigmoid((dist - cfg.center) / cfg.scale)
        return prob.float().cpu().numpy()

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


def _probe_pair(height: int, width: int) -> np.ndarray:
    """A deterministic before/after tile pair (2, height, width, 3) uint8 with a changed block, for export checks."""
    from dedup_app.core.onnx_encoder import probe_images

    a, b = probe_images(max(height, width), 2, seed=7)
    a, b = a[:height, :width], b[:height, :width]
    after = a.copy()
    rows, cols = slice(height // 4, height // 2), slice(width // 3, 2 * width // 3)
    after[rows, cols] = b[rows, cols]
    return np.ascontiguousarray(np.stack([a, after]))


def _unet_probability(backbone: nn.Module, head: Any, x: torch.Tensor, stride: int) -> torch.Tensor:
    """A format-2 head's change probability of a normalised tile pair (2, 3, H, W), averaged down to ``stride``."""
    from dedup_app.core.change.head import tile_logits

    prob = torch.sigmoid(tile_logits(backbone, head, x).float())
    if stride > 1:
        prob = F.avg_pool2d(prob, stride)
    return prob[0, 0]


class _UNetTile(nn.Module):
    """A format-2 head's tile map as one module for export: uint8 (2, H, W, 3) before/after in, probabilities at
    the output stride out, exactly as :meth:`ChangeDetector._unet_tile` computes them."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, detector: ChangeDetector) -> None:
        super().__init__()
        self.backbone, self.head = detector._unet_parts()
        encoder = detector.embedder.encoder
        self.register_buffer("mean", encoder.mean.detach().clone().cpu())
        self.register_buffer("std", encoder.std.detach().clone().cpu())
        self.stride = detector.output_stride

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        x = (pair.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        return _unet_probability(self.backbone, self.head, x, self.stride)
