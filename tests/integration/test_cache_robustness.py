"""The cache path is the user's: what is not a dedup-app cache is refused and left alone, a damaged cache is moved
aside (also when the damage shows in the middle of a scan), a read-only or unopenable one gives a clear message."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from dedup_app.cli import main
from dedup_app.core.cache import APPLICATION_ID, CacheError, CacheReadOnlyError, EmbeddingCache, default_cache_path
from dedup_app.core.duplicates import find_groups
from dedup_app.core.embedder import Embedder
from dedup_app.core.files import FileEntry
from dedup_app.core.progress import drive
from dedup_app.core.scan import ScanOptions, ScanResult, scan
from tests.conftest import noise_image, photo

PAGE = 4096


def run_scan(root: Path, embedder: Embedder, cache_path: Path) -> ScanResult:
    with EmbeddingCache(cache_path) as cache:
        return drive(scan([root], embedder, cache, ScanOptions(batch_size=4)))


def grouping(result: ScanResult) -> list[set[str]]:
    return sorted(({Path(m.image.path).name for m in g.members} for g in drive(find_groups(result))), key=sorted)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: a file's bytes, ``None`` for a folder."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A resized copy and a byte copy of one photo, and six other photos: 9 files, enough vectors for the
    embeddings table to span several pages."""
    root = tmp_path_factory.mktemp("pictures")
    img = photo(shared_data, "kodim23.png")
    img.save(root / "parrots.jpg", quality=92)
    img.resize((384, 256)).save(root / "parrots_small.jpg", quality=75)
    shutil.copy(root / "parrots.jpg", root / "parrots copy.jpg")
    photo(shared_data, "kodim08.png").save(root / "houses.jpg", quality=90)
    for name in ("kodim01.png", "kodim03.png", "kodim05.png", "kodim14.png", "kodim20.png"):
        photo(shared_data, name).save(root / f"{Path(name).stem}.jpg", quality=85)
    return root


EXPECTED = [{"parrots.jpg", "parrots copy.jpg", "parrots_small.jpg"}]


# -- what is not a dedup-app cache is refused and left exactly as it was ----------------------------------------


def _foreign_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
        conn.execute("INSERT INTO people VALUES ('Ada')")
    conn.close()


def _other_app_db(path: Path) -> None:  # e.g. a GeoPackage: another program's application id, no tables yet
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 1196444487")
    conn.close()


def _lookalike_db(path: Path) -> None:  # a table named like ours, in a database that has more
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE files (path TEXT)")
        conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.close()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: photo_bytes(p), "not an SQLite database"),
        (lambda p: p.write_text("shopping list\n"), "not an SQLite database"),
        (_foreign_db, "another program's SQLite database"),
        (_other_app_db, "another program's SQLite database"),
        (_lookalike_db, "another program's SQLite database"),
    ],
    ids=["folder", "jpeg", "text", "foreign-db", "other-app-id", "lookalike-db"],
)
def test_what_is_not_a_cache_is_refused_and_left_unchanged(tmp_path: Path, make, reason: str) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "place" / "target"
    target.parent.mkdir()
    make(target)
    if target.is_dir():
        (target / "keep.txt").write_text("precious")
    before = snapshot(tmp_path)
    with pytest.raises(CacheError) as exc_info:
        EmbeddingCache(target)
    assert str(target) in str(exc_info.value) and reason in str(exc_info.value)
    assert not isinstance(exc_info.value, CacheReadOnlyError)
    assert snapshot(tmp_path) == before  # not moved, not written to, no -wal or -shm left beside it


def photo_bytes(path: Path) -> None:
    noise_image(1).save(path, format="JPEG")


