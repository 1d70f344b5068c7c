"""Core pieces behind the window: trash/move/undo on real files, the label store, marking rules, the diff."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dedup_app.core.actions import find_in_trash, move_files, trash_files, undo
from dedup_app.core.compare import difference
from dedup_app.core.duplicates import DuplicateGroup, GroupMember
from dedup_app.core.imageio import ImageInfo
from dedup_app.core.labels import DUPLICATE, NOT_DUPLICATE, LabelledFile, LabelStore
from dedup_app.core.marking import choose_keep, in_folders, mark_group, review_paths
from dedup_app.core.progress import drive
from dedup_app.core.scan import ImageRecord
from tests.conftest import photo


def files(folder: Path, *names: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        p = folder / name
        p.write_bytes(name.encode() * 10)
        out.append(str(p))
    return out


def test_trash_then_undo_restores_bytes(tmp_path: Path) -> None:
    paths = files(tmp_path / "pics", "a.jpg", "b.jpg", "späte ü.jpg")
    contents = {p: Path(p).read_bytes() for p in paths}
    record = drive(trash_files(paths))
    assert record.failed == [] and record.sources == paths
    for m in record.moved:
        assert not os.path.exists(m.source)
        assert m.destination is not None and os.path.exists(m.destination)
        assert str(os.environ["XDG_DATA_HOME"]) in m.destination  # the test sandbox's trash, not the user's
    restored = drive(undo(record))
    assert restored.failed == []
    for p in paths:
        assert Path(p).read_bytes() == contents[p]
        assert find_in_trash(p) is None  # the trash entry is gone with the file


def test_trash_many_same_names_into_a_crowded_trash_then_undo(tmp_path: Path) -> None:
    """Same file names from several folders (the trash renames them ``a 1.jpg``, ...), a trash already holding
    unrelated and older same-name entries, and names with dots: every file is found and restored byte for byte."""
    old = files(tmp_path / "old", "a.jpg", "x.y.z.png")
    drive(trash_files(old))  # older entries with the same names, from another folder
    names = ("a.jpg", "x.y.z.png", "b c.jpeg")
    paths = [p for k in range(4) for p in files(tmp_path / f"f{k}", *names)]
    contents = {p: Path(p).read_bytes() for p in paths}
    record = drive(trash_files(paths))
    assert record.failed == [] and record.sources == paths
    destinations = [m.destination for m in record.moved]
    assert None not in destinations and len(set(destinations)) == len(paths)
    assert all(os.path.exists(d) for d in destinations)  # type: ignore[arg-type]
    restored = drive(undo(record))
    assert restored.failed == []
    assert all(Path(p).read_bytes() == contents[p] for p in paths)
    assert all(find_in_trash(p) is not None for p in old)  # the older entries were left alone


def test_trash_reports_missing_and_read_only_files_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = files(tmp_path / "pics", "ok.jpg")
    locked = files(tmp_path / "locked", "ro.jpg")
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == str(tmp_path / "locked") else real_access(p, mode)
    )
    record = drive(trash_files([str(tmp_path / "pics" / "gone.jpg"), *locked, *paths]))
    assert record.sources == paths
    reasons = {Path(f.path).name: f.error for f in record.failed}
    assert "no longer exists" in reasons["gone.jpg"]
    assert "read-only" in reasons["ro.jpg"]
    assert os.path.exists(locked[0])


def test_move_renames_on_clash_and_undo_does_not_overwrite(tmp_path: Path) -> None:
    a = files(tmp_path / "x", "same.jpg")
    b = files(tmp_path / "y", "same.jpg")
    dest = tmp_path / "dest"
    files(dest, "same.jpg")  # already taken
    record = drive(move_files([*a, *b], dest))
    assert sorted(p.name for p in dest.iterdir()) == ["same (1).jpg", "same (2).jpg", "same.jpg"]
    Path(a[0]).write_text("a new file took the place")
    restored = drive(undo(record))
    assert [f.path for f in restored.failed] == a and "not overwritten" in restored.failed[0].error
    assert Path(a[0]).read_text() == "a new file took the place"
    assert os.path.exists(b[0])


def test_label_store_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    a, b, c = (LabelledFile(h, f"/p/{h}.jpg") for h in ("h1", "h2", "h3"))
    store.put_pair(b, a, NOT_DUPLICATE)  # order does not matter
    assert store.put_group([a, b, c, LabelledFile("h3", "/elsewhere/copy.jpg")], DUPLICATE) == 3
    store.put_pair(a, b, NOT_DUPLICATE)  # replaces the group label of that pair
    store.put_pair(a, LabelledFile("h1", "/p/same-content.jpg"), DUPLICATE)  # identical content: not a pair
    with pytest.raises(ValueError):
        store.put_pair(a, b, "maybe")
    store.close()
    again = LabelStore(db)
    assert again.get("h2", "h1") == NOT_DUPLICATE
    assert again.get("h1", "h3") == DUPLICATE
    assert again.counts() == {DUPLICATE: 2, NOT_DUPLICATE: 1}
    assert again.not_duplicate_pairs() == {frozenset({"h1", "h2"})}
    odd = LabelledFile("h9", os.fsdecode(b"/p/\xe9t\xe9.jpg"))  # undecodable name survives
    again.put_pair(a, odd, DUPLICATE)
    assert any(lab.b.path == odd.path or lab.a.path == odd.path for lab in again.all_labels())
    again.remove("h1", "h2")
    assert again.get("h1", "h2") is None


def record(path: str, w: int, h: int, size: int, mtime: int) -> ImageRecord:
    return ImageRecord(path, size, mtime, path, ImageInfo(w, h, "JPEG"))


def test_marking_rules() -> None:
    big = record("/a/big.jpg", 4000, 3000, 3_000_000, 300)
    heavy = record("/a/heavy.png", 2000, 1500, 9_000_000, 200)
    old = record("/a/old.jpg", 1000, 750, 500_000, 100)
    ref = record("/ref/r.jpg", 800, 600, 100_000, 400)
    members = [big, heavy, old, ref]
    assert choose_keep(members, "resolution") is big
    assert choose_keep(members, "largest") is heavy
    assert choose_keep(members, "oldest") is old
    assert choose_keep(members, "newest") is ref
    assert choose_keep(members, "reference", ["/ref"]) is ref
    assert choose_keep(members, "reference", []) is big  # no reference file: falls back to resolution
    group = DuplicateGroup("near", tuple(GroupMember(r, 0.9) for r in members))
    marks = mark_group(group, "largest", ["/ref"])
    assert marks.keep == heavy.path and marks.marked == {big.path, old.path}  # the reference file is never marked
    assert in_folders("/ref/sub/x.jpg", ["/ref"]) and not in_folders("/reference/x.jpg", ["/ref"])
    # files below the sure level are left unmarked, for review; byte copies and exact groups are always sure
    unsure = mark_group(group, "largest", [], sure=0.95)
    assert unsure.review and unsure.keep == heavy.path and unsure.marked == frozenset()
    close = DuplicateGroup("near", (GroupMember(big, 1.0), GroupMember(heavy, 0.97), GroupMember(old, 0.90)))
    partly = mark_group(close, "resolution", sure=0.95)
    assert partly.keep == big.path and partly.marked == {heavy.path} and partly.unsure == {old.path}
    copies = DuplicateGroup("exact", (GroupMember(big, 1.0), GroupMember(old, 1.0)))
    assert review_paths(close, 0.95) == {old.path} and review_paths(copies, 0.95) == frozenset()  # reports, CLI
    exact = mark_group(DuplicateGroup("exact", (GroupMember(big, 1.0), GroupMember(old, 1.0))), "resolution", sure=0.95)
    assert not exact.review and exact.marked == {old.path}
    with pytest.raises(ValueError):
        choose_keep(members, "prettiest")


def test_difference_finds_a_pasted_object_and_undoes_a_turn(shared_data: Path) -> None:
    base = np.asarray(photo(shared_data, "kodim15.png"))
    edited = base.copy()
    edited[100:200, 300:450] = (255, 0, 255)  # a pasted block
    diff = difference(base, edited)
    h, w = diff.mask.shape
    sy, sx = h / base.shape[0], w / base.shape[1]
    inside = diff.mask[int(110 * sy) : int(190 * sy), int(310 * sx) : int(440 * sx)].mean()
    outside = diff.mask.copy()
    outside[int(90 * sy) : int(210 * sy), int(290 * sx) : int(460 * sx)] = False
    assert inside > 0.6 and outside.mean() < 0.02
    turned = np.ascontiguousarray(np.rot90(base, 1))
    diff_turned = difference(base, turned)
    assert diff_turned.transform == "rot270" and diff_turned.changed_fraction < 0.05
    brighter = np.clip(base.astype(int) * 1.3 + 20, 0, 255).astype(np.uint8)
    assert difference(base, brighter).changed_fraction < 0.05  # a global change is not a local difference
    small = np.asarray(Image.fromarray(base).resize((192, 128)))
    assert difference(base, small).changed_fraction < 0.05
