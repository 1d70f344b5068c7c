"""The window's controllers without Qt: model switching and thresholds, trash/move/undo, regrouping after removals,
labels, marks and what is exported. Real files in temporary folders, a real model registry, real SQLite."""

from __future__ import annotations

import csv
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from dedup_app.controllers.actions import ActionsController
from dedup_app.controllers.labels import LabelsController
from dedup_app.controllers.marks import MarkState
from dedup_app.controllers.models import MemoryThresholds, ModelService
from dedup_app.controllers.review import grouping
from dedup_app.core.actions import ActionRecord, Moved, write_record_csv
from dedup_app.core.checkpoint import Checkpoint
from dedup_app.core.duplicates import DuplicateFinder
from dedup_app.core.imageio import ImageInfo
from dedup_app.core.labels import NOT_DUPLICATE, LabelledFile, LabelStore
from dedup_app.core.model_files import read_checkpoint
from dedup_app.core.progress import CancelToken, drive
from dedup_app.core.registry import ModelRegistry
from dedup_app.core.report import write_csv, write_json
from dedup_app.core.resources import default_model_path
from dedup_app.core.scan import ImageRecord, ScanResult

# -- model service ----------------------------------------------------------------------------------------------


class FakeEmbedder:
    """What the service needs of an embedder: an id and a calibrated threshold."""

    def __init__(self, model_id: str, threshold: float) -> None:
        self.model_id, self.threshold = model_id, threshold


@pytest.fixture()
def registry_root(tmp_path: Path) -> Path:
    return tmp_path / "models"


def tuned(registry_root: Path, threshold: float = 0.9, name: str = "tuned") -> str:
    """Register a model (the shipped head under another name and threshold); returns its id."""
    base = read_checkpoint(default_model_path())
    entry = ModelRegistry(registry_root).add(Checkpoint(base.config, base.head_state, threshold, name))
    return entry.model_id


def service(registry_root: Path, loader=None, thresholds=None) -> ModelService:  # type: ignore[no-untyped-def]
    def load(path: str, device: str) -> FakeEmbedder:
        ckpt = read_checkpoint(path)
        return FakeEmbedder(ckpt.model_id, ckpt.threshold)

    return ModelService(lambda: ModelRegistry(registry_root), thresholds or MemoryThresholds(),
                        cache_path=":memory:", loader=loader or load)  # type: ignore[arg-type]  # fmt: skip


def test_a_switch_during_a_job_waits_for_it(registry_root: Path) -> None:
    """Issue item 1: switching while a scan writes the current model's embeddings must not happen under it."""
    other = tuned(registry_root)
    models = service(registry_root)
    first = models.load()
    models.job_started("scan")
    result = models.activate(other)
    assert result.deferred and "once the current job" in result.message
    assert models.embedder is first  # the scan keeps its model
    assert ModelRegistry(registry_root).active_id is None  # nothing switched yet
    done = models.job_finished()
    assert done is not None and not done.deferred and done.new == other and done.job is not None
    assert ModelRegistry(registry_root).active_id == other and models.embedder is None
    assert models.load().model_id == other
    models.job_started("scan")
    assert models.rollback().deferred
    back = models.job_finished()
    assert back is not None and back.new == first.model_id and ModelRegistry(registry_root).active_id is None


def test_an_unknown_model_is_refused_even_during_a_job(registry_root: Path) -> None:
    models = service(registry_root)
    models.job_started("scan")
    with pytest.raises(ValueError, match="no model"):
        models.activate("nope")
    assert models.job_finished() is None


def test_a_load_overtaken_by_a_switch_is_not_installed(registry_root: Path) -> None:
    """The start-up preload must not put the old model back after the user chose another."""
    other = tuned(registry_root)
    release, entered = threading.Event(), threading.Event()

    def slow(path: str, device: str) -> FakeEmbedder:
        entered.set()
        release.wait(10)
        ckpt = read_checkpoint(path)
        return FakeEmbedder(ckpt.model_id, ckpt.threshold)

    models = service(registry_root, slow)
    loaded: list[FakeEmbedder] = []
    thread = threading.Thread(target=lambda: loaded.append(models.load()))  # type: ignore[arg-type]
    thread.start()
    assert entered.wait(10)
    models.activate(other)  # no job registered: switched at once, while the old load is still running
    release.set()
    thread.join(10)
    assert loaded and loaded[0].model_id != other
    assert models.embedder is None  # the old model was not installed
    assert models.load().model_id == other


