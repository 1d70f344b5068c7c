"""Painted change masks in the label store, on real SQLite files and real image files: exact round trips, keyed by
content (renames), before/after not swapped, and the store's guarantees for damaged, locked and older files."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup_app.core.change.painted import labelled_raster, raster_hash, region_at, region_in_box
from dedup_app.core.labels import DUPLICATE, DamagedMaskError, LabelledFile, LabelStore, decode_mask, encode_mask
from tests.unit.test_label_store import _smash_page_of, hold_lock, labelled


def painted(shape: tuple[int, int] = (301, 517), seed: int = 0) -> np.ndarray:
    """A mask as a user paints it: blobs and strokes, plus scattered single pixels (odd sizes, not square)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    mask[40:90, 100:260] = 255
    mask[200:, :30] = 255
    mask[rng.random(shape) > 0.97] = 255
    return mask


def side(name: str) -> LabelledFile:
    return LabelledFile(f"hash-{name}", f"/p/{name}.tif")


def test_masks_round_trip_exactly(tmp_path: Path) -> None:
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    first, second = painted(seed=1), painted((64, 48), seed=2) > 0  # any non-zero value, or bool, is changed
    stored = store.put_change_mask(side("a"), side("b"), first)
    assert (stored.width, stored.height) == (517, 301) and len(stored.png) < first.size // 8 + 2000
    store.put_change_mask(side("c"), side("d"), second)
    store.close()
    store = LabelStore(db)
    back = store.change_mask("hash-a", "hash-b")
    assert back is not None and back.dtype == np.uint8 and np.array_equal(back, first)
    assert np.array_equal(store.change_mask("hash-c", "hash-d"), second.astype(np.uint8) * 255)
    assert store.change_mask("hash-b", "hash-a") is None  # before/after is not symmetric
    listed = store.change_masks()
    assert [(m.before.path, m.after.path) for m in listed] == [("/p/a.tif", "/p/b.tif"), ("/p/c.tif", "/p/d.tif")]
    assert listed[0].created <= listed[1].created and np.array_equal(listed[0].mask(), first)
    # painting again replaces; an empty mask is a label ("nothing changed here"); removing forgets
    store.put_change_mask(side("a"), side("b"), np.zeros((301, 517), np.uint8))
    assert store.change_mask_count() == 2 and not store.change_mask("hash-a", "hash-b").any()  # type: ignore[union-attr]
    assert store.remove_change_mask("hash-a", "hash-b") and not store.remove_change_mask("hash-a", "hash-b")
    assert store.change_mask("hash-a", "hash-b") is None and store.change_mask_count() == 1
    with pytest.raises(ValueError, match="2-D"):
        store.put_change_mask(side("a"), side("b"), np.zeros((4, 4, 3), np.uint8))
    store.close()


