"""The model registries: trained models kept in the user's data folder, one of them active, with roll back.

Two registries share one implementation (:class:`Registry`): the duplicate models (:class:`ModelRegistry`) and
the change heads (:class:`ChangeHeadRegistry`), each in its own folder with its own index, so activating one kind
never touches the other. What differs is a small strategy: how an entry is read from a file (rebuilding a damaged
index), what is used when nothing is active, and how files are added.

Layout: ``<data dir>/models/<model id>.pt`` plus ``registry.json`` (which is active, the order of activations,
facts about each model); change heads in ``<data dir>/models/change/`` the same way. With no model active, the
shipped default is used. Activating a duplicate model drops the cached embeddings of the model it replaces (and only
those): they can never be used again by that model's successor, while other models' caches stay valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dedup_app.core.change.heads import FEATURES, SHIPPED_HEADS, is_installed, shipped_head_path
from dedup_app.core.resources import default_model_path, user_data_file

if TYPE_CHECKING:  # torch is imported only where a model file is read: listing models must not wait for it
    from dedup_app.core.change.detect import ChangeHeadCheckpoint
    from dedup_app.core.change.head import UNetHeadCheckpoint
    from dedup_app.core.checkpoint import Checkpoint

log = logging.getLogger(__name__)

DEFAULT = "default"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model (a duplicate model or a change head): its id, file, name, when it was added, and its
    validation metrics.

    ``problem`` says why the model cannot be used (its file is missing), else None; an active model with a
    problem is not used: the shipped default is, and :attr:`Registry.active_id` says so.
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


class Registry:
    """Versioned files in a folder with an index: one entry active (or none: the shipped default), a history of
    activations to roll back through, a damaged index set aside and rebuilt from the files, a missing file flagged.

    Subclasses say what their entries are (:meth:`_read_entry`: an entry from a file, to rebuild the index), what
    ids stand for something that is not a registered file (:attr:`builtins`; ``"default"`` always), and what the
    id of the entry in use is to the caller (:meth:`_public_id`).
    """

    #: what one entry is called in messages, and what the index is called
    what: ClassVar[str] = "model"
    index_name: ClassVar[str] = "model registry"
    #: what is used when nothing (usable) is active, in messages
    fallback: ClassVar[str] = "the shipped model"
    #: ids besides ``"default"`` that may be activated without being registered files (see :meth:`_builtin_problem`)
    builtins: ClassVar[tuple[str, ...]] = ()

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._index = self.root / "registry.json"
        self._warned: set[str] = set()

    def _warn(self, message: str) -> None:
        """Log a warning once per registry object (every query re-reads the index and would repeat it)."""
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    # -- what subclasses say --------------------------------------------------------------------------------------

    def _read_entry(self, path: Path) -> tuple[str, dict[str, Any]] | None:
        """The id and index entry of a file in the folder, or None when it is not one of ours (rebuilding)."""
        raise NotImplementedError

    def _builtin_problem(self, builtin: str) -> str | None:
        """Why a built-in id (of :attr:`builtins`) cannot be used now, else None."""
        return None

    def _public_id(self, data: dict[str, Any]) -> str:
        """The id of what is in use, as :meth:`activate` and :meth:`rollback` report it."""
        return self._effective_active(data) or DEFAULT

    # -- state --------------------------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        """The index, always well-formed: ``active`` (a registered id, a built-in one, or None), ``history`` (ids)
        and ``models`` (id -> dict with a plain file name in ``file``).

        A damaged index must not lock the user out. One that cannot be parsed or has the wrong shape is moved
        aside (``registry.json.corrupt-<time>``) and rebuilt from the files in the folder, with nothing active:
        the shipped default is used. Malformed entries in an otherwise sound index are ignored. Both with a warning.
        """
        try:
            text = self._index.read_text()
        except FileNotFoundError:
            return {"active": None, "history": [], "models": {}}
        except (OSError, ValueError) as exc:  # unreadable (permissions, not UTF-8): leave it where it is
            self._warn(f"cannot read the {self.index_name} {self._index} ({exc}); using {self.fallback}")
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
                self._warn(f"{self.index_name} {self._index}: ignoring the entry {mid!r} ({problem})")
            else:
                clean[mid] = entry
        active = data.get("active")
        known = (*clean, *self.builtins)
        if active is not None and (not isinstance(active, str) or active not in known):
            self._warn(f"{self.index_name} {self._index}: the active {self.what} {active!r} is not registered; using "
                       f"{self.fallback}")  # fmt: skip
            active = None
        history = data.get("history", [])
        history = [h for h in history if isinstance(h, str)] if isinstance(history, list) else []
        return {**data, "active": active, "history": history, "models": clean}

    def _rebuild(self, reason: str) -> dict[str, Any]:
        """Move a malformed index aside and write one rebuilt from the files (nothing active)."""
        aside = self._index.with_name(f"{self._index.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        data: dict[str, Any] = {"active": None, "history": [], "models": self._rescan()}
        try:
            os.replace(self._index, aside)
            self._save(data)
        except OSError as exc:
            self._warn(f"the {self.index_name} {self._index} is damaged ({reason}) and cannot be set aside ({exc}); "
                       f"using {self.fallback}")  # fmt: skip
        else:
            self._warn(f"the {self.index_name} {self._index} was damaged ({reason}); kept as {aside.name} and "
                       f"rebuilt from the {self.what} files, with {self.fallback} active")  # fmt: skip
        return data

    def _rescan(self) -> dict[str, Any]:
        """Index entries for the files in the folder that :meth:`_read_entry` recognises."""
        models = {}
        for f in sorted(self.root.glob("*.pt")):
            found = self._read_entry(f)
            if found is not None:
                models[found[0]] = found[1]
        return models

    def _save(self, data: dict[str, Any]) -> None:
        tmp = self._index.with_name(self._index.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))  # metrics: numbers, text, lists
        os.replace(tmp, self._index)

    # -- queries ------------------------------------------------------------------------------------------------

    def entries(self) -> list[ModelEntry]:
        """Registered entries, oldest first; one whose file is gone has ``problem`` set."""
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

    def entry(self, model_id: str) -> ModelEntry | None:
        """The registered entry ``model_id`` (usable or not), or None."""
        return next((e for e in self.entries() if e.model_id == model_id), None)

    def problem(self, model_id: str) -> str | None:
        """Why ``model_id`` cannot be used now (a missing file, a shipped model not installed, not registered), or
        None when it can."""
        if model_id == DEFAULT:
            return None
        if model_id in self.builtins:
            return self._builtin_problem(model_id)
        entry = self.entry(model_id)
        return f"no {self.what} {model_id!r} in the registry" if entry is None else entry.problem

    def knows(self, model_id: str) -> bool:
        """Whether ``model_id`` can be named to :meth:`activate`: ``default``, a built-in id or a registered one."""
        return model_id == DEFAULT or model_id in self.builtins or model_id in self._load()["models"]

    @property
    def active_id(self) -> str | None:
        """The active entry (a registered id, or a built-in one), or None when the shipped default is in use:
        also when the active entry is unusable (its file missing; with a warning)."""
        return self._effective_active(self._load(), warn=True)

    @property
    def selected_id(self) -> str | None:
        """What the user activated, whether or not it is usable (None: the shipped default)."""
        active = self._load()["active"]
        return str(active) if active else None

    def _effective_active(self, data: dict[str, Any], warn: bool = False) -> str | None:
        """The active id when it can be used (a registered file that is there), else None (the shipped default)."""
        active = data["active"]
        if not active:
            return None
        if active in self.builtins:
            problem = self._builtin_problem(active)
        else:
            path = self.root / data["models"][active]["file"]
            problem = None if path.is_file() else f"file missing: {path}"
        if problem is None:
            return str(active)
        if warn:
            self._warn(f"the active {self.what} {active} is unusable ({problem}); using {self.fallback}")
        return None

    # -- changes ------------------------------------------------------------------------------------------------

    def _register(self, data: dict[str, Any], model_id: str, file: Path, name: str, metrics: dict[str, Any],
                  base: str | None) -> ModelEntry:  # fmt: skip
        data["models"][model_id] = {"file": file.name, "name": name, "created": time.time(), "metrics": metrics,
                                    "base": base}  # fmt: skip
        self._save(data)
        entry = self.entry(model_id)
        assert entry is not None
        return entry

    def activate(self, model_id: str) -> tuple[str, str]:
        """Make ``model_id`` (or ``"default"``) active. Returns (previous id, new id) as :meth:`_public_id` says
        them (for duplicate models: as the embedding cache knows them, so the caller can drop the previous model's
        embeddings). ``ValueError`` for an unknown id or one that cannot be used."""
        data = self._load()
        if model_id != DEFAULT and model_id not in self.builtins and model_id not in data["models"]:
            known = ", ".join([DEFAULT, *self.builtins, *data["models"]])
            raise ValueError(f"no {self.what} {model_id!r} in the registry (known: {known})")
        if model_id in self.builtins:
            problem = self._builtin_problem(model_id)
            if problem:
                raise ValueError(f"{self.what} {model_id!r} cannot be activated: {problem}")
        elif model_id != DEFAULT and not (self.root / data["models"][model_id]["file"]).is_file():
            raise ValueError(f"{self.what} {model_id!r} cannot be activated: its file "
                             f"{data['models'][model_id]['file']} is missing from {self.root}")  # fmt: skip
        previous = self._public_id(data)
        data["history"].append(data["active"] or DEFAULT)
        data["active"] = None if model_id == DEFAULT else model_id
        self._save(data)
        return previous, self._public_id(data)

    def rollback(self) -> tuple[str, str]:
        """Re-activate what was active before the last activation."""
        data = self._load()
        if not data["history"]:
            raise ValueError(f"nothing to roll back to: no {self.what} was activated before")
        previous = self._public_id(data)
        back = data["history"].pop()
        data["active"] = back if back in data["models"] or back in self.builtins else None
        self._save(data)
        return previous, self._public_id(data)


class ModelRegistry(Registry):
    """Versioned trained duplicate models in a folder; ``root`` defaults to ``<user data>/dedup-app/models``."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        super().__init__(root if root is not None else user_data_file("models"))

    def _read_entry(self, path: Path) -> tuple[str, dict[str, Any]] | None:
        from dedup_app.core.model_files import read_checkpoint

        try:
            ckpt = read_checkpoint(path)
        except ValueError:
            return None
        return ckpt.model_id, {"file": path.name, "name": ckpt.name, "created": path.stat().st_mtime,
                               "metrics": ckpt.metrics}  # fmt: skip

    def active_path(self) -> Path:
        """The checkpoint file to use: the active registered model, else the shipped default."""
        data = self._load()
        active = self._effective_active(data, warn=True)
        return self.root / data["models"][active]["file"] if active else default_model_path()

    def add(self, checkpoint: Checkpoint, base: str | None = None) -> ModelEntry:
        """Store a checkpoint (not activated). Returns its entry; adding the same weights twice is harmless."""
        data = self._load()
        mid = checkpoint.model_id
        file = self.root / f"{mid}.pt"
        from dedup_app.core.model_files import write_checkpoint

        write_checkpoint(checkpoint, file)
        return self._register(data, mid, file, checkpoint.name, checkpoint.metrics, base)

    def _public_id(self, data: dict[str, Any]) -> str:
        """The model id the embedding cache knows for the model in use (the same fallback as active_path)."""
        active = self._effective_active(data)
        if active:
            return active
        from dedup_app.core.onnx_encoder import read_model_facts

        facts = read_model_facts(default_model_path())  # the id without torch, where the model was seen before
        if facts is not None:
            return facts.model_id
        from dedup_app.core.model_files import read_checkpoint

        return read_checkpoint(default_model_path()).model_id


