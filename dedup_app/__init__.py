"""dedup-app: find exact and near-duplicate images with a Siamese CNN, and compare before/after image pairs."""

__version__ = "0.1.0"
