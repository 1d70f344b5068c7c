"""``python -m model_training ...``: the same as ``dedup-app train ...``."""

from model_training.cli import main

raise SystemExit(main())
