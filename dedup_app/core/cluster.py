"""Embedding on a Ray cluster: when one machine is not enough, the files a scan must read are decoded and embedded
by Ray workers, and the vectors stream back to the scan, which writes them to its cache and groups as always.

Embedding is the cost of a scan and it is embarrassingly parallel, so this is all Ray does: a Ray Data dataset of
the file paths, ``map_batches`` with a callable class that loads the model once per worker (the same model file,
the same loader and the same embedder as a local scan: ONNX Runtime on CPU workers, torch on CUDA when a worker has
a GPU) and returns each file's vector, facts or error. The driver keeps the walk, the cache (SQLite), the search
and the grouping; no scheduler of our own. The workers must see the files at the same paths (one machine, NFS, a
shared mount).

``--cluster local`` starts a Ray runtime on this machine; ``--cluster ray://HOST:PORT`` (or any address
``ray.init`` takes) joins a running cluster. Ray is the optional extra ``cluster``.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from dedup_app.core.files import FileEntry
from dedup_app.core.imageio import ImageLoadError

#: Files per ``map_batches`` call on a worker.
CLUSTER_BATCH = 16


class ClusterError(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached; the message says which and what to do."""


class _Embed:
    """One Ray worker's model: loaded once, then each batch of paths is read and embedded as a local scan does."""

    def __init__(self, model_file: str, device: str, max_pixels: int) -> None:
        from dedup_app.core.onnx_encoder import open_embedder

        self.embedder = open_embedder(model_file, device)
        self.max_pixels = max_pixels

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from dedup_app.core.imageio import load_for_embedding

        paths = [str(p) for p in batch["path"]]
        pixels: list[np.ndarray | None] = []
        out: dict[str, list[Any]] = {"path": paths, "digest": [], "info": [], "error": [], "transient": []}
        for path in paths:
            try:
                loaded = load_for_embedding(path, self.embedder.input_size, self.max_pixels)
            except Exception as exc:  # noqa: BLE001 (a worker reports every failure as that file's, never dies)
                known = isinstance(exc, ImageLoadError)
                pixels.append(None)
                out["digest"].append("")
                out["info"].append(b"")
                out["error"].append(str(exc) if known else f"unexpected error: {exc!r}")
                out["transient"].append(getattr(exc, "transient", True))
                continue
            pixels.append(loaded.pixels)
            out["digest"].append(loaded.content_hash)
            out["info"].append(pickle.dumps(loaded.info))  # all of it, the keep evidence too: our own workers
            out["error"].append("")
            out["transient"].append(False)
        good = [k for k, px in enumerate(pixels) if px is not None]
        vectors = np.zeros((len(paths), self.embedder.dim), np.float32)
        if good:
            vectors[good] = self.embedder.embed([pixels[k] for k in good])
        return {**out, "vector": vectors}


def connect(address: str) -> None:
    """Start (``local``) or join (an address) a Ray runtime, unless one is already up in this process."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster needs Ray: pip install 'dedup-app[cluster]'") from None
    if ray.is_initialized():
        return
    try:
        if address == "local":
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)  # fmt: skip
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # ray raises ConnectionError, RuntimeError, ValueError for a bad address
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {exc}") from None


def embed_on_cluster(address: str, model_file: str, device: str, max_pixels: int) -> Any:
    """The scan's hook (:attr:`~dedup_app.core.scan.ScanOptions.remote`): given the files to read, yields
    ``(entry, (vector, content_hash, info))`` or ``(entry, exception)`` per file as the workers finish them."""
    connect(address)

    def run(entries: Sequence[FileEntry]) -> Iterator[tuple[FileEntry, Any]]:
        import ray

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the scan shows its own progress, and logs its own lines
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("ray"):
                logging.getLogger(name).setLevel(logging.WARNING)
        by_path = {e.path: e for e in entries}
        workers = max(1, int(ray.available_resources().get("CPU", 1)))
        gpus = ray.available_resources().get("GPU", 0)
        dataset = ray.data.from_items([{"path": e.path} for e in entries]).map_batches(
            _Embed,
            fn_constructor_kwargs={"model_file": model_file, "device": device, "max_pixels": max_pixels},
            batch_size=CLUSTER_BATCH,
            compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, -(-len(entries) // CLUSTER_BATCH)))),
            num_gpus=1 if gpus >= 1 else 0,
            batch_format="numpy",
        )
        for row in dataset.iter_rows():
            entry = by_path[str(row["path"])]
            if row["error"]:
                yield entry, ImageLoadError(str(row["error"]), transient=bool(row["transient"]))
                continue
            info = pickle.loads(row["info"])
            yield entry, (np.asarray(row["vector"], np.float32), str(row["digest"]), info)

    return run
