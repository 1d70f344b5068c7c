"""The application's state and user actions, without Qt: what the window shows and does, testable with pytest.

As in dupeGuru's ``core/app.py`` and napari's ``ViewerModel``, the window is wiring: it connects widgets to these
controllers and shows what they return. Each controller owns one part of the state:

- :class:`~dedup_app.controllers.models.ModelService`: the active model, its embedder and its threshold; it knows
  whether a job runs and defers a model switch until the job is over.
- :class:`~dedup_app.controllers.actions.ActionsController`: files trashed or moved, and the undo stack.
- :class:`~dedup_app.controllers.labels.LabelsController`: the user's pair labels.
- :class:`~dedup_app.controllers.review.Review`: the scan's finder, the threshold, and the groups and rule marks
  worked out from them (without the removed files and the "not duplicate" pairs).

Controllers import the core, never Qt or the UI (an import-linter contract in ``pyproject.toml``).
"""
