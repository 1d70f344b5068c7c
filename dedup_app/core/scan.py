"""The scan: walk folders, find byte-identical files, embed the rest once each, with a cache that makes
rescans cheap. A generator, so the CLI and the GUI both drive it and either can cancel it between batches.

Order of work, cheapest first:

1. walk the folders (``files.walk_images``);
2. look every file up in the cache by path, size and mtime;
3. hash files that share their byte size with another file (only those can be byte-identical);
4. decode and embed what the cache does not have, one copy per content hash, decoding in threads while the
   model runs; every batch is committed to the cache before the next progress report;
5. forget cached files that vanished from the scanned folders.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dedup_app.core.cache import EmbeddingCache
from dedup_app.core.files import FileEntry, FileError, describe_os_error, walk_images
from dedup_app.core.imageio import DEFAULT_MAX_PIXELS, ImageInfo, ImageLoadError, hash_file, load_for_embedding
from dedup_app.core.parallel import bounded_map
from dedup_app.core.progress import CancelToken, Progress

if TYPE_CHECKING:  # torch stays out of the import of this module
    from dedup_app.core.embedder import Embedder

log = logging.getLogger(__name__)

#: Rows moved per step when the rows of files that could not be read are taken out of the scan's matrix.
_COMPACT_BLOCK = 65_536


@dataclass(frozen=True)
class ScanOptions:
    """Tunables of a scan; the defaults suit a 2-core laptop and a GPU alike."""

    batch_size: int = 32
    decode_workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    follow_symlinks: bool = True
    #: Reads and embeds the files elsewhere (a Ray cluster: :func:`dedup_app.core.cluster.embed_on_cluster`):
    #: given the files to read, yields ``(entry, (vector, content_hash, info))`` or ``(entry, exception)`` for each
    remote: Callable[[Sequence[FileEntry]], Iterable[tuple[FileEntry, Any]]] | None = None


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """A readable image in the scan result."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    info: ImageInfo

    @property
    def pixels(self) -> int:
        """Full-resolution pixel count (width x height)."""
        return self.info.width * self.info.height


@dataclass
class ScanStats:
    """What the scan had to do. Each of the ``files`` found counts once: ``decoded`` (read and embedded), ``cached``
    (taken from the cache), ``copies`` (byte-identical to another file) or ``failed`` (could not be read, now or in
    an earlier scan). ``hashed`` and ``purged`` (cache rows of vanished files dropped) count work besides."""

    files: int = 0
    decoded: int = 0
    hashed: int = 0
    cached: int = 0
    copies: int = 0
    purged: int = 0
    failed: int = 0
    #: of ``decoded``: how many were read and embedded by a cluster's workers (``ScanOptions.remote``)
    remote: int = 0


@dataclass
class ScanResult:
    """Readable images with their embeddings (row ``k`` belongs to ``images[k]``), and the files that failed."""

    roots: list[str]
    model_id: str
    threshold: float
    images: list[ImageRecord]
    embeddings: np.ndarray
    errors: list[FileError]
    stats: ScanStats = field(default_factory=ScanStats)


