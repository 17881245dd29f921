"""kzoo: a Keras 3 model zoo that runs on TensorFlow, PyTorch and JAX.

>>> import kzoo
>>> "mlp" in kzoo.list_models()
True
"""

from kzoo.registry import (
    create_model,
    list_models,
    model_info,
    register_model,
    register_variant,
)

__version__ = "0.1.0"

__all__ = [
    "create_model",
    "list_models",
    "model_info",
    "register_model",
    "register_variant",
    "__version__",
]
