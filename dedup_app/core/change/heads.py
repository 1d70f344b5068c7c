"""Which change model to use, by name: a shipped change head, the training-free feature difference, a head of the
change-head registry, or a file.

Names: ``general`` (the shipped default; a head trained on many kinds of change), ``buildings`` (a head trained on
new and demolished buildings), ``features`` (no head: the encoder's multi-scale feature difference, training-free),
or the id of a head in the change-head registry (:class:`dedup_app.core.registry.ChangeHeadRegistry`: the user's own
trained heads). Anything else is taken for a change-head file. The shipped heads live in ``resources/models`` and
may be missing (not installed, or not built yet): asking for one by name is then an error, while the shipped default
falls back to ``features`` with a note.

The default is what the registry has active (a registered head, or a shipped model chosen by name); with nothing
active, the shipped default.

This module only resolves a name to a file; reading the file is the head's module's job (``detect.load_change_head``),
so the head's format can change without touching the names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry module imports this one (the shipped names)
    from dedup_app.core.registry import ChangeHeadRegistry

SHIPPED_HEADS: dict[str, str] = {
    "general": "change-general.pt",
    "buildings": "change-buildings.pt",
}
FEATURES = "features"
DEFAULT_CHANGE_MODEL = "general"
CHANGE_MODEL_NAMES: tuple[str, ...] = (*SHIPPED_HEADS, FEATURES)
DESCRIPTIONS: dict[str, str] = {
    "general": "the shipped change head for any kind of change",
    "buildings": "the shipped change head for new and demolished buildings",
    FEATURES: "the encoder's feature difference, without change training",
}


class ChangeModelError(ValueError):
    """A change model that cannot be used; the message (one line) names it and says why."""


class ChangeModelNotInstalled(ChangeModelError):
    """A shipped change head asked for by name whose file is not there."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(f"the '{name}' change head is not installed ({path} is missing)")
        self.name, self.path = name, path


def shipped_head_path(name: str) -> Path:
    """Where the shipped head ``name`` (a key of :data:`SHIPPED_HEADS`) lives, whether or not it is there."""
    from dedup_app.core.resources import resources_dir

    return resources_dir() / "models" / SHIPPED_HEADS[name]


def is_installed(name: str) -> bool:
    """Whether the change model ``name`` can be used: ``features`` always, a shipped head when its file is there."""
    return name == FEATURES or (name in SHIPPED_HEADS and shipped_head_path(name).is_file())


def _looks_like_a_path(text: str) -> bool:
    return "/" in text or "\\" in text or Path(text).suffix != "" or text.startswith(("~", "."))


def _registry(registry: ChangeHeadRegistry | None) -> ChangeHeadRegistry:
    from dedup_app.core.registry import ChangeHeadRegistry

    return registry if registry is not None else ChangeHeadRegistry()


def resolve_change_model(name_or_path: str, registry: ChangeHeadRegistry | None = None) -> tuple[str, Path | None]:
    """The change model to run for a name, a registered head's id or a file: ``(label, path)``, ``path`` None for
    ``features``.

    The label is the name or the id, or for a file the path as given. ``registry`` is the change-head registry to
    look ids up in (default: the user's). Raises :class:`ChangeModelNotInstalled` for a shipped head whose file is
    missing, and :class:`ChangeModelError` for an unknown name, a registered head whose file is gone, a missing file
    or a folder. Whether a file really is a change head is for the loader to say.
    """
    text = name_or_path.strip()
    if not text:
        raise ChangeModelError(f"no change model given: the known ones are {', '.join(CHANGE_MODEL_NAMES)}")
    name = text.lower()
    if name == FEATURES:
        return FEATURES, None
    if name in SHIPPED_HEADS:
        path = shipped_head_path(name)
        if not path.is_file():
            raise ChangeModelNotInstalled(name, path)
        return name, path
    registered: list[str] = []
    if not _looks_like_a_path(text) or not Path(text).expanduser().exists():
        try:
            reg = _registry(registry)
            entry = reg.entry(text)
            registered = [e.model_id for e in reg.entries()]
        except OSError:  # the data folder cannot be made or read: files still work
            entry = None
        if entry is not None:
            if entry.problem:
                raise ChangeModelError(f"the registered change head {text} cannot be used ({entry.problem})")
            return text, entry.file
    path = Path(text).expanduser()
    if path.is_file():
        return text, path
    if path.is_dir():
        raise ChangeModelError(f"{text}: is a folder, not a change head file")
    if _looks_like_a_path(text):
        raise ChangeModelError(f"{text}: change head file not found")
    raise ChangeModelError(
        f"unknown change model '{text}': the known ones are {', '.join([*CHANGE_MODEL_NAMES, *registered])} (or give "
        "a change head file)"
    )


def shipped_default_change_model() -> tuple[str, Path | None, str]:
    """The shipped default change model, ``(label, path, note)``: ``general`` when it is installed; until then
    ``features``, with a one-line note saying so (``note`` is empty when nothing fell back)."""
    try:
        label, path = resolve_change_model(DEFAULT_CHANGE_MODEL)
    except ChangeModelNotInstalled:
        return (
            FEATURES,
            None,
            (
                f"the default '{DEFAULT_CHANGE_MODEL}' change head is not installed; using '{FEATURES}' "
                f"({DESCRIPTIONS[FEATURES]})"
            ),
        )
    return label, path, ""


def default_change_model(registry: ChangeHeadRegistry | None = None) -> tuple[str, Path | None, str]:
    """The default change model, ``(label, path, note)``: the change-head registry's active one (a registered head
    by its id, or a shipped model chosen by name), else the shipped default (:func:`shipped_default_change_model`).
    ``note`` says, in one line, what fell back and why (empty when nothing did)."""
    try:
        reg = _registry(registry)
        active, selected = reg.active_id, reg.selected_id
    except OSError as exc:  # the data folder cannot be made or read: the shipped default still works
        active, selected, unusable = None, None, f"the change head registry cannot be read ({exc}); "
    else:
        unusable = ""
    if active is not None:
        if active in SHIPPED_HEADS or active == FEATURES:
            label, path = resolve_change_model(active)
            return label, path, ""
        return active, reg.path_of(active), ""
    if selected is not None:
        unusable = f"the active change head {selected} cannot be used ({reg.problem(selected)}); "
    label, path, note = shipped_default_change_model()
    if unusable and not note:
        note = f"using the shipped '{label}'"
    return label, path, unusable + note
