"""Scan reports as JSON and CSV.

The JSON shape is a contract (scripts depend on it); keys may be added, never renamed or removed::

    {"threshold": float, "model": str, "images": int,
     "errors": [{"path": str, "error": str}],
     "groups": [{"kind": "exact" | "near", "keep": str, "review": bool,
                 "files": [{"path": str, "similarity": float, "width": int, "height": int, "bytes": int,
                            "pages": int, "review": bool}]}],
     "stats": {"files": int, "decoded": int, "from_cache": int, "copies": int, "failed": int, "hashed": int}}

In ``stats`` each file found counts once in ``decoded``, ``from_cache``, ``copies`` or ``failed`` (they add up to
``files``). ``errors`` lists the failed files and also the paths that could not be opened at all (a missing
folder, a broken link).

``review`` is true for a file of a near group less similar than :data:`~dedup_app.core.marking.SURE_SIMILARITY`
to the group's first file (similar, perhaps not the same picture: the window leaves it unticked), and for a group
holding such a file; ``pages`` above 1 means only the first page was compared.

Paths with bytes that are not valid UTF-8 survive as ``\\udcXX`` escapes in JSON (``ensure_ascii``) and as their
original bytes in CSV.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from dedup_app import __version__
from dedup_app.core.duplicates import DuplicateGroup
from dedup_app.core.marking import review_paths
from dedup_app.core.scan import ScanResult


def _group_dict(g: DuplicateGroup) -> dict[str, Any]:
    review = review_paths(g)  # similar but perhaps not the same picture: the window leaves these unticked
    return {
        "kind": g.kind,
        "keep": g.keep.path,
        "reclaimable_bytes": g.reclaimable_bytes,
        "review": bool(review),
        "files": [
            {
                "path": m.image.path,
                "similarity": round(m.similarity, 4),
                "width": m.image.info.width,
                "height": m.image.info.height,
                "bytes": m.image.size,
                "content_hash": m.image.content_hash,
                "modified": m.image.mtime_ns / 1e9,
                "pages": m.image.info.frames,
                "review": m.image.path in review,
            }
            for m in g.members
        ],
    }


def report_dict(result: ScanResult, groups: Sequence[DuplicateGroup], threshold: float) -> dict[str, Any]:
    """The JSON report as plain data."""
    return {
        "threshold": round(float(threshold), 4),
        "model": result.model_id,
        "images": len(result.images),
        "errors": [{"path": e.path, "error": e.error} for e in result.errors],
        "groups": [_group_dict(g) for g in groups],
        "roots": result.roots,
        "version": __version__,
        "stats": {
            "files": result.stats.files,
            "decoded": result.stats.decoded,
            "from_cache": result.stats.cached,
            "copies": result.stats.copies,
            "hashed": result.stats.hashed,
            "failed": result.stats.failed,
        },
    }


def _open_out(path: str, newline: str | None = None) -> TextIO:
    if path == "-":
        return sys.stdout
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return open(path, "w", encoding="utf-8", errors="surrogateescape", newline=newline)


def write_json(path: str, result: ScanResult, groups: Sequence[DuplicateGroup], threshold: float) -> None:
    """Write the JSON report to ``path`` (``-`` for stdout)."""
    out = _open_out(path)
    try:
        json.dump(report_dict(result, groups, threshold), out, indent=2)
        out.write("\n")
    finally:
        if out is not sys.stdout:
            out.close()


CSV_COLUMNS = ("group", "kind", "keep", "path", "similarity", "width", "height", "bytes", "content_hash")


def write_csv(path: str, groups: Sequence[DuplicateGroup]) -> None:
    """One row per file in a group: group number, kind, whether it is the keep suggestion, and its facts."""
    out = _open_out(path, newline="")
    try:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for n, g in enumerate(groups, 1):
            for k, m in enumerate(g.members):
                writer.writerow(
                    [
                        n,
                        g.kind,
                        "yes" if k == 0 else "no",
                        m.image.path,
                        f"{m.similarity:.4f}",
                        m.image.info.width,
                        m.image.info.height,
                        m.image.size,
                        m.image.content_hash,
                    ]
                )
    finally:
        if out is not sys.stdout:
            out.close()
