"""The model registry: trained models kept in the user's data folder, one of them active, with roll back.

Layout: ``<data dir>/models/<model id>.pt`` plus ``registry.json`` (which is active, the order of activations,
facts about each model). With no model active, the shipped default is used. Activating a model drops the cached
embeddings of the model it replaces (and only those): they can never be used again by that model's successor,
while other models' caches stay valid.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dedup_app.core.model import Checkpoint
from dedup_app.core.resources import default_model_path, user_data_file

DEFAULT = "default"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its id, file, name, when it was added, and its validation metrics."""

    model_id: str
    file: Path
    name: str
    created: float
    metrics: dict[str, Any]
    base: str | None = None


class ModelRegistry:
    """Versioned trained models in a folder; ``root`` defaults to ``<user data>/dedup-app/models``."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else user_data_file("models")
        self.root.mkdir(parents=True, exist_ok=True)
        self._index = self.root / "registry.json"

    # -- state --------------------------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self._index.read_text())
        except FileNotFoundError:
            return {"active": None, "history": [], "models": {}}
        except (OSError, ValueError):
            # a damaged index must not lock the user out: fall back to the shipped model, keep the files
            return {"active": None, "history": [], "models": self._rescan()}
        data.setdefault("history", [])
        data.setdefault("models", {})
        return data

    def _rescan(self) -> dict[str, Any]:
        models = {}
        for f in sorted(self.root.glob("*.pt")):
            try:
                ckpt = Checkpoint.load(f)
            except ValueError:
                continue
            models[ckpt.model_id] = {"file": f.name, "name": ckpt.name, "created": f.stat().st_mtime,
                                     "metrics": ckpt.metrics}  # fmt: skip
        return models

    def _save(self, data: dict[str, Any]) -> None:
        tmp = self._index.with_name(self._index.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self._index)

    # -- queries ------------------------------------------------------------------------------------------------

    def entries(self) -> list[ModelEntry]:
        """Registered models, oldest first."""
        data = self._load()
        out = [
            ModelEntry(
                mid,
                self.root / m["file"],
                m.get("name", mid),
                float(m.get("created", 0)),
                dict(m.get("metrics", {})),
                m.get("base"),
            )  # fmt: skip
            for mid, m in data["models"].items()
        ]
        return sorted(out, key=lambda e: e.created)

    @property
    def active_id(self) -> str | None:
        """The active registered model, or None when the shipped default is in use."""
        active = self._load()["active"]
        return active if active else None

    def active_path(self) -> Path:
        """The checkpoint file to use: the active registered model, else the shipped default."""
        data = self._load()
        active = data["active"]
        if active and active in data["models"]:
            path = self.root / data["models"][active]["file"]
            if path.exists():
                return path
        return default_model_path()

    # -- changes ------------------------------------------------------------------------------------------------

    def add(self, checkpoint: Checkpoint, base: str | None = None) -> ModelEntry:
        """Store a checkpoint (not activated). Returns its entry; adding the same weights twice is harmless."""
        data = self._load()
        mid = checkpoint.model_id
        file = self.root / f"{mid}.pt"
        checkpoint.save(file)
        data["models"][mid] = {"file": file.name, "name": checkpoint.name, "created": time.time(),
                               "metrics": checkpoint.metrics, "base": base}  # fmt: skip
        self._save(data)
        return next(e for e in self.entries() if e.model_id == mid)

    def activate(self, model_id: str) -> tuple[str, str]:
        """Make ``model_id`` (or ``"default"``) active. Returns (previous model id, new model id) as the cache
        knows them, so the caller can drop the previous model's embeddings."""
        data = self._load()
        if model_id != DEFAULT and model_id not in data["models"]:
            known = ", ".join([DEFAULT, *data["models"]])
            raise ValueError(f"no model {model_id!r} in the registry (known: {known})")
        previous = self._cache_id(data)
        data["history"].append(data["active"] or DEFAULT)
        data["active"] = None if model_id == DEFAULT else model_id
        self._save(data)
        return previous, self._cache_id(data)

    def rollback(self) -> tuple[str, str]:
        """Re-activate the model that was active before the last activation."""
        data = self._load()
        if not data["history"]:
            raise ValueError("nothing to roll back to: no model was activated before")
        previous = self._cache_id(data)
        back = data["history"].pop()
        data["active"] = None if back == DEFAULT or back not in data["models"] else back
        self._save(data)
        return previous, self._cache_id(data)

    def _cache_id(self, data: dict[str, Any]) -> str:
        active = data["active"]
        if active and active in data["models"]:
            return str(active)
        return Checkpoint.load(default_model_path()).model_id


def drop_embeddings_of(model_id: str, cache_path: str | os.PathLike[str] | None = None) -> int:
    """Delete the cached embeddings of one model (after it was replaced); returns how many were dropped."""
    from dedup_app.core.cache import EmbeddingCache

    with EmbeddingCache(cache_path) as cache:
        return cache.delete_model(model_id)
