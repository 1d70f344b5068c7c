"""Change detection on real files: synthetic edits of an aerial image, LEVIR-CD samples, GeoTIFF, bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from dedup_app.cli import main
from dedup_app.core.change import pipeline
from dedup_app.core.change.align import AlignmentError, align
from dedup_app.core.change.detect import (
    ChangeConfig,
    ChangeDetector,
    ChangeHeadCheckpoint,
    load_change_head,
)
from dedup_app.core.change.heads import (
    SHIPPED_HEADS,
    ChangeModelError,
    ChangeModelNotInstalled,
    default_change_model,
    resolve_change_model,
)
from dedup_app.core.change.normalize import match_histograms
from dedup_app.core.change.pipeline import (
    ChangeInputError,
    Pair,
    compare_pair,
    output_names,
    pair_inputs,
    pixel_scores,
    run_change,
)
from dedup_app.core.change.raster import Raster, read_raster
from dedup_app.core.change.torch_maps import ChangeHead
from dedup_app.core.progress import Cancelled, CancelToken, Progress, drive
from tests.conftest import write_change_head

BOX = (slice(300, 400), slice(100, 200))  # where the object is pasted


@pytest.fixture(scope="module")
def detector(embedder):  # type: ignore[no-untyped-def]
    return ChangeDetector(embedder)


@pytest.fixture(scope="module")
def aerial(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 512 x 512 aerial tile, and versions of it: an object pasted in, recoloured, shifted, all three."""
    root = tmp_path_factory.mktemp("aerial")
    a = np.asarray(Image.open(shared_data / "change" / "demo_pair" / "A" / "demo.png").convert("RGB"))[:512, :512]
    houses = np.asarray(Image.open(shared_data / "change" / "levir_samples" / "B" / "train_36_0512_0512.png")
                        .convert("RGB"))[60:160, 140:240]  # fmt: skip
    pasted = a.copy()
    pasted[BOX] = houses

    def recolour(x: np.ndarray) -> np.ndarray:
        img = ImageEnhance.Brightness(Image.fromarray(x)).enhance(1.3)
        return np.asarray(ImageEnhance.Color(img).enhance(0.6))

    versions = {
        "before": a,
        "pasted": pasted,
        "recoloured": recolour(a),
        "shifted": np.roll(a, (5, -3), axis=(0, 1)),
        "all": np.roll(recolour(pasted), (4, 6), axis=(0, 1)),
    }
    out = {}
    for name, arr in versions.items():
        out[name] = root / f"{name}.png"
        Image.fromarray(arr).save(out[name])
    return out


def run_pair(detector: ChangeDetector, before: Path, after: Path):  # type: ignore[no-untyped-def]
    result = drive(compare_pair(Pair("p", str(before), str(after)), detector))
    mask, regions = result.regions_at(result.default_threshold, 64)
    return result, mask.astype(bool), regions


def test_pasted_object_is_found_and_nothing_else(detector: ChangeDetector, aerial: dict[str, Path]) -> None:
    _, mask, regions = run_pair(detector, aerial["before"], aerial["pasted"])
    box = np.zeros_like(mask)
    box[BOX] = True
    assert (mask & box).sum() / (mask | box).sum() > 0.35
    around = np.zeros_like(mask)
    around[284:416, 84:216] = True
    assert (mask & ~around).mean() < 0.01
    assert regions and 100 <= regions[0].bbox[0] + regions[0].bbox[2] // 2 <= 200


def test_colour_shift_and_misalignment_alone_are_not_change(detector: ChangeDetector, aerial: dict[str, Path]) -> None:
    _, mask, _ = run_pair(detector, aerial["before"], aerial["recoloured"])
    assert mask.mean() < 0.01
    result, mask, _ = run_pair(detector, aerial["before"], aerial["shifted"])
    assert mask.mean() < 0.01
    assert abs(result.alignment.dx - -3) < 1.0 and abs(result.alignment.dy - 5) < 1.0


def test_pasted_object_found_through_shift_and_colour(detector: ChangeDetector, aerial: dict[str, Path]) -> None:
    result, mask, _ = run_pair(detector, aerial["before"], aerial["all"])
    assert abs(result.alignment.dx - 6) < 1.0 and abs(result.alignment.dy - 4) < 1.0
    box = np.zeros_like(mask)
    box[BOX] = True
    assert (mask & box).sum() / box.sum() > 0.5
    around = np.zeros_like(mask)
    around[280:420, 80:220] = True
    assert (mask & ~around).mean() < 0.02


