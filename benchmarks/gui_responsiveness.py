"""How responsive the window stays while it scans: the longest stall of the UI thread.

    python benchmarks/gui_responsiveness.py [--images 2000]

A timer on the UI thread asks to tick every 10 ms; the gap between two ticks minus 10 ms is how long the UI thread
could not run (a stall). The window scans a folder of ``--images`` photos (real photos from ../shared/data resized
and cropped differently, so they are distinct images with a few planted copies), offscreen, from an empty cache,
then regroups with the similarity slider. Reported: worst stall, 99th percentile, ticks over 100 ms, and, as the
peer in the same run, the stall a window would have if it ran the same scan on the UI thread (its duration).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from benchmarks.neardup import RESULTS, machine, write_doc  # noqa: E402


def make_images(data: Path, folder: Path, count: int) -> None:
    from PIL import Image

    from model_training.neardup_set import list_photos

    photos = list_photos(data)
    rng = np.random.default_rng(1)
    for k in range(count):
        with Image.open(photos[k % len(photos)]) as im:
            img = im.convert("RGB")
        if k >= len(photos) and k % 10 != 0:  # distinct views of the photos; every 10th is a plain copy
            w, h = img.size
            s = rng.uniform(0.35, 0.6)
            cw, ch = int(w * s), int(h * s)
            x, y = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
            img = img.crop((x, y, x + cw, y + ch))
        img.thumbnail((800, 800))
        img.save(folder / f"img_{k:05d}.jpg", quality=88)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)

    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from dedup_app.core.labels import LabelStore
    from dedup_app.ui import settings as S
    from dedup_app.ui.main_window import AppContext, MainWindow

    folder = Path(tempfile.gettempdir()) / "dedup-app-bench" / f"gui-{args.images}"
    if not (folder / "complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        print(f"writing {args.images} images to {folder} ...", file=sys.stderr)
        make_images(args.data, folder, args.images)
        (folder / "complete").touch()

    app = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="gui-bench-"))
    ctx = AppContext(
        S.Preferences(QSettings(str(tmp / "p.ini"), QSettings.Format.IniFormat)),
        QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat),
        LabelStore(":memory:"),
        str(tmp / "cache.sqlite3"),
    )
    window = MainWindow(ctx)
    window.resize(1600, 900)
    window.show()

    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]

    long_stalls: list[tuple[float, float]] = []  # (seconds since start, stall ms) of stalls over 50 ms

    def tick() -> None:
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e6 - 10.0)
        if gaps[-1] > 50 and "start" in phases:
            long_stalls.append((round(time.perf_counter() - phases["start"], 2), round(gaps[-1])))
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    phases: dict[str, float] = {}

    regroups: list[float] = []

    moved_at: list[float] = []

    def move_slider(value: int) -> None:  # one user gesture per event, as a person moves the slider
        moved_at.append(time.perf_counter())
        window.slider.setValue(value)

    def shown() -> None:  # groups on screen: the regroup latency the user sees
        if moved_at:
            regroups.append((time.perf_counter() - moved_at.pop()) * 1000)

    window.groups_changed.connect(shown)

    def after_scan() -> None:
        phases["scan_s"] = time.perf_counter() - phases["start"]
        for k, value in enumerate((950, 750, 900, 800)):
            QTimer.singleShot(300 * (k + 1), lambda v=value: move_slider(v))
        QTimer.singleShot(3000, app.quit)  # let thumbnails load while still measuring

    window.scan_finished.connect(after_scan)
    window.job_finished.connect(lambda name: app.quit() if name == "scan" and window.finder is None else None)

    def start_scan() -> None:
        phases["model_worst_stall_ms"] = max(gaps[1:], default=0.0)
        gaps.clear()
        phases["start"] = time.perf_counter()
        last[0] = clock.nsecsElapsed()
        window.add_sources([str(folder)])

    def start() -> None:  # as the app does: load the model right after the window opens
        last[0] = clock.nsecsElapsed()
        timer.start()
        window.job_finished.connect(lambda name: QTimer.singleShot(500, start_scan) if name == "model" else None)
        window.preload_model()

    QTimer.singleShot(200, start)
    app.exec()
    timer.stop()
    window.shutdown()
    stalls = np.maximum(np.array(gaps[1:]), 0.0)
    report = {
        "images": args.images,
        "groups": len(window.model.groups),
        "scan_seconds": phases.get("scan_s"),
        "regroup_ms": float(np.mean(regroups)) if regroups else None,
        "regroups_ms": [round(r) for r in regroups],
        "ticks": int(len(stalls)),
        "worst_stall_ms": float(stalls.max()),
        "p99_stall_ms": float(np.percentile(stalls, 99)),
        "ticks_over_100ms": int((stalls > 100).sum()),
        "peer_scan_on_ui_thread_stall_ms": (phases.get("scan_s") or 0) * 1000,
        "model_loading_worst_stall_ms": phases.get("model_worst_stall_ms"),
        "stalls_over_50ms_at_s": long_stalls,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
    }
    print(json.dumps(report, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gui-responsiveness.json").write_text(json.dumps(report, indent=1))
    if not args.no_doc:
        write_doc(
            {
                "gui-responsiveness": (
                    f"Measured {report['date']} on {report['machine']}, offscreen: a cold scan of "
                    f"{report['images']:,} photos ({report['scan_seconds']:.0f} s, {report['groups']} groups), then "
                    "four slider moves.\n\n"
                    "| measure | result |\n|---|---|\n"
                    f"| worst UI-thread stall during scan and regrouping | {report['worst_stall_ms']:.0f} ms |\n"
                    f"| 99th percentile stall | {report['p99_stall_ms']:.1f} ms |\n"
                    f"| ticks stalled over 100 ms | {report['ticks_over_100ms']} of {report['ticks']:,} |\n"
                    "| slider move to regrouped view (after the slider rests 150 ms; grouping off the UI thread) | "
                    f"{report['regroup_ms']:.0f} ms |\n"
                    f"| once, at start: loading torch and the model on the worker | worst stall "
                    f"{report['model_loading_worst_stall_ms']:.0f} ms |\n"
                    f"| peer: the same scan run on the UI thread | one {report['peer_scan_on_ui_thread_stall_ms']:,.0f}"
                    " ms stall |"
                )
            }
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
