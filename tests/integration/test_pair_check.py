"""The geometric check of look-alike pairs: real photos of one subject set apart, real copies kept together."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from dedup_app.core import pair_check
from dedup_app.core.cache import EmbeddingCache
from dedup_app.core.duplicates import scan_and_search
from dedup_app.core.progress import drive
from tests.conftest import noise_image, photo

# Two different product photos of grey trousers on a white wall: the shipped model scores them 0.904, above its
# threshold, and they are not copies of each other.
LOOK_ALIKES = ("cloth_00250.jpg", "cloth_00293.jpg")


def _copies(src: Image.Image, folder: Path, stem: str) -> list[Path]:
    """Edited copies a user has: smaller and recompressed, cropped with a caption, mirrored, greyscale."""
    w, h = src.size
    out = []
    small = folder / f"{stem}_small.jpg"
    src.resize((w // 2, h // 2), Image.Resampling.LANCZOS).save(small, quality=70)
    captioned = src.crop((w // 10, h // 12, w - w // 8, h - h // 10))
    ImageDraw.Draw(captioned).rectangle((0, 0, captioned.width, captioned.height // 8), fill=(255, 255, 255))
    ImageDraw.Draw(captioned).text((10, 5), "SALE -40% this week only", fill=(200, 0, 0))
    cap = folder / f"{stem}_caption.png"
    captioned.save(cap)
    mirror = folder / f"{stem}_mirror.jpg"
    ImageOps.mirror(src).save(mirror, quality=85)
    grey = folder / f"{stem}_grey.jpg"
    ImageOps.grayscale(src).save(grey, quality=85)
    out += [small, cap, mirror, grey]
    return out


def test_copies_pass_and_other_photos_fail(shared_data: Path, tmp_path: Path) -> None:
    kodak = photo(shared_data, "kodim05.png")
    kodak.save(tmp_path / "orig.png")
    copies = _copies(kodak, tmp_path, "k5")
    for c in copies:
        n = pair_check.check_image_pair(str(tmp_path / "orig.png"), str(c))
        assert pair_check.is_copy(n), (c.name, n)
    pool = shared_data / "photos" / "pool"
    a, b = (str(pool / name) for name in LOOK_ALIKES)
    assert pair_check.is_copy(pair_check.check_image_pair(a, b)) is False
    other = photo(shared_data, "kodim23.png")
    other.save(tmp_path / "other.png")
    assert (
        pair_check.is_copy(pair_check.check_image_pair(str(tmp_path / "orig.png"), str(tmp_path / "other.png")))
        is False
    )


def test_plain_and_unreadable_images_are_not_judged(tmp_path: Path) -> None:
    noise_image(1).save(tmp_path / "plain.png")
    noise_image(1).resize((200, 150)).save(tmp_path / "plain_small.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    assert (
        pair_check.check_image_pair(str(tmp_path / "plain.png"), str(tmp_path / "plain_small.png")) == pair_check.PLAIN
    )
    assert pair_check.is_copy(pair_check.PLAIN) is None
    pairs = [
        (str(tmp_path / "plain.png"), str(tmp_path / "broken.jpg")),
        (str(tmp_path / "gone.jpg"), str(tmp_path / "plain.png")),
    ]
    with pair_check.PairChecker() as checker:
        counts = checker.check(pairs)
    assert counts.tolist() == [pair_check.UNCHECKED, pair_check.UNCHECKED]


@pytest.fixture()
def look_alike_folder(shared_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    pool = shared_data / "photos" / "pool"
    for name in LOOK_ALIKES:
        shutil.copy(pool / name, folder / name)
    with Image.open(pool / LOOK_ALIKES[0]) as im:
        im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4)).save(folder / "copy_small.jpg", quality=75)
    return folder


def _groups(finder, threshold: float) -> list[set[str]]:  # type: ignore[no-untyped-def]
    return [{Path(m.image.path).name for m in g.members} for g in finder.groups(threshold)]


def test_scan_sets_look_alikes_apart_and_remembers_the_check(
    look_alike_folder: Path,
    tmp_path: Path,
    embedder,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    t = embedder.threshold
    unchecked = drive(scan_and_search([look_alike_folder], embedder, ":memory:", check=False))
    assert unchecked.set_apart == 0
    # without the check the two different trousers are one group (the embedding alone cannot tell them apart)
    assert any(set(LOOK_ALIKES) <= g for g in _groups(unchecked, t))

    cache_path = tmp_path / "cache.sqlite3"
    finder = drive(scan_and_search([look_alike_folder], embedder, cache_path))
    assert finder.set_apart >= 1 and finder.checked_at == pytest.approx(t)
    groups = _groups(finder, t)
    assert {LOOK_ALIKES[0], "copy_small.jpg"} in groups
    assert not any(set(LOOK_ALIKES) <= g for g in groups)
    # lowering the threshold past the check brings the look-alike back, as any pair under the threshold
    assert any(set(LOOK_ALIKES) <= g for g in _groups(finder, t - 0.01))

    # the results are kept in the cache: a rescan checks nothing again
    with EmbeddingCache(cache_path) as cache:
        key = (_hash(look_alike_folder, LOOK_ALIKES[0]), _hash(look_alike_folder, LOOK_ALIKES[1]))
        assert len(cache.pair_checks(pair_check.METHOD, [key])) == 1

    def no_work(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("checked again")

    monkeypatch.setattr(pair_check.PairChecker, "check", no_work)
    again = drive(scan_and_search([look_alike_folder], embedder, cache_path))
    assert again.set_apart == finder.set_apart
    assert sorted(map(sorted, _groups(again, t))) == sorted(map(sorted, groups))


def _hash(folder: Path, name: str) -> str:
    from dedup_app.core.imageio import hash_file

    return hash_file(str(folder / name))


def test_cli_scan_says_what_it_set_apart(look_alike_folder: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    def run(*extra: str) -> tuple[str, dict]:  # type: ignore[type-arg]
        out = tmp_path / f"r{len(extra)}.json"
        proc = subprocess.run([sys.executable, "-m", "dedup_app", "scan", str(look_alike_folder), "--cache",
                               str(tmp_path / "c.sqlite3"), "--no-progress", "--json", str(out), *extra],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout, json.loads(out.read_text())

    def member_sets(report: dict) -> list[set[str]]:  # type: ignore[type-arg]
        return [{Path(m["path"]).name for m in g["files"]} for g in report["groups"]]

    out, checked = run()
    assert not any(set(LOOK_ALIKES) <= g for g in member_sets(checked))
    assert checked["kept_apart"] >= 1 and "look-alike pair" in out
    _, plain = run("--no-geometric-check")
    assert any(set(LOOK_ALIKES) <= g for g in member_sets(plain))
    assert plain["kept_apart"] is None
    assert np.isfinite(checked["threshold"])


def test_verify_says_two_photos_of_one_subject_are_no_copies(shared_data: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    pool = shared_data / "photos" / "pool"
    out = tmp_path / "v.json"
    proc = subprocess.run([sys.executable, "-m", "dedup_app", "verify", str(pool / LOOK_ALIKES[0]),
                           str(pool / LOOK_ALIKES[1]), "--json", str(out)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    verdict = json.loads(out.read_text())
    assert verdict["similarity"] >= verdict["threshold"] and verdict["duplicate"] is False
    assert verdict["geometric_check"]["same_picture"] is False
    assert verdict["geometric_check"]["matching_points"] < pair_check.MIN_INLIERS
    assert "keypoints map onto each other" in proc.stdout


def test_find_calls_a_look_alike_no_duplicate_and_the_copy_one(
    look_alike_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from dedup_app.cli import main

    query = tmp_path / "query.jpg"
    shutil.move(look_alike_folder / LOOK_ALIKES[0], query)  # the query is outside the collection
    cache = str(tmp_path / "c.sqlite3")
    assert main(["scan", str(look_alike_folder), "--cache", cache, "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    code = main(["find", str(query), "--cache", cache, "--device", "cpu", "--json", "-", "--no-progress"])
    found = json.loads(capsys.readouterr().out)
    matches = {Path(m["path"]).name: m for m in found["queries"][0]["matches"]}
    assert code == 0
    assert matches["copy_small.jpg"]["duplicate"] is True
    look_alike = matches[LOOK_ALIKES[1]]
    assert look_alike["duplicate"] is False and look_alike["similarity"] >= found["threshold"]
