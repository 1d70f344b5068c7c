"""A model checkpoint as plain data: the encoder config, the weights, the calibrated threshold and the metrics.

What a model file holds, and the id the embedding cache is keyed by. Building the network from a checkpoint is
:func:`dedup_app.core.model.build_encoder`; reading and writing model files, and checking that a checkpoint's
weights fit its config, is :mod:`dedup_app.core.model_files`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from dedup_app.core.model import EncoderConfig, SiameseEncoder, is_real

CHECKPOINT_FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A versioned model file: config, weights, calibrated threshold and the metrics it was chosen by.

    ``backbone_state`` is empty when the backbone is the packaged pretrained one (small files: the head only);
    a fine-tuned backbone stores its weights here.
    """

    config: EncoderConfig
    head_state: dict[str, torch.Tensor]
    threshold: float
    name: str = "custom"
    metrics: dict[str, Any] = field(default_factory=dict)
    backbone_state: dict[str, torch.Tensor] = field(default_factory=dict)
    pool_p: float | None = None
    format_version: int = CHECKPOINT_FORMAT_VERSION

    @property
    def model_id(self) -> str:
        """A stable id for the weights and config (the embedding cache is keyed by it)."""
        h = hashlib.sha256()
        h.update(json.dumps(dataclasses.asdict(self.config), sort_keys=True).encode())
        for state in (self.head_state, self.backbone_state):
            for key in sorted(state):
                h.update(key.encode())
                h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
        h.update(repr(self.pool_p).encode())
        return f"{self.name}-{h.hexdigest()[:12]}"

    def to_dict(self) -> dict[str, Any]:
        """The plain structure written to disk (torch.save of dicts, tensors and built-in types only)."""
        return {
            "format_version": self.format_version,
            "name": self.name,
            "config": dataclasses.asdict(self.config),
            "threshold": float(self.threshold),
            "metrics": self.metrics,
            "head_state": self.head_state,
            "backbone_state": self.backbone_state,
            "pool_p": self.pool_p,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """The checkpoint in a structure written by :meth:`to_dict`, with every key's presence and type checked.
        Raises ``ValueError`` naming the key; :func:`~dedup_app.core.model_files.validate_checkpoint` then checks
        that the parts fit together."""
        if not isinstance(data["config"], dict):
            raise ValueError(f"config must be a dict of settings, not {type(data['config']).__name__}")
        try:
            config = EncoderConfig.from_dict(data["config"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config: {one_line(exc)}") from None
        for key in ("head_state", "threshold"):
            if key not in data:
                raise ValueError(f"no {key!r} entry")
        threshold = data["threshold"]
        if not is_real(threshold):
            raise ValueError(f"threshold must be a number in (0, 1], not {threshold!r}")
        name = data.get("name", "custom")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, not {name!r}")
        metrics = data.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics must be a dict, not {type(metrics).__name__}")
        pool_p = data.get("pool_p")
        if pool_p is not None and not is_real(pool_p):
            raise ValueError(f"pool_p must be a number or None, not {pool_p!r}")
        return cls(
            config=config,
            head_state=_tensor_dict(data["head_state"], "head_state"),
            threshold=float(threshold),
            name=name,
            metrics=dict(metrics),
            backbone_state=_tensor_dict(data.get("backbone_state") or {}, "backbone_state"),
            pool_p=None if pool_p is None else float(pool_p),
            format_version=int(data.get("format_version", CHECKPOINT_FORMAT_VERSION)),
        )

    @classmethod
    def from_encoder(
        cls,
        encoder: SiameseEncoder,
        threshold: float,
        name: str,
        metrics: dict[str, Any] | None = None,
        include_backbone: bool = False,
    ) -> Checkpoint:
        """Snapshot an encoder's weights into a checkpoint."""
        return cls(
            config=encoder.config,
            head_state={k: v.detach().cpu().clone() for k, v in encoder.head.state_dict().items()},
            threshold=threshold,
            name=name,
            metrics=dict(metrics or {}),
            backbone_state=(
                {k: v.detach().cpu().clone() for k, v in encoder.backbone.state_dict().items()}
                if include_backbone
                else {}
            ),
            pool_p=float(encoder.pool.p.detach()),
        )


def one_line(exc: BaseException) -> str:
    """An exception's message with its whitespace (newlines included) collapsed: model-file errors are one line."""
    return " ".join(str(exc).split())


def _tensor_dict(value: Any, label: str) -> dict[str, torch.Tensor]:
    """A dict of named dense tensors of a plain dtype, else ``ValueError`` naming ``label``."""
    if not isinstance(value, dict):
        raise ValueError(f"{label} must be a dict of tensors, not {type(value).__name__}")
    for key, tensor in value.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{label} must map names to tensors; {key!r} holds {type(tensor).__name__}")
        if tensor.layout != torch.strided or tensor.is_quantized or tensor.dtype in (torch.bfloat16, torch.bool):
            raise ValueError(f"{label}[{key!r}] is a {tensor.dtype} {tensor.layout} tensor; expected a dense one")
    return dict(value)
