"""Entry point of the bundled application (PyInstaller): the same as the ``dedup-app`` command."""

import multiprocessing

from dedup_app.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    raise SystemExit(main())
