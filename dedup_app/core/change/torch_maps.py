"""The change maps computed in torch: the encoder's stage features, the training-free feature difference, the
format-1 :class:`ChangeHead` and the format-2 UNet head's tile map, each as a module that takes a tile pair's pixels.

:class:`~dedup_app.core.change.detect.ChangeDetector` runs these modules on CUDA, on the CPU without ONNX Runtime,
and to export them (:func:`exportable_tile`); everywhere else it runs their ONNX exports, and this module (and torch)
is never imported: the bundle leaves torch out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dedup_app.core.change.detect import OUTPUT_STRIDE, ChangeConfig, ChangeHeadCheckpoint

if TYPE_CHECKING:
    from dedup_app.core.change.detect import ChangeDetector

#: Strides of timm ``efficientnet_lite0``'s seven blocks (what a stage's map is upsampled from).
_BLOCK_STRIDES = (2, 4, 8, 16, 16, 32, 32)


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
    """A small learned change head on the shared encoder's features (file format 1): per scale |fa - fb| and
    fa * fb, projected, upsampled to stride 4, fused, one logit per position."""

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


class FeatureDifference(nn.Module):
    """The training-free change probability of a normalised tile pair (2, 3, H, W; sides multiples of 32) at stride
    4: the stages' per-position cosine distances, each upsampled by its stride's ratio, averaged with the config's
    weights and put through the config's logistic curve."""

    def __init__(self, backbone: nn.Module, config: ChangeConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.stages = tuple(config.stages)
        self.weights = tuple(float(w) for w in config.stage_weights)
        self.factors = tuple(_BLOCK_STRIDES[s] // OUTPUT_STRIDE for s in self.stages)
        self.center, self.scale = float(config.center), float(config.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = stage_features(self.backbone, x, self.stages)  # both dates in one batch: shared weights
        dist: torch.Tensor | float = 0.0
        for w, f, k in zip(self.weights, feats, self.factors, strict=True):
            f = F.normalize(f.float(), dim=1)
            d = 1.0 - (f[:1] * f[1:]).sum(1, keepdim=True)
            if k > 1:
                d = F.interpolate(d, scale_factor=float(k), mode="bilinear", align_corners=False)
            dist = dist + w * d
        dist = dist / sum(self.weights)
        assert isinstance(dist, torch.Tensor)
        return torch.sigmoid((dist - self.center) / self.scale)[0, 0]


class UNetMap(nn.Module):
    """A format-2 head's change probability of a normalised tile pair (2, 3, H, W), averaged down to ``stride``."""

    def __init__(self, backbone: nn.Module, head: nn.Module, stride: int) -> None:
        super().__init__()
        self.backbone, self.head, self.stride = backbone, head, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from dedup_app.core.change.head import tile_logits

        prob = torch.sigmoid(tile_logits(self.backbone, self.head, x).float())  # type: ignore[arg-type]
        if self.stride > 1:
            prob = F.avg_pool2d(prob, self.stride)
        return prob[0, 0]


class PixelPair(nn.Module):
    """A tile map taking the pair's pixels: uint8 (2, H, W, 3) before/after in, scaled and ImageNet-normalised
    here, the inner map's probabilities out. What the detector runs in torch and what it exports."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, inner: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", mean.detach().clone().reshape(1, 3, 1, 1))
        self.register_buffer("std", std.detach().clone().reshape(1, 3, 1, 1))

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        x = (pair.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        out: torch.Tensor = self.inner(x.contiguous(memory_format=torch.channels_last))
        return out


def exportable_tile(detector: ChangeDetector) -> PixelPair | None:
    """The detector's tile map as one module of the pair's pixels (on the detector's device), or None for a
    format-1 head (it runs in torch only: :func:`tile_map`)."""
    head = detector.head_checkpoint
    if isinstance(head, ChangeHeadCheckpoint):
        return None
    encoder = detector.torch_embedder().encoder
    if head is None:
        inner: nn.Module = FeatureDifference(encoder.backbone, detector.config)
    else:
        inner = UNetMap(*detector._unet_parts(), detector.output_stride)
    return PixelPair(inner, encoder.mean, encoder.std).to(detector.device).eval()


def head_key(detector: ChangeDetector) -> str:
    """Names the ONNX export of a format-2 head's tile map: the encoder's model id, a hash of the head's config and
    weights, and the output stride."""
    ck: Any = detector.head_checkpoint
    h = hashlib.sha256()
    for part in (ck.config, ck.head_config):
        h.update(json.dumps(dataclasses.asdict(part), sort_keys=True, default=str).encode())
    for state in (ck.state, ck.encoder_state):
        for key in sorted(state):
            h.update(key.encode())
            h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return f"change-{detector.embedder.model_id}-{h.hexdigest()[:12]}-s{detector.output_stride}"


def tile_map(detector: ChangeDetector, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One tile pair's change probability (uint8 RGB, same size, multiples of 32) at the output stride, in torch."""
    pair = torch.from_numpy(np.stack([a, b])).to(detector.device)
    with torch.inference_mode():
        module = detector.torch_tile()
        if module is not None:
            return module(pair).float().cpu().numpy()  # type: ignore[no-any-return]
        encoder = detector.torch_embedder().encoder  # a format-1 head
        x = (pair.permute(0, 3, 1, 2).float() / 255.0 - encoder.mean) / encoder.std
        feats = stage_features(
            encoder.backbone, x.contiguous(memory_format=torch.channels_last), detector.config.stages
        )
        size = (a.shape[0] // OUTPUT_STRIDE, a.shape[1] // OUTPUT_STRIDE)
        logits = detector.format1_head()([f[:1] for f in feats], [f[1:] for f in feats], size)
        return torch.sigmoid(logits)[0, 0].float().cpu().numpy()  # type: ignore[no-any-return]
