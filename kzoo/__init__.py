"""kzoo: a Keras 3 model zoo that runs on TensorFlow, PyTorch and JAX.

>>> import kzoo
>>> "mlp" in kzoo.list_models()
True
"""

from kzoo import registry
from kzoo.registry import (
    create_model,
    list_models,
    model_info,
    register_model,
    register_variant,
)

__version__ = "0.1.0"

# Register every model family (and so every kzoo layer and model class) now,
# so that `keras.saving.load_model` finds kzoo's classes right after
# `import kzoo`, with safe_mode=True and no custom_objects.
registry._load_families()

from kzoo import weights  # noqa: E402,F401  (the converters, after the models)

__all__ = [
    "create_model",
    "list_models",
    "model_info",
    "register_model",
    "register_variant",
    "__version__",
]
