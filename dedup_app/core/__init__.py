"""The headless engine: scanning, image loading, the Siamese model, cache, index and grouping. Never imports Qt."""
