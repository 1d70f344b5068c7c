"""Training and evaluation for dedup-app's Siamese model: edit families, evaluation sets, metrics, training loops.

Imports ``dedup_app.core``, never the UI.
"""
