"""Find-by-example benchmark: ranking quality against hash peers, and query latency of the persistent index.

    python benchmarks/find.py                                  # both parts (about 10 minutes on 2 cores)
    python benchmarks/find.py --parts quality --split dev
    python benchmarks/find.py --parts latency --vectors 100000 1000000

Quality: the near-duplicate benchmark's set for the split (``model_training/neardup_set.py``: real photos of
``../shared/data/photos``, one copy per edit family, distractors and hard negatives) is scanned into a cache on disk,
and every original is a query against the whole set through ``find_similar`` (the persistent index, as
``dedup-app find`` uses it). Per query: the share of its copies in the top 10 (out of min(10, copies)), its copies
in the top R (R = its number of copies, "R-precision") and average precision over the whole ranking; means over
queries. The hash peers rank the same files by Hamming distance to the query's hash (ties in random order, fixed
seed). Calibration: the expected calibration error of ``find``'s probabilities over every query's top 20 (its 15
copies and the 5 most similar other files), with whether each match is a copy.

Latency: synthetic clustered 256-d vectors (``benchmarks/synthetic.py``) written to a real cache file, the index
built, then opened again as a new ``find`` would (load and check against the cache) and searched one query at a
time (stored vectors with noise added, 10 results); against a NumPy matrix product over all vectors in memory in
the same run, which also gives the exact top 10 for the approximate index's recall. Then 10 vectors are added to
the cache and the index brought up to date, as after a scan that found 10 new images.

Results go to ``benchmarks/results/find-<part>.json`` and the tables in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.neardup import dhash_bits, machine, pdq_bits, phash_bits, write_doc  # noqa: E402
from benchmarks.synthetic import clustered  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: Matches per query the calibration error is measured on: a query's 15 copies and its 5 most similar other files.
ECE_TOP = 20


# ------------------------------------------------------------------------------------------------- quality


def ranking_scores(ranked: list[int], relevant: set[int], k: int = 10) -> tuple[float, float, float]:
    """(recall in the top ``k`` out of min(k, |relevant|), R-precision, average precision) of one ranking."""
    if not relevant:
        return 1.0, 1.0, 1.0
    hits, precisions = 0, []
    for rank, item in enumerate(ranked, 1):
        if item in relevant:
            hits += 1
            precisions.append(hits / rank)
    top_k = len(relevant & set(ranked[:k])) / min(k, len(relevant))
    r_prec = len(relevant & set(ranked[: len(relevant)])) / len(relevant)
    return top_k, r_prec, float(sum(precisions) / len(relevant))


def hamming_rankings(bits: np.ndarray, queries: list[int], seed: int = 0) -> dict[int, list[int]]:
    """Every other file ranked by Hamming distance to each query's hash, ties in a random (seeded) order."""
    rng = np.random.default_rng(seed)
    out = {}
    for q in queries:
        dist = (bits != bits[q]).sum(1).astype(np.float64) + rng.random(len(bits)) * 0.5
        order = [int(i) for i in np.argsort(dist, kind="stable") if i != q]
        out[q] = order
    return out


def run_quality(data: Path, split: str) -> dict[str, Any]:
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.calibration import expected_calibration_error
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.find import find_similar
    from dedup_app.core.progress import drive
    from dedup_app.core.scan import scan
    from model_training.neardup_set import build_neardup_set

    with tempfile.TemporaryDirectory(prefix="find-bench-") as tmp:
        folder = Path(tmp) / "set"
        items = build_neardup_set(data, folder, split)
        files = [str(folder / it.file) for it in items]
        index = {f: k for k, f in enumerate(files)}
        queries = [k for k, it in enumerate(items) if it.family == "orig"]
        relevant = {q: {k for k, it in enumerate(items) if it.source == items[q].source and k != q} for q in queries}
        embedder = Embedder(load_checkpoint(), "auto")
        rankings: dict[str, dict[int, list[int]]] = {}
        probs, truth = [], []
        with EmbeddingCache(Path(tmp) / "cache.sqlite3") as cache:
            drive(scan([folder], embedder, cache))
            started = time.perf_counter()
            result = drive(find_similar(embedder, cache, [files[q] for q in queries], top=len(files)))
            find_seconds = time.perf_counter() - started
        ours: dict[int, list[int]] = {}
        for q, answer in zip(queries, result.queries, strict=True):
            ours[q] = [index[m.path] for m in answer.matches]
            for m in answer.matches[:ECE_TOP]:
                probs.append(m.probability)
                truth.append(index[m.path] in relevant[q])
        rankings["dedup-app"] = ours
        peers: dict[str, Callable[[Path], np.ndarray]] = {"pHash": phash_bits, "dHash": dhash_bits, "PDQ": pdq_bits}
        for name, hasher in peers.items():
            bits = np.stack([hasher(Path(f)) for f in files]).astype(np.uint8)
            rankings[name] = hamming_rankings(bits, queries)
    rows = {}
    for name, ranks in rankings.items():
        scores = np.array([ranking_scores(ranks[q], relevant[q]) for q in queries])
        rows[name] = {"recall_at_10": float(scores[:, 0].mean()), "r_precision": float(scores[:, 1].mean()),
                      "map": float(scores[:, 2].mean())}  # fmt: skip
    p, t = np.array(probs, np.float64), np.array(truth, np.float64)
    return {
        "split": split,
        "files": len(files),
        "queries": len(queries),
        "copies_per_query": float(np.mean([len(relevant[q]) for q in queries])),
        "model": result.model_id,
        "threshold": result.threshold,
        "find_seconds": find_seconds,
        "tools": rows,
        "ece_top": expected_calibration_error(p, t),
        "ece_top_k": ECE_TOP,
        "ece_pairs": len(p),
        "ece_copies": int(t.sum()),
    }


