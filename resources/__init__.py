"""Data files of dedup-app (icons, model weights, model cards), installed as the package ``dedup_app._resources``."""
