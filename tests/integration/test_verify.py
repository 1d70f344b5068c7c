"""``dedup-app verify A B`` on real photos in a temporary folder: the JSON contract, the exit statuses (0 copy,
1 not, 2 error), the transform it finds, and a verdict that agrees with what ``scan`` groups."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from PIL import ImageOps

from dedup_app.cli import main
from tests.conftest import photo

KEYS = {"a", "b", "similarity", "probability", "duplicate", "threshold", "model", "transform", "differs",
        "geometric_check"}  # fmt: skip


@pytest.fixture(scope="module")
def files(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("verify")
    img = photo(shared_data, "kodim23.png")  # 768 x 512
    w, h = img.size
    out = {"a": root / "a.jpg", "mirrored": root / "a_mirrored_turned.jpg", "crop": root / "a_crop.jpg",
           "small": root / "a_small.png", "other": root / "b.jpg", "bad": root / "broken.jpg"}  # fmt: skip
    img.save(out["a"], quality=92)
    ImageOps.mirror(img).rotate(90, expand=True).resize((256, 384)).save(out["mirrored"], quality=80)
    img.crop((int(w * 0.1), int(h * 0.15), int(w * 0.8), int(h * 0.9))).save(out["crop"], quality=90)
    img.resize((w // 3, h // 3)).save(out["small"])
    photo(shared_data, "kodim08.png").save(out["other"], quality=90)
    out["bad"].write_bytes(b"\xff\xd8\xff not a JPEG after all")
    return out


def verify(a: Path, b: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict, str]:
    code = main(["verify", str(a), str(b), "--json", "-", "--device", "cpu", *extra])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {}), err


def test_a_mirrored_and_turned_copy(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = verify(files["a"], files["mirrored"], capsys)
    assert code == 0 and set(result) == KEYS
    assert result["a"] == str(files["a"]) and result["b"] == str(files["mirrored"])
    assert result["duplicate"] is True and result["similarity"] > result["threshold"]
    assert result["probability"] > 0.95
    assert result["transform"]["mirror"] is True and result["transform"]["quarter_turns"] == 1
    assert result["transform"]["crop_box"] is None and result["differs"] < 0.05


def test_a_crop_is_found_with_its_box(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = verify(files["a"], files["crop"], capsys)
    assert code == 0 and result["duplicate"] is True
    box = result["transform"]["crop_box"]
    truth = (76, 76, 614, 460)  # the crop of a 768 x 512 photo: 10-80 % across, 15-90 % down
    assert box is not None and all(abs(x - t) <= 8 for x, t in zip(box, truth, strict=True)), box
    assert result["differs"] < 0.05  # measured inside the box


def test_different_photos_exit_1(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = verify(files["a"], files["other"], capsys)
    assert code == 1 and result["duplicate"] is False and result["probability"] < 0.05
    # the human report says so too, and exit 1 also when the threshold is the user's
    assert main(["verify", str(files["a"]), str(files["other"]), "--device", "cpu", "--threshold", "0.99"]) == 1
    assert capsys.readouterr().out.startswith("not a duplicate: similarity ")


def test_errors_exit_2_naming_the_file(files: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, result, err = verify(files["a"], files["bad"], capsys)
    assert code == 2 and result == {} and str(files["bad"]) in err and "Traceback" not in err
    assert main(["verify", str(files["a"]), str(tmp_path / "missing.jpg")]) == 2
    assert "missing.jpg: not found" in capsys.readouterr().err
    assert main(["verify", str(tmp_path), str(files["a"])]) == 2
    assert "is a folder, not an image file" in capsys.readouterr().err


def test_the_verdict_agrees_with_what_scan_groups(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = files["a"].parent
    report = tmp_path / "r.json"
    assert main(["scan", str(folder), "--cache", ":memory:", "--json", str(report), "--no-progress",
                 "--device", "cpu", "--no-labels"]) == 0  # fmt: skip
    capsys.readouterr()
    group_of = {}
    for k, group in enumerate(json.loads(report.read_text())["groups"]):
        for f in group["files"]:
            group_of[Path(f["path"]).name] = k
    images = [p for name, p in files.items() if name != "bad"]
    assert {p.name for p in images if p.name in group_of} >= {"a.jpg", "a_crop.jpg", "a_small.png"}
    for x, y in itertools.combinations(images, 2):
        code, result, _ = verify(x, y, capsys)
        together = x.name in group_of and group_of.get(x.name) == group_of.get(y.name)
        if together:  # groups are cliques: every pair in one is above the threshold
            assert result["duplicate"] is True and code == 0, (x.name, y.name)
        if "b.jpg" in (x.name, y.name):
            assert result["duplicate"] is False and code == 1, (x.name, y.name)