def scan(
    roots: Sequence[str | os.PathLike[str]],
    embedder: Embedder,
    cache: EmbeddingCache,
    options: ScanOptions | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, ScanResult]:
    """Scan ``roots`` (folders or files); yields :class:`Progress`, returns a :class:`ScanResult`.

    Raises :class:`~dedup_app.core.progress.Cancelled` at the next batch boundary once ``cancel`` is set; what
    was embedded until then is already committed to the cache.
    """
    options = options or ScanOptions()
    cancel = cancel or CancelToken()
    abs_roots = [os.path.abspath(os.fspath(r)) for r in roots]
    stats = ScanStats()
    errors: list[FileError] = []

    # 1. walk
    entries: list[FileEntry] = []
    for item in walk_images(abs_roots, follow_symlinks=options.follow_symlinks):
        if isinstance(item, FileError):
            errors.append(item)
            continue
        entries.append(item)
        if len(entries) % 500 == 0:
            cancel.raise_if_cancelled()
            yield Progress("Finding files", len(entries), None, f"{len(entries):,} images found")
    stats.files = len(entries)
    yield Progress("Finding files", len(entries), len(entries), f"{len(entries):,} images found")

    # 2. cache
    # every file's vector goes to its row of one matrix (a million stored blobs and arrays over them were 0.6 GB)
    matrix = np.empty((len(entries), embedder.dim), np.float16)
    row_of = {e.path: k for k, e in enumerate(entries)}
    cached = cache.lookup(entries, embedder.model_id, dim=embedder.dim, into=matrix)
    hashes = {path: c.content_hash for path, c in cached.items() if c.content_hash}

    # 3. hash files whose size is shared: the only candidates for byte-identical copies
    by_size: dict[int, list[FileEntry]] = defaultdict(list)
    for e in entries:
        by_size[e.size].append(e)
    to_hash = [
        e
        for same in by_size.values()
        if len(same) > 1
        for e in same
        if e.path not in hashes and not (e.path in cached and cached[e.path].error)
    ]
    failed: set[str] = set()
    hashed: list[FileEntry] = []
    for k, e in enumerate(to_hash, 1):
        try:
            hashes[e.path] = hash_file(e.path)
            hashed.append(e)
        except OSError as exc:
            errors.append(FileError(e.path, f"cannot read file: {describe_os_error(exc)}"))
            failed.add(e.path)
            stats.failed += 1
        stats.hashed += 1
        if k % 64 == 0 or k == len(to_hash):
            # written after the files were read, in one short transaction: no write lock is held while hashing,
            # so another process (or the window) sharing the cache never waits for the disk
            for entry in hashed:
                cache.put_file(entry, hashes[entry.path])
            cache.commit()
            hashed.clear()
            cancel.raise_if_cancelled()
            yield Progress("Finding exact copies", k, len(to_hash))

    # 4. what is known, what is a copy of known content, what must be decoded
    records: dict[str, ImageRecord] = {}
    known: dict[str, tuple[ImageInfo, np.ndarray]] = {}  # content hash -> facts and vector
    for e in entries:
        c = cached.get(e.path)
        if c is not None and c.info is not None and c.vector is not None and c.content_hash:
            known.setdefault(c.content_hash, (c.info, c.vector))

    def add(entry: FileEntry, digest: str, info: ImageInfo, vector: np.ndarray, in_its_row: bool = False) -> None:
        records[entry.path] = ImageRecord(entry.path, entry.size, entry.mtime_ns, digest, info)
        if not in_its_row:  # (the lookup put a cached file's vector in its row; a copy's is another file's row)
            matrix[row_of[entry.path]] = vector

    to_embed: list[FileEntry] = []
    waiting: dict[str, list[FileEntry]] = defaultdict(list)  # content hash -> copies of a file being embedded
    for e in entries:
        if e.path in failed:
            continue
        c = cached.get(e.path)
        if c is not None and c.error:
            errors.append(FileError(e.path, c.error))
            stats.failed += 1
            continue
        digest = hashes.get(e.path)
        if c is not None and c.info is not None and c.vector is not None and digest:
            add(e, digest, c.info, c.vector, in_its_row=True)
            stats.cached += 1
        elif digest is not None and digest in known:
            info, vector = known[digest]
            cache.put_file(e, digest, info)
            cache.put_embedding(e.path, embedder.model_id, vector)
            add(e, digest, info, vector)
            stats.copies += 1
        elif digest is not None and digest in waiting:
            waiting[digest].append(e)
        else:
            to_embed.append(e)
            if digest is not None:
                waiting[digest] = []
    cache.commit()

    # 5. decode in threads, embed in batches, commit each batch
    total = len(to_embed)
    done = 0
    batch: list[tuple[FileEntry, np.ndarray, str, ImageInfo]] = []
    if total:
        yield Progress("Reading images", 0, total)

    def load(entry: FileEntry) -> tuple[np.ndarray, str, ImageInfo]:
        loaded = load_for_embedding(entry.path, embedder.input_size, options.max_pixels)
        return loaded.pixels, loaded.content_hash, loaded.info

    def keep(entry: FileEntry, digest: str, info: ImageInfo, half: np.ndarray) -> None:
        cache.put_file(entry, digest, info)
        cache.put_embedding(entry.path, embedder.model_id, half)
        add(entry, digest, info, half)
        for copy in waiting.pop(digest, []):
            cache.put_file(copy, digest, info)
            cache.put_embedding(copy.path, embedder.model_id, half)
            add(copy, digest, info, half)
            stats.copies += 1

    def flush() -> None:
        vecs = embedder.embed([b[1] for b in batch])
        for (entry, _, digest, info), vector in zip(batch, vecs, strict=True):
            keep(entry, digest, info, vector.astype(np.float16))
        cache.commit()
        batch.clear()

    def _embed_all(
        decoded: Iterable[tuple[FileEntry, tuple[np.ndarray, str, ImageInfo] | BaseException]],
    ) -> Generator[Progress, None, None]:
        nonlocal done
        for entry, outcome in decoded:
            done += 1
            if isinstance(outcome, BaseException):
                reason = str(outcome) if isinstance(outcome, ImageLoadError) else f"unexpected error: {outcome!r}"
                if not isinstance(outcome, ImageLoadError):
                    log.exception("decoding %s failed", entry.path, exc_info=outcome)
                errors.append(FileError(entry.path, reason))
                stats.failed += 1
                if not getattr(outcome, "transient", True):
                    cache.put_file(entry, hashes.get(entry.path), error=reason)
                for copy in waiting.pop(hashes.get(entry.path, ""), []):
                    errors.append(FileError(copy.path, reason))
                    stats.failed += 1
            elif options.remote is not None:  # read and embedded already: keep it as a batch would
                stats.decoded += 1
                stats.remote += 1
                vector, digest, info = outcome
                keep(entry, digest, info, vector.astype(np.float16))
                if done % options.batch_size == 0:
                    cache.commit()
                    yield Progress("Reading images", done, total)
            else:
                stats.decoded += 1
                pixels, digest, info = outcome
                batch.append((entry, pixels, digest, info))
            if len(batch) >= options.batch_size or (cancel.cancelled and batch):
                flush()
                yield Progress("Reading images", done, total)
            cancel.raise_if_cancelled()

    in_flight = max(2 * options.batch_size, 4 * options.decode_workers)
    if options.remote is not None and to_embed:
        decoded: Any = (item for item in options.remote(to_embed))  # a generator: closed when the scan stops
    else:
        decoded = bounded_map(load, to_embed, options.decode_workers, in_flight)
    with closing(decoded):
        yield from _embed_all(decoded)
    if batch:
        flush()
    cache.commit()
    if total:
        yield Progress("Reading images", done, total)

    # 6. forget files that vanished from the scanned folders
    stats.purged = cache.purge_missing([r for r in abs_roots if os.path.isdir(r)], {e.path for e in entries})

    kept = [k for k, e in enumerate(entries) if e.path in records]
    images = [records[entries[k].path] for k in kept]
    row_of.clear()
    if len(kept) < len(entries):  # files that could not be read: their rows go, in place (no second matrix)
        for start in range(0, len(kept), _COMPACT_BLOCK):
            part = kept[start : start + _COMPACT_BLOCK]
            matrix[start : start + len(part)] = matrix[part]  # rows only move up: part[j] >= start + j
        matrix = matrix[: len(kept)]
    errors.sort(key=lambda fe: fe.path)
    return ScanResult(abs_roots, embedder.model_id, embedder.threshold, images, matrix, errors, stats)
