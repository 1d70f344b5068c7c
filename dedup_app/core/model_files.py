"""Model files on disk: reading them safely, writing them atomically, and checking that what they hold fits together.

Every failure is a :class:`ModelFileError` whose text is one line naming the file and the reason. A checkpoint that
:func:`read_checkpoint` returns (or that :func:`validate_checkpoint` accepts) can be built into an encoder by
:func:`dedup_app.core.model.build_encoder` and used. The change-detection head's files go through
:func:`read_torch_file` and :func:`atomic_torch_save` too.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dedup_app.core.checkpoint import CHECKPOINT_FORMAT_VERSION, Checkpoint, one_line
from dedup_app.core.model import PACKAGED_BACKBONE, PACKAGED_FEATURE_DIM, ProjectionHead, is_int, is_real


class ModelFileError(ValueError):
    """A model file that cannot be used: missing, not a model file, or one whose contents are inconsistent.

    ``str(exc)`` is one line naming the file and the reason. A ``ValueError``, so every caller that reports bad
    arguments (the command line prints it and exits 2) reports it too.
    """


#: File signatures of things people point ``--model`` at by mistake, for a reason that says what the file is.
_FILE_KINDS = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
)


def _first_sentence(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())  # one line
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)  # c10's source location: noise to a user
    text = text.split(". ")[0].rstrip(".") or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _why_unreadable(path: str | os.PathLike[str], exc: BaseException) -> str:
    """A short reason why ``torch.load`` refused a file (torch's own text runs to several lines of advice)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        head = b""
    if not head:
        return "empty file"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "it is a WebP image"
    for magic, kind in _FILE_KINDS:
        if head.startswith(magic):
            return f"it is {kind}"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch's zip format, or its legacy pickle
        if isinstance(exc, pickle.UnpicklingError):
            return "it holds Python objects besides tensors and plain data, which are not loaded, for safety"
        return f"unreadable PyTorch data: {_first_sentence(exc)}"
    return "not a PyTorch file"


def read_torch_file(path: str | os.PathLike[str], what: str) -> Any:
    """``torch.load`` (tensors and plain data only) with failures turned into :class:`ModelFileError` (a
    ``ValueError``) naming the file and the reason on one line."""
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it better
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a {what} file") from None
    except PermissionError as exc:
        raise ModelFileError(f"{path}: cannot read the {what} file ({exc.strerror or exc})") from None
    except Exception as exc:
        raise ModelFileError(f"{path}: not a dedup-app {what} file ({_why_unreadable(path, exc)})") from None


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file in the target folder, fsync, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is not a secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and :func:`validate_checkpoint` a model file: a file that loads can be built into an encoder and used.

    Raises :class:`ModelFileError` (a ``ValueError``) naming the file and the reason on one line when it is
    not a model file, is damaged or inconsistent, or is too new.
    """
    data = read_torch_file(path, "model")
    if not isinstance(data, dict) or "format_version" not in data or "config" not in data:
        raise ModelFileError(f"{path}: not a dedup-app model file (no format version or config)")
    version = data["format_version"]
    if not is_int(version) or version < 1:
        reason = f"format_version must be a whole number >= 1, not {version!r}"
        raise ModelFileError(f"{path}: invalid model file ({reason})")
    if version > CHECKPOINT_FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format {version} is newer than this version of dedup-app reads "
            f"({CHECKPOINT_FORMAT_VERSION}); update dedup-app"
        )
    try:
        checkpoint = Checkpoint.from_dict(data)
    except ValueError as exc:
        raise ModelFileError(f"{path}: invalid model file ({one_line(exc)})") from None
    validate_checkpoint(checkpoint, source=path)
    return checkpoint


def write_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike[str]) -> None:
    """Write a model file atomically: a temporary file in the same folder, then a rename."""
    atomic_torch_save(checkpoint.to_dict(), path)


def validate_checkpoint(checkpoint: Checkpoint, source: str | os.PathLike[str] | None = None) -> None:
    """Check that the parts fit: a threshold in (0, 1], a known backbone (the packaged one unless the file
    carries backbone weights), and weights whose names and shapes are exactly those the config builds (what
    ``load_state_dict`` would check, without building the network). Cheap: the expected shapes come from
    modules on the ``meta`` device. Raises :class:`ModelFileError` naming ``source`` (or the model's name)."""
    try:
        _check(checkpoint)
    except ValueError as exc:
        where = source if source is not None else f"model {checkpoint.name!r}"
        raise ModelFileError(f"{where}: invalid model file ({one_line(exc)})") from None


def _check(checkpoint: Checkpoint) -> None:
    cfg = checkpoint.config
    if not is_real(checkpoint.threshold) or not 0.0 < checkpoint.threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], not {checkpoint.threshold!r}")
    if checkpoint.pool_p is not None and (not is_real(checkpoint.pool_p) or not 0 < checkpoint.pool_p <= 100):
        raise ValueError(f"pool_p must be in (0, 100], not {checkpoint.pool_p!r}")
    if checkpoint.backbone_state:
        import timm

        if not timm.is_model(cfg.backbone):
            raise ValueError(f"unknown backbone {cfg.backbone!r}")
        with torch.device("meta"):
            backbone = timm.create_model(cfg.backbone, pretrained=False, num_classes=0, global_pool="")
        _check_state(backbone, checkpoint.backbone_state, "backbone_state", f"backbone {cfg.backbone}")
        features = int(backbone.num_features)  # type: ignore[arg-type]  # timm sets an int
    else:
        if (cfg.backbone, cfg.backbone_weights) != PACKAGED_BACKBONE:
            raise ValueError(
                f"backbone {cfg.backbone!r} with weights {cfg.backbone_weights!r} needs its weights in the "
                f"file (dedup-app ships only {PACKAGED_BACKBONE[0]}), and the file has none"
            )
        features = PACKAGED_FEATURE_DIM
    if cfg.feature_dim != features:
        raise ValueError(f"config feature_dim is {cfg.feature_dim} but backbone {cfg.backbone} gives {features}")
    with torch.device("meta"):
        head = ProjectionHead(cfg.feature_dim, cfg.embed_dim, cfg.head_hidden)
    where = f"config (feature_dim {cfg.feature_dim}, embed_dim {cfg.embed_dim}, head_hidden {cfg.head_hidden})"
    _check_state(head, checkpoint.head_state, "head_state", where)


def _check_state(module: nn.Module, state: dict[str, torch.Tensor], label: str, needs: str) -> None:
    """The checks of a strict ``load_state_dict`` (same names, same shapes), plus finite floating-point values,
    as one-line ``ValueError`` reasons."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [
            f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise ValueError(f"{label} does not fit {needs}: {'; '.join(parts)}")
    for key, want in expected.items():
        have = state[key]
        if have.shape != want.shape:
            raise ValueError(f"{label}[{key!r}] has shape {tuple(have.shape)} but {needs} needs {tuple(want.shape)}")
        if want.is_floating_point() and not have.is_floating_point():
            raise ValueError(f"{label}[{key!r}] holds {have.dtype} values, not floating-point weights")
        if have.is_floating_point() and not bool(torch.isfinite(have).all()):
            raise ValueError(f"{label}[{key!r}] holds NaN or infinite values")