def test_levir_samples(detector: ChangeDetector, shared_data: Path, tmp_path: Path) -> None:
    levir = shared_data / "change" / "levir_samples"
    summaries = drive(run_change(levir / "A", levir / "B", tmp_path, detector))
    assert len(summaries) == 4 and not any(s["error"] for s in summaries)
    tp = fp = fn = 0
    for s in summaries:
        mask = np.asarray(Image.open(s["files"]["mask"]))
        label = np.asarray(Image.open(levir / "label" / f"{s['name']}.png").convert("L"))
        assert mask.shape == label.shape and set(np.unique(mask)) <= {0, 255}
        sc = pixel_scores(mask, label)
        tp, fp, fn = tp + sc["tp"], fp + sc["fp"], fn + sc["fn"]
        if s["name"] == "train_386_0512_0768":  # nothing changed there
            assert s["changed_fraction"] < 0.05
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 > 0.35  # training-free features; absolute difference + Otsu scores about 0.1 here
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["pairs"]) == 4 and (tmp_path / "summary.csv").read_text().count("\n") == 5
    geo = json.loads((tmp_path / "train_36_0512_0512.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and geo["features"]
    assert geo["features"][0]["geometry"]["type"] == "Polygon"


def test_geotiff_round_trip_keeps_crs_and_transform(
    detector: ChangeDetector, aerial: dict[str, Path], tmp_path: Path
) -> None:  # noqa: E501
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    transform = from_origin(448_000.0, 5_412_000.0, 0.5, 0.5)  # 0.5 m pixels, UTM 31N
    paths = {}
    for name in ("before", "pasted"):
        arr = np.asarray(Image.open(aerial[name])).astype(np.uint16) * 40  # 16-bit, like satellite products
        paths[name] = tmp_path / f"{name}.tif"
        with rasterio.open(paths[name], "w", driver="GTiff", height=512, width=512, count=3, dtype="uint16",
                           crs="EPSG:32631", transform=transform) as dst:  # fmt: skip
            dst.write(arr.transpose(2, 0, 1))
    out = tmp_path / "out"
    [summary] = drive(run_change(paths["before"], paths["pasted"], out, detector))
    assert summary["georeferenced"] and not summary["error"]
    with rasterio.open(summary["files"]["geotiff"]) as mask:
        assert mask.crs.to_epsg() == 32631
        assert mask.transform == transform
        changed_px = int((mask.read(1) > 0).sum())
    assert summary["changed_m2"] == pytest.approx(changed_px * 0.25, rel=0.01)
    geo = json.loads(Path(summary["files"]["geojson"]).read_text())
    ring = np.array(geo["features"][0]["geometry"]["coordinates"][0])
    assert (ring[:, 0] >= 448_000).all() and (ring[:, 0] <= 448_256).all()  # map coordinates, inside the tile
    assert (ring[:, 1] >= 5_411_744).all() and (ring[:, 1] <= 5_412_000).all()
    assert "32631" in geo["crs_wkt"] or "UTM" in geo["crs_wkt"]


def test_georeferenced_offset_is_put_on_one_grid(shared_data: Path) -> None:
    pytest.importorskip("rasterio")
    a = read_raster(shared_data / "change" / "landsat_taizhou" / "A" / "2000TM", bands=(3, 2, 1))
    assert a.geo is not None and a.geo.pixel_area_m2() == pytest.approx(900.0)
    # the same scene with a transform moved by 3 pixels east: placed back by georeference, not by search
    a_geo = a.geo
    moved = Raster("b", np.ascontiguousarray(a.pixels[:, 3:]), type(a_geo)(a_geo.crs, (
        a_geo.transform[0], 0.0, a_geo.transform[2] + 3 * a_geo.transform[0], 0.0, a_geo.transform[4],
        a_geo.transform[5])))  # fmt: skip
    b_on_a, valid, alignment = align(a, moved)
    assert alignment.shift_px < 0.5 and alignment.method.startswith("georeference")
    # B starts 3 pixels east of A: A's first three columns have no B pixels, the rest match A
    assert np.abs(b_on_a[:, 3:].astype(int) - a.pixels[:, 3:].astype(int)).mean() < 1.0
    assert not valid[:, :3].any() and valid[:, 3:].all()


def test_band_files_and_sentinel_resampling(shared_data: Path) -> None:
    pytest.importorskip("rasterio")
    folder = shared_data / "change" / "oscd_bercy_sentinel2" / "A"
    prefix = "S2A_OPER_MSI_L1C_TL_MPS__20161130T130757_A007527_T31UDQ_"
    joined = ",".join(str(folder / f"{prefix}{b}.tif") for b in ("B04", "B03", "B01"))  # B01 is 60 m
    r = read_raster(joined)
    assert r.pixels.shape == (395, 360, 3) and r.bit_depth == 16
    assert r.geo is not None and r.geo.is_geographic
    assert 80 < r.geo.pixel_area_m2(200) < 140  # ~10 m x 10 m at 48.8 degrees north


def test_bad_inputs(detector: ChangeDetector, aerial: dict[str, Path], shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ChangeInputError, match="not found"):
        pair_inputs(tmp_path / "nope.png", aerial["before"])
    with pytest.raises(ChangeInputError, match="two files or two folders"):
        pair_inputs(aerial["before"], tmp_path)
    left, right = tmp_path / "L", tmp_path / "R"
    left.mkdir()
    right.mkdir()
    for name in ("a.png", "b.png"):
        Image.open(aerial["before"]).save(left / name)
    Image.open(aerial["before"]).save(right / "a.png")
    Image.open(aerial["before"]).save(right / "c.png")
    with pytest.raises(ChangeInputError, match="only before: b.png; only after: c.png"):
        pair_inputs(left, right)
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    photo = tmp_path / "elsewhere.png"  # a street photo of the same size: nothing to align with
    Image.open(shared_data / "photos" / "kodak" / "kodim05.png").crop((0, 0, 512, 512)).save(photo)
    out = tmp_path / "out"
    [bad] = drive(run_change(junk, aerial["before"], out, detector))
    assert "not a recognised image" in bad["error"]
    [unrelated] = drive(run_change(aerial["before"], photo, out, detector))  # same size: mapped, and flagged
    assert not unrelated["error"] and unrelated["alignment_verified"] is False
    assert unrelated["alignment"] == "not verified"


def test_only_pairs_that_cannot_be_paired_are_refused(
    detector: ChangeDetector, aerial: dict[str, Path], tmp_path: Path
) -> None:
    """Different shapes without georeferencing: refused, naming both files and the reason, in the summary too."""
    wide = tmp_path / "wide.png"
    Image.new("RGB", (900, 300)).save(wide)
    with pytest.raises(AlignmentError) as exc:
        align(read_raster(aerial["before"]), read_raster(wide))
    message = str(exc.value)
    assert str(aerial["before"]) in message and str(wide) in message
    assert "cannot be paired" in message and "512 x 512" in message and "900 x 300" in message
    assert "not both georeferenced" in message
    [refused] = drive(run_change(aerial["before"], wide, tmp_path / "out", detector))
    assert refused["error"] == message and "alignment_verified" not in refused
    # the same aspect ratio at another size is still paired (resized)
    half = tmp_path / "half.png"
    Image.open(aerial["pasted"]).resize((256, 256)).save(half)
    _, _, alignment = align(read_raster(aerial["before"]), read_raster(half))
    assert alignment.resized and alignment.verified


EGY = ("val_2", "val_3", "train_2")  # bare land in A, a neighbourhood in B: A and B hardly correlate


def test_land_that_became_a_neighbourhood_is_mapped_not_refused(
    detector: ChangeDetector, shared_data: Path, tmp_path: Path
) -> None:
    """Same-size tiles of one place where nearly everything changed were refused ("the images do not line up");
    they are mapped now, unmoved, with the alignment marked not verified. train_2 was worse: its best match, a
    118 px shift, was applied, so the map compared the wrong ground."""
    egy = shared_data / "change" / "egy_bcd"
    left, right = tmp_path / "A", tmp_path / "B"
    left.mkdir()
    right.mkdir()
    for name in EGY:
        Image.open(egy / "A" / f"{name}.png").save(left / f"{name}.png")
        Image.open(egy / "B" / f"{name}.png").save(right / f"{name}.png")
    out = tmp_path / "out"
    summaries = drive(run_change(left, right, out, detector))
    by_name = {s["name"]: s for s in summaries}
    assert sorted(by_name) == sorted(EGY)
    for name, s in by_name.items():
        assert not s["error"], (name, s["error"])
        assert s["alignment_verified"] is False and s["alignment"] == "not verified", name
        assert (s["shift_x_px"], s["shift_y_px"], s["rotation_deg"]) == (0.0, 0.0, 0.0), name
        assert s["alignment_correlation"] < 0.15 and s["alignment_note"], name
        assert (out / f"{name}_mask.png").is_file()
    assert "no shift improves it" in by_name["val_2"]["alignment_note"]
    assert "too far to be a misregistration" in by_name["train_2"]["alignment_note"]
    # the map is of the real change: new buildings over most of the tile
    for name in ("val_2", "train_2"):
        mask = np.asarray(Image.open(out / f"{name}_mask.png"))
        label = np.asarray(Image.open(egy / "label" / f"{name}.png").convert("L"))
        assert pixel_scores(mask, label)["f1"] > 0.6, name
    summary, rows = read_summary(out)
    assert [p["alignment_verified"] for p in summary["pairs"]] == [False] * 3
    assert [r["alignment_verified"] for r in rows] == ["False"] * 3


def test_change_command_maps_an_unverified_pair_and_says_so(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``dedup-app change`` on a pair it used to refuse: exit 0, the maps, and the doubt on stdout and in the
    summary."""
    egy = shared_data / "change" / "egy_bcd"
    out = tmp_path / "maps"
    code = main(["change", str(egy / "A" / "val_2.png"), str(egy / "B" / "val_2.png"), "--out", str(out),
                 "--no-progress", "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert (out / "val_2_mask.png").is_file()
    [pair] = json.loads((out / "summary.json").read_text())["pairs"]
    assert not pair["error"] and pair["alignment_verified"] is False and pair["alignment"] == "not verified"
    printed = capsys.readouterr().out
    assert "Compared 1 of 1 pairs" in printed and "val_2: " in printed
    assert "alignment not verified: weak correlation" in printed


def test_small_shifts_are_still_found_and_verified(shared_data: Path, aerial: dict[str, Path], tmp_path: Path) -> None:
    """A copy moved by 3 px is put back and its alignment verified, on a 512 px tile (phase correlation and ECC)
    and on a 256 px tile (phase correlation alone)."""
    levir = np.asarray(Image.open(shared_data / "change" / "levir_samples" / "A" / "train_36_0512_0512.png")
                       .convert("RGB"))  # fmt: skip
    for name, arr in (("aerial", np.asarray(Image.open(aerial["before"]))), ("levir", levir)):
        before, after = tmp_path / f"{name}_a.png", tmp_path / f"{name}_b.png"
        Image.fromarray(arr).save(before)
        Image.fromarray(np.roll(arr, 3, axis=1)).save(after)
        a, b = read_raster(before), read_raster(after)
        b_on_a, _, alignment = align(a, b)
        assert alignment.verified and not alignment.note, name
        assert alignment.method != "not verified" and alignment.correlation > 0.5, name
        assert abs(alignment.dx - 3) < 0.5 and abs(alignment.dy) < 0.5, name
        inner = (slice(8, -8), slice(8, -8))
        assert np.abs(b_on_a[inner].astype(int) - a.pixels[inner].astype(int)).mean() < 6, name


def test_georeferenced_footprints(shared_data: Path) -> None:
    """Footprints that share a sliver are mapped on the sliver (under 5 % was refused); footprints that do not
    overlap are refused, naming both files."""
    pytest.importorskip("rasterio")
    a = read_raster(shared_data / "change" / "landsat_taizhou" / "A" / "2000TM", bands=(3, 2, 1))
    assert a.geo is not None
    t = a.geo.transform
    h, w = a.shape

    def moved(columns: int) -> Raster:
        """The part of A from ``columns`` east on, georeferenced where it lies."""
        pixels = np.ascontiguousarray(a.pixels[:, min(columns, w - 8) :])
        return Raster("moved.tif", pixels, type(a.geo)(a.geo.crs, (t[0], 0.0, t[2] + columns * t[0], 0.0, t[4],
                                                                   t[5])))  # fmt: skip

    sliver = int(w * 0.97)  # B starts 97 % of the width east: 3 % of A is covered
    b_on_a, valid, alignment = align(a, moved(sliver))
    assert alignment.method.startswith("georeference") and alignment.shift_px < 0.5
    assert 0.02 < valid.mean() < 0.04 and valid[:, sliver + 1 :].all() and not valid[:, : sliver - 1].any()
    assert np.abs(b_on_a[:, sliver + 1 :].astype(int) - a.pixels[:, sliver + 1 :].astype(int)).mean() < 2.0
    with pytest.raises(AlignmentError, match="footprints do not overlap") as exc:
        align(a, moved(w + 10))
    assert a.path in str(exc.value) and "moved.tif" in str(exc.value)


def test_histogram_matching_removes_a_global_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) * 0.6 + 40, 0, 255).astype(np.uint8)
    matched = match_histograms(b, a)
    assert np.abs(matched.astype(int) - a.astype(int)).mean() < 2.0


def test_large_image_is_tiled_with_blended_seams(detector: ChangeDetector, aerial: dict[str, Path]) -> None:
    a = np.asarray(Image.open(aerial["before"]))
    big = np.tile(a, (2, 3, 1))[:900, :1300]  # 900 x 1300: several 512 tiles with overlap
    prob = drive(detector.probability(big, big.copy()))
    assert prob.shape == (225, 325) and np.isfinite(prob).all()
    assert prob.max() < 0.2  # identical images: no change anywhere, seams included


def test_trained_change_head_is_loaded_and_used(
    detector: ChangeDetector, embedder, aerial: dict[str, Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]  # noqa: E501
    torch.manual_seed(0)
    head = ChangeHead()
    with torch.no_grad():
        head.fuse[-1].weight.zero_()
        head.fuse[-1].bias.fill_(5.0)  # a head that calls everything changed, so its use is visible
    ckpt = ChangeHeadCheckpoint(ChangeConfig(), {k: v.clone() for k, v in head.state_dict().items()},
                                head.channels, head.width, {"f1": 0.0}, "test-head")  # fmt: skip
    path = tmp_path / "head.pt"
    ckpt.save(path)
    loaded = load_change_head(path)
    with_head = ChangeDetector(embedder, loaded)
    assert "test-head" in with_head.model_name
    _, mask, _ = run_pair(with_head, aerial["before"], aerial["recoloured"])
    assert mask.mean() > 0.9
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a dedup-app change model"):
        load_change_head(tmp_path / "bad.pt")


def test_change_command(aerial: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "maps"
    code = main(["change", str(aerial["before"]), str(aerial["pasted"]), "--out", str(out), "--min-area", "32",
                 "--no-progress", "--device", "cpu"])  # fmt: skip
    assert code == 0
    for suffix in ("_mask.png", "_overlay.png", "_heatmap.png", ".geojson"):
        assert (out / f"before{suffix}").is_file()
    mask = np.asarray(Image.open(out / "before_mask.png"))
    assert mask.shape == (512, 512) and mask.max() == 255
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"][0]["regions"] >= 1
    assert (summary["complete"], summary["pairs_done"], summary["pairs_total"]) == (True, 1, 1)
    assert "1 of 1 pairs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["change", str(aerial["before"]), str(tmp_path / "missing.png"), "--out", str(out)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["change", str(aerial["before"]), str(aerial["pasted"]), "--out", str(out), "--bands", "x"])
    assert main(["change", str(aerial["before"]), str(aerial["pasted"]), "--out", str(out), "--model",
                 str(aerial["before"]), "--no-progress"]) == 2  # fmt: skip


def tile_folders(aerial: dict[str, Path], root: Path, names: list[str]) -> tuple[Path, Path]:
    """BEFORE/AFTER folders with the aerial tile and its pasted-object version under each relative path."""
    left, right = root / "before", root / "after"
    for name in names:
        for folder, version in ((left, "before"), (right, "pasted")):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            Image.open(aerial[version]).save(folder / name)
    return left, right


def read_summary(out: Path) -> tuple[dict, list[dict[str, str]]]:  # type: ignore[type-arg]
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        return json.loads((out / "summary.json").read_text()), list(csv.DictReader(f))


def test_summary_is_written_as_pairs_finish_and_when_the_run_stops(
    detector: ChangeDetector, aerial: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled after the first of three pairs, the summary lists that pair and says the run is incomplete; it is
    on disk while the run goes on, and written too when the run is closed between two pairs (Ctrl-C outside it)."""
    left, right = tile_folders(aerial, tmp_path, ["t0.png", "t1.png", "t2.png"])
    out, cancel = tmp_path / "out", CancelToken()
    seen: list[dict] = []  # type: ignore[type-arg]

    def after_first_pair(report: Progress) -> None:
        if report.stage == "Pairs":
            seen.append(read_summary(out)[0])
            cancel.cancel()

    with pytest.raises(Cancelled):
        drive(run_change(left, right, out, detector, cancel=cancel), after_first_pair)
    summary, rows = read_summary(out)
    assert [p["name"] for p in seen[0]["pairs"]] == ["t0"]  # written as the pair finished, before the cancel
    assert [p["name"] for p in summary["pairs"]] == ["t0"] and not summary["pairs"][0]["error"]
    assert (summary["complete"], summary["pairs_done"], summary["pairs_total"]) == (False, 1, 3)
    assert [r["before"] for r in rows] == [str(left / "t0.png")]
    assert not list(out.glob("*.tmp"))

    # the periodic writes off: only stopping writes the summary; a Ctrl-C in the caller, then the run closed
    monkeypatch.setattr(pipeline._SummaryWriter, "write_soon", lambda self, summaries: None)
    out = tmp_path / "out2"
    run = run_change(left, right, out, detector)

    def interrupt(report: Progress) -> None:
        if report.stage == "Pairs":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drive(run, interrupt)
    run.close()
    summary, rows = read_summary(out)
    assert [p["name"] for p in summary["pairs"]] == ["t0"] and len(rows) == 1
    assert (summary["complete"], summary["pairs_done"], summary["pairs_total"]) == (False, 1, 3)


def test_change_command_interrupted_keeps_the_summary_of_finished_pairs(
    aerial: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during the second pair: exit 130, and summary.json/csv list the first pair (and say so)."""
    left, right = tile_folders(aerial, tmp_path, ["t0.png", "t1.png", "t2.png"])
    real = pipeline.compare_pair

    def compare_pair(pair: Pair, *args, **kwargs):  # type: ignore[no-untyped-def]
        if pair.name == "t1":
            raise KeyboardInterrupt
        return (yield from real(pair, *args, **kwargs))

    monkeypatch.setattr(pipeline, "compare_pair", compare_pair)
    out = tmp_path / "maps"
    code = main(["change", str(left), str(right), "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 130
    assert "the pairs finished so far are written" in capsys.readouterr().err
    summary, rows = read_summary(out)
    assert [p["name"] for p in summary["pairs"]] == ["t0"] and summary["pairs"][0]["regions"] >= 1
    assert (summary["complete"], summary["pairs_done"], summary["pairs_total"]) == (False, 1, 3)
    assert [r["before"] for r in rows] == [str(left / "t0.png")]
    assert (out / "t0_mask.png").is_file() and not (out / "t1_mask.png").exists()


def test_output_names_are_unique_and_follow_the_folders(tmp_path: Path) -> None:
    rels = ["t.png", "t.jpg", "t.png.png", "x/y.png", "x__y.png", "x/z.tif", "a.b/c.png"]
    left, right = tmp_path / "L", tmp_path / "R"
    for rel in rels:
        for folder in (left, right):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(folder / rel, format="PNG")
    names = {Path(p.before).relative_to(left).as_posix(): p.name for p in pair_inputs(left, right)}
    assert names == {"t.png": "t.png", "t.jpg": "t.jpg", "t.png.png": "t.png.png", "x/y.png": "x/y",
                     "x__y.png": "x__y", "x/z.tif": "x/z", "a.b/c.png": "a.b/c"}  # fmt: skip
    assert [p.name for p in pair_inputs(left, right)] == [p.name for p in pair_inputs(left, right)]  # stable


def test_output_names_are_unique_on_a_case_insensitive_disk() -> None:
    """``T.png`` and ``t.jpg``, or ``A/b.png`` and ``a/B.png``, once got names that one file on macOS, Windows or
    a FAT card would hold; every name is now unique ignoring case, and the others are left as they were."""
    rels = ["T.png", "t.jpg", "A/b.png", "a/B.png", "u.png", "x/v.png"]
    names = output_names(rels)
    assert len({n.casefold() for n in names}) == len(rels)
    assert names[:2] == ["T.png", "t.jpg"]  # differ beyond case once they keep their extension
    assert names[2].startswith("A/b.png-") and names[3].startswith("a/B.png-")  # differ only in case: a hash too
    assert names[4:] == ["u", "x/v"]
    assert output_names(rels) == names  # the same every run


def test_tiles_sharing_a_name_do_not_overwrite_each_other(
    aerial: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``t.png``/``t.jpg`` and ``x/y.png``/``x__y.png`` once wrote to the same files; each has its own now."""
    left, right = tmp_path / "L", tmp_path / "R"
    changed = ("t.png", "x/y.png")  # their after image has the pasted object; the others are unchanged
    for rel in ("t.png", "t.jpg", "x/y.png", "x__y.png"):
        for folder, version in ((left, "before"), (right, "pasted" if rel in changed else "before")):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.open(aerial[version]).save(folder / rel, quality=95)
    out = tmp_path / "maps"
    assert main(["change", str(left), str(right), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    summary, rows = read_summary(out)
    by_name = {p["name"]: p for p in summary["pairs"]}
    assert sorted(by_name) == ["t.jpg", "t.png", "x/y", "x__y"] and len(rows) == 4
    for name, p in by_name.items():
        rel = Path(p["before"]).relative_to(left).as_posix()
        assert p["after"] == str(right / rel)
        mask = out / f"{name}_mask.png"
        assert p["files"]["mask"] == str(mask)
        assert (np.asarray(Image.open(mask)).max() == 255) == (rel in changed), name  # its own map, not another's
        for suffix in ("_overlay.png", "_heatmap.png", ".geojson"):
            assert (out / f"{name}{suffix}").is_file()
    assert (out / "x" / "y_mask.png").is_file() and (out / "x__y_mask.png").is_file()
    assert len({f for p in summary["pairs"] for f in p["files"].values()}) == 4 * 4
    assert "t.jpg: 0.0% changed" in capsys.readouterr().out


def test_change_models_are_resolved_by_name(resources_copy: Path, tmp_path: Path) -> None:
    """Names, files and what is wrong with them, each in one line; the default falls back until it is installed."""
    models = resources_copy / "models"
    assert resolve_change_model("features") == ("features", None)
    with pytest.raises(ChangeModelNotInstalled, match=r"the 'buildings' change head is not installed \(.*"
                       r"change-buildings\.pt is missing\)"):  # fmt: skip
        resolve_change_model("buildings")
    with pytest.raises(ChangeModelError, match="unknown change model 'buidlings': the known ones are general, "
                       "buildings, features"):  # fmt: skip
        resolve_change_model("buidlings")
    with pytest.raises(ChangeModelError, match="nope.pt: change head file not found"):
        resolve_change_model(str(tmp_path / "nope.pt"))
    with pytest.raises(ChangeModelError, match="is a folder"):
        resolve_change_model(str(tmp_path))
    mine = write_change_head(tmp_path / "mine.pt", "mine")
    assert resolve_change_model(str(mine)) == (str(mine), mine)
    assert default_change_model() == (
        "features", None,
        "the default 'general' change head is not installed; using 'features' (the encoder's feature difference, "
        "without change training)",
    )  # fmt: skip
    for name in SHIPPED_HEADS:
        write_change_head(models / SHIPPED_HEADS[name], f"shipped-{name}")
        assert resolve_change_model(name.upper()) == (name, models / SHIPPED_HEADS[name])
    assert default_change_model() == ("general", models / "change-general.pt", "")
    assert load_change_head(resolve_change_model("general")[1]).name == "shipped-general"  # type: ignore[arg-type]


def test_a_file_that_is_not_a_change_head_is_one_clear_error(tmp_path: Path) -> None:
    """A change-head file with fields missing, of the wrong type, or weights that do not fit the head raised
    KeyError or TypeError (or loaded, and failed on the first tile): one ValueError naming the file now."""
    good = write_change_head(tmp_path / "good.pt", "good")
    data = torch.load(good, weights_only=True)
    broken = {
        "no_state": ({k: v for k, v in data.items() if k != "state"}, "no 'state'"),
        "no_config": ({k: v for k, v in data.items() if k != "config"}, "no 'config'"),
        "bad_channels": ({**data, "channels": None}, "damaged change model file"),
        "bad_config": ({**data, "config": [1, 2]}, "'config' is a list"),
        "bad_version": ({**data, "format_version": "one"}, "format_version 'one'"),
        "wrong_weights": ({**data, "width": 16}, "damaged change model file .*size mismatch"),
    }
    for name, (content, reason) in broken.items():
        path = tmp_path / f"{name}.pt"
        torch.save(content, path)
        with pytest.raises(ValueError, match=reason) as exc:
            load_change_head(path)
        assert str(exc.value).startswith(f"{path}: ") and "\n" not in str(exc.value), name


def test_change_command_model_names_and_errors(
    aerial: dict[str, Path], resources_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--model: unknown names list the known ones, a shipped head that is missing says so and suggests features, a
    file that is not a change head names it; the default falls back to features with a note until the general head
    is installed, then uses it. Each error is one line on stderr, exit 2, no traceback."""
    argv = ["change", str(aerial["before"]), str(aerial["pasted"]), "--no-progress", "--device", "cpu", "--out"]

    def error(*extra: str) -> str:
        assert main([*argv, str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return err

    err = error("--model", "everything")
    assert "unknown change model 'everything': the known ones are general, buildings, features" in err
    err = error("--model", "buildings")
    assert "the 'buildings' change head is not installed" in err and "use --model features" in err
    bad = tmp_path / "bad.pt"
    torch.save({"kind": "change-head", "format_version": 1, "config": {}}, bad)
    assert f"dedup-app: error: {bad}: damaged change model file (no 'state')" in error("--model", str(bad))
    with pytest.raises(SystemExit) as stop:
        main([*argv, str(tmp_path / "x"), "--method", "pixels", "--model", "buildings"])
    assert stop.value.code == 2 and "--method pixels compares colours" in capsys.readouterr().err

    out = tmp_path / "default"
    assert main([*argv, str(out)]) == 0
    err = capsys.readouterr().err
    assert err == ("dedup-app: note: the default 'general' change head is not installed; using 'features' (the "
                   "encoder's feature difference, without change training)\n")  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["change_model"] == "features" and "not installed" in summary["change_model_note"]
    assert "feature difference" in summary["model"] and summary["pairs"][0]["model"] == summary["model"]

    write_change_head(resources_copy / "models" / "change-general.pt", "shipped-general")
    out = tmp_path / "general"
    assert main([*argv, str(out)]) == 0
    assert capsys.readouterr().err == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["change_model"] == "general" and "change_model_note" not in summary
    assert summary["model"].endswith("+ shipped-general") and summary["pairs"][0]["changed_fraction"] > 0.9
    out = tmp_path / "features"
    assert main([*argv, str(out), "--model", "features"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["change_model"] == "features" and summary["pairs"][0]["changed_fraction"] < 0.1


def test_change_help_names_the_models(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["change", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--model NAME|FILE" in text
    assert "general (default" in text and "buildings" in text and "features (the encoder's feature difference" in text


def test_an_output_folder_that_cannot_be_made_is_one_clear_error(
    aerial: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out`` on a file, or under one: refused before any work with one line naming it (was a traceback)."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    pair = [str(aerial["before"]), str(aerial["pasted"])]
    for out, reason in ((a_file, "is a file, not a folder"), (a_file / "maps", "the folder cannot be made")):
        with pytest.raises(SystemExit) as exit_:
            main(["change", *pair, "--out", str(out), "--no-progress"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"--out {out}: {reason}" in err and "Traceback" not in err
    assert a_file.read_text() == "keep me"
    made = tmp_path / "new" / "deeper"  # missing parents are made
    assert main(["change", *pair, "--out", str(made), "--no-progress"]) == 0
    assert (made / "summary.json").is_file()
