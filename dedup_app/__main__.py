"""``python -m dedup_app``: the same as the ``dedup-app`` command."""

from dedup_app.cli import main

raise SystemExit(main())
