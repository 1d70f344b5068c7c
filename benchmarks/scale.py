"""Which FAISS index finds the copies among a million images: recall of planted copies against time, measured.

The embeddings are ``benchmarks/synthetic.py``'s clustered ones (shaped like the model's: a common direction,
subjects, clusters of similar shots, and 10 % edited copies inside the clusters at 0.80-0.995), not i.i.d. Gaussian
vectors, which flatter an inverted file. In these sets each copy is its original's nearest or second-nearest
neighbour (exact k-NN), so a copy is found when either of the two finds the other among its ``k`` best.

For each index (a FAISS factory string), on ``--n`` vectors: training and adding time, then a search from both ends
of ``--sample`` planted pairs at or above 0.8, at each number of probed lists; the search time of all ``n`` vectors
is extrapolated from the sample's (the queries are independent). The exact search is the reference and is not
run at this size (it is recall 1 by construction of the set).

    python benchmarks/scale.py --n 1000000 --index "IVF1000,PQ64x4fs" --nprobe 16,32,64 --k 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"


def planted_sample(n: int, sample: int, threshold: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The clustered vectors, and ``sample`` of their planted (copy, original) pairs at or above ``threshold``,
    with how many such pairs there are."""
    from benchmarks.synthetic import clustered

    planted: list[np.ndarray] = []
    x, _ = clustered(n, planted_pairs=planted)
    copy, original = planted
    keep = np.einsum("ij,ij->i", x[copy], x[original]) >= threshold
    copy, original = copy[keep], original[keep]
    pick = np.random.default_rng(1).choice(len(copy), min(sample, len(copy)), replace=False)
    return x, copy[pick], original[pick], int(keep.sum())


def run(n: int, specs: list[str], nprobes: list[int], k: int, sample: int) -> dict[str, object]:
    import faiss

    started = time.perf_counter()
    x, a, b, planted = planted_sample(n, sample)
    report: dict[str, object] = {"vectors": n, "planted_pairs_at_0.8": planted, "sample": len(a), "k": k,
                                 "generate_seconds": time.perf_counter() - started}  # fmt: skip
    queries = np.ascontiguousarray(np.concatenate([x[a], x[b]]))
    wanted = np.concatenate([b, a])
    runs = []
    for spec in specs:
        index = faiss.index_factory(x.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        rows = np.random.default_rng(0).choice(n, min(n, ivf.nlist * 40), replace=False)
        started = time.perf_counter()
        index.train(x[rows])
        train = time.perf_counter() - started
        started = time.perf_counter()
        index.add(x)
        add = time.perf_counter() - started
        for nprobe in nprobes:
            ivf.nprobe = nprobe
            started = time.perf_counter()
            _, ids = index.search(queries, k)
            seconds = time.perf_counter() - started
            hit = (ids == wanted[:, None]).any(1)
            one_side = float(hit[: len(a)].mean())
            both = float((hit[: len(a)] | hit[len(a) :]).mean())
            row = {"index": spec, "nprobe": nprobe, "train_seconds": train, "add_seconds": add,
                   "search_seconds_all": seconds * n / len(queries), "recall_from_the_copy": one_side,
                   "recall": both}  # fmt: skip
            print(json.dumps(row), flush=True)
            runs.append(row)
    report["runs"] = runs
    return report


def make_tree(root: Path, n: int, per_folder: int = 1000) -> None:
    """``n`` tiny PNG files (one 8 x 8 picture, 100 bytes or so) in folders of ``per_folder``; kept between runs."""
    import io

    from PIL import Image

    marker = root / f"complete-{n}"
    if marker.exists():
        return
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 150)).save(buf, "PNG")
    data = buf.getvalue()
    for k in range(n):
        folder = root / f"d{k // per_folder:04d}"
        if k % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{k:07d}.png").write_bytes(data)
    marker.touch()


class Encoder:
    """The model's interface for a warm rescan of the generated tree, which must never call ``embed``."""

    backend, device, threshold, input_size = "none", "cpu", 0.8, 160
    checkpoint = metrics = None
    model_id, dim = "bench-synthetic", 256

    def embed(self, images: object) -> np.ndarray:
        raise AssertionError("a warm rescan embedded an image")