#: the change-head metrics kept in the index (for listing without reading the files)
_LISTED_METRICS = ("validation", "held_out", "best_epoch", "parameters")


def change_head_id(name: str, content: bytes) -> str:
    """A change head's registry id: its name (made safe for a file name) and a short hash of the file's bytes."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:40] or "change-head"
    return f"{slug}-{hashlib.sha256(content).hexdigest()[:10]}"


class ChangeHeadRegistry(Registry):
    """Trained change heads in a folder of their own; ``root`` defaults to ``<user data>/dedup-app/models/change``.

    Besides registered heads, the shipped change models may be activated by name (``general``, ``buildings``:
    when installed; ``features``: always). With nothing active the shipped default is used (``general``, or
    ``features`` while it is not installed: :func:`dedup_app.core.change.heads.default_change_model`).
    """

    what = "change head"
    index_name = "change head registry"
    fallback = "the shipped default change model"
    builtins = (*SHIPPED_HEADS, FEATURES)

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        super().__init__(root if root is not None else user_data_file("models") / "change")

    def _builtin_problem(self, builtin: str) -> str | None:
        if is_installed(builtin):
            return None
        return f"the shipped '{builtin}' change head is not installed ({shipped_head_path(builtin)} is missing)"

    def _read_entry(self, path: Path) -> tuple[str, dict[str, Any]] | None:
        from dedup_app.core.change.detect import load_change_head

        try:
            head = load_change_head(path)
            content = path.read_bytes()
        except (ValueError, OSError):
            return None
        return change_head_id(head.name, content), {"file": path.name, "name": head.name,
                                                     "created": path.stat().st_mtime,
                                                     "metrics": _listed(head.metrics)}  # fmt: skip

    def path_of(self, model_id: str) -> Path:
        """The file of a registered head (``KeyError`` when it is not registered)."""
        return self.root / self._load()["models"][model_id]["file"]

    def add_file(self, path: str | os.PathLike[str], base: str | None = None) -> ModelEntry:
        """Copy a change-head file into the registry (not activated). ``ValueError`` naming the file when it is not
        a change head. Adding the same file twice is harmless: the id comes from its bytes."""
        from dedup_app.core.change.detect import load_change_head

        head = load_change_head(path)
        content = Path(path).read_bytes()
        mid = change_head_id(head.name, content)
        file = self.root / f"{mid}.pt"
        if not (file.is_file() and file.read_bytes() == content):
            fd, tmp = tempfile.mkstemp(prefix=file.name + ".", suffix=".tmp", dir=self.root)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(content)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, file)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return self._register(self._load(), mid, file, head.name, _listed(head.metrics), base)

    def add(self, checkpoint: ChangeHeadCheckpoint | UNetHeadCheckpoint, base: str | None = None) -> ModelEntry:
        """Store a change head held in memory (a training result; not activated). Returns its entry."""
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".adding-") as folder:
            tmp = Path(folder) / "head.pt"
            checkpoint.save(tmp)
            return self.add_file(tmp, base)


def _listed(metrics: dict[str, Any]) -> dict[str, Any]:
    """The part of a change head's metrics the index keeps."""
    return {k: metrics[k] for k in _LISTED_METRICS if k in metrics}


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
