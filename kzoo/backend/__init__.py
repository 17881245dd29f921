"""The only place where kzoo branches on `keras.config.backend()`.

Each module here holds one backend-specific concern, written once:
layers and models stay on `keras` and `keras.ops`.
"""
