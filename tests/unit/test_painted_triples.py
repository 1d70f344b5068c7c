"""Training triples from painted change labels, on real image files: shapes, the label's pixels, the after image
aligned on the before image's grid, and the labels whose files are gone or changed named with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dedup_app.core.change.painted import labelled_raster
from dedup_app.core.labels import LabelStore
from model_training.painted import PaintedTriple, SkippedLabel, painted_triples

H, W = 288, 352
SHIFT = (5, 7)  # the after image is the scene moved by (rows, columns): a misregistration to undo


def make_pair(folder: Path, shared_data: Path, name: str, y0: int) -> tuple[str, str, np.ndarray]:
    """A real aerial before tile and an after tile shifted by ``SHIFT`` with houses pasted in; the label marks the
    houses on the before image's grid."""
    demo = np.asarray(Image.open(shared_data / "change" / "demo_pair" / "A" / "demo.png").convert("RGB"))
    houses = np.asarray(Image.open(shared_data / "change" / "levir_samples" / "B" / "train_36_0512_0512.png")
                        .convert("RGB"))[60:140, 140:230]  # fmt: skip
    dy, dx = SHIFT
    before = demo[y0 : y0 + H, 100 : 100 + W].copy()
    after = demo[y0 + dy : y0 + dy + H, 100 + dx : 100 + dx + W].copy()  # B(y, x) = A(y + dy, x + dx)
    after[100 - dy : 180 - dy, 150 - dx : 240 - dx] = houses  # at rows 100-180, columns 150-240 of A's grid
    label = np.zeros((H, W), np.uint8)
    label[100:180, 150:240] = 255
    folder.mkdir(parents=True, exist_ok=True)
    b, a = folder / f"{name}_before.png", folder / f"{name}_after.png"
    Image.fromarray(before).save(b)
    Image.fromarray(after).save(a)
    return str(b), str(a), label


def test_painted_labels_become_aligned_training_triples(tmp_path: Path, shared_data: Path) -> None:
    store = LabelStore(tmp_path / "labels.sqlite3")
    kept = make_pair(tmp_path / "tiles", shared_data, "kept", 0)
    gone = make_pair(tmp_path / "tiles", shared_data, "gone", 300)
    edited = make_pair(tmp_path / "tiles", shared_data, "edited", 600)
    for before, after, label in (kept, gone, edited):
        store.put_change_mask(labelled_raster(before), labelled_raster(after), label)
    Path(gone[1]).unlink()  # deleted since the painting
    Image.open(edited[0]).rotate(180).save(edited[0])  # the before file was edited since the painting

    triples, skipped = painted_triples(store)

    assert len(triples) == 1 and isinstance(triples[0], PaintedTriple)
    before, after, label = triples[0]
    assert before.shape == (H, W, 3) and after.shape == (H, W, 3) and label.shape == (H, W)
    assert before.dtype == after.dtype == label.dtype == np.uint8
    assert np.array_equal(label, kept[2]) and set(np.unique(label)) == {0, 255}
    assert np.array_equal(before, np.asarray(Image.open(kept[0])))
    # the after image sits on A's grid: away from the houses and the borders it matches A, which the file did not
    raw = np.asarray(Image.open(kept[1])).astype(np.int16)
    unchanged = np.ones((H, W), bool)
    unchanged[90:190, 140:250] = False
    unchanged[:20] = unchanged[-20:] = unchanged[:, :20] = unchanged[:, -20:] = False
    aligned_error = np.abs(after.astype(np.int16) - before)[unchanged].mean()
    raw_error = np.abs(raw - before)[unchanged].mean()
    assert aligned_error < 6 and raw_error > 3 * aligned_error, (aligned_error, raw_error)
    # the houses are where the label says: there the after image differs from the before image
    assert np.abs(after.astype(np.int16) - before)[label > 0].mean() > 4 * aligned_error

    assert {s.before for s in skipped} == {gone[0], edited[0]} and all(isinstance(s, SkippedLabel) for s in skipped)
    reasons = {s.before: s.reason for s in skipped}
    assert gone[1] in reasons[gone[0]] and "not found" in reasons[gone[0]]
    assert edited[0] in reasons[edited[0]] and "changed since" in reasons[edited[0]]
    store.close()


def test_no_painted_labels_give_no_triples(tmp_path: Path) -> None:
    store = LabelStore(":memory:")
    assert painted_triples(store) == ([], [])
    store.close()
