"""Finding the files in ``resources/`` from a source checkout, an installed package or a PyInstaller bundle."""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_MODEL_NAME = "dedup-default-v1.pt"


def resources_dir() -> Path:
    """The folder holding icons, model cards and shipped model weights.

    Looked up in this order: the PyInstaller bundle (``sys._MEIPASS/resources``), the installed package
    ``dedup_app._resources`` (``pip install``), the source tree (``<repo>/resources``).
    """
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    try:
        import dedup_app._resources as installed  # type: ignore[import-not-found]

        return Path(installed.__file__).parent
    except ImportError:
        pass
    return Path(__file__).resolve().parents[2] / "resources"


def resource_path(*parts: str) -> Path:
    """A path inside :func:`resources_dir`; raises ``FileNotFoundError`` naming it when it is missing."""
    path = resources_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"resource not found: {path} (is dedup-app installed completely?)")
    return path


def user_data_file(name: str) -> Path:
    """A file in the user's data folder for dedup-app (platformdirs), e.g. ``~/.local/share/dedup-app/<name>``."""
    from platformdirs import user_data_path

    return user_data_path("dedup-app", appauthor=False) / name


def default_model_path() -> Path:
    """The shipped default model checkpoint."""
    return resource_path("models", DEFAULT_MODEL_NAME)
