"""`export`: kzoo weights back into torchvision, timm or transformers layouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import os

    import keras

from kzoo.weights.core import Checkpoint, WeightsError, converters

LAYOUTS = ("torchvision", "timm", "transformers")


def _model_name(model):
    config = getattr(model, "model_config", None)
    if config is None:
        raise WeightsError(
            f"Received model {getattr(model, 'name', model)!r}, which is no kzoo zoo model; "
            "export takes a model from kzoo.create_model or a .keras file kzoo wrote."
        )
    return model.name


def state_dict(model: keras.Model, layout: str = "torchvision") -> dict[str, np.ndarray]:
    """Return `model`'s weights as a state dict (numpy arrays) of the reference layout.

    Args:
        model: a kzoo model with a converter for `layout`.
        layout: str. `"torchvision"`, `"timm"` or `"transformers"`. Defaults
            to `"torchvision"`.

    Example:

    >>> import kzoo
    >>> model = kzoo.create_model("resnet18", input_shape=(32, 32, 3), num_classes=10)
    >>> kzoo.weights.state_dict(model)["fc.weight"].shape
    (10, 512)
    """
    converter = _converter(model, layout)
    return _state(model, converter)


def _converter(model, layout):
    if layout not in LAYOUTS:
        raise WeightsError(
            f"Received layout={layout!r}; expected one of {LAYOUTS}, so pick the library "
            "that will load the weights."
        )
    name = _model_name(model)
    found = converters(name, layout)
    if not found:
        layouts = sorted({c.layout for c in converters(name)} | {a for c in converters(name)
                                                               for a in c.aliases})
        raise WeightsError(
            f"Received layout={layout!r} for kzoo model {name!r}, which exports to "
            f"{layouts or 'no layout yet'}; pick one of those."
        )
    return found[0]


def _state(model, converter):
    empty = Checkpoint(state={}, origin={"export": True})
    state = {}
    for port in converter.ports(model, empty):
        arrays = port.save([np.asarray(w.numpy() if hasattr(w, "numpy") else w) for w in port.weights])
        for key, array in zip(port.keys, arrays, strict=True):
            state[key] = np.ascontiguousarray(array, dtype=np.float32)
    if converter.extras is not None:
        state.update(converter.extras(model, state))
    return state


def export(model: keras.Model, path: str | os.PathLike, layout: str = "torchvision") -> Path:
    """Write `model`'s weights as safetensors the reference library loads strictly.

    For layouts `"torchvision"` and `"timm"`, `path` is a `.safetensors`
    file for `load_state_dict(safetensors.torch.load_file(path), strict=True)`;
    for `"transformers"`, a folder with `config.json` and `model.safetensors`
    for `from_pretrained(path)`.

    Args:
        model: a kzoo model (from `create_model` or a `.keras` file).
        path: str or path. The file (or folder) to write.
        layout: str. `"torchvision"`, `"timm"` or `"transformers"`. Defaults
            to `"torchvision"`.

    Returns:
        The path written (a `Path`).

    Example:

    >>> import kzoo, os, tempfile
    >>> model = kzoo.create_model("resnet18", input_shape=(32, 32, 3), num_classes=10)
    >>> path = kzoo.weights.export(model, os.path.join(tempfile.mkdtemp(), "r18.safetensors"))
    >>> path.name
    'r18.safetensors'
    """
    from safetensors.numpy import save_file

    from kzoo.training.checkpoint import atomic_write

    def write(file, text=None):  # whole or not at all: a killed export leaves no torn file
        if text is not None:
            atomic_write(file, lambda tmp: Path(tmp).write_text(text))
        else:
            atomic_write(file, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))

    converter = _converter(model, layout)
    state = _state(model, converter)
    path = Path(path)
    if layout == "transformers":
        if converter.export_config is None:
            raise WeightsError(
                f"Received layout='transformers' for {model.name!r}, whose converter writes no "
                "config.json; export to another layout."
            )
        path.mkdir(parents=True, exist_ok=True)
        write(path / "model.safetensors")
        write(path / "config.json", json.dumps(converter.export_config(model), indent=2) + "\n")
        return path
    if path.suffix != ".safetensors":
        raise WeightsError(
            f"Received path {str(path)!r} for layout {layout!r}; expected a .safetensors file, "
            "so end the name in .safetensors."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)
    return path