@pytest.mark.parametrize("kind", ["folder", "jpeg", "foreign-db"])
def test_cli_refuses_a_cache_that_is_not_one(
    kind: str, tmp_path: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "mine"
    if kind == "folder":
        target.mkdir()
        (target / "keep.txt").write_text("precious")
    elif kind == "jpeg":
        photo_bytes(target)
    else:
        _foreign_db(target)
    before = snapshot(tmp_path)
    assert main(["scan", str(pictures), "--cache", str(target), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and f"cache {target}" in captured.err and "Traceback" not in captured.err
    assert snapshot(tmp_path) == before
    if kind == "foreign-db":
        with sqlite3.connect(target) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
            assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["people"]
        conn.close()


@pytest.mark.parametrize(
    ("cache_arg", "message"),
    [
        ("", "--cache: empty path"),
        ("{tmp}/a-file.txt/cache.sqlite3", "cannot be opened: not a directory"),
        ("/sys/dedup-test.sqlite3", "cache /sys/dedup-test.sqlite3"),
        ("/proc/no-such-dir/cache.sqlite3", "cannot be created"),
    ],
)
def test_unopenable_cache_paths_give_one_line_errors(
    cache_arg: str, message: str, tmp_path: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file.txt").write_text("x")
    cache_arg = cache_arg.format(tmp=tmp_path)
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(main(["scan", str(pictures), "--cache", cache_arg, "--no-progress"]))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("dedup-app: error:")
    assert not os.path.exists("/sys/dedup-test.sqlite3")


def test_empty_cache_path_is_refused_by_the_library() -> None:
    with pytest.raises(CacheError, match="empty"):
        EmbeddingCache("")


# -- what is ours is used, or moved aside when damaged -----------------------------------------------------------


def test_zero_length_file_becomes_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"")
    with EmbeddingCache(path) as cache:
        cache.put_file(FileEntry(str(tmp_path / "x.jpg"), 10, 1), "h")
    with EmbeddingCache(path) as cache:
        assert cache.count() == 1
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert int.from_bytes(path.read_bytes()[68:72], "big") == APPLICATION_ID


def test_cache_written_before_the_application_id_is_still_ours(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with EmbeddingCache(path) as cache:
        cache.put_file(FileEntry(str(tmp_path / "x.jpg"), 10, 1), "h")
    with sqlite3.connect(path) as conn:  # what older versions wrote: our tables, no application id
        conn.execute("PRAGMA application_id = 0")
    conn.close()
    with EmbeddingCache(path) as cache:
        assert cache.count() == 1
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_cache_of_the_previous_release_gains_page_counts_and_keeps_its_embeddings(tmp_path: Path) -> None:
    """Caches written before page counts were stored lack the ``frames`` column: it is added, nothing is lost."""
    import numpy as np

    from dedup_app.core.imageio import ImageInfo

    path = tmp_path / "c.sqlite3"
    entry = FileEntry(str(tmp_path / "x.jpg"), 10, 1)
    with EmbeddingCache(path) as cache:
        cache.put_file(entry, "h", ImageInfo(4, 3, "JPEG"))
        cache.put_embedding(entry.path, "m", np.ones(8, np.float16))
        cache.commit()
    with sqlite3.connect(path) as conn:  # the previous release's table: no frames column
        conn.execute("ALTER TABLE files DROP COLUMN frames")
    conn.close()
    with EmbeddingCache(path) as cache:
        found = cache.lookup([entry], "m", dim=8)[entry.path]
        assert found.vector is not None and found.info is not None and found.info.frames == 1
        cache.put_file(FileEntry(str(tmp_path / "y.tif"), 5, 1), "g", ImageInfo(4, 3, "TIFF", frames=3))
        cache.commit()
        assert cache.lookup([FileEntry(str(tmp_path / "y.tif"), 5, 1)], "m")[str(tmp_path / "y.tif")].info.frames == 3
    assert not list(tmp_path.glob("*.corrupt-*"))


def _pages_of(path: Path, name: str) -> list[int]:
    with sqlite3.connect(path) as conn:
        pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno", (name,))]
    conn.close()
    return pages


def _smash(path: Path, page: int) -> None:
    """Overwrite one page past its header with junk: SQLite then reports "database disk image is malformed"."""
    with open(path, "r+b") as f:
        f.seek((page - 1) * PAGE + 8)
        f.write(bytes(range(256)) * ((PAGE - 8) // 256) + b"\xa5" * ((PAGE - 8) % 256))


@pytest.mark.parametrize("table", ["embeddings", "files", "sqlite_autoindex_files_1"])
def test_page_damaged_in_the_middle_of_the_cache(
    table: str, pictures: Path, embedder: Embedder, tmp_path: Path
) -> None:
    """A cache with a valid header but one broken page: the rescan moves it aside and finds the same groups."""
    cache_path = tmp_path / "c.sqlite3"
    first = run_scan(pictures, embedder, cache_path)
    assert grouping(first) == EXPECTED
    pages = _pages_of(cache_path, table)
    page = pages[len(pages) // 2]  # a page of that table's b-tree, past the schema page
    assert 1 < page < cache_path.stat().st_size // PAGE
    _smash(cache_path, page)
    with sqlite3.connect(cache_path) as conn:
        try:
            check = conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            check = [(str(exc),)]
    conn.close()
    assert check != [("ok",)], "the test did not damage the cache"

    second = run_scan(pictures, embedder, cache_path)
    assert grouping(second) == EXPECTED
    assert len(second.images) == len(first.images) and not second.errors
    assert list(tmp_path.glob("c.sqlite3.corrupt-*")), "the damaged cache was not kept aside"
    third = run_scan(pictures, embedder, cache_path)  # the fresh cache works: nothing is read again
    assert third.stats.decoded == 0 and grouping(third) == EXPECTED


def test_cli_rescan_with_a_damaged_page_completes(pictures: Path, tmp_path: Path) -> None:
    cache_path, out = tmp_path / "c.sqlite3", tmp_path / "r.json"
    argv = ["scan", str(pictures), "--cache", str(cache_path), "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    first = json.loads(out.read_text())
    pages = _pages_of(cache_path, "embeddings")
    _smash(cache_path, pages[len(pages) // 2])
    assert main(argv) == 0
    second = json.loads(out.read_text())
    assert [sorted(f["path"] for f in g["files"]) for g in second["groups"]] == [
        sorted(f["path"] for f in g["files"]) for g in first["groups"]
    ]


def test_vector_of_the_wrong_length_is_a_cache_miss(pictures: Path, embedder: Embedder, tmp_path: Path) -> None:
    cache_path = tmp_path / "c.sqlite3"
    first = run_scan(pictures, embedder, cache_path)
    with sqlite3.connect(cache_path) as conn:
        conn.execute(
            "UPDATE embeddings SET vector = x'0102030405' WHERE path = ?", (os.fsencode(pictures / "kodim01.jpg"),)
        )
        conn.execute(
            "UPDATE embeddings SET vector = x'01020304' WHERE path = ?", (os.fsencode(pictures / "houses.jpg"),)
        )
    conn.close()
    second = run_scan(pictures, embedder, cache_path)
    assert second.stats.decoded == 2 and second.stats.cached == len(first.images) - 2
    assert grouping(second) == grouping(first) == EXPECTED
    entries = [FileEntry(str(pictures / n), (pictures / n).stat().st_size, (pictures / n).stat().st_mtime_ns)
               for n in ("kodim01.jpg", "houses.jpg")]  # fmt: skip
    with EmbeddingCache(cache_path) as cache:  # the rescan stored them again, whole
        found = cache.lookup(entries, embedder.model_id, dim=embedder.dim)
    assert all(c.vector is not None and c.vector.shape == (embedder.dim,) for c in found.values())


def test_lookup_with_dim_drops_vectors_of_another_length(tmp_path: Path) -> None:
    import numpy as np

    entry = FileEntry(str(tmp_path / "x.jpg"), 10, 1)
    with EmbeddingCache(tmp_path / "c.sqlite3") as cache:
        cache.put_file(entry, "h")
        cache.put_embedding(entry.path, "m", np.ones(8))
        assert cache.lookup([entry], "m", dim=8)[entry.path].vector is not None
        assert cache.lookup([entry], "m", dim=16)[entry.path].vector is None
        assert cache.lookup([entry], "m")[entry.path].vector.shape == (8,)  # type: ignore[union-attr]


def test_lookup_reads_in_chunks_and_forgets_what_a_damaged_cache_gave(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup turns each chunk of rows into files as it goes (at a million files all the rows at once were 1.4 GB);
    a cache found damaged in a later chunk is started afresh, and what earlier chunks gave is dropped with it."""
    import numpy as np

    import dedup_app.core.cache as cache_module

    monkeypatch.setattr(cache_module, "_CHUNK", 7)
    entries = [FileEntry(str(tmp_path / f"{k}.jpg"), 10 + k, k) for k in range(30)]
    cache_path = tmp_path / "c.sqlite3"
    with EmbeddingCache(cache_path) as cache:
        for k, entry in enumerate(entries):
            cache.put_file(entry, f"h{k}")
            cache.put_embedding(entry.path, "m", np.full(8, k, np.float16))
        cache.commit()
        for dim in (8, None):
            found = cache.lookup(entries, "m", dim=dim)
            assert [found[e.path].content_hash for e in entries] == [f"h{k}" for k in range(30)]
            assert [float(found[e.path].vector[0]) for e in entries] == list(range(30))  # type: ignore[index]
        real, calls = cache._conn, [0]

        class Damaged:  # the third chunk's read finds the file damaged
            def execute(self, *args):  # type: ignore[no-untyped-def]
                calls[0] += 1
                if calls[0] == 3:
                    raise sqlite3.DatabaseError("database disk image is malformed")
                return real.execute(*args)

            def close(self) -> None:
                real.close()

        cache._conn = Damaged()  # type: ignore[assignment]
        assert cache.lookup(entries, "m", dim=8) == {}  # started afresh: the first two chunks' files are not known
        assert calls[0] == 3 and cache._conn is not real
        assert cache.lookup(entries, "m") == {}
    assert len(list(tmp_path.glob("c.sqlite3.corrupt-*"))) == 1


def test_each_files_vector_is_its_own_row_with_unreadable_files_between(  # type: ignore[no-untyped-def]
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan puts every file's vector in its row of one matrix, cached or new, and takes the rows of unreadable
    files out in place: row k must still be images[k]'s vector as stored (read back one file at a time)."""
    import numpy as np

    import dedup_app.core.scan as scan_module

    monkeypatch.setattr(scan_module, "_COMPACT_BLOCK", 2)  # rows moved in several steps
    for k in range(7):
        noise_image(k).save(tmp_path / f"{k}a.jpg", quality=90)
        if k % 3 == 1:
            (tmp_path / f"{k}b.jpg").write_bytes(b"not a picture")  # between readable ones, in walk order
    cache_path = tmp_path / "c.sqlite3"
    cold = run_scan(tmp_path, embedder, cache_path)
    noise_image(7).save(tmp_path / "8new.jpg", quality=90)  # a new file among cached ones
    shutil.copy(tmp_path / "2a.jpg", tmp_path / "9copy.jpg")  # and a new byte copy of a cached one
    warm = run_scan(tmp_path, embedder, cache_path)
    assert len(cold.errors) == len(warm.errors) == 2 and len(warm.images) == 9
    assert (warm.stats.cached, warm.stats.copies, warm.stats.decoded) == (7, 1, 1)
    with EmbeddingCache(cache_path) as cache:
        for result in (cold, warm):
            entries = [FileEntry(r.path, r.size, r.mtime_ns) for r in result.images]
            stored = cache.lookup(entries, embedder.model_id)
            assert len(result.embeddings) == len(result.images)
            for row, record in zip(result.embeddings, result.images, strict=True):
                assert np.array_equal(row, stored[record.path].vector)
    assert not np.array_equal(warm.embeddings[0], warm.embeddings[1])


# -- read-only ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def read_only(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Make chosen paths look unwritable to ``os.access`` (chmod does not stop root, who runs the tests in CI)."""
    denied: set[str] = set()
    real = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if mode & os.W_OK and os.path.abspath(os.fspath(path)) in denied:  # type: ignore[arg-type]
            return False
        return real(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    return lambda p: denied.add(os.path.abspath(p))


@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_cache_is_named_not_called_corrupt(
    what: str,
    tmp_path: Path,
    pictures: Path,
    read_only,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    cache_path = tmp_path / "c.sqlite3"
    with EmbeddingCache(cache_path) as cache:
        cache.put_file(FileEntry(str(pictures / "x.jpg"), 10, 1), "h")
    read_only(cache_path if what == "file" else tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(CacheReadOnlyError, match="read-only"):
        EmbeddingCache(cache_path)
    assert main(["scan", str(pictures), "--cache", str(cache_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"cache {cache_path} is read-only" in err and "corrupt" not in err and "damaged" not in err
    assert err.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_cache_in_a_read_only_folder_cannot_be_created(tmp_path: Path, read_only) -> None:  # type: ignore[no-untyped-def]
    read_only(tmp_path)
    with pytest.raises(CacheReadOnlyError, match=f"folder {tmp_path} is read-only"):
        EmbeddingCache(tmp_path / "c.sqlite3")
    assert not (tmp_path / "c.sqlite3").exists()


def test_read_only_default_cache_falls_back_to_memory(
    pictures: Path,
    read_only,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    default = default_cache_path()  # in the test sandbox (conftest sets XDG_DATA_HOME)
    default.parent.mkdir(parents=True, exist_ok=True)
    read_only(default.parent)
    assert main(["scan", str(pictures), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "is read-only" in captured.err and "without a cache" in captured.err
    assert "Found 1 group " in captured.out


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files anyway (covered above by os.access)")
def test_chmod_read_only_cache_for_real(tmp_path: Path) -> None:
    cache_path = tmp_path / "c.sqlite3"
    EmbeddingCache(cache_path).close()
    cache_path.chmod(0o444)
    try:
        with pytest.raises(CacheReadOnlyError, match="read-only"):
            EmbeddingCache(cache_path)
    finally:
        cache_path.chmod(0o644)


def test_multi_page_files_are_remembered_and_never_marked(
    tmp_path: Path, embedder: Embedder, shared_data: Path
) -> None:
    """A 3-page TIFF whose first page is a photo groups with the photo, but its other pages exist nowhere else:
    it is never marked for removal, also after a rescan from the cache (which keeps the page count)."""
    from dedup_app.core.marking import RULES, mark_group

    folder = tmp_path / "pics"
    folder.mkdir()
    first = photo(shared_data, "kodim05.png")
    first.save(folder / "photo.jpg", quality=92)
    pages = [first, photo(shared_data, "kodim20.png"), photo(shared_data, "kodim01.png")]
    pages[0].save(folder / "album.tif", save_all=True, append_images=pages[1:])
    cache_path = tmp_path / "cache.sqlite3"
    for attempt in ("first scan", "rescan from the cache"):
        result = run_scan(folder, embedder, cache_path)
        if attempt == "rescan from the cache":
            assert result.stats.cached == 2, attempt
        info = {Path(r.path).name: r.info for r in result.images}
        assert info["album.tif"].frames == 3 and info["photo.jpg"].frames == 1, attempt
        groups = drive(find_groups(result, embedder.threshold))
        assert [sorted(Path(m.image.path).name for m in g.members) for g in groups] == [["album.tif", "photo.jpg"]]
        for rule in RULES:
            marks = mark_group(groups[0], rule)
            assert str(folder / "album.tif") not in marks.marked, (attempt, rule)


# -- one cache, several writers ----------------------------------------------------------------------------------


def test_hashing_holds_no_write_transaction(tmp_path: Path, embedder: Embedder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue item 6: hashing used to write each file's row at once and commit every 64 files, so a write
    transaction stayed open while the disk was read; the window's or another process's writes waited for it."""
    import dedup_app.core.scan as scan_module

    root = tmp_path / "same size"
    root.mkdir()
    noise_image(1, (64, 48)).save(root / "n00.bmp")
    for k in range(1, 70):  # same size, so every file is hashed (more than one batch of 64); byte copies: one embed
        shutil.copy(root / "n00.bmp", root / f"n{k:02d}.bmp")
    seen: list[bool] = []
    real_hash = scan_module.hash_file
    with EmbeddingCache(tmp_path / "cache.sqlite3") as cache:

        def hash_file(path: str) -> str:
            seen.append(cache._conn.in_transaction)
            return real_hash(path)

        monkeypatch.setattr(scan_module, "hash_file", hash_file)
        result = drive(scan([root], embedder, cache, ScanOptions(batch_size=8)))
    assert len(seen) == 70 and not any(seen)
    assert result.stats.hashed == 70 and len(result.images) == 70 and result.stats.copies == 69


def test_two_processes_scan_one_cache_at_once(tmp_path: Path, shared_data: Path) -> None:
    """Two dedup-app commands on one cache (two windows, or a script beside the window) both finish, with no
    'database is locked', and the cache holds every file once."""
    import subprocess
    import sys

    folders = []
    for side in ("a", "b"):
        folder = tmp_path / side
        folder.mkdir()
        for k in range(12):  # same-size files (hashing) and images to embed, in both processes at once
            noise_image(100 * (side == "b") + k, (96, 72)).save(folder / f"{side}{k:02d}.bmp")
        shutil.copy(folder / f"{side}00.bmp", folder / f"{side}_copy.bmp")
        folders.append(folder)
    cache = tmp_path / "shared.sqlite3"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dedup_app",
                "scan",
                str(f),
                str(folders[0]),
                "--cache",
                str(cache),
                "--device",
                "cpu",
                "--no-progress",
                "--batch-size",
                "4",
                "--no-labels",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for f in folders
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert "locked" not in err and "Found" in out
    with EmbeddingCache(cache) as c:
        assert c.count() == 26
