"""The trained change head (file format 2): a light UNet-style decoder on the shared encoder's multi-scale features.

Read top to bottom: the architecture config, the pieces (temporal fusion of the two dates at one scale, a decoder
block), the head, the checkpoint (config, weights, calibrated threshold, metrics: plain data in one file), and what
inference needs (the features the head reads, one tile's probability). Why this shape is in
``docs/change-detection.md``.

Both dates go through the same frozen EfficientNet-Lite0 (the near-duplicate model's backbone, shared weights). At
each tapped stage (strides 2, 4, 8, 16 and 32) a :class:`TemporalFusion` turns the two dates' features into one map
that is the same whichever date comes first; a UNet decoder climbs from stride 32 back to stride 2 through those
maps, where the two images' own pixels join in (folded to stride 2) and the last layer predicts the logits of each
2 x 2 block's four pixels, so edges are drawn at the pixel. The head holds about 400,000 weights; it is trained by
``model_training.change_train``.

A head trained with the last encoder blocks unfrozen (on a GPU) carries those blocks' weights in
``encoder_state``; inference then reads its features from a copy of the packaged backbone with those blocks put in.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dedup_app.core.change.detect import ChangeConfig
from dedup_app.core.change.torch_maps import stage_features
from dedup_app.core.model import PACKAGED_BACKBONE, EncoderConfig, is_int

HEAD_FORMAT_VERSION = 2
HEAD_KIND = "change-head"

#: Output channels and strides of timm ``efficientnet_lite0``'s seven blocks.
LITE0_BLOCK_CHANNELS = (16, 24, 40, 80, 112, 192, 320)
LITE0_BLOCK_STRIDES = (2, 4, 8, 16, 16, 32, 32)


@dataclass(frozen=True)
class HeadConfig:
    """The head's architecture; stored in its file so loading never guesses.

    ``stages`` are timm EfficientNet block indices, finest first (default: strides 2, 4, 8, 16, 32);
    ``fuse[i]`` is the width of stage i's two-date map and ``decoder[i]`` the decoder's width at that stage's
    stride; ``pixel_width`` the width of the branch on the raw pixels (folded to the finest stride; 0: none).
    """

    stages: tuple[int, ...] = (0, 1, 2, 4, 6)
    fuse: tuple[int, ...] = (16, 32, 48, 64, 96)
    decoder: tuple[int, ...] = (16, 32, 48, 64, 96)
    pixel_width: int = 16
    context_blocks: int = 1

    def __post_init__(self) -> None:
        """Reject a config that cannot build a head (it comes from a file): ``ValueError`` naming the field."""
        n = len(self.stages)
        if n < 2 or list(self.stages) != sorted(set(self.stages)):
            raise ValueError(f"stages must be two or more increasing block indices, not {self.stages!r}")
        if not all(is_int(s) and 0 <= s < len(LITE0_BLOCK_CHANNELS) for s in self.stages):
            raise ValueError(f"stages must be block indices 0-{len(LITE0_BLOCK_CHANNELS) - 1}, not {self.stages!r}")
        for name in ("fuse", "decoder"):
            widths = getattr(self, name)
            if len(widths) != n or not all(is_int(w) and 1 <= w <= 1024 for w in widths):
                raise ValueError(f"{name} must be {n} widths of 1-1024 (one per stage), not {widths!r}")
        for name in ("pixel_width", "context_blocks"):
            if not is_int(getattr(self, name)) or not 0 <= getattr(self, name) <= 256:
                raise ValueError(f"{name} must be a whole number 0-256, not {getattr(self, name)!r}")

    @property
    def channels(self) -> tuple[int, ...]:
        """The encoder's channels at each tapped stage."""
        return tuple(LITE0_BLOCK_CHANNELS[s] for s in self.stages)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        """From a stored dict; unknown keys (a newer version's) are ignored, lists become tuples."""
        if not isinstance(data, dict):
            raise ValueError(f"head config must be a dict, not {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names})  # type: ignore[arg-type]


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class TemporalFusion(nn.Module):
    """The two dates' features at one scale as one map, the same whichever date comes first.

    ``|a - b|`` says what differs (FC-Siam-diff); ``(a + b) / 2`` says what the place is, so the head can learn
    that a field turning brown is not a new building. Batch norm, not instance norm: an unchanged tile must keep
    its small differences small, not have them stretched to unit variance.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.proj = _conv_bn_relu(2 * c_in, c_out, kernel=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(torch.cat([(a - b).abs(), (a + b) * 0.5], dim=1))
        return out


class DecoderBlock(nn.Module):
    """UNet step: the coarser map upsampled to the skip's size, concatenated with it, 3x3 convolutions."""

    def __init__(self, c_coarse: int, c_skip: int, c_out: int, convs: int = 2) -> None:
        super().__init__()
        layers = [_conv_bn_relu(c_coarse + c_skip, c_out)] + [_conv_bn_relu(c_out, c_out) for _ in range(convs - 1)]
        self.convs = nn.Sequential(*layers)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        out: torch.Tensor = self.convs(torch.cat([up, skip], dim=1))
        return out


class ChangeUNetHead(nn.Module):
    """Change logits at full resolution from both dates' encoder features (finest stage first) and pixels.

    ``forward(fa, fb, xa, xb)``: ``fa``/``fb`` the feature maps of :attr:`HeadConfig.stages` for the two dates,
    ``xa``/``xb`` the two images as the encoder saw them (ImageNet-normalised, N x 3 x H x W); returns
    N x 1 x H x W logits. Swapping the dates gives the same logits.

    The decoder climbs to the finest stage's stride (2) and no further: full resolution costs four times the
    work per layer there. Instead the images' pixels come in folded to that stride (space-to-depth: each 2 x 2
    block's colours as channels) and the last layer predicts each block's four logits, unfolded to full
    resolution (sub-pixel convolution, as in ESPCN): pixel-sharp edges at the cost of a stride-2 layer.
    """

    def __init__(self, config: HeadConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or HeadConfig()
        self.fusions = nn.ModuleList(TemporalFusion(c, f) for c, f in zip(cfg.channels, cfg.fuse, strict=True))
        top = cfg.fuse[-1]
        self.context = nn.Sequential(
            *[_conv_bn_relu(top if k == 0 else cfg.decoder[-1], cfg.decoder[-1]) for k in range(cfg.context_blocks)]
        )
        coarsest = cfg.decoder[-1] if cfg.context_blocks else top
        widths = [*cfg.decoder[:-1], coarsest]
        # blocks[i] brings the map from stage i + 1 down to stage i; at the finest stage one convolution, as the
        # refinement with the pixels follows
        self.blocks = nn.ModuleList(
            DecoderBlock(widths[i + 1], cfg.fuse[i], cfg.decoder[i], 1 if i == 0 else 2)
            for i in range(len(cfg.stages) - 1)
        )
        self.scale = LITE0_BLOCK_STRIDES[cfg.stages[0]]
        if cfg.pixel_width:
            self.pixels: nn.Module = _conv_bn_relu(6 * self.scale**2, cfg.pixel_width)
            self.refine: nn.Module = _conv_bn_relu(cfg.decoder[0] + cfg.pixel_width, cfg.decoder[0])
        else:
            self.pixels = self.refine = nn.Identity()
        self.classify = nn.Conv2d(cfg.decoder[0], self.scale**2, kernel_size=1)

    def forward(
        self, fa: list[torch.Tensor], fb: list[torch.Tensor], xa: torch.Tensor, xb: torch.Tensor
    ) -> torch.Tensor:
        fused = [fuse(a, b) for fuse, a, b in zip(self.fusions, fa, fb, strict=True)]
        h = self.context(fused[-1])
        for i in range(len(fused) - 2, -1, -1):
            h = self.blocks[i](h, fused[i])
        if self.config.pixel_width:
            pix = F.pixel_unshuffle(torch.cat([(xa - xb).abs(), (xa + xb) * 0.5], dim=1), self.scale)
            h = self.refine(torch.cat([h, self.pixels(pix)], dim=1))
        return F.pixel_shuffle(self.classify(h), self.scale)


def parameter_count(module: nn.Module) -> int:
    """Number of trainable weights (batch-norm statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


@dataclass
class UNetHeadCheckpoint:
    """A trained format-2 change head: detector settings (with the calibrated threshold), architecture, weights,
    metrics and recipe, and the weights of encoder blocks it unfroze (empty: the packaged encoder, frozen)."""

    config: ChangeConfig
    head_config: HeadConfig
    state: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)
    name: str = "change-head"
    encoder_state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        """The calibrated probability threshold (F1-best on the validation split)."""
        return float(self.config.threshold)

    def to_dict(self) -> dict[str, Any]:
        """The plain structure written to disk."""
        return {
            "kind": HEAD_KIND,
            "format_version": HEAD_FORMAT_VERSION,
            "name": self.name,
            "config": dataclasses.asdict(self.config),
            "head_config": dataclasses.asdict(self.head_config),
            "encoder": {
                "backbone": PACKAGED_BACKBONE[0],
                "weights": PACKAGED_BACKBONE[1],
                "unfrozen": sorted({k.split(".")[1] for k in self.encoder_state}),
            },
            "state": self.state,
            "encoder_state": self.encoder_state,
            "metrics": plain(self.metrics),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a temporary file in the same folder, then a rename)."""
        from dedup_app.core.model_files import atomic_torch_save

        atomic_torch_save(self.to_dict(), path)

    def build(self) -> ChangeUNetHead:
        """The head with these weights, ready for inference: eval mode, batch norms folded into the convolutions,
        channels-last memory (several times faster on the CPU than as trained)."""
        head = ChangeUNetHead(self.head_config)
        head.load_state_dict(self.state)
        fold_head_batchnorm(head.eval())
        return head.to(memory_format=torch.channels_last)


def fold_head_batchnorm(module: nn.Module) -> nn.Module:
    """Fold each batch norm that follows a convolution in a (conv, BN, ReLU) block into it (eval mode only)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        if isinstance(child, nn.Sequential) and len(child) == 3 and isinstance(child[1], nn.BatchNorm2d):
            conv = child[0]
            assert isinstance(conv, nn.Conv2d)
            child[0] = fuse_conv_bn_eval(conv, child[1])
            child[1] = nn.Identity()
        else:
            fold_head_batchnorm(child)
    return module


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, tuples and paths turned into the built-in types that a
    weights-only ``torch.load`` accepts (metrics are written by training code that computes with numpy)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, torch.Tensor):  # numpy scalar or array
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def checkpoint_from_dict(data: dict[str, Any], source: str | os.PathLike[str]) -> UNetHeadCheckpoint:
    """A format-2 head from what :meth:`UNetHeadCheckpoint.to_dict` wrote; ``ValueError`` naming ``source`` when
    the parts are missing or do not fit (weights whose names or shapes the architecture does not build)."""
    try:
        head_config = HeadConfig.from_dict(data["head_config"])
        if not isinstance(data["config"], dict):
            raise TypeError(f"'config' is a {type(data['config']).__name__}, not a mapping")
        config = dataclasses.replace(ChangeConfig.from_dict(data["config"]), stages=head_config.stages)
        state, encoder_state = dict(data["state"]), dict(data.get("encoder_state") or {})
        ChangeUNetHead(head_config).load_state_dict(state)  # names and shapes, as using it would check
        threshold = float(config.threshold)
    except KeyError as exc:
        raise ValueError(f"{source}: damaged change model file (no {exc.args[0]!r})") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ValueError(f"{source}: damaged change model file ({reason})") from None
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"{source}: damaged change model file (threshold {threshold!r} not in (0, 1))")
    bad = [k for k in encoder_state if not k.startswith("blocks.")]
    if bad:
        raise ValueError(f"{source}: damaged change model file (encoder weights outside the blocks: {bad[:3]})")
    metrics = data.get("metrics") or {}
    return UNetHeadCheckpoint(config, head_config, state, dict(metrics), str(data.get("name") or "change-head"),
                              encoder_state)  # fmt: skip


def head_backbone(shared: nn.Module | None, checkpoint: UNetHeadCheckpoint) -> nn.Module:
    """The backbone whose features the head reads.

    ``shared`` (the near-duplicate model's backbone, BN folded) when given: the head was trained on the packaged
    weights and reads them as they are. Otherwise, or when the head carries unfrozen blocks, a copy of the packaged
    backbone with the head's blocks put in, batch norms folded (about 14 MB more memory).
    """
    if shared is not None and not checkpoint.encoder_state:
        return shared
    from dedup_app.core.model import create_backbone, fold_batchnorm

    backbone = create_backbone(EncoderConfig(), pretrained=True)
    if checkpoint.encoder_state:
        missing = set(checkpoint.encoder_state) - set(backbone.state_dict())
        if missing:
            raise ValueError(f"change model: encoder weights the backbone does not have: {sorted(missing)[:3]}")
        try:
            backbone.load_state_dict(checkpoint.encoder_state, strict=False)
        except RuntimeError as exc:  # shapes that do not fit: one line, like every other bad model file
            raise ValueError(f"change model: encoder weights do not fit the backbone ({str(exc)[:200]})") from None
    backbone.eval()
    fold_batchnorm(backbone)
    return backbone.to(memory_format=torch.channels_last)


def tile_logits(
    backbone: nn.Module, head: ChangeUNetHead, x: torch.Tensor, stages: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Logits (1 x 1 x H x W) of one pair given as a batch of its two ImageNet-normalised images (2 x 3 x H x W,
    sides multiples of 32): both dates go through the backbone together (shared weights), then the head."""
    feats = stage_features(backbone, x, stages or head.config.stages)
    return head([f[:1] for f in feats], [f[1:] for f in feats], x[:1], x[1:])
