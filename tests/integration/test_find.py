"""``dedup-app find`` on real photos in temporary folders: the JSON contract, ranking, exit statuses (0 a duplicate
found, 1 none, 2 an error), an unreadable query among good ones, ``--in`` (scanned first when not cached), files
gone since their scan, a damaged index rebuilt, and a scan that updates the index instead of rebuilding it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from dedup_app.cli import main
from dedup_app.core.cache import EmbeddingCache
from dedup_app.core.duplicates import scan_and_search
from dedup_app.core.progress import drive
from dedup_app.core.vector_index import VectorIndex, index_folder
from tests.conftest import photo

MATCH_KEYS = {"path", "similarity", "probability", "duplicate", "width", "height", "bytes"}


@pytest.fixture()
def collection(shared_data: Path, tmp_path: Path) -> dict[str, Path]:
    """A scanned folder: kodim23 with three edited copies, and four other photos; a query folder beside it."""
    root, queries = tmp_path / "photos", tmp_path / "queries"
    (root / "sub").mkdir(parents=True)
    queries.mkdir()
    img = photo(shared_data, "kodim23.png")
    w, h = img.size
    files = {
        "original": root / "parrots.jpg",
        "small": root / "sub" / "parrots_small.png",
        "mirrored": root / "sub" / "parrots_mirrored.jpg",
        "crop": root / "parrots_crop.jpg",
    }
    img.save(files["original"], quality=92)
    img.resize((w // 2, h // 2)).save(files["small"])
    ImageOps.mirror(img).save(files["mirrored"], quality=75)
    img.crop((40, 30, w - 60, h - 40)).save(files["crop"], quality=88)
    for name in ("kodim01.png", "kodim05.png", "kodim08.png", "kodim15.png"):
        files[name] = root / name.replace(".png", ".jpg")
        photo(shared_data, name).save(files[name], quality=90)
    files["query"] = queries / "parrots_query.webp"
    img.resize((w * 3 // 4, h * 3 // 4)).save(files["query"], quality=85)
    files["unrelated"] = queries / "lighthouse.jpg"
    photo(shared_data, "kodim19.png").save(files["unrelated"], quality=90)
    files["bad"] = queries / "broken.jpg"
    files["bad"].write_bytes(b"\xff\xd8\xff this is not a JPEG")
    files["cache"] = tmp_path / "cache.sqlite3"
    assert main(["scan", str(root), "--cache", str(files["cache"]), "--device", "cpu", "--no-progress"]) == 0
    return files


def find(files: dict[str, Path], capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    code = main(["find", *args, "--cache", str(files["cache"]), "--device", "cpu", "--json", "-", "--no-progress"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {}), err


def test_the_copies_come_first_with_the_json_contract(collection, capsys) -> None:  # type: ignore[no-untyped-def]
    code, data, _ = find(collection, capsys, str(collection["query"]), "--top", "6")
    assert code == 0
    assert set(data) == {"model", "threshold", "queries"} and data["model"].startswith("default-")
    (answer,) = data["queries"]
    assert answer["query"] == str(collection["query"]) and answer["error"] is None
    matches = answer["matches"]
    assert len(matches) == 6 and all(set(m) == MATCH_KEYS for m in matches)
    copies = {str(collection[k]) for k in ("original", "small", "mirrored", "crop")}
    assert {m["path"] for m in matches[:4]} == copies  # every copy ranked above every other photo
    assert all(m["duplicate"] for m in matches[:4]) and not any(m["duplicate"] for m in matches[4:])
    sims = [m["similarity"] for m in matches]
    assert sims == sorted(sims, reverse=True)
    assert all(m["similarity"] >= data["threshold"] for m in matches[:4])
    assert matches[0]["probability"] > 0.9 and matches[-1]["probability"] < 0.1
    small = next(m for m in matches if m["path"] == str(collection["small"]))
    with Image.open(collection["small"]) as im:
        assert (small["width"], small["height"]) == im.size
    assert small["bytes"] == collection["small"].stat().st_size


def test_a_query_in_the_collection_is_not_its_own_match(collection, capsys) -> None:  # type: ignore[no-untyped-def]
    code, data, _ = find(collection, capsys, str(collection["original"]), "--min-similarity", "0.8")
    paths = [m["path"] for m in data["queries"][0]["matches"]]
    assert code == 0 and str(collection["original"]) not in paths
    assert set(paths) == {str(collection[k]) for k in ("small", "mirrored", "crop")}


def test_an_unreadable_query_is_reported_and_the_others_answered(collection, capsys) -> None:  # type: ignore[no-untyped-def]
    code, data, err = find(collection, capsys, str(collection["bad"]), str(collection["query"]), "--top", "2")
    assert code == 2
    bad, good = data["queries"]
    assert bad["query"] == str(collection["bad"]) and bad["matches"] == [] and bad["error"]
    assert good["error"] is None and len(good["matches"]) == 2 and good["matches"][0]["duplicate"]
    assert "broken.jpg" in err


def test_no_duplicate_exits_1(collection, capsys) -> None:  # type: ignore[no-untyped-def]
    code, data, _ = find(collection, capsys, str(collection["unrelated"]), "--top", "3")
    assert code == 1 and len(data["queries"][0]["matches"]) == 3
    assert not any(m["duplicate"] for m in data["queries"][0]["matches"])
    code, data, _ = find(collection, capsys, str(collection["unrelated"]), "--min-similarity", "0.95")
    assert code == 1 and data["queries"][0]["matches"] == []


def test_in_limits_the_search_and_scans_what_is_not_cached(collection, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    sub = collection["small"].parent
    code, data, _ = find(collection, capsys, str(collection["query"]), "--in", str(sub))
    assert code == 0
    assert {m["path"] for m in data["queries"][0]["matches"]} == {str(collection["small"]), str(collection["mirrored"])}
    fresh = tmp_path / "new_folder"
    fresh.mkdir()
    Image.open(collection["query"]).rotate(90, expand=True).save(fresh / "turned.jpg", quality=90)
    code, data, _ = find(collection, capsys, str(collection["query"]), "--in", str(fresh))
    (match,) = data["queries"][0]["matches"]
    assert code == 0 and match["path"] == str(fresh / "turned.jpg") and match["duplicate"]


def test_text_output_ranks_and_marks_duplicates(collection, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["find", str(collection["query"]), "--top", "5", "--cache", str(collection["cache"]),
                 "--device", "cpu", "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()[:2] in {"1.", "2.", "3.", "4.", "5."}]
    assert code == 0 and len(lines) == 5
    assert sum("duplicate" in line for line in lines) == 4 and "copy" in lines[0]
    assert "Searched 8 indexed images" in out


def test_files_gone_since_their_scan_are_left_out(collection, capsys) -> None:  # type: ignore[no-untyped-def]
    collection["crop"].unlink()
    with open(collection["mirrored"], "ab") as f:  # changed since scanned: its vector no longer describes it
        f.write(b"\0")
    code, data, err = find(collection, capsys, str(collection["query"]), "--min-similarity", "0.8")
    paths = {m["path"] for m in data["queries"][0]["matches"]}
    assert code == 0 and paths == {str(collection["original"]), str(collection["small"])}
    assert "2 files changed or removed since scanned" in err


def test_a_damaged_index_is_rebuilt(collection, capsys) -> None:  # type: ignore[no-untyped-def]
    (index_file,) = index_folder(collection["cache"]).glob("*.faiss")
    index_file.write_bytes(b"\x00" * 100)
    code, data, _ = find(collection, capsys, str(collection["query"]), "--min-similarity", "0.8")
    assert code == 0 and len(data["queries"][0]["matches"]) == 4
    with EmbeddingCache(collection["cache"]) as cache:
        model = data["model"]
        assert not VectorIndex.open(cache, model, 256)[1].changed  # saved whole again


def test_a_scan_that_adds_files_updates_the_index_in_place(collection, embedder, shared_data) -> None:  # type: ignore[no-untyped-def]
    folder = collection["original"].parent
    for k, name in enumerate(("kodim02.png", "kodim03.png")):
        photo(shared_data, name).save(folder / f"added{k}.jpg", quality=90)
    with EmbeddingCache(collection["cache"]) as cache:
        index, report = VectorIndex.open(cache, embedder.model_id, embedder.dim)
        assert not report.changed and len(index) == 8
        drive(scan_and_search([folder], embedder, cache))
        index, report = VectorIndex.open(cache, embedder.model_id, embedder.dim)
        assert not report.changed and len(index) == 10  # the scan already added the two, without a rebuild


def test_usage_errors(collection, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        main(["find", str(collection["query"]), "--in", str(collection["cache"].parent / "nowhere")])
    assert exc.value.code == 2 and "not found" in capsys.readouterr().err