def test_the_threshold_follows_the_active_model_unless_the_user_moved_it(registry_root: Path) -> None:
    """Issue item 2: a trained model's calibrated threshold is used; a choice made for one model stays with it."""
    other = tuned(registry_root, threshold=0.9)
    thresholds = MemoryThresholds()
    models = service(registry_root, thresholds=thresholds)
    default = models.load()
    assert models.threshold_for(default) == pytest.approx(default.threshold)
    models.user_chose_threshold(default.model_id, 0.8504)
    assert models.threshold_for(default) == pytest.approx(0.85)
    models.activate(other)
    trained = models.load()
    assert models.threshold_for(trained) == pytest.approx(0.9)  # not the 0.85 chosen for the default model
    models.rollback()
    assert models.threshold_for(models.load()) == pytest.approx(0.85)
    # a choice made before any model was loaded belongs to the model of the next results
    fresh = service(registry_root, thresholds=MemoryThresholds())
    fresh.user_chose_threshold(None, 0.77)
    emb = fresh.load()
    assert fresh.threshold_for(emb) == pytest.approx(0.77)
    fresh.results_shown(emb.model_id)
    assert fresh.thresholds.get(emb.model_id) == pytest.approx(0.77)


def test_the_old_models_embeddings_are_dropped_by_a_job(registry_root: Path, tmp_path: Path) -> None:
    """No database write on the UI thread: the switch hands back a job for the worker."""
    from dedup_app.core.cache import EmbeddingCache
    from dedup_app.core.files import FileEntry

    other = tuned(registry_root)
    cache_path = tmp_path / "cache.sqlite3"
    models = service(registry_root)
    models.cache_path = str(cache_path)
    old = models.load().model_id
    with EmbeddingCache(cache_path) as cache:
        entry = FileEntry(str(tmp_path / "a.jpg"), 10, 1)
        cache.put_file(entry, "h", ImageInfo(2, 2, "JPEG"))
        cache.put_embedding(entry.path, old, np.ones(4, np.float32))
    result = models.activate(other)
    with EmbeddingCache(cache_path) as cache:
        assert cache.count(old) == 1  # not dropped by the switch itself
    assert result.job is not None and drive(result.job(CancelToken())) == 1
    with EmbeddingCache(cache_path) as cache:
        assert cache.count(old) == 0


# -- regrouping -------------------------------------------------------------------------------------------------


def image(path: str, content: str) -> ImageRecord:
    return ImageRecord(path, 1000, 0, content, ImageInfo(100, 100, "JPEG"))


def finder_of(paths: list[str], vectors: np.ndarray, floor: float = 0.7) -> DuplicateFinder:
    images = [image(p, f"h{k}") for k, p in enumerate(paths)]
    result = ScanResult(["/"], "m", 0.8, images, vectors.astype(np.float16), [])
    finder = DuplicateFinder(result)
    drive(finder.search(floor))
    return finder


def three_vectors(xy: float, yz: float, xz: float) -> np.ndarray:
    """Unit vectors x, y, z with the given cosines (Cholesky of their Gram matrix)."""
    gram = np.array([[1, xy, xz], [xy, 1, yz], [xz, yz, 1]], np.float64)
    return np.linalg.cholesky(gram).astype(np.float32)


def test_removing_a_file_regroups_what_is_left() -> None:
    """Issue item 3: x~y 0.99, y~z 0.90, x~z 0.845 at 0.85: {x, y} is a group and z is left out; once x is
    trashed, y and z are still duplicates of each other and must form a group."""
    finder = finder_of(["/x.jpg", "/y.jpg", "/z.jpg"], three_vectors(0.99, 0.90, 0.845))
    (group,) = finder.groups(0.85)
    assert {m.image.path for m in group.members} == {"/x.jpg", "/y.jpg"}
    (after,) = finder.groups(0.85, removed={"/x.jpg"})
    assert {m.image.path for m in after.members} == {"/y.jpg", "/z.jpg"}
    shown = grouping(finder, 0.85, "resolution", (), {"/x.jpg"}, ())
    assert [{m.image.path for m in g.members} for g in shown.groups] == [{"/y.jpg", "/z.jpg"}]
    assert len(shown.marks) == 1 and (shown.rule, shown.references) == ("resolution", ())


def test_labels_split_pairs_and_say_how_many() -> None:
    finder = finder_of(["/x.jpg", "/y.jpg", "/z.jpg"], three_vectors(0.99, 0.90, 0.845))
    apart = {frozenset({"h0", "h1"})}
    assert finder.labelled_apart(0.85, apart) == 1 and finder.labelled_apart(0.95, set()) == 0
    (group,) = finder.groups(0.85, apart)
    assert {m.image.path for m in group.members} == {"/y.jpg", "/z.jpg"}


