"""Typed settings, each declared once with its type and default (the Picard habit).

Preferences (what the user chose: threshold, rule, reference folders, recent folders) and window state (geometry,
splitters, column widths) are stored apart, so resetting the layout never loses a preference. Both are QSettings;
tests pass INI files in a temporary folder.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QSettings

from dedup_app.core.marking import DEFAULT_RULE

T = TypeVar("T")

SETTINGS_VERSION = 1


@dataclass(frozen=True)
class Pref(Generic[T]):
    """One preference: its key in the settings file, its type and its default."""

    key: str
    kind: type
    default: T


#: Similarity thresholds the user chose, per model id, as JSON ({"model id": 0.85}); a model without one uses its
#: own calibrated threshold. (The single "duplicates/threshold" of earlier versions is not read: every window saved
#: the default there at start, so it never said what the user chose.)
THRESHOLDS: Pref[str] = Pref("duplicates/thresholds_by_model", str, "{}")
#: The model of the last results, and its calibrated threshold: what the slider shows before the model is loaded.
LAST_MODEL: Pref[str] = Pref("duplicates/last_model", str, "")
LAST_MODEL_THRESHOLD: Pref[float] = Pref("duplicates/last_model_threshold", float, 0.0)
RULE: Pref[str] = Pref("duplicates/automark_rule", str, DEFAULT_RULE)
REFERENCE_FOLDERS: Pref[list[str]] = Pref("sources/reference_folders", list, [])
SOURCES: Pref[list[str]] = Pref("sources/folders", list, [])
RECENT_FOLDERS: Pref[list[str]] = Pref("sources/recent", list, [])
MOVE_DESTINATION: Pref[str] = Pref("actions/move_destination", str, "")
DEVICE: Pref[str] = Pref("engine/device", str, "auto")

MAX_RECENT = 10


class Preferences:
    """Read and write :class:`Pref` values, converting what QSettings hands back to the declared type."""

    def __init__(self, store: QSettings) -> None:
        self.store = store
        if self.store.value("meta/version") is None:
            self.store.setValue("meta/version", SETTINGS_VERSION)

    def get(self, pref: Pref[T]) -> T:
        raw: Any = self.store.value(pref.key, None)
        if raw is None:
            return _copy(pref.default)
        try:
            if pref.kind is list:
                if isinstance(raw, str):  # INI files give back a one-element list as a plain string
                    return [raw] if raw else []  # type: ignore[return-value]
                return [str(v) for v in raw]  # type: ignore[return-value]
            if pref.kind is bool:
                return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")  # type: ignore[return-value]
            return pref.kind(raw)  # type: ignore[no-any-return]
        except (TypeError, ValueError):
            return _copy(pref.default)

    def set(self, pref: Pref[T], value: T) -> None:
        self.store.setValue(pref.key, list(value) if isinstance(value, list) else value)  # type: ignore[arg-type]
        self.store.sync()

    def add_recent(self, folder: str) -> list[str]:
        """Put ``folder`` first in the recent folders (no repeats, at most ``MAX_RECENT``)."""
        recent = [folder] + [f for f in self.get(RECENT_FOLDERS) if f != folder]
        recent = recent[:MAX_RECENT]
        self.set(RECENT_FOLDERS, recent)
        return recent


class PrefsThresholds:
    """The thresholds the user chose per model, kept in the preferences (a ``ThresholdStore``).

    Read once, then served from memory under a lock: the scan job asks from the worker thread, and a QSettings
    object must not be used from two threads; writes happen on the UI thread only.
    """

    def __init__(self, prefs: Preferences) -> None:
        self.prefs = prefs
        self._lock = threading.Lock()
        try:
            raw = json.loads(prefs.get(THRESHOLDS))
        except ValueError:
            raw = {}
        self._values = {
            str(k): float(v)
            for k, v in (raw.items() if isinstance(raw, dict) else [])
            if isinstance(v, (int, float)) and 0.0 < v <= 1.0
        }

    def get(self, model_id: str) -> float | None:
        with self._lock:
            return self._values.get(model_id)

    def set(self, model_id: str, value: float) -> None:
        with self._lock:
            self._values[model_id] = value
            text = json.dumps(self._values, sort_keys=True)
        self.prefs.set(THRESHOLDS, text)
        self.prefs.set(LAST_MODEL, model_id)  # the model the user looks at: the next window starts with its value

    def shown_at_start(self) -> float | None:
        """The threshold of the model of the last results (the user's choice, else its calibrated one)."""
        last = self.prefs.get(LAST_MODEL)
        if not last:
            return None
        return self.get(last) or self.prefs.get(LAST_MODEL_THRESHOLD) or None

    def remember_model(self, model_id: str, calibrated: float) -> None:
        """The results on screen come from ``model_id`` (calibrated at ``calibrated``)."""
        if (self.prefs.get(LAST_MODEL), self.prefs.get(LAST_MODEL_THRESHOLD)) != (model_id, calibrated):
            self.prefs.set(LAST_MODEL, model_id)
            self.prefs.set(LAST_MODEL_THRESHOLD, float(calibrated))


def _copy(value: T) -> T:
    return list(value) if isinstance(value, list) else value  # type: ignore[return-value]


def default_stores() -> tuple[QSettings, QSettings]:
    """The user's preferences and window state, in the platform's native settings location."""
    prefs = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "dedup-app", "preferences")
    state = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "dedup-app", "window-state")
    return prefs, state
