"""The model registry: trained models kept in the user's data folder, one of them active, with roll back.

Layout: ``<data dir>/models/<model id>.pt`` plus ``registry.json`` (which is active, the order of activations,
facts about each model). With no model active, the shipped default is used. Activating a model drops the cached
embeddings of the model it replaces (and only those): they can never be used again by that model's successor,
while other models' caches stay valid.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dedup_app.core.resources import default_model_path, user_data_file

if TYPE_CHECKING:  # torch is imported only where a model file is read: listing models must not wait for it
    from dedup_app.core.checkpoint import Checkpoint

log = logging.getLogger(__name__)

DEFAULT = "default"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its id, file, name, when it was added, and its validation metrics.

    ``problem`` says why the model cannot be used (its file is missing), else None; an active model with a
    problem is not used: the shipped default is, and :attr:`ModelRegistry.active_id` says so.
    """

    model_id: str
    file: Path
    name: str
    created: float
    metrics: dict[str, Any]
    base: str | None = None
    problem: str | None = None

    @property
    def usable(self) -> bool:
        """Whether the model's file is there to be loaded."""
        return self.problem is None


class ModelRegistry:
    """Versioned trained models in a folder; ``root`` defaults to ``<user data>/dedup-app/models``."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else user_data_file("models")
        self.root.mkdir(parents=True, exist_ok=True)
        self._index = self.root / "registry.json"
        self._warned: set[str] = set()

    def _warn(self, message: str) -> None:
        """Log a warning once per registry object (every query re-reads the index and would repeat it)."""
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    # -- state --------------------------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        """The index, always well-formed: ``active`` (a registered id or None), ``history`` (ids) and ``models``
        (id -> dict with a plain file name in ``file``).

        A damaged index must not lock the user out. One that cannot be parsed or has the wrong shape is moved
        aside (``registry.json.corrupt-<time>``) and rebuilt from the model files in the folder, with nothing
        active: the shipped model is used. Malformed entries in an otherwise sound index are ignored. Both with
        a warning.
        """
        try:
            text = self._index.read_text()
        except FileNotFoundError:
            return {"active": None, "history": [], "models": {}}
        except (OSError, ValueError) as exc:  # unreadable (permissions, not UTF-8): leave it where it is
            self._warn(f"cannot read the model registry {self._index} ({exc}); using the shipped model")
            return {"active": None, "history": [], "models": self._rescan()}
        try:
            data = json.loads(text)
        except ValueError as exc:
            return self._rebuild(f"not valid JSON: {exc}")
        if not isinstance(data, dict):
            return self._rebuild(f"expected a JSON object, found {_json_type(data)}")
        models = data.get("models", {})
        if not isinstance(models, dict):
            return self._rebuild(f"'models' is {_json_type(models)}, not an object")
        clean: dict[str, Any] = {}
        for mid, entry in models.items():
            problem = _entry_problem(entry)
            if problem:
                self._warn(f"model registry {self._index}: ignoring the entry {mid!r} ({problem})")
            else:
                clean[mid] = entry
        active = data.get("active")
        if active is not None and (not isinstance(active, str) or active not in clean):
            self._warn(f"model registry {self._index}: the active model {active!r} is not registered; using the "
                       "shipped model")  # fmt: skip
            active = None
        history = data.get("history", [])
        history = [h for h in history if isinstance(h, str)] if isinstance(history, list) else []
        return {**data, "active": active, "history": history, "models": clean}

    def _rebuild(self, reason: str) -> dict[str, Any]:
        """Move a malformed index aside and write one rebuilt from the model files (nothing active)."""
        aside = self._index.with_name(f"{self._index.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        data: dict[str, Any] = {"active": None, "history": [], "models": self._rescan()}
        try:
            os.replace(self._index, aside)
            self._save(data)
        except OSError as exc:
            self._warn(f"the model registry {self._index} is damaged ({reason}) and cannot be set aside ({exc}); "
                       "using the shipped model")  # fmt: skip
        else:
            self._warn(f"the model registry {self._index} was damaged ({reason}); kept as {aside.name} and rebuilt "
                       "from the model files, with the shipped model active")  # fmt: skip
        return data

    def _rescan(self) -> dict[str, Any]:
        models = {}
        for f in sorted(self.root.glob("*.pt")):
            try:
                from dedup_app.core.model_files import read_checkpoint

                ckpt = read_checkpoint(f)
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
        """Registered models, oldest first; one whose file is gone has ``problem`` set."""
        data = self._load()
        out = []
        for mid, m in data["models"].items():
            file = self.root / m["file"]
            name, created, metrics, base = m.get("name"), m.get("created"), m.get("metrics"), m.get("base")
            out.append(
                ModelEntry(
                    mid,
                    file,
                    name if isinstance(name, str) else mid,
                    float(created) if isinstance(created, (int, float)) and math.isfinite(created) else 0.0,
                    dict(metrics) if isinstance(metrics, dict) else {},
                    base if isinstance(base, str) else None,
                    None if file.is_file() else f"file missing: {file}",
                )
            )
        return sorted(out, key=lambda e: e.created)

    @property
    def active_id(self) -> str | None:
        """The active registered model, or None when the shipped default is in use: also when the active
        model's file is missing (with a warning), exactly as :meth:`active_path` falls back."""
        return self._effective_active(self._load(), warn=True)

    @property
    def selected_id(self) -> str | None:
        """The model the user activated, whether or not it is usable (None: the shipped default)."""
        active = self._load()["active"]
        return str(active) if active else None

    def active_path(self) -> Path:
        """The checkpoint file to use: the active registered model, else the shipped default."""
        data = self._load()
        active = self._effective_active(data, warn=True)
        return self.root / data["models"][active]["file"] if active else default_model_path()

    def _effective_active(self, data: dict[str, Any], warn: bool = False) -> str | None:
        """The active id when its file is there, else None (the shipped model)."""
        active = data["active"]
        if not active:
            return None
        path = self.root / data["models"][active]["file"]
        if path.is_file():
            return str(active)
        if warn:
            self._warn(f"the active model {active} is unusable (file missing: {path}); using the shipped model")
        return None

    # -- changes ------------------------------------------------------------------------------------------------

    def add(self, checkpoint: Checkpoint, base: str | None = None) -> ModelEntry:
        """Store a checkpoint (not activated). Returns its entry; adding the same weights twice is harmless."""
        data = self._load()
        mid = checkpoint.model_id
        file = self.root / f"{mid}.pt"
        from dedup_app.core.model_files import write_checkpoint

        write_checkpoint(checkpoint, file)
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
        if model_id != DEFAULT and not (self.root / data["models"][model_id]["file"]).is_file():
            raise ValueError(f"model {model_id!r} cannot be activated: its file {data['models'][model_id]['file']} "
                             f"is missing from {self.root}")  # fmt: skip
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
        """The model id the embedding cache knows for the model in use (the same fallback as active_path)."""
        active = self._effective_active(data)
        from dedup_app.core.model_files import read_checkpoint

        return active if active else read_checkpoint(default_model_path()).model_id


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages about the index file."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def _entry_problem(entry: Any) -> str | None:
    """Why an index entry is unusable, else None: it must be an object naming a plain file in the folder."""
    if not isinstance(entry, dict):
        return f"expected an object, found {_json_type(entry)}"
    file = entry.get("file")
    if not isinstance(file, str) or not file:
        return "no 'file'"
    if Path(file).name != file or file in (".", ".."):
        return f"'file' must be a file name in the registry folder, not {file!r}"
    return None


def drop_embeddings_of(model_id: str, cache_path: str | os.PathLike[str] | None = None) -> int:
    """Delete the cached embeddings of one model (after it was replaced); returns how many were dropped."""
    from dedup_app.core.cache import EmbeddingCache

    with EmbeddingCache(cache_path) as cache:
        return cache.delete_model(model_id)