# -- trash, move, undo ------------------------------------------------------------------------------------------


def make_files(folder: Path, *names: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(name.encode() * 20)
    return [str(folder / n) for n in names]


def test_undo_keeps_what_could_not_be_restored_for_another_try(tmp_path: Path) -> None:
    """Issue item 4: a file whose name is taken again stays on the undo stack, the message says where it is, and
    a second undo after the user cleared the way brings it back."""
    actions = ActionsController()
    paths = make_files(tmp_path / "pics", "a.jpg", "b.jpg", "c.jpg")
    outcome = actions.done(drive(actions.move_job(paths, str(tmp_path / "moved"))(CancelToken())))
    assert outcome.failures == [] and set(actions.removed) == set(paths)
    Path(paths[1]).write_bytes(b"a new file took the name")
    job = actions.undo_job()
    assert job is not None and len(actions.undo_stack) == 1  # not taken off before the job ran
    result = actions.undo_done(drive(job(CancelToken())))
    assert os.path.exists(paths[0]) and os.path.exists(paths[2])
    (failure,) = result.failures
    assert failure.path == paths[1] and str(tmp_path / "moved" / "b.jpg") in failure.error
    assert "exists again" in failure.error and "1 file still to restore" in result.message
    assert [m.source for m in actions.undo_stack[-1].moved] == [paths[1]]  # kept for a retry
    assert actions.removed == {paths[1]}
    os.remove(paths[1])
    again = actions.undo_done(drive(actions.undo_job()(CancelToken())))  # type: ignore[misc]
    assert again.failures == [] and Path(paths[1]).read_bytes() == b"b.jpg" * 20
    assert actions.undo_stack == [] and actions.removed == set()


def test_a_refused_or_failed_undo_job_loses_nothing(tmp_path: Path) -> None:
    actions = ActionsController()
    paths = make_files(tmp_path / "pics", "a.jpg")
    actions.done(drive(actions.move_job(paths, str(tmp_path / "moved"))(CancelToken())))
    record = actions.undo_stack[-1]
    assert actions.undo_job() is not None  # built, but never run (the window was busy): nothing changes
    assert actions.undo_stack == [record] and actions.can_undo


def test_a_cancelled_undo_keeps_the_files_it_did_not_reach(tmp_path: Path) -> None:
    actions = ActionsController()
    paths = make_files(tmp_path / "pics", "a.jpg", "b.jpg", "c.jpg")
    actions.done(drive(actions.move_job(paths, str(tmp_path / "moved"))(CancelToken())))
    token = CancelToken()
    gen = actions.undo_job()(token)  # type: ignore[misc]
    next(gen)  # the first file is restored
    token.cancel()
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        outcome = actions.undo_done(stop.value)
    assert os.path.exists(paths[0]) and not os.path.exists(paths[1])
    assert [m.source for m in actions.undo_stack[-1].moved] == paths[1:]
    assert "2 files still to restore" in outcome.message


def test_files_the_system_trash_keeps_are_listed_with_where_they_are(tmp_path: Path) -> None:
    """macOS and Windows: the trash does not say where a file went. The user is told where to look, the list can be
    saved, and such files do not block the undo stack forever."""
    actions = ActionsController(trash=lambda path: os.remove(path))
    paths = make_files(tmp_path / "pics", "a.jpg", "b.jpg")
    record = ActionRecord("trash", [Moved(p, None) for p in paths])
    outcome = actions.done(record)
    assert "can be restored from the trash only" in outcome.message
    undone = actions.undo_done(drive(actions.undo_job()(CancelToken())))  # type: ignore[misc]
    assert len(undone.failures) == 2 and actions.undo_stack == []
    write_record_csv(tmp_path / "list.csv", record)
    rows = list(csv.DictReader((tmp_path / "list.csv").open()))
    assert [r["original_path"] for r in rows] == paths and all(r["now_at"] for r in rows)


# -- labels -----------------------------------------------------------------------------------------------------


def test_labels_controller_keeps_not_duplicate_pairs_in_memory(tmp_path: Path) -> None:
    finder = finder_of(["/x.jpg", "/y.jpg", "/z.jpg"], three_vectors(0.99, 0.90, 0.845))
    (group,) = finder.groups(0.85)
    store = LabelStore(tmp_path / "labels.sqlite3")
    labels = LabelsController(store)
    assert labels.not_duplicates() == frozenset()
    message = labels.label_pair(group.members[0], group.members[1], NOT_DUPLICATE)
    assert "not duplicate" in message and labels.not_duplicates() == {frozenset({"h0", "h1"})}
    assert labels.summary() == "labels: 1 (0 duplicate, 1 not)"
    other = LabelStore(tmp_path / "labels.sqlite3")  # the command line, or another window, writes meanwhile
    other.put_pair(LabelledFile("h1", "/y.jpg"), LabelledFile("h2", "/z.jpg"), NOT_DUPLICATE)
    other.close()
    assert labels.counts()[NOT_DUPLICATE] == 1  # read once, not on every slider move
    labels.refresh()
    assert labels.counts()[NOT_DUPLICATE] == 2 and frozenset({"h1", "h2"}) in labels.not_duplicates()
    store.close()


# -- marks and export -------------------------------------------------------------------------------------------


def test_export_writes_what_the_window_shows(tmp_path: Path) -> None:
    """Issue item 11: the kept file chosen with K, a file the user unticked and the review state reach the CSV and
    JSON, so a script acting on 'marked' removes exactly what the user saw ticked."""
    vectors = np.array([[1, 0, 0], [0.999, 0.0447, 0], [0.96, 0, 0.28], [0.90, 0.436, 0]], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    finder = finder_of(["/a.jpg", "/b.jpg", "/c.jpg", "/d.jpg"], vectors)
    shown = grouping(finder, 0.85, "resolution", (), (), ())
    marks = MarkState()
    marks.set_groups(shown.groups, "resolution", [], shown.marks)
    (group,) = marks.groups
    paths = [m.image.path for m in group.members]
    marks.set_keep(paths[1])  # K on the second file
    assert paths[0] in marks.marked  # the file kept before is ticked instead
    unticked = next(p for p in paths[2:] if p in marks.marked)
    marks.toggle(unticked)  # Space: the user keeps this one too
    (decision,) = marks.decisions()
    assert decision.keep == paths[1] and unticked not in decision.marked and paths[0] in decision.marked
    assert decision.unsure and not decision.unsure & decision.marked  # a file below 0.95 waits for review
    write_json(str(tmp_path / "r.json"), finder.result, marks.groups, 0.85, marks.decisions(), "resolution")
    write_csv(str(tmp_path / "r.csv"), marks.groups, marks.decisions(), "resolution")
    report = json.loads((tmp_path / "r.json").read_text())
    (g,) = report["groups"]
    assert g["keep"] == paths[1] and report["rule"] == "resolution"
    marked = {f["path"] for f in g["files"] if f["marked"]}
    assert marked == set(decision.marked) and unticked not in marked
    review = {f["path"] for f in g["files"] if f["review"]}
    assert review == set(decision.unsure) and not review & marked
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["path"] for r in rows if r["keep"] == "yes"] == [paths[1]]
    assert {r["path"] for r in rows if r["marked"] == "yes"} == marked


def test_user_choices_survive_a_regroup_and_go_with_a_new_rule() -> None:
    finder = finder_of(["/a.jpg", "/b.jpg", "/c.jpg"], three_vectors(0.99, 0.99, 0.985))
    marks = MarkState()
    first = grouping(finder, 0.9, "resolution", (), (), ())
    marks.set_groups(first.groups, "resolution", [], first.marks)
    marks.set_keep("/c.jpg")  # remembered as it is made: nothing to call before the regroup
    again = grouping(finder, 0.95, "resolution", (), (), ())
    marks.set_groups(again.groups, "resolution", [], again.marks)
    assert marks.keep_of(marks.groups[0]) == "/c.jpg"
    marks.set_rule("newest")
    assert marks.keep_of(marks.groups[0]) != "/c.jpg" or marks.rule_marks(marks.groups[0]).keep == "/c.jpg"
    assert not marks.manual_keep


def test_the_window_is_told_when_the_neighbour_bound_bites(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A burst of near-identical frames: each keeps at most K neighbours; the status says groups may be split."""
    import dedup_app.core.index as index_module
    from dedup_app.controllers.review import Review

    monkeypatch.setattr(index_module, "MAX_NEIGHBORS", 2)
    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    burst = base + 0.01 * rng.normal(size=(6, 16))
    review = Review()
    review.finder = finder_of([f"/f{k}.jpg" for k in range(6)], (burst / np.linalg.norm(burst, axis=1)[:, None]))
    assert "6 images with over 2 similar images" in review.crowded_note(0.9)
    lonely = Review()
    lonely.finder = finder_of(["/x.jpg", "/y.jpg", "/z.jpg"], three_vectors(0.99, 0.90, 0.845))
    assert lonely.crowded_note(0.85) == ""