def quality_table(rep: dict[str, Any]) -> str:
    lines = ["| ranking | recall in top 10 | R-precision | mAP |", "|---|---|---|---|"]
    for name, r in sorted(rep["tools"].items(), key=lambda kv: -kv[1]["map"]):
        tool = f"dedup-app `find` ({rep['model']})" if name == "dedup-app" else f"{name}, Hamming distance"
        lines.append(f"| {tool} | {r['recall_at_10']:.3f} | {r['r_precision']:.3f} | {r['map']:.3f} |")
    lines += [
        "",
        f"{rep['queries']} queries (every original of the {rep['split']} split) against {rep['files']} files, "
        f"{rep['copies_per_query']:.0f} copies each; all queries answered in {rep['find_seconds']:.1f} s. "
        f"Expected calibration error of the probability over the top {rep['ece_top_k']} of every query "
        f"({rep['ece_pairs']} pairs, {rep['ece_copies']} of them copies): {rep['ece_top']:.3f}.",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- latency


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill_cache(cache: Any, x: np.ndarray, model_id: str, start: int = 0) -> None:
    """Write vectors as a scan would leave them (a files row and an embeddings row each), in bulk."""
    conn = cache._conn
    half = x.astype(np.float16)
    for a in range(0, len(x), 50_000):
        keys = [os.fsencode(f"/synthetic/{k // 1000:04d}/{k:08d}.jpg") for k in range(start + a, start + a + 50_000)]
        part = half[a : a + 50_000]
        keys = keys[: len(part)]
        conn.executemany(
            "INSERT INTO files (path, size, mtime_ns, content_hash, width, height, format, updated, frames) "
            "VALUES (?, 100000, 1, ?, 4000, 3000, 'JPEG', 0, 1)",
            ((k, k.hex()) for k in keys),
        )
        conn.executemany(
            "INSERT INTO embeddings (path, model_id, vector) VALUES (?, ?, ?)",
            ((k, model_id, v.tobytes()) for k, v in zip(keys, part, strict=True)),
        )
        conn.commit()


def run_latency(n: int, queries: int = 200, threshold: float = 0.829) -> dict[str, Any]:
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.index import unit_rows
    from dedup_app.core.vector_index import VectorIndex

    model = "synthetic-model"
    x, _ = clustered(n, seed=1)
    rng = np.random.default_rng(2)
    picks = rng.choice(n, queries, replace=False)
    q = unit_rows(x[picks] + 0.03 * rng.standard_normal((queries, x.shape[1])).astype(np.float32))
    with tempfile.TemporaryDirectory(prefix="find-latency-") as tmp:
        path = Path(tmp) / "cache.sqlite3"
        with EmbeddingCache(path) as cache:
            started = time.perf_counter()
            fill_cache(cache, x, model)
            fill_seconds = time.perf_counter() - started
            started = time.perf_counter()
            index, report = VectorIndex.open(cache, model, x.shape[1])
            build_seconds = time.perf_counter() - started
            kind = "exact" if index.exact else f"IVF-SQ8, {index.index.nlist:,} lists"
            index_mb = index.path.stat().st_size / 1e6 if index.path else 0.0
            del index
        with EmbeddingCache(path) as cache:  # a new find: open the cache, load the index, check it against the cache
            started = time.perf_counter()
            index, report = VectorIndex.open(cache, model, x.shape[1])
            open_seconds = time.perf_counter() - started
            assert not report.changed, report
            index.search(q[:1], 10, cache)  # first touch
            times, found = [], []
            for row in q:
                t0 = time.perf_counter()
                ids, sims = index.search(row[None], 10, cache)[0]
                times.append(time.perf_counter() - t0)
                found.append(ids)
            stored = unit_rows(x)
            peer_times, recall, recall_dup = [], [], []
            all_ids = cache.embedding_ids(model)  # row k of x has the k-th id (inserted in order)
            for row, ids in zip(q, found, strict=True):
                t0 = time.perf_counter()
                sims = stored @ row
                top = np.argpartition(-sims, 10)[:10]
                peer_times.append(time.perf_counter() - t0)
                exact = set(all_ids[top].tolist())
                recall.append(len(exact & set(ids.tolist())) / 10)
                above = set(all_ids[top[sims[top] >= threshold]].tolist())
                if above:
                    recall_dup.append(len(above & set(ids.tolist())) / len(above))
            del stored
            extra = unit_rows(rng.standard_normal((10, x.shape[1])).astype(np.float32))
            fill_cache(cache, extra, model, start=n)
            started = time.perf_counter()
            index, update = VectorIndex.open(cache, model, x.shape[1])
            update_seconds = time.perf_counter() - started
            cache_mb = path.stat().st_size / 1e6
    ms = np.array(times) * 1000
    peer = np.array(peer_times) * 1000
    return {
        "vectors": n,
        "kind": kind,
        "fill_seconds": fill_seconds,
        "build_seconds": build_seconds,
        "open_seconds": open_seconds,
        "query_ms_median": float(np.median(ms)),
        "query_ms_p95": float(np.percentile(ms, 95)),
        "query_ms_max": float(ms.max()),
        "numpy_ms_median": float(np.median(peer)),
        "recall_at_10": float(np.mean(recall)),
        "recall_above_threshold": float(np.mean(recall_dup)) if recall_dup else None,
        "queries_with_matches_above_threshold": len(recall_dup),
        "threshold": threshold,
        "update_after_10_seconds": update_seconds,
        "update_rebuilt": update.rebuilt,
        "update_added": update.added,
        "index_mb": index_mb,
        "cache_mb": cache_mb,
        "peak_rss_mb": _peak_mb(),
    }


def latency_table(rep: dict[str, Any]) -> str:
    lines = [
        "| indexed vectors | index | build s | open s | query ms (median / p95 / max) | NumPy peer ms (median) | "
        "NumPy / index | recall@10 vs exact | matches >= threshold found | 10 added: s, rebuilt? | index MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rep["runs"]:
        lines.append(
            f"| {r['vectors']:,} | {r['kind']} | {r['build_seconds']:.1f} | {r['open_seconds']:.2f} | "
            f"{r['query_ms_median']:.1f} / {r['query_ms_p95']:.1f} / {r['query_ms_max']:.1f} | "
            f"{r['numpy_ms_median']:.1f} | {r['numpy_ms_median'] / r['query_ms_median']:.2f} | "
            f"{r['recall_at_10']:.3f} | {r['recall_above_threshold']:.3f} | {r['update_after_10_seconds']:.2f}, "
            f"{'rebuilt' if r['update_rebuilt'] else 'updated in place'} | {r['index_mb']:.0f} |"
        )
    peak = max(r["peak_rss_mb"] for r in rep["runs"])
    lines += ["", f"{rep['queries']} single queries per size (stored vectors with noise; the threshold is "
              f"{rep['runs'][0]['threshold']}); peak resident memory of the run {peak:,.0f} MB "
              "(with the NumPy peer's float32 copy of every vector)."]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--split", default="test", choices=["dev", "test", "all"])
    parts = ["quality", "latency"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts)
    parser.add_argument("--vectors", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200, help="latency part: single queries per size")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    sections = {}
    if "quality" in args.parts:
        rep = run_quality(args.data, args.split)
        rep["date"], rep["machine"] = stamp, machine()
        (RESULTS / f"find-quality-{args.split}.json").write_text(json.dumps(rep, indent=1))
        print(quality_table(rep))
        sections[f"find-quality-{args.split}"] = f"Measured {stamp} on {rep['machine']}.\n\n" + quality_table(rep)
    if "latency" in args.parts:
        runs = []
        for n in args.vectors:
            runs.append(run_latency(n, args.queries))
            print(json.dumps(runs[-1]), flush=True)
        rep = {"runs": runs, "queries": args.queries, "date": stamp, "machine": machine()}
        (RESULTS / "find-latency.json").write_text(json.dumps(rep, indent=1))
        print(latency_table(rep))
        sections["find-latency"] = f"Measured {stamp} on {rep['machine']}.\n\n" + latency_table(rep)
    if not args.no_doc:
        write_doc(sections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
