"""What an 8-bit encoder would buy: static int8 quantisation of the shipped encoder's ONNX export, timed in the
same cold scan as benchmarks/neardup.py's speed part, and its embeddings compared with the float32 export's.

Not a shipped path: int8 embeddings differ from float32 ones (a new model id, a threshold of its own and a quality
check on the held-out split would be needed). This measures whether it is worth that work.

    python benchmarks/int8_probe.py            # needs the 200 large JPEGs of --parts speed (made if missing)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from benchmarks.neardup import make_large_jpegs, phash_bits
    from dedup_app.core import onnx_encoder
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.duplicates import scan_and_search
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.imageio import load_for_embedding
    from dedup_app.core.progress import drive
    from model_training.pool_training import pool_photos

    data = ROOT.parent / "shared" / "data"
    checkpoint = load_checkpoint()
    Embedder(checkpoint, "cpu").prepare()
    fp32 = onnx_encoder.find_export(checkpoint.model_id)
    assert fp32 is not None
    size = checkpoint.config.input_size
    calibration = [load_for_embedding(str(p), size).pixels for p in pool_photos(data, "train")[:64]]
    held_out = [load_for_embedding(str(p), size).pixels for p in pool_photos(data, "test")[:200]]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"images": img[None]} for img in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        int8 = Path(tmp) / "int8.onnx"
        started = time.perf_counter()
        quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
        t_quantise = time.perf_counter() - started
        a = onnx_encoder.Session(fp32).run_batches(held_out, 16)
        b = onnx_encoder.Session(int8).run_batches(held_out, 16)
        cosine = (a * b).sum(1)
        # ranking agreement: each held-out photo's nearest other photo, float32 against int8
        sa, sb = a @ a.T, b @ b.T
        np.fill_diagonal(sa, -1)
        np.fill_diagonal(sb, -1)
        same_nearest = float((sa.argmax(1) == sb.argmax(1)).mean())
        similarity_shift = float(np.abs(sa - sb)[np.triu_indices(len(a), 1)].max())

        folder = Path(tempfile.gettempdir()) / "dedup-app-bench" / "large-200"
        files = sorted(folder.glob("large_*.jpg"))
        if len(files) != 200 or not (folder / "complete").exists():
            folder.mkdir(parents=True, exist_ok=True)
            files = make_large_jpegs(data, folder, 200)
            (folder / "complete").touch()
        for f in files:
            f.read_bytes()
        started = time.perf_counter()
        for f in files:
            phash_bits(f)
        t_phash = time.perf_counter() - started

        facts = onnx_encoder.ModelFacts(checkpoint.model_id + "-int8", "int8 probe", checkpoint.threshold, size,
                                        checkpoint.config.embed_dim, {})  # fmt: skip
        times = {}
        for name, path in (("float32", fp32), ("int8", int8)):
            started = time.perf_counter()
            embedder = onnx_encoder.OrtEmbedder(facts, path)
            with EmbeddingCache(Path(tmp) / f"{name}.sqlite3") as cache:
                drive(scan_and_search([folder], embedder, cache, floor=embedder.threshold))
            times[name] = time.perf_counter() - started
    report = {
        "quantise_seconds": t_quantise,
        "cosine_to_float32_min": float(cosine.min()),
        "cosine_to_float32_mean": float(cosine.mean()),
        "largest_similarity_shift": similarity_shift,
        "same_nearest_neighbour": same_nearest,
        "phash_seconds": t_phash,
        "cold_scan_float32_seconds": times["float32"],
        "cold_scan_int8_seconds": times["int8"],
        "int8_vs_phash_speed_ratio": t_phash / times["int8"],
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