def run_rescan(n: int, work: Path, vanish: int = 0) -> dict[str, object]:
    """A warm rescan of ``n`` unchanged tiny files: the cache is filled as a scan would have left it (the files'
    stat keys, a content hash each, and a clustered 256-d embedding each: embedding a million images here would
    take hours), then ``scan`` runs over the tree and must read no image. Reports its time, what it did, and the
    cache's size per image; with ``vanish``, also the rescan after that many files went away (purged)."""
    from benchmarks.synthetic import clustered
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.files import walk_images
    from dedup_app.core.imageio import ImageInfo
    from dedup_app.core.progress import drive
    from dedup_app.core.scan import scan

    tree = work / "tree"
    started = time.perf_counter()
    make_tree(tree, n)
    made = time.perf_counter() - started
    cache_path = work / f"cache-{n}.sqlite3"
    model_id, dim = Encoder.model_id, Encoder.dim

    started = time.perf_counter()
    if not cache_path.exists():
        x, _ = clustered(n, dim)
        info = ImageInfo(8, 8, "PNG")
        with EmbeddingCache(cache_path) as cache:
            for k, entry in enumerate(e for e in walk_images([str(tree)]) if not hasattr(e, "reason")):
                cache.put_file(entry, f"{k:032x}", info)  # type: ignore[arg-type]
                cache.put_embedding(entry.path, model_id, x[k])  # type: ignore[union-attr]
                if k % 50_000 == 0:
                    cache.commit()
            cache.commit()
        del x
    filled = time.perf_counter() - started
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:  # the scan's own peak, not the cache filling's
        f.write("5")
    before = _rss_mb()
    with EmbeddingCache(cache_path) as cache:
        started, cpu = time.perf_counter(), time.process_time()
        result = drive(scan([str(tree)], Encoder(), cache))  # type: ignore[arg-type]
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    peak, after = _peak_mb(), _rss_mb()
    stats = result.stats
    size = cache_path.stat().st_size + sum(p.stat().st_size for p in work.glob(f"cache-{n}.sqlite3-*"))
    rep = {"files": n, "make_tree_seconds": made, "fill_cache_seconds": filled, "warm_scan_seconds": seconds,
           "warm_scan_cpu_seconds": cpu_seconds, "decoded": stats.decoded, "cached": stats.cached,
           "hashed": stats.hashed, "purged": stats.purged, "cache_bytes_per_image": size / n,
           "rss_before_scan_mb": before, "scan_peak_rss_mb": peak, "rss_with_result_mb": after}  # fmt: skip
    if vanish:  # the same rescan after a tenth of the files went away: their rows are purged (on a copy)
        import shutil

        folders = sorted(tree.glob("d*"))[: max(1, vanish // 1000)]
        aside = work / "aside"
        aside.mkdir(exist_ok=True)
        copy = work / "cache-vanish.sqlite3"
        shutil.copyfile(cache_path, copy)
        for folder in folders:
            folder.rename(aside / folder.name)
        try:
            with EmbeddingCache(copy) as cache:
                started = time.perf_counter()
                result = drive(scan([str(tree)], Encoder(), cache))  # type: ignore[arg-type]
                rep["vanished_scan_seconds"] = time.perf_counter() - started
                rep["vanished_purged"] = result.stats.purged
        finally:
            for folder in folders:
                (aside / folder.name).rename(folder)
            for leftover in work.glob("cache-vanish.sqlite3*"):
                leftover.unlink()
    print(json.dumps(rep), flush=True)
    return rep


def synthetic_scan(n: int, threshold: float = 0.8):  # type: ignore[no-untyped-def]
    """A scan result of ``n`` files as a scan hands it to the finder: one record per file (distinct contents, sizes
    and dates) and clustered float16 embeddings (``benchmarks/synthetic.py``)."""
    from benchmarks.synthetic import clustered
    from dedup_app.core.imageio import ImageInfo
    from dedup_app.core.scan import ImageRecord, ScanResult

    x, _ = clustered(n)
    info = ImageInfo(4000, 3000, "JPEG")
    images = [ImageRecord(f"/photos/d{k // 1000:04d}/{k:07d}.jpg", 2_000_000 + 7919 * k % 1_000_003, k, f"{k:032x}",
                          info) for k in range(n)]  # fmt: skip
    return ScanResult(["/photos"], "synthetic", threshold, images, x.astype(np.float16), [])


def run_window(n: int, threshold: float = 0.8, scanned: Path | None = None) -> dict[str, object]:
    """The window with a scan result of ``n`` files (clustered synthetic embeddings through the finder, as a scan
    hands them over), measured as issue 13's window item asks: how long the UI thread is held while the results are
    shown and until the first paint (the scan job's worker has grouped and prepared them, as in the app), then the
    longest hold of the UI thread while scrolling page by page, sorting by each column and moving the slider (the
    regroup runs on a pool thread; a 5 ms heartbeat timer on the UI thread measures how late it fires), and the
    whole process's peak memory. With ``scanned`` (the ``--work`` folder of ``--rescan n``), the scan result comes
    from a warm scan of that tree instead, and the peak counts the scan too: the whole app's path."""
    import os
    import tempfile

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import gc

    from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from dedup_app.controllers.review import ScanOutcome, grouping
    from dedup_app.core.duplicates import DuplicateFinder
    from dedup_app.core.labels import LabelStore
    from dedup_app.core.progress import drive
    from dedup_app.ui import settings as S
    from dedup_app.ui.main_window import AppContext, MainWindow
    from dedup_app.ui.models import COL_DATE, COL_FILE, COL_SIM, COL_SIZE

    if scanned is None:
        result = synthetic_scan(n, threshold)
        gc.collect()
    with open("/proc/self/clear_refs", "w") as f:  # the peak from here on (making the vectors goes through float64)
        f.write("5")
    if scanned is not None:  # the whole app: a warm scan of the tree --rescan made, then the same
        from dedup_app.core.cache import EmbeddingCache
        from dedup_app.core.scan import scan

        started = time.perf_counter()
        with EmbeddingCache(scanned / f"cache-{n}.sqlite3") as cache:
            result = drive(scan([str(scanned / "tree")], Encoder(), cache))  # type: ignore[arg-type]
        scan_seconds, scan_peak = time.perf_counter() - started, _peak_mb()
    app = QApplication.instance() or QApplication([])
    tmp = tempfile.mkdtemp()
    prefs = QSettings(os.path.join(tmp, "p.ini"), QSettings.Format.IniFormat)
    state = QSettings(os.path.join(tmp, "s.ini"), QSettings.Format.IniFormat)
    window = MainWindow(AppContext(S.Preferences(prefs), state, LabelStore(":memory:"), ":memory:"))
    window.resize(1600, 900)
    window.show()
    app.processEvents()
    started = time.perf_counter()
    finder = DuplicateFinder(result)
    drive(finder.search(threshold))
    first = grouping(finder, threshold, "best", [])
    searched = time.perf_counter() - started
    started = time.perf_counter()
    prepared = window._preparer()(first)  # what the scan job does on its worker
    prepare = time.perf_counter() - started
    beats: list[float] = []
    heartbeat = QTimer()
    heartbeat.setInterval(5)
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    heartbeat.start()
    started = time.perf_counter()
    window._scan_done(ScanOutcome(finder, "synthetic", threshold, threshold, first, "", prepared))
    shown = time.perf_counter() - started
    app.processEvents()  # the first paint
    painted = time.perf_counter() - started
    groups_first = len(window.model.groups)

    def step(action) -> float:  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        action()
        app.processEvents()
        return time.perf_counter() - t

    bar = window.tree.verticalScrollBar()
    scroll = [step(lambda: bar.setValue(bar.value() + bar.pageStep())) for _ in range(300)]
    scrolled_to = window.model.fetched()
    up, down = Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder
    sorts = {f"{c}-{o.name}": step(lambda c=c, o=o: window.tree.sortByColumn(c, o))
             for c, o in ((COL_SIM, up), (COL_FILE, down), (COL_DATE, up), (COL_SIZE, down))}  # fmt: skip
    slider_moves = []
    for value in (threshold + 0.05, threshold + 0.1, threshold + 0.02):
        loop = QEventLoop()
        window.groups_changed.connect(loop.quit)
        beats.clear()
        t = time.perf_counter()
        window.slider.setValue(round(value * 1000))  # as the user drags it: it rests, then a pool thread regroups
        loop.exec()
        done = time.perf_counter() - t
        window.groups_changed.disconnect(loop.quit)
        app.processEvents()  # the paint of the new groups, inside the measured stretch
        gaps = np.diff([t, *beats]) if beats else np.array([done])
        slider_moves.append({"threshold": value, "seconds_until_shown": done, "groups": len(window.model.groups),
                             "longest_ui_stall_ms": float(gaps.max() * 1000)})  # fmt: skip
    heartbeat.stop()
    files = sum(len(g.members) for g in window.model.groups)
    rep = {"files": n, "groups": groups_first, "files_in_groups_after_slider": files,
           "search_and_first_grouping_seconds": searched, "prepare_on_worker_seconds": prepare,
           "ui_thread_show_seconds": shown, "first_paint_seconds": painted,
           "scroll_steps": len(scroll), "group_rows_given_to_the_view_after_scrolling": scrolled_to,
           "longest_scroll_step_ms": max(scroll) * 1000, "median_scroll_step_ms": float(np.median(scroll) * 1000),
           "sort_ms": {k: v * 1000 for k, v in sorts.items()}, "slider": slider_moves,
           "peak_rss_mb": _peak_mb()}  # fmt: skip
    if scanned is not None:
        rep.update(source="a warm scan of the generated tree", warm_scan_seconds=scan_seconds,
                   warm_scan_peak_rss_mb=scan_peak)  # fmt: skip
    print(json.dumps(rep), flush=True)
    window.shutdown()
    return rep


def _rss_mb() -> float:
    """This process's resident memory now (``VmRSS``), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    """This process's peak resident memory since the last reset (``VmHWM``), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def table(rep: dict[str, object]) -> str:
    rows = ["| index | probed lists | train s | add s | search s (all vectors) | copies found from the copy | "
            "copies found (either end) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rep["runs"]:  # type: ignore[attr-defined]
        rows.append(
            f"| `{r['index']}` | {r['nprobe']} | {r['train_seconds']:.0f} | {r['add_seconds']:.0f} | "
            f"{r['search_seconds_all']:.0f} | {r['recall_from_the_copy']:.4f} | {r['recall']:.4f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--index", action="append", help="FAISS factory string (repeatable)")
    parser.add_argument("--nprobe", default="16,32,64")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--sample", type=int, default=10_000)
    parser.add_argument("--name", default="scale-index")
    parser.add_argument("--rescan", type=int, metavar="FILES", help="instead: a warm rescan of FILES tiny files")
    parser.add_argument("--vanish", type=int, default=0, help="--rescan: then again without this many files")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dedup-app-bench/scale"),
                        help="where --rescan keeps its tree and cache between runs")  # fmt: skip
    parser.add_argument("--window", type=int, metavar="FILES", help="instead: the window with FILES files")
    parser.add_argument(
        "--scanned",
        action="store_true",
        help="--window: the whole app from a warm scan of the tree --rescan FILES made in --work",
    )
    args = parser.parse_args(argv)
    if args.window:
        rep = run_window(args.window, scanned=args.work if args.scanned else None)
        RESULTS.mkdir(exist_ok=True)
        name = f"scale-window-{args.window}" + ("-scanned" if args.scanned else "")
        (RESULTS / f"{name}.json").write_text(json.dumps(rep, indent=1))
        return 0
    if args.rescan:
        rep = run_rescan(args.rescan, args.work, args.vanish)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"scale-rescan-{args.rescan}.json").write_text(json.dumps(rep, indent=1))
        return 0
    specs = args.index or ["IVF4000_HNSW32,SQ8", "IVF1000,PQ64x4fs"]
    rep = run(args.n, specs, [int(v) for v in args.nprobe.split(",")], args.k, args.sample)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(rep, indent=1))
    print(table(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
