"""The model service: the only place the active model, its embedder and its threshold live; and the change-head
service, the same for the active change head (the Changes tab's default).

Two rules keep a model switch from pulling the rug from under a running job:

- A switch asked for while a job runs (a scan writing embeddings of the current model, a training, the start-up
  load) is *deferred*: it is carried out when the job is over, and the caller is told so.
- Loading is tied to a generation number: a load that started before a switch never installs its (old) model.

The threshold shown and used for a model is the one the user chose for *that* model (by model id), else the model's
own calibrated threshold, so activating a trained model brings its threshold with it.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dedup_app.core.progress import CancelToken, Job, Progress

if TYPE_CHECKING:  # torch is imported on the worker thread, never when the window starts
    from dedup_app.core.embedder import Embedder
    from dedup_app.core.registry import ChangeHeadRegistry, ModelRegistry

log = logging.getLogger(__name__)


class ThresholdStore(Protocol):
    """Where the thresholds the user chose are kept, by model id (the window keeps them in its preferences)."""

    def get(self, model_id: str) -> float | None: ...

    def set(self, model_id: str, value: float) -> None: ...


class MemoryThresholds:
    """A :class:`ThresholdStore` in a dict (tests, the command line)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def get(self, model_id: str) -> float | None:
        return self.values.get(model_id)

    def set(self, model_id: str, value: float) -> None:
        self.values[model_id] = value


def load_embedder(model_path: str, device: str) -> Embedder:
    """Build the embedder and its network (on a worker thread), then take the loaded modules out of the cycle
    collector's reach: with torch loaded, each full collection would otherwise freeze every thread, the UI
    included, for 100-200 ms."""
    from dedup_app.core.onnx_encoder import open_embedder

    embedder = open_embedder(model_path, device)  # without torch when ONNX Runtime serves a model seen before
    embedder.prepare()  # build it now (the ONNX session or the network), not during the first batch
    gc.collect()
    gc.freeze()
    return embedder


@dataclass(frozen=True)
class SwitchResult:
    """What a request to switch models did: ``deferred`` until the running job is over, or done (``old`` ->
    ``new``, with ``job`` dropping the old model's cached embeddings, to run on the worker)."""

    message: str
    deferred: bool = False
    old: str = ""
    new: str = ""
    job: Job | None = None


class SwitchesWaitForJobs:
    """Switches asked for while a job runs wait for it: the last one asked for is carried out when the job is over
    (the window's job runner says when jobs start and end). Subclasses say what activating and rolling back do."""

    def __init__(self) -> None:
        #: the running job's name, or None (the window's job runner tells the service)
        self.job: str | None = None
        self._pending: tuple[str, str | None] | None = None  # ("activate", id) or ("rollback", None)

    def job_started(self, name: str) -> None:
        """A job began on the worker: switches wait until it is over."""
        self.job = name

    def job_finished(self) -> SwitchResult | None:
        """The job is over: carry out a switch that waited for it (the caller runs its ``job``, if any)."""
        self.job = None
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        action, model_id = pending
        return self.rollback() if action == "rollback" else self.activate(model_id or "default")

    def activate(self, model_id: str) -> SwitchResult:
        """Make ``model_id`` active now, or once the running job is over."""
        raise NotImplementedError

    def rollback(self) -> SwitchResult:
        """Go back to what was active before the last switch, now or once the running job is over."""
        raise NotImplementedError


