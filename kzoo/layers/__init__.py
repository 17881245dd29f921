"""Reusable Keras layers: `keras` and `keras.ops` only, no backend imports."""
