"""How long a slider regroup on a pool thread keeps Python's interpreter lock from the window, and where.

The window needs the interpreter lock for every call into the groups model; while a pool thread regroups a million
files, the lock must change hands often. This runs the window's regroup (``grouping`` and ``GroupsModel.prepare``
as ``MainWindow.regroup`` does on its pool thread, freeing the groups it replaces first) on a thread while the main
thread sleeps 1 ms at a time; each time it oversleeps by more than ``--gap`` ms, the pool thread's stack at that
moment (where the long hold ended) is recorded. This is how the causes of the window's slider stalls were found
(docs/benchmarks.md, "The window at scale"); ``benchmarks/scale.py --window`` measures the window itself.

    python benchmarks/lock_holds.py --n 1000000 --thresholds 0.85,0.90,0.82
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scale import RESULTS, synthetic_scan  # noqa: E402


def holds(work, gap_ms: float) -> tuple[float, list[tuple[float, str]]]:  # type: ignore[no-untyped-def]
    """Run ``work`` on a thread; its duration, and (oversleep in ms, the thread's stack) for each hold over
    ``gap_ms``, longest first."""
    done = threading.Event()
    took: list[float] = []

    def run() -> None:
        started = time.perf_counter()
        work()
        took.append(time.perf_counter() - started)
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    found = []
    while not done.is_set():
        started = time.perf_counter()
        time.sleep(0.001)
        late = (time.perf_counter() - started) * 1000
        if late > gap_ms:
            frame, stack = sys._current_frames().get(thread.ident or 0), []
            while frame is not None and len(stack) < 4:
                code = frame.f_code
                stack.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno} {code.co_name}")
                frame = frame.f_back
            found.append((round(late, 1), " < ".join(stack)))
    thread.join()
    return took[0], sorted(found, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--thresholds", default="0.85,0.90,0.82")
    parser.add_argument("--gap", type=float, default=15.0, help="report holds longer than this (ms)")
    args = parser.parse_args(argv)
    from PySide6.QtCore import Qt

    from dedup_app.controllers.marks import MarkState
    from dedup_app.controllers.review import grouping
    from dedup_app.core.duplicates import DuplicateFinder
    from dedup_app.core.progress import drive
    from dedup_app.ui.models import COL_SIZE, GroupsModel, PreparedGroups, release_all

    finder = DuplicateFinder(synthetic_scan(args.n))
    drive(finder.search(0.8))
    gc.collect()
    gc.freeze()  # as the window does with a large result (dedup_app/ui/gc.py)
    gc.disable()  # and no collection while a regroup runs
    choices, sort = MarkState().choices(), (COL_SIZE, Qt.SortOrder.DescendingOrder)
    shown: list[PreparedGroups] = []  # the groups on screen, freed when the next regroup starts (as the window does)
    runs = []
    for threshold in (float(t) for t in args.thresholds.split(",")):

        def work(threshold: float = threshold) -> None:
            release_all(shown)
            result = grouping(finder, threshold, "best", [])
            shown.append(
                GroupsModel.prepare(result.groups, result.rule, result.references, result.marks, choices, sort)
            )

        seconds, found = holds(work, args.gap)
        runs.append({"threshold": threshold, "seconds": seconds, "longest_hold_ms": found[0][0] if found else 0.0,
                     "holds_over_gap": len(found), "longest": found[:10]})  # fmt: skip
        print(f"{threshold:.2f}: {seconds:.1f} s, longest hold {runs[-1]['longest_hold_ms']} ms", flush=True)
        for late, stack in found[:5]:
            print(f"    {late:7.1f} ms  {stack}")
    RESULTS.mkdir(exist_ok=True)
    report = {"files": args.n, "gap_ms": args.gap, "runs": runs, "date": time.strftime("%Y-%m-%d")}
    (RESULTS / f"lock-holds-{args.n}.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