class ModelService(SwitchesWaitForJobs):
    """The active model for the window: which one, its loaded embedder, its threshold, and safe switching.

    ``registry`` makes the model registry (a new object each time: it re-reads its index); ``model_path`` is a
    model file given on the command line (then the registry's choice is not used). ``loader`` builds an embedder
    from a model file and a device (tests pass a ready one).
    """

    def __init__(
        self,
        registry: Callable[[], ModelRegistry],
        thresholds: ThresholdStore,
        model_path: str | None = None,
        device: str = "auto",
        cache_path: str | None = None,
        loader: Callable[[str, str], Embedder] = load_embedder,
    ) -> None:
        super().__init__()
        self._registry = registry
        self.thresholds = thresholds
        self.model_path = model_path
        self.device = device
        self.cache_path = cache_path
        self._loader = loader
        self._lock = threading.Lock()
        self._embedder: Embedder | None = None
        self._generation = 0
        self._unkeyed: float | None = None  # a threshold chosen before any model was loaded

    # -- the model in use ---------------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder | None:
        """The loaded embedder of the active model, or None until it is loaded (or after a switch)."""
        return self._embedder

    def checkpoint_path(self) -> str:
        """The model file to load: the one given on the command line, else the registry's active one."""
        return self.model_path or str(self._registry().active_path())

    def load(self) -> Embedder:
        """The active model's embedder, loaded on first use. Runs on the worker thread.

        A load that a switch overtook (the generation changed meanwhile) returns its embedder to the job that
        asked, but does not install it: the next job loads the newly chosen model.
        """
        with self._lock:
            if self._embedder is not None:
                return self._embedder
            generation = self._generation
        embedder = self._loader(self.checkpoint_path(), self.device)
        with self._lock:
            if generation == self._generation and self._embedder is None:
                self._embedder = embedder
            elif generation != self._generation:
                log.info("model %s loaded after a switch; not installed", embedder.model_id)
        return embedder

    def model_label(self) -> str:
        """The loaded model's id for the status bar."""
        return self._embedder.model_id if self._embedder is not None else "model loads with the first scan"

    # -- thresholds ---------------------------------------------------------------------------------------------

    def threshold_for(self, embedder: Embedder) -> float:
        """The threshold to use with ``embedder``: the user's choice for that model, else its calibrated one."""
        chosen = self.thresholds.get(embedder.model_id)
        if chosen is None:
            chosen = self._unkeyed
        return chosen if chosen is not None else float(embedder.threshold)

    def user_chose_threshold(self, model_id: str | None, value: float) -> None:
        """The user moved the threshold while looking at results of model ``model_id``: remember it for that
        model only. Before any model was loaded (``None``) it is meant for the model the next scan uses."""
        value = round(float(value), 3)
        if model_id is None:
            self._unkeyed = value
        else:
            self.thresholds.set(model_id, value)

    def results_shown(self, model_id: str) -> None:
        """A scan's results from ``model_id`` are on screen (UI thread): a threshold chosen before the model was
        known now belongs to it."""
        if self._unkeyed is not None and self.thresholds.get(model_id) is None:
            self.thresholds.set(model_id, self._unkeyed)
        self._unkeyed = None

    def use(self, embedder: Embedder) -> None:
        """Install an embedder loaded elsewhere (tests, benchmarks) as the active model's."""
        with self._lock:
            self._embedder = embedder

    # -- switching ----------------------------------------------------------------------------------------------

    def activate(self, model_id: str) -> SwitchResult:
        """Make ``model_id`` (or ``"default"``) the active model, or defer that until the running job is over.
        Raises ``ValueError`` for an unknown or unusable model (nothing changes)."""
        if self.job is not None:
            self._registry_check(model_id)
            self._pending = ("activate", model_id)
            return SwitchResult(f"Model {model_id} will be used once the current job ({self.job}) is over",
                                deferred=True)  # fmt: skip
        return self._switched(*self._registry().activate(model_id))

    def rollback(self) -> SwitchResult:
        """Go back to the model active before the last switch (deferred while a job runs)."""
        if self.job is not None:
            self._pending = ("rollback", None)
            return SwitchResult(f"The previous model will be back once the current job ({self.job}) is over",
                                deferred=True)  # fmt: skip
        return self._switched(*self._registry().rollback())

    def activate_trained(self, checkpoint: Any) -> SwitchResult:
        """Register a training result and make it the active model (deferred while a job runs)."""
        entry = self._registry().add(checkpoint, base=checkpoint.metrics.get("base_model"))
        return self.activate(entry.model_id)

    def _registry_check(self, model_id: str) -> None:
        if model_id == "default":
            return
        entries = {e.model_id: e for e in self._registry().entries()}
        if model_id not in entries:
            raise ValueError(f"no model {model_id!r} in the registry")
        if entries[model_id].problem:
            raise ValueError(f"model {model_id!r} cannot be activated: {entries[model_id].problem}")

    def _switched(self, old: str, new: str) -> SwitchResult:
        with self._lock:
            self._generation += 1
            self._embedder = None  # the next job loads the new model
        if old == new:
            return SwitchResult(f"Model {new} is active.", old=old, new=new)
        cache_path = self.cache_path

        def drop_old(cancel: CancelToken) -> Generator[Progress, None, int]:
            # on the worker: the cache may be busy with another process's scan, the window must not wait for it
            from dedup_app.core.registry import drop_embeddings_of

            yield Progress("Dropping the old model's cached embeddings", 0, None)
            return drop_embeddings_of(old, cache_path)

        return SwitchResult(f"Model {new} is active. Scan again to use it.", old=old, new=new, job=drop_old)


class ChangeHeadService(SwitchesWaitForJobs):
    """The active change head for the window (what the Changes tab uses by default), switched safely: a switch
    asked for while a job runs (a comparison reading the head, a training) waits for it, as model switches do.

    ``registry`` makes the change-head registry (a new object each time: it re-reads its index).
    """

    def __init__(self, registry: Callable[[], ChangeHeadRegistry]) -> None:
        super().__init__()
        self._registry = registry

    def label(self, head_id: str) -> str:
        """How a head is called to the user: a registered head's name, a shipped model's name, or the default."""
        if head_id == "default":
            return "the shipped default"
        entry = self._registry().entry(head_id)
        return f"'{entry.name}'" if entry is not None else f"'{head_id}'"

    def activate(self, model_id: str) -> SwitchResult:
        """Make the change head ``model_id`` (a registered id, a shipped name or ``"default"``) the default, or
        defer that until the running job is over. Raises ``ValueError`` for an unknown or unusable head."""
        registry = self._registry()
        if not registry.knows(model_id):
            raise ValueError(f"no change head {model_id!r} in the registry")
        problem = registry.problem(model_id)
        if problem:
            raise ValueError(f"change head {model_id!r} cannot be activated: {problem}")
        if self.job is not None:
            self._pending = ("activate", model_id)
            return SwitchResult(f"Change head {self.label(model_id)} will be the default once the current job "
                                f"({self.job}) is over", deferred=True)  # fmt: skip
        old, new = registry.activate(model_id)
        return SwitchResult(f"Change head {self.label(new)} is now the default on the Changes tab", old=old, new=new)

    def rollback(self) -> SwitchResult:
        """Go back to the change head active before the last switch (deferred while a job runs)."""
        if self.job is not None:
            self._pending = ("rollback", None)
            return SwitchResult(f"The previous change head will be back once the current job ({self.job}) is over",
                                deferred=True)  # fmt: skip
        old, new = self._registry().rollback()
        return SwitchResult(f"Change head {self.label(new)} is the default again on the Changes tab", old=old, new=new)

    def activate_trained(self, checkpoint: Any) -> SwitchResult:
        """Register a trained change head and make it the default (deferred while a job runs)."""
        return self.activate(self._registry().add(checkpoint).model_id)