def test_a_damaged_mask_is_said_to_be_damaged() -> None:
    png = encode_mask(painted())
    assert np.array_equal(decode_mask(png, (301, 517)), painted())
    broken = bytearray(png)
    broken[len(png) // 2] ^= 0xFF  # one byte of the compressed pixels: the PNG checksum catches it
    with pytest.raises(DamagedMaskError):
        decode_mask(bytes(broken), (301, 517))
    with pytest.raises(DamagedMaskError, match="not 300 x 517"):
        decode_mask(png, (517, 300))


def test_a_label_follows_its_files_through_a_rename(tmp_path: Path, shared_data: Path) -> None:
    """Keyed by content: the files renamed and moved, their hashes find the label; the new paths can be recorded."""
    demo = shared_data / "change" / "demo_pair"
    before, after = tmp_path / "before.png", tmp_path / "after.png"
    shutil.copy(demo / "A" / "demo.png", before)
    shutil.copy(demo / "B" / "demo.png", after)
    mask = painted((1024, 1024))
    store = LabelStore(tmp_path / "labels.sqlite3")
    store.put_change_mask(labelled_raster(str(before)), labelled_raster(str(after)), mask)
    (tmp_path / "moved").mkdir()
    new_before, new_after = tmp_path / "moved" / "2019.png", tmp_path / "moved" / "2024.png"
    os.rename(before, new_before)
    os.rename(after, new_after)
    b, a = labelled_raster(str(new_before)), labelled_raster(str(new_after))
    assert np.array_equal(store.change_mask(b.content_hash, a.content_hash), mask)
    assert store.move_change_mask(b, a)
    (moved,) = store.change_masks()
    assert (moved.before.path, moved.after.path) == (str(new_before), str(new_after))
    assert np.array_equal(moved.mask(), mask)
    store.close()


def test_band_files_joined_by_commas_are_one_side(tmp_path: Path) -> None:
    bands = []
    for k in range(3):
        path = tmp_path / f"B0{k}.png"
        Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(path)
        bands.append(str(path))
    spec = ",".join(bands)
    assert raster_hash(spec) == raster_hash(", ".join(bands)) != raster_hash(",".join(reversed(bands)))
    assert raster_hash(spec) not in {raster_hash(b) for b in bands}
    os.remove(bands[1])
    with pytest.raises(OSError):
        raster_hash(spec)


def test_region_under_a_point_and_by_its_box() -> None:
    proposal = np.zeros((6, 9), np.uint8)
    proposal[1, 1:4] = 1  # a bar ...
    proposal[2, 4] = 1  # ... joined to this pixel only diagonally: one region (8-connected, as the regions list)
    proposal[4:6, 6:9] = 1  # another region
    region, box = region_at(proposal, 2, 1)  # type: ignore[misc]
    assert box == (1, 1, 4, 2) and region.tolist() == [[True, True, True, False], [False, False, False, True]]
    assert region_at(proposal, 0, 0) is None and region_at(proposal, 20, 1) is None
    region, box = region_in_box(proposal, (6, 4, 3, 2))
    assert box == (6, 4, 3, 2) and region.all()
    with pytest.raises(ValueError):
        region_in_box(proposal, (0, 0, 2, 2))


def stored_masks(store: LabelStore) -> dict[tuple[str, str], np.ndarray]:
    return {(m.before.content_hash, m.after.content_hash): m.mask() for m in store.change_masks()}


def test_a_damaged_file_keeps_its_painted_masks(tmp_path: Path) -> None:
    """A broken index page of the pair labels: the file is moved aside and both tables carried over exactly."""
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    labelled(store, 3)
    masks = {("hash-a", "hash-b"): painted(seed=1), ("hash-c", "hash-d"): painted(seed=2)}
    for (hb, ha), mask in masks.items():
        store.put_change_mask(LabelledFile(hb, "/p/x"), LabelledFile(ha, "/p/y"), mask)
    store.close()
    _smash_page_of(db, "sqlite_autoindex_labels_1")
    store = LabelStore(db)
    assert list(tmp_path.glob("labels.sqlite3.corrupt-*")) and store.saved
    assert store.warning is not None and "3 labels and 2 painted change masks" in store.warning
    assert "could not be read" not in store.warning
    back = stored_masks(store)
    assert back.keys() == masks.keys() and all(np.array_equal(back[k], masks[k]) for k in masks)
    store.close()


def test_a_damaged_mask_table_is_named_in_the_warning(tmp_path: Path) -> None:
    """The masks' own page broken: the pair labels are kept, and the warning says the masks could not be."""
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    expected = labelled(store, 4)
    store.put_change_mask(side("a"), side("b"), np.zeros((30, 40), np.uint8))
    store.close()
    _smash_page_of(db, "change_masks")
    store = LabelStore(db)
    assert store.warning is not None and "4 labels" in store.warning
    # SQLite stops at the broken page, or reads it as rows of garbage that are no PNG: either way it is said
    assert re.search(r"painted change masks? could not be read and (is|are) not kept", store.warning), store.warning
    assert sorted((x.a.content_hash, x.b.content_hash, x.label) for x in store.all_labels()) == expected
    assert store.change_masks() == [] and store.saved
    store.put_change_mask(side("a"), side("b"), painted())  # the fresh file takes new masks
    assert np.array_equal(store.change_mask("hash-a", "hash-b"), painted())
    store.close()


def test_a_mask_whose_bytes_were_damaged_is_dropped_and_counted(tmp_path: Path) -> None:
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    labelled(store, 2)
    good = painted(seed=3)
    store.put_change_mask(side("a"), side("b"), good)
    store.put_change_mask(side("c"), side("d"), painted(seed=4))
    store.close()
    with sqlite3.connect(db) as conn:  # bytes changed under SQLite's feet: the row reads, the PNG does not decode
        (png,) = conn.execute("SELECT mask_png FROM change_masks WHERE hash_before = 'hash-c'").fetchone()
        broken = bytearray(png)
        broken[len(png) // 2] ^= 0xFF
        conn.execute("UPDATE change_masks SET mask_png = ? WHERE hash_before = 'hash-c'", (bytes(broken),))
    conn.close()
    store = LabelStore(db)
    with pytest.raises(DamagedMaskError):
        store.change_mask("hash-c", "hash-d")
    store.close()
    _smash_page_of(db, "sqlite_autoindex_labels_1")  # now the file is damaged too: what is carried over?
    store = LabelStore(db)
    assert store.warning is not None and "2 labels and 1 painted change mask " in store.warning
    assert "1 painted change mask could not be read and is not kept" in store.warning
    assert list(stored_masks(store)) == [("hash-a", "hash-b")]
    assert np.array_equal(store.change_mask("hash-a", "hash-b"), good)
    store.close()


def test_a_locked_file_lends_its_masks_for_the_session(tmp_path: Path) -> None:
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    store.put_change_mask(side("a"), side("b"), painted())
    store.close()
    other = hold_lock(db)
    try:
        store = LabelStore(db)
        assert not store.saved and store.warning is not None and "1 painted change mask are used" in store.warning
        assert np.array_equal(store.change_mask("hash-a", "hash-b"), painted())
        store.put_change_mask(side("c"), side("d"), painted(seed=5))  # kept in memory
        assert store.change_mask_count() == 2
        store.close()
    finally:
        other.rollback()
        other.close()
    again = LabelStore(db)
    assert again.change_mask_count() == 1
    again.close()


def test_a_labels_file_from_before_masks_is_opened_and_gets_the_table(tmp_path: Path) -> None:
    """A file written by an earlier version (pair labels only) keeps its labels and takes painted masks; locked,
    its labels are read without a word about masks that never were."""
    db = tmp_path / "labels.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE labels (hash_a TEXT NOT NULL, hash_b TEXT NOT NULL, label TEXT NOT NULL CHECK (label IN "
            "('duplicate', 'not_duplicate')), path_a BLOB NOT NULL, path_b BLOB NOT NULL, created REAL NOT NULL, "
            "PRIMARY KEY (hash_a, hash_b))"
        )
        conn.execute("INSERT INTO labels VALUES ('h1', 'h2', 'duplicate', x'2f70', x'2f71', 1.0)")
    conn.close()
    other = hold_lock(db)
    try:
        store = LabelStore(db)
        assert store.warning is not None and "Its 1 labels are used" in store.warning
        assert "mask" not in store.warning and store.change_masks() == []
        store.close()
    finally:
        other.rollback()
        other.close()
    store = LabelStore(db)
    assert store.warning is None and store.get("h1", "h2") == DUPLICATE
    store.put_change_mask(side("a"), side("b"), painted())
    store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM change_masks").fetchone() == (1,)
    conn.close()
