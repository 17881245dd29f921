"""Pick an installed Keras backend before Keras loads, when the user named none.

Keras defaults to TensorFlow. A person who installed kzoo with JAX or PyTorch
only, and has not set `KERAS_BACKEND`, would otherwise meet a 30-line
`ModuleNotFoundError: tensorflow` on `import kzoo`.
"""

import importlib.util
import json
import os
import sys

#: Backends in the order kzoo picks one: Keras' default first.
BACKENDS = ("tensorflow", "jax", "torch")


def _configured_backend():
    """The backend named by KERAS_BACKEND, or by Keras' keras.json if installed (or None).

    Keras writes `"backend": "tensorflow"` into keras.json the first time it
    runs, whether or not TensorFlow is there, so keras.json counts as a choice
    only for a backend that is installed.
    """
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    for folder in (home, "/tmp/.keras"):
        try:
            with open(os.path.join(folder, "keras.json")) as f:
                named = json.load(f).get("backend")
        except (OSError, ValueError, AttributeError):
            continue
        if named and importlib.util.find_spec(named) is not None:
            return named
    return None


def choose_backend():
    """Set KERAS_BACKEND to an installed backend if none is configured.

    Returns the backend chosen here, or None when the user's choice (or Keras'
    default, TensorFlow, installed) stands. Prints one line saying which.

    Raises:
        ImportError: no backend is installed; the message says how to add one.
    """
    if "keras" in sys.modules or _configured_backend() is not None:
        return None
    installed = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
    if not installed:
        raise ImportError(
            "Found no Keras backend (none of tensorflow, jax, torch is installed); kzoo needs "
            "one, so install one, e.g. pip install 'kzoo[jax]' or pip install jax."
        )
    if installed[0] == "tensorflow":
        return None
    os.environ["KERAS_BACKEND"] = installed[0]
    print(
        f"kzoo: KERAS_BACKEND is not set and TensorFlow (Keras' default) is not installed, "
        f"so kzoo uses {installed[0]}; set KERAS_BACKEND to choose.",
        file=sys.stderr,
    )
    return installed[0]
