"""End-to-end scans on real files in temporary folders: duplicates, bad inputs, the cache, cancel and resume."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dedup_app.core.scan as scan_module
from dedup_app.core.cache import EmbeddingCache
from dedup_app.core.duplicates import DuplicateFinder, DuplicateGroup, find_groups
from dedup_app.core.embedder import Embedder
from dedup_app.core.progress import Cancelled, CancelToken, drive
from dedup_app.core.scan import ScanOptions, ScanResult, scan
from model_training.edits import apply_edit
from tests.conftest import photo

PHOTOS = ["kodim01.png", "kodim03.png", "kodim05.png", "kodim08.png", "kodim14.png", "kodim20.png"]
EDITS = ["resize", "crop", "rotate90", "colour", "overlay"]


def run_scan(roots: list[Path], embedder: Embedder, cache: EmbeddingCache, **opts: object) -> ScanResult:
    return drive(scan(roots, embedder, cache, ScanOptions(**opts)))  # type: ignore[arg-type]


def names(group: DuplicateGroup) -> set[str]:
    return {Path(m.image.path).name for m in group.members}


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Six real photos, edited copies of the first three, and an exact byte copy in a subfolder."""
    root = tmp_path_factory.mktemp("collection")
    rng = np.random.default_rng(0)
    for k, name in enumerate(PHOTOS):
        img = photo(shared_data, name)
        stem = Path(name).stem
        img.save(root / f"{stem}.jpg", quality=92)
        if k < 3:
            for edit in EDITS:
                e = apply_edit(edit, img, rng)
                (root / f"{stem}_{edit}{e.suffix}").write_bytes(e.to_bytes())
    (root / "backup").mkdir()
    shutil.copy2(root / "kodim01.jpg", root / "backup" / "kodim01 copy.jpg")
    return root


def test_known_duplicates_found_and_distinct_photos_not_grouped(
    collection: Path, embedder: Embedder, tmp_path: Path
) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite3") as cache:
        result = run_scan([collection], embedder, cache)
    assert len(result.images) == 6 + 3 * len(EDITS) + 1 and not result.errors
    groups = drive(find_groups(result))
    by_source: dict[str, DuplicateGroup] = {}
    for g in groups:
        stems = {n.split("_")[0].split(" ")[0].removesuffix(".jpg") for n in names(g)}
        assert len(stems) == 1, f"group mixes different photos: {names(g)}"
        by_source[stems.pop()] = g
    for stem in ("kodim01", "kodim03", "kodim05"):
        found = names(by_source[stem])
        assert f"{stem}.jpg" in found
        copies = {f"{stem}_{e}.jpg" for e in EDITS}
        # recall is high, not perfect: at most one of the five edited copies may be missed per photo
        assert len(copies & found) >= len(EDITS) - 1, f"{stem}: missing {copies - found}"
    for stem in ("kodim08", "kodim14", "kodim20"):
        assert stem not in by_source  # distinct photos with no copies stay ungrouped
    g1 = by_source["kodim01"]
    assert "kodim01 copy.jpg" in names(g1)  # the exact copy joins its content's near group
    assert g1.keep.path.endswith(".jpg") and g1.keep.pixels == max(m.image.pixels for m in g1.members)
    for m in g1.members:
        assert 0.0 < m.similarity <= 1.0
        if m.image.content_hash == g1.keep.content_hash:
            assert m.similarity == 1.0


