"""Change detection between before/after images and satellite tiles (no Qt).

raster: reading images and GeoTIFFs (bands, bit depth, georeferencing); align: putting B on A's grid and
refining the shift; detect: the Siamese encoder's multi-scale feature differences, tiled with blended seams;
regions: threshold, clean-up, polygons and areas; export: masks, overlays, heatmaps, GeoTIFF, GeoJSON,
summaries; pipeline: pairs of files or folders, as a progress generator.
"""
