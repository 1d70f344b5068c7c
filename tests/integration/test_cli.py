"""The ``dedup-app`` command: arguments, exit codes, JSON/CSV reports, and resuming after a hard kill."""

from __future__ import annotations

import csv
import json
import os
import re
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
    assert group["review"] is False  # a byte copy and a resized copy: sure
    for f in group["files"]:
        assert set(f) >= {"path", "similarity", "width", "height", "bytes"} and f["pages"] == 1
        assert f["review"] is False
        assert isinstance(f["similarity"], float) and isinstance(f["width"], int) and isinstance(f["bytes"], int)
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 3 and sum(r["keep"] == "yes" for r in rows) == 1
    stdout = capsys.readouterr().out
    assert "Found 1 group " in stdout and "1 could not be read" in stdout


def test_threshold_flag_changes_grouping(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert (
        main(["scan", str(folder), "--cache", ":memory:", "--json", str(out), "--threshold", "1.0", "--no-progress"])
        == 0
    )
    report = json.loads(out.read_text())
    assert report["threshold"] == 1.0
    assert [g["kind"] for g in report["groups"]] == ["exact"]  # only the byte copy is left


def test_scan_honours_the_windows_labels(  # type: ignore[no-untyped-def]
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """Issue item 10: a pair labelled "not duplicate" in the window was grouped again by ``dedup-app scan``."""
    from dedup_app.core.imageio import hash_file
    from dedup_app.core.labels import NOT_DUPLICATE, LabelledFile, LabelStore, default_labels_path

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # this test's own label store
    small = folder / "parrots_small.jpg"
    store = LabelStore(default_labels_path())
    for original in ("parrots.jpg", "parrots (1).jpg"):  # byte copies share a content hash: one label covers both
        big = folder / original
        store.put_pair(LabelledFile(hash_file(str(big)), str(big)), LabelledFile(hash_file(str(small)), str(small)),
                       NOT_DUPLICATE)  # fmt: skip
    store.close()
    out = tmp_path / "r.json"
    argv = ["scan", str(folder), "--cache", ":memory:", "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    names = [{Path(f["path"]).name for f in g["files"]} for g in json.loads(out.read_text())["groups"]]
    assert names == [{"parrots.jpg", "parrots (1).jpg"}]  # the byte copies still group; the small one not
    assert "1 pair labelled 'not duplicate' in the window kept apart" in capsys.readouterr().out
    assert main([*argv, "--no-labels"]) == 0
    names = [{Path(f["path"]).name for f in g["files"]} for g in json.loads(out.read_text())["groups"]]
    assert {"parrots.jpg", "parrots_small.jpg"} <= names[0]
    assert "kept apart" not in capsys.readouterr().out


def test_threshold_one_groups_the_same_pixels_in_two_formats(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--threshold is "at or above": a PNG and a BMP of the same pixels are similar at exactly 1.0."""
    root = tmp_path / "formats"
    root.mkdir()
    img = photo(shared_data, "kodim23.png")
    img.save(root / "parrots.png")
    img.save(root / "parrots.bmp")
    photo(shared_data, "kodim08.png").save(root / "other.png")
    argv = ["scan", str(root), "--cache", ":memory:", "--threshold", "1.0", "--json", "-", "--no-progress"]
    assert main([*argv, "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [sorted(Path(f["path"]).name for f in g["files"]) for g in report["groups"]] == [
        ["parrots.bmp", "parrots.png"]
    ]
    assert [f["similarity"] for f in report["groups"][0]["files"]] == [1.0, 1.0]  # not 0.9999 from float16
    assert "similar image" not in captured.err  # no image has too many neighbours: no word about the bound


def test_images_with_too_many_neighbours_are_reported(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each image keeps at most MAX_NEIGHBORS similar ones; when that bites, the scan says so in one line."""
    import dedup_app.core.index as index_module

    monkeypatch.setattr(index_module, "MAX_NEIGHBORS", 1)
    root = tmp_path / "three"
    root.mkdir()
    img = photo(shared_data, "kodim23.png")
    img.save(root / "parrots.png")
    img.save(root / "parrots.jpg", quality=90)
    img.resize((384, 256)).save(root / "parrots_small.jpg", quality=80)
    out = tmp_path / "r.json"
    argv = ["scan", str(root), "--cache", ":memory:", "--threshold", "0.8", "--json", str(out), "--no-progress"]
    assert main([*argv, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    line = ("3 images have more than 1 similar image above 0.800; only the 1 most similar to each were kept, so very "
            "large groups may be split.")  # fmt: skip
    assert err.count(line) == 1
    assert json.loads(out.read_text())["groups"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scan", "/no/such/folder"], "not found: /no/such/folder"),
        (["scan", ".", "--threshold", "1.5"], "must be in (0, 1]"),
        (["scan", ".", "--threshold", "high"], "not a number"),
        (["scan", ".", "--device", "tpu", "--cache", ":memory:"], "unknown device"),
        (["scan", ".", "--json", "/no/such/dir/out.json"], "does not exist"),
        (["scan"], "required: PATH"),
        (["scan", ".", "--json", "-", "--csv", "-"], "cannot both write to stdout"),
        (["scan", ".", "--json", "r.json", "--csv", "./r.json"], "name the same file"),
        (["scan", ".", "--cache", ""], "--cache: empty path"),
        (["scan", ".", "--show", "-3"], "must be at least 0"),
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


@pytest.mark.parametrize(
    ("flag", "target", "message"),
    [
        ("--json", "{tmp}", "is a folder"),
        ("--csv", "{tmp}/", "is a folder"),
        ("--json", "/proc/dedup-test.json", "cannot be written"),
        ("--csv", "/sys/dedup-test.csv", "cannot be written"),
        ("--json", "{tmp}/a-file.txt/r.json", "a-file.txt is not a folder"),
    ],
)
def test_unwritable_report_is_refused_before_the_scan(
    flag: str, target: str, message: str, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import dedup_app.core.embedder as embedder_module

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded: the output should have been refused before the scan")

    monkeypatch.setattr(embedder_module, "load_checkpoint", no_scan)
    (tmp_path / "a-file.txt").write_text("x")
    target = target.format(tmp=tmp_path)
    with pytest.raises(SystemExit) as exc_info:
        main(["scan", str(folder), "--cache", ":memory:", flag, target, "--no-progress"])
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag} {target}: " in err and message in err and "Traceback" not in err
    assert not os.path.exists("/sys/dedup-test.csv")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_report_that_fails_at_the_end_is_one_line_and_exit_1(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_csv = tmp_path / "r.csv"
    argv = ["scan", str(folder), "--cache", str(tmp_path / "c.sqlite3"), "--json", "/dev/full", "--csv", str(out_csv)]
    assert main([*argv, "--no-progress"]) == 1  # /dev/full: every write fails with "no space left on device"
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert (
        "dedup-app: error: --json /dev/full: the report could not be written: no space left on device" in captured.err
    )
    assert "scanning again is quick" in captured.err
    assert "Found 1 group " in captured.out  # the summary is still shown
    assert len(list(csv.DictReader(out_csv.open()))) == 3  # and the other report still written


@pytest.mark.parametrize("to_stdout", [[], ["--json", "-"]], ids=["summary", "json"])
def test_closed_stdout_pipe_ends_quietly(folder: Path, to_stdout: list[str]) -> None:
    """``dedup-app scan ... | head -1``: the reader goes away; no BrokenPipeError traceback, exit status 1."""
    argv = [sys.executable, "-m", "dedup_app", "scan", str(folder), "--cache", ":memory:", "--no-progress", *to_stdout]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the scan prints anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


def _summary_counts(stdout: str) -> dict[str, int]:
    line = stdout.splitlines()[0]
    m = re.match(
        r"Scanned (\d+) image files? in .*?: (\d+) read, (\d+) from the cache, (\d+) identical cop(?:y|ies), "
        r"(\d+) could not be read;",
        line,
    )
    assert m, line
    keys = ("files", "read", "cached", "copies", "failed")
    return dict(zip(keys, map(int, m.groups()), strict=True))


def test_summary_counts_each_file_once(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """read + from the cache + identical copies + could not be read = files found, first scan and rescan."""
    cache, out = tmp_path / "c.sqlite3", tmp_path / "r.json"
    argv = ["scan", str(folder), "--cache", str(cache), "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    first = _summary_counts(capsys.readouterr().out)
    assert first == {"files": 5, "read": 3, "cached": 0, "copies": 1, "failed": 1}
    stats = json.loads(out.read_text())["stats"]
    assert stats["decoded"] + stats["from_cache"] + stats["copies"] + stats["failed"] == stats["files"] == 5
    assert main(argv) == 0
    second = _summary_counts(capsys.readouterr().out)
    assert second == {"files": 5, "read": 0, "cached": 4, "copies": 0, "failed": 1}


def test_control_characters_in_names_are_escaped_on_the_terminal_only(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = "evil\x1b[2J\x1b]0;pwned\x07\nline\u202e.jpg"
    shutil.copy(folder / "parrots.jpg", folder / evil)
    out = tmp_path / "r.json"
    assert main(["scan", str(folder), "--cache", ":memory:", "--json", str(out), "--no-progress", "-v"]) == 0
    stdout = capsys.readouterr().out
    assert "\x1b" not in stdout and "\x07" not in stdout and "\u202e" not in stdout
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07\\nline\\u202e.jpg" in stdout
    assert all("evil" not in line or line.endswith("KB") for line in stdout.splitlines())  # one line per file
    assert (folder / evil).as_posix() in {f["path"] for g in json.loads(out.read_text())["groups"] for f in g["files"]}


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
    assert "Reading images" not in out.stdout and "Found 1 group " in out.stdout


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
