"""kzoo: a Keras 3 model zoo that runs on TensorFlow, PyTorch and JAX.

>>> import kzoo
>>> "mlp" in kzoo.list_models()
True
"""

from kzoo._backend_choice import choose_backend

# Before Keras loads: without KERAS_BACKEND, Keras would insist on TensorFlow.
choose_backend()

from kzoo import losses, optimizers, registry  # noqa: E402, F401  (registration)
from kzoo.registry import (  # noqa: E402
    create_model,
    list_models,
    model_info,
    register_model,
    register_variant,
)
from kzoo.training import checkpoint, transfer  # noqa: E402, F401  (registration)

__version__ = "0.1.0"

# Register every model family (and so every kzoo layer and model class) now,
# so that `keras.saving.load_model` finds kzoo's classes right after
# `import kzoo`, with safe_mode=True and no custom_objects. `losses` and
# `optimizers` register what a compiled model's file names (`transfer` its
# per-layer learning-rate schedule), and `checkpoint` the crash-safe backup
# callback; tests/test_run_portability.py checks that no registering module is
# left out.
registry._load_families()

from kzoo import weights  # noqa: E402,F401  (the converters, after the models)
from kzoo.export import load_model  # noqa: E402  (kzoo's one loader)

__all__ = [
    "create_model",
    "list_models",
    "load_model",
    "model_info",
    "register_model",
    "register_variant",
    "__version__",
]
