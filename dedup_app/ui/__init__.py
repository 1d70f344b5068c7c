"""The desktop window (PySide6): the only package that imports Qt. It drives ``dedup_app.core`` and shows results."""
