"""GUI fixtures: windows with temporary settings, label store and cache, sharing the session's CPU embedder."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from dedup_app.core.labels import LabelStore
from dedup_app.ui import settings as S
from dedup_app.ui.main_window import AppContext, MainWindow
from model_training.edits import apply_edit
from tests.conftest import photo


@pytest.fixture()
def make_window(qtbot, tmp_path: Path, embedder) -> Iterator[Callable[..., MainWindow]]:  # type: ignore[no-untyped-def]
    """Build windows over files in ``tmp_path/app`` (prefs, state, labels, cache); closes them at the end."""
    windows: list[MainWindow] = []
    app_dir = tmp_path / "app"
    app_dir.mkdir()

    def make(labels_path: Path | None = None, **kwargs: object) -> MainWindow:
        prefs = QSettings(str(app_dir / "prefs.ini"), QSettings.Format.IniFormat)
        state = QSettings(str(app_dir / "state.ini"), QSettings.Format.IniFormat)
        labels = LabelStore(labels_path or app_dir / "labels.sqlite3")
        kwargs.setdefault("registry_root", str(app_dir / "models"))
        kwargs.setdefault("change_registry_root", str(app_dir / "models" / "change"))
        ctx = AppContext(S.Preferences(prefs), state, labels, str(app_dir / "cache.sqlite3"), **kwargs)  # type: ignore[arg-type]
        window = MainWindow(ctx)
        window.models.use(embedder)  # skip loading the model per test
        window.ask = lambda title, text: True  # type: ignore[method-assign]
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.shutdown()
        window.ctx.labels.close()


@pytest.fixture()
def photos_dir(tmp_path: Path, shared_data: Path) -> Path:
    """Three photos, two edited copies of the first two, and a byte copy of the third."""
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in ("kodim01.png", "kodim05.png", "kodim20.png"):
        img = photo(shared_data, name)
        stem = Path(name).stem
        img.save(root / f"{stem}.jpg", quality=92)
        if stem != "kodim20":
            for edit in ("resize", "rotate90"):
                e = apply_edit(edit, img, rng)
                (root / f"{stem}_{edit}{e.suffix}").write_bytes(e.to_bytes())
    shutil.copy(root / "kodim20.jpg", root / "kodim20 copy.jpg")
    photo(shared_data, "kodim14.png").save(root / "lonely.jpg", quality=90)
    return root