def test_exact_copies_without_near_duplicates_form_an_exact_group(
    tmp_path: Path, embedder: Embedder, shared_data: Path
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    photo(shared_data, "kodim08.png").save(folder / "a.png")
    photo(shared_data, "kodim14.png").save(folder / "other.jpg", quality=90)
    for k in range(3):
        shutil.copy(folder / "a.png", folder / f"a_copy{k}.png")
    os.utime(folder / "a_copy1.png", ns=(1_000_000_000, 1_000_000_000))  # the oldest copy is kept
    with EmbeddingCache(":memory:") as cache:
        result = run_scan([folder], embedder, cache)
    assert result.stats.decoded == 2  # one copy of each distinct content, nothing more
    assert result.stats.hashed == 4  # only the files sharing a size were hashed
    groups = drive(find_groups(result))
    assert len(groups) == 1 and groups[0].kind == "exact"
    assert len(groups[0].members) == 4
    assert Path(groups[0].keep.path).name == "a_copy1.png"


def test_exif_rotated_photos_all_match(shared_data: Path, embedder: Embedder) -> None:
    folder = shared_data / "neardup" / "exif_rotation"
    with EmbeddingCache(":memory:") as cache:
        result = run_scan([folder], embedder, cache)
    assert len(result.images) == 4
    groups = drive(find_groups(result))
    assert len(groups) == 1 and len(groups[0].members) == 4
    emb = result.embeddings.astype(np.float32)
    assert (emb @ emb.T).min() >= result.threshold


def test_pdq_bridge_edits_match_the_original(shared_data: Path, embedder: Embedder) -> None:
    folder = shared_data / "neardup" / "pdq_bridge_mods"
    with EmbeddingCache(":memory:") as cache:
        result = run_scan([folder], embedder, cache)
    groups = drive(find_groups(result))
    biggest = max(groups, key=lambda g: len(g.members))
    assert "aaa-orig.jpg" in names(biggest)
    assert len(biggest.members) >= 10  # of 12 files; the 128 px square crop is the hardest


def test_bad_inputs_become_errors_and_the_scan_goes_on(tmp_path: Path, embedder: Embedder, shared_data: Path) -> None:
    root = tmp_path / "messy"
    root.mkdir()
    photo(shared_data, "kodim03.png").save(root / "good.jpg", quality=90)
    good_bytes = (root / "good.jpg").read_bytes()
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_text("not an image")
    (root / "truncated.jpg").write_bytes(good_bytes[: len(good_bytes) // 3])
    (root / "readme.txt").write_text("ignored: not an image extension")
    odd = root / "odd names"
    odd.mkdir()
    shutil.copy(root / "good.jpg", odd / "-dash ünïcödé 😀 name.jpg")
    shutil.copy(root / "good.jpg", odd / "new\nline.jpg")
    raw = os.fsencode(odd) + b"/latin1-\xe9t\xe9.jpg"  # not valid UTF-8
    with open(raw, "wb") as f:
        f.write(good_bytes)
    (root / "loop").symlink_to(root, target_is_directory=True)  # a symlink loop
    (root / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    os.mkfifo(root / "pipe.jpg")  # must never be opened (it would block)
    locked = root / "locked"
    locked.mkdir()
    shutil.copy(root / "good.jpg", locked / "hidden.jpg")
    missing_root = tmp_path / "does-not-exist"

    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if os.fspath(path) == str(locked):  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    with EmbeddingCache(tmp_path / "c.sqlite3") as cache:
        mp = pytest.MonkeyPatch()
        mp.setattr(os, "scandir", scandir)
        try:
            result = run_scan([root, missing_root], embedder, cache)
        finally:
            mp.undo()
    errors = {Path(e.path).name: e.error for e in result.errors}
    assert "empty file" in errors["empty.jpg"]
    assert "not a recognised image" in errors["notes.png"]
    assert "truncated" in errors["truncated.jpg"]
    assert "broken symbolic link" in errors["dangling.jpg"]
    assert "permission denied" in errors["locked"]
    assert "no such file" in errors["does-not-exist"]
    assert "pipe.jpg" not in errors and "readme.txt" not in errors
    found = {Path(r.path).name for r in result.images}
    assert found == {"good.jpg", "-dash ünïcödé 😀 name.jpg", "new\nline.jpg", os.fsdecode(b"latin1-\xe9t\xe9.jpg")}
    groups = drive(find_groups(result))
    assert len(groups) == 1 and groups[0].kind == "exact" and len(groups[0].members) == 4


def test_rescan_decodes_nothing(
    collection: Path, embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = scan_module.load_for_embedding

    def counting(path: str, *args: object, **kwargs: object) -> object:
        calls.append(path)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scan_module, "load_for_embedding", counting)
    cache_path = tmp_path / "c.sqlite3"
    with EmbeddingCache(cache_path) as cache:
        first = run_scan([collection], embedder, cache)
    assert len(calls) == first.stats.decoded == len(first.images) - 1  # the exact copy is not decoded
    calls.clear()
    with EmbeddingCache(cache_path) as cache:
        second = run_scan([collection], embedder, cache)
    assert calls == [] and second.stats.decoded == 0 and second.stats.hashed == 0
    assert [r.path for r in second.images] == [r.path for r in first.images]
    assert np.array_equal(second.embeddings, first.embeddings)


def test_changed_and_vanished_files(tmp_path: Path, embedder: Embedder, shared_data: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for name in PHOTOS[:3]:
        photo(shared_data, name).save(folder / f"{Path(name).stem}.jpg", quality=90)
    cache_path = tmp_path / "c.sqlite3"
    with EmbeddingCache(cache_path) as cache:
        run_scan([folder], embedder, cache)
        assert cache.count() == 3
    # one file rewritten with other content (new size and mtime), one deleted
    photo(shared_data, "kodim20.png").save(folder / "kodim01.jpg", quality=80)
    (folder / "kodim03.jpg").unlink()
    with EmbeddingCache(cache_path) as cache:
        result = run_scan([folder], embedder, cache)
        assert result.stats.decoded == 1 and result.stats.purged == 1
        assert cache.count() == 2 and cache.count(embedder.model_id) == 2


def test_cancel_keeps_committed_batches_and_next_scan_resumes(
    collection: Path, embedder: Embedder, tmp_path: Path
) -> None:
    cache_path = tmp_path / "c.sqlite3"
    token = CancelToken()
    seen = 0
    with EmbeddingCache(cache_path) as cache:
        gen = scan([collection], embedder, cache, ScanOptions(batch_size=4), token)
        with pytest.raises(Cancelled):
            for report in gen:
                if report.stage == "Reading images" and report.done > 0:
                    seen = report.done
                    token.cancel()
    assert 4 <= seen < 20
    with EmbeddingCache(cache_path) as cache:
        result = run_scan([collection], embedder, cache, batch_size=4)
    total = len(result.images) - 1
    assert result.stats.decoded <= total - 4  # at least the first batch came from the cache
    assert result.stats.cached >= 4


def test_corrupt_cache_file_is_replaced(collection: Path, embedder: Embedder, tmp_path: Path) -> None:
    cache_path = tmp_path / "c.sqlite3"
    cache_path.write_bytes(b"SQLite format 3\x00" + b"\x13" * 3000)  # a half-written, broken database
    with EmbeddingCache(cache_path) as cache:
        result = run_scan([collection / "backup"], embedder, cache)
    assert len(result.images) == 1
    assert list(tmp_path.glob("c.sqlite3.corrupt-*"))


def test_regrouping_at_other_thresholds_needs_no_new_search(collection: Path, embedder: Embedder) -> None:
    with EmbeddingCache(":memory:") as cache:
        result = run_scan([collection], embedder, cache)
    finder = DuplicateFinder(result)
    drive(finder.search(0.5))
    strict, default, loose = (finder.groups(t) for t in (0.97, result.threshold, 0.5))
    count = lambda gs: sum(len(g.members) for g in gs)  # noqa: E731
    assert count(strict) <= count(default) <= count(loose)
    with pytest.raises(ValueError):
        finder.groups(0.4)


def test_file_roots_and_overlapping_roots(collection: Path, embedder: Embedder) -> None:
    with EmbeddingCache(":memory:") as cache:
        result = run_scan([collection, collection / "backup", collection / "kodim01.jpg"], embedder, cache)
    paths = [r.path for r in result.images]
    assert len(paths) == len(set(paths)) == 6 + 3 * len(EDITS) + 1


def test_image_as_png_with_exif_like_dimensions_reports_upright_size(tmp_path: Path, embedder: Embedder) -> None:
    img = Image.new("RGB", (300, 100), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "turned.jpg", exif=exif.tobytes())
    with EmbeddingCache(":memory:") as cache:
        result = run_scan([tmp_path], embedder, cache)
    assert (result.images[0].info.width, result.images[0].info.height) == (100, 300)
