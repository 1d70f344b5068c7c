"""``scan --cluster local``: the files are read and embedded by Ray workers (a local Ray runtime), the vectors come
back into the same cache, and the groups are the local scan's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dedup_app.core.cache import EmbeddingCache
from tests.conftest import photo

pytest.importorskip("ray")


def test_a_scan_on_a_local_ray_runtime_groups_as_the_local_scan(tmp_path: Path, shared_data: Path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    names = ["kodim01.png", "kodim05.png", "kodim14.png", "kodim20.png", "kodim23.png"]
    for name in names:
        img = photo(shared_data, name)
        img.save(pics / f"{Path(name).stem}.jpg", quality=90)
        img.resize((img.width // 2, img.height // 2)).save(pics / f"{Path(name).stem}_half.jpg", quality=75)
    photo(shared_data, "kodim08.png").transpose(Image.Transpose.ROTATE_90).save(pics / "turned.jpg")
    photo(shared_data, "kodim08.png").save(pics / "kodim08.png")
    (pics / "broken.jpg").write_bytes(b"not an image at all")
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1"}

    def scan(cache: Path, *extra: str) -> dict:  # type: ignore[type-arg]
        out = cache.with_suffix(".json")
        run = subprocess.run(
            [sys.executable, "-m", "dedup_app", "scan", str(pics), "--cache", str(cache), "--json", str(out),
             "--no-progress", *extra],
            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        return json.loads(out.read_text())  # type: ignore[no-any-return]

    local = scan(tmp_path / "local.sqlite3")
    remote = scan(tmp_path / "ray.sqlite3", "--cluster", "local")

    def groups(report: dict) -> list[list[str]]:  # type: ignore[type-arg]
        return sorted(sorted(Path(f["path"]).name for f in g["files"]) for g in report["groups"])

    assert len(groups(local)) == 6  # five photos with their halves, and the turned copy
    assert groups(remote) == groups(local)
    assert remote["errors"] == local["errors"] and len(local["errors"]) == 1  # the broken file, with its reason
    assert remote["stats"]["decoded"] == local["stats"]["decoded"] == 12
    assert remote["stats"]["read_on_cluster"] == 12 and local["stats"]["read_on_cluster"] == 0  # Ray read them
    # the vectors came back into the cache: a second scan reads nothing, locally
    with EmbeddingCache(tmp_path / "ray.sqlite3") as cache:
        assert len(cache.embedding_ids(remote["model"])) == 12
    again = scan(tmp_path / "ray.sqlite3")
    assert again["stats"]["from_cache"] == 12 and again["stats"]["decoded"] == 0
    assert groups(again) == groups(local)


def test_an_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "dedup_app", "scan", str(pics), "--cache", ":memory:", "--cluster", "ray://127.0.0.1:1",
         "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert "cannot reach the Ray cluster at ray://127.0.0.1:1" in run.stderr
