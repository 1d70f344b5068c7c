"""The ``dedup-app`` command: arguments, exit codes, JSON/CSV reports, and resuming after a hard kill."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dedup_app.cli import main
from dedup_app.core.units import format_bytes, format_duration
from tests.conftest import noise_image, photo


@pytest.fixture()
def folder(tmp_path: Path, shared_data: Path) -> Path:
    root = tmp_path / "pics"
    root.mkdir()
    img = photo(shared_data, "kodim23.png")
    img.save(root / "parrots.jpg", quality=92)
    img.resize((384, 256)).save(root / "parrots_small.jpg", quality=70)
    shutil.copy(root / "parrots.jpg", root / "parrots (1).jpg")
    photo(shared_data, "kodim08.png").save(root / "other.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def test_scan_json_and_csv(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    code = main(
        [
            "scan",
            str(folder),
            "--cache",
            ":memory:",
            "--json",
            str(out_json),
            "--csv",
            str(out_csv),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    report = json.loads(out_json.read_text())
    assert set(report) >= {"threshold", "model", "images", "errors", "groups"}
    assert report["images"] == 4
    assert report["errors"] == [{"path": str(folder / "broken.jpg"), "error": report["errors"][0]["error"]}]
    assert len(report["groups"]) == 1
    group = report["groups"][0]
    assert group["kind"] in ("exact", "near")
    assert {Path(f["path"]).name for f in group["files"]} == {"parrots.jpg", "parrots (1).jpg", "parrots_small.jpg"}
    assert Path(group["keep"]).name in ("parrots.jpg", "parrots (1).jpg")
    for f in group["files"]:
        assert set(f) >= {"path", "similarity", "width", "height", "bytes"}
        assert isinstance(f["similarity"], float) and isinstance(f["width"], int) and isinstance(f["bytes"], int)
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 3 and sum(r["keep"] == "yes" for r in rows) == 1
    stdout = capsys.readouterr().out
    assert "Found 1 groups" in stdout and "1 files could not be read" in stdout


def test_threshold_flag_changes_grouping(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert (
        main(["scan", str(folder), "--cache", ":memory:", "--json", str(out), "--threshold", "1.0", "--no-progress"])
        == 0
    )
    report = json.loads(out.read_text())
    assert report["threshold"] == 1.0
    assert [g["kind"] for g in report["groups"]] == ["exact"]  # only the byte copy is left


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scan", "/no/such/folder"], "not found: /no/such/folder"),
        (["scan", ".", "--threshold", "1.5"], "must be in (0, 1]"),
        (["scan", ".", "--threshold", "high"], "not a number"),
        (["scan", ".", "--device", "tpu", "--cache", ":memory:"], "unknown device"),
        (["scan", ".", "--json", "/no/such/dir/out.json"], "does not exist"),
        (["scan"], "required: PATH"),
    ],
)
def test_bad_arguments_exit_nonzero_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        code = main(argv)
        raise SystemExit(code)
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_model_file(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "model.pt"
    bad.write_text("nope")
    assert main(["scan", str(folder), "--model", str(bad), "--cache", ":memory:", "--no-progress"]) == 2
    assert "model.pt: not a dedup-app model file" in capsys.readouterr().err


def test_entry_points_run_as_programs(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "dedup-app"  # the venv's script, whether or not it is on PATH
    if not script.exists():
        pytest.fail(f"the dedup-app console script is not installed next to {sys.executable} (pip install -e .)")
    for cmd in ([str(script)], [sys.executable, "-m", "dedup_app"]):
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "dedup-app" in out.stdout
        help_out = subprocess.run([*cmd, "scan", "--help"], capture_output=True, text=True, timeout=60)
        assert help_out.returncode == 0 and "--threshold" in help_out.stdout


def test_progress_bar_goes_to_stderr(folder: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dedup_app", "scan", str(folder), "--cache", ":memory:"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0
    assert "Reading images" in out.stderr
    assert "Reading images" not in out.stdout and "Found 1 groups" in out.stdout


def test_hard_kill_mid_scan_then_resume(tmp_path: Path) -> None:
    """SIGKILL during a scan keeps the committed batches; the next scan reads only the rest."""
    root = tmp_path / "many"
    root.mkdir()
    n = 48
    for k in range(n):
        noise_image(100 + k, (480, 360)).save(root / f"img{k:03d}.jpg", quality=85)
    cache = tmp_path / "cache.sqlite3"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dedup_app",
            "scan",
            str(root),
            "--cache",
            str(cache),
            "--batch-size",
            "4",
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    committed = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if cache.exists():
            try:
                with sqlite3.connect(cache, timeout=1) as conn:
                    committed = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
            except sqlite3.OperationalError:
                committed = 0  # tables not created yet
            if committed >= 8:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 8 <= committed < n, "the scan did not get far enough, or finished before the kill"
    out_json = tmp_path / "r.json"
    assert main(["scan", str(root), "--cache", str(cache), "--json", str(out_json), "--no-progress"]) == 0
    stats = json.loads(out_json.read_text())["stats"]
    assert stats["from_cache"] >= committed
    assert stats["decoded"] <= n - committed
    assert json.loads(out_json.read_text())["images"] == n


def test_formatting_helpers() -> None:
    assert format_bytes(999) == "999 bytes"
    assert format_bytes(1536) == "1.5 KB"
    assert format_bytes(2.5e9) == "2.5 GB"
    assert format_duration(5.25) == "5.2s"
    assert format_duration(75) == "1m 15s"
    assert format_duration(3 * 3600 + 65) == "3h 01m"
