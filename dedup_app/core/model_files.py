"""Model files on disk: reading them safely and writing them atomically.

Every failure is a :class:`ModelFileError` whose text is one line naming the file and the reason. Used for the
encoder's checkpoints and the change-detection head's files.
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
