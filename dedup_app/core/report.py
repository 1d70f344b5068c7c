"""Scan reports as JSON and CSV.

The JSON shape is a contract (scripts depend on it); keys may be added, never renamed or removed::

    {"threshold": float, "model": str, "images": int, "rule": str,
     "errors": [{"path": str, "error": str}],
     "groups": [{"kind": "exact" | "near", "keep": str, "review": bool,
                 "files": [{"path": str, "similarity": float, "width": int, "height": int, "bytes": int,
                            "pages": int, "marked": bool, "review": bool}]}],
     "stats": {"files": int, "decoded": int, "from_cache": int, "copies": int, "failed": int, "hashed": int,
               "read_on_cluster": int},
     "kept_apart": int | null}

``kept_apart`` counts the look-alike pairs at the threshold that the geometric check kept out of the groups (two
photos of one subject, not copies; null when the check did not run).

In ``stats`` each file found counts once in ``decoded``, ``from_cache``, ``copies`` or ``failed`` (they add up to
``files``). ``errors`` lists the failed files and also the paths that could not be opened at all (a missing
folder, a broken link).

``keep``, ``marked`` and ``review`` say what happens to each file: the file kept, the files ticked for removal, and
the files left for the user to decide (similar but less than :data:`~dedup_app.core.marking.SURE_SIMILARITY` to
the kept file: perhaps another picture of one subject). The command line reports what ``rule`` suggests; the
window exports exactly what it shows (its rule, the files kept with K, the user's ticks), so a script can act on
``marked`` and remove exactly what the user saw ticked. ``pages`` above 1 means only the first page was compared.

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
from dedup_app.core.marking import DEFAULT_RULE, SURE_SIMILARITY, Marks, mark_groups
from dedup_app.core.scan import ScanResult


def suggested(groups: Sequence[DuplicateGroup], rule: str = DEFAULT_RULE) -> list[Marks]:
    """What ``rule`` does to each group by itself: the kept file, the files ticked, the files left for review. The
    command line reports with the default rule, the window's default too."""
    return mark_groups(groups, rule, (), None, SURE_SIMILARITY)


def _group_dict(g: DuplicateGroup, decision: Marks) -> dict[str, Any]:
    return {
        "kind": g.kind,
        "keep": decision.keep,
        "reclaimable_bytes": g.reclaimable_bytes,
        "marked_bytes": sum(m.image.size for m in g.members if m.image.path in decision.marked),
        "review": bool(decision.unsure),
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
                "marked": m.image.path in decision.marked,
                "review": m.image.path in decision.unsure,
            }
            for m in g.members
        ],
    }


def report_dict(
    result: ScanResult,
    groups: Sequence[DuplicateGroup],
    threshold: float,
    decisions: Sequence[Marks] | None = None,
    rule: str = DEFAULT_RULE,
    kept_apart: int | None = None,
) -> dict[str, Any]:
    """The JSON report as plain data. ``decisions`` (one per group) default to what ``rule`` suggests;
    ``kept_apart``: look-alike pairs at the threshold the geometric check kept out of the groups (None: it did not
    run)."""
    decisions = suggested(groups, rule) if decisions is None else decisions
    return {
        "threshold": round(float(threshold), 4),
        "model": result.model_id,
        "images": len(result.images),
        "rule": rule,
        "errors": [{"path": e.path, "error": e.error} for e in result.errors],
        "groups": [_group_dict(g, d) for g, d in zip(groups, decisions, strict=True)],
        "roots": result.roots,
        "version": __version__,
        "kept_apart": kept_apart,
        "stats": {
            "files": result.stats.files,
            "decoded": result.stats.decoded,
            "from_cache": result.stats.cached,
            "copies": result.stats.copies,
            "hashed": result.stats.hashed,
            "failed": result.stats.failed,
            "read_on_cluster": result.stats.remote,
        },
    }


def _open_out(path: str, newline: str | None = None) -> TextIO:
    if path == "-":
        return sys.stdout
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return open(path, "w", encoding="utf-8", errors="surrogateescape", newline=newline)


def write_json(
    path: str,
    result: ScanResult,
    groups: Sequence[DuplicateGroup],
    threshold: float,
    decisions: Sequence[Marks] | None = None,
    rule: str = DEFAULT_RULE,
    kept_apart: int | None = None,
) -> None:
    """Write the JSON report to ``path`` (``-`` for stdout)."""
    out = _open_out(path)
    try:
        json.dump(report_dict(result, groups, threshold, decisions, rule, kept_apart), out, indent=2)
        out.write("\n")
    finally:
        if out is not sys.stdout:
            out.close()


CSV_COLUMNS = ("group", "kind", "keep", "marked", "review", "path", "similarity", "width", "height", "bytes",
               "content_hash")  # fmt: skip


def write_csv(
    path: str, groups: Sequence[DuplicateGroup], decisions: Sequence[Marks] | None = None, rule: str = DEFAULT_RULE
) -> None:
    """One row per file in a group: group number, kind, whether it is kept, ticked for removal or left for review
    (``decisions``, default: what ``rule`` suggests), and its facts."""
    decisions = suggested(groups, rule) if decisions is None else decisions
    out = _open_out(path, newline="")
    try:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for n, (g, d) in enumerate(zip(groups, decisions, strict=True), 1):
            for m in g.members:
                path_ = m.image.path
                writer.writerow(
                    [
                        n,
                        g.kind,
                        _yes(path_ == d.keep),
                        _yes(path_ in d.marked),
                        _yes(path_ in d.unsure),
                        path_,
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


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
