"""The ONNX exports an app build ships: the shipped duplicate model, the shipped change heads and the training-free
change map, each with the facts that let it run without torch (:func:`dedup_app.core.onnx_encoder.shipped_folder`).

The PyInstaller spec runs ``python -m dedup_app.core.shipped_exports OUT`` with the build environment's torch; the
bundle then leaves torch out (about 4 GB on Linux, where PyPI's torch is the CUDA build) and still scans, finds and
maps changes. Training needs torch, so it stays with a pip install.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def make_shipped_exports(folder: Path) -> list[Path]:
    """Export into ``folder`` everything the app ships a model for, each checked against torch to 1e-4 on probe
    inputs (:mod:`dedup_app.core.onnx_encoder`); returns the ONNX files. Needs torch and the ``onnx`` package.
    A shipped change head that is not installed is skipped."""
    from dedup_app.core import onnx_encoder
    from dedup_app.core.change.detect import ChangeDetector, load_change_head
    from dedup_app.core.change.heads import SHIPPED_HEADS, shipped_head_path
    from dedup_app.core.embedder import Embedder, load_checkpoint
    from dedup_app.core.resources import default_model_path

    folder.mkdir(parents=True, exist_ok=True)
    model_file = default_model_path()
    checkpoint = load_checkpoint(model_file)
    embedder = Embedder(checkpoint, "cpu", backend="torch")
    made = [onnx_encoder.find_export(checkpoint.model_id, folder) or onnx_encoder.export(checkpoint, embedder.encoder,
                                                                                         folder)]  # fmt: skip
    onnx_encoder.write_model_facts(model_file, checkpoint, folder)
    made.append(ChangeDetector(embedder).export_tile(folder)[1])  # the training-free map (``--model features``)
    for name in SHIPPED_HEADS:
        head_file = shipped_head_path(name)
        if not head_file.is_file():
            continue
        detector = ChangeDetector(embedder, load_change_head(head_file), head_file=head_file)
        key, path = detector.export_tile(folder)
        detector.keep_facts(head_file, key, folder)
        made.append(path)
    return made


#: The file holding the weights of every shipped export, each distinct tensor once.
POOL = "shipped-weights.bin"
#: Tensors smaller than this stay inside their graph.
_POOLED_BYTES = 1024


def pool_weights(folder: Path) -> int:
    """Move the weights of every export in ``folder`` into one file, :data:`POOL`, storing each distinct tensor
    once (ONNX external data): the four shipped graphs read the same backbone, so the bundle carries it once
    instead of four times (about 36 MB less). Each graph is checked to give the same outputs afterwards, and its
    sidecar gets the new checksum and the pool's. Returns the bytes saved. Needs the ``onnx`` package."""
    import hashlib

    import onnx
    from onnx.external_data_helper import set_external_data

    from dedup_app.core import onnx_encoder

    files = sorted(folder.glob("*.onnx"))
    before = {f: _outputs(f) for f in files}
    size_before = sum(f.stat().st_size for f in files)
    offsets: dict[str, tuple[int, int]] = {}
    with open(folder / POOL, "wb") as pool:
        for onnx_file in files:
            model = onnx.load(str(onnx_file))
            for tensor in model.graph.initializer:
                data = tensor.raw_data
                if len(data) < _POOLED_BYTES:
                    continue
                digest = hashlib.sha256(data).hexdigest()
                if digest not in offsets:
                    pool.write(b"\0" * (-pool.tell() % 64))  # aligned, for ONNX Runtime's memory mapping
                    offsets[digest] = (pool.tell(), len(data))
                    pool.write(data)
                offset, length = offsets[digest]
                set_external_data(tensor, location=POOL, offset=offset, length=length)
                tensor.ClearField("raw_data")
            onnx.save(model, str(onnx_file))
    pool_sha = onnx_encoder.file_sha256(folder / POOL)
    for onnx_file in files:
        got = _outputs(onnx_file)
        if not all(np.array_equal(a, b) for a, b in zip(before[onnx_file], got, strict=True)):
            raise onnx_encoder.ExportError(f"{onnx_file.name} gives other outputs with its weights pooled")
        meta_file = onnx_file.with_suffix(".json")
        meta = json.loads(meta_file.read_text())
        meta.update(sha256=onnx_encoder.file_sha256(onnx_file), weights={"file": POOL, "sha256": pool_sha})
        meta_file.write_text(json.dumps(meta, indent=1))
    return size_before - sum(f.stat().st_size for f in files) - (folder / POOL).stat().st_size


def _outputs(onnx_file: Path) -> list[np.ndarray]:
    """The graph's outputs on the probe inputs of its kind (images for the encoder, tile pairs for change maps)."""
    from dedup_app.core import onnx_encoder
    from dedup_app.core.change.detect import probe_pair

    if onnx_file.name.startswith(("change-", "features-")):
        session = onnx_encoder.Session(onnx_file, 1, "pair", "probability")
        return [session.run(probe_pair(192, 320))]
    size = int(json.loads(onnx_file.with_suffix(".json").read_text())["input_size"])  # the encoder's, in its sidecar
    session = onnx_encoder.Session(onnx_file, 1)
    return [session.run(onnx_encoder.probe_images(size, 4, seed=3))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup_app.core.shipped_exports", description=__doc__)
    parser.add_argument("out", type=Path, help="folder to write the exports and their facts to")
    args = parser.parse_args(argv)
    made = make_shipped_exports(args.out)
    saved = pool_weights(args.out)
    for path in [*made, args.out / POOL]:
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"{saved / 1e6:.1f} MB saved by storing each weight tensor once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
