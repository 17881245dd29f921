"""Published weights in and out: torchvision, timm and Hugging Face checkpoints.

    model = kzoo.create_model("resnet50", weights="imagenet")        # a preset
    model = kzoo.create_model("resnet18", weights="resnet18.safetensors")
    model = kzoo.create_model("vit_base", weights="hf://google/vit-base-patch16-224")
    kzoo.weights.export(model, "resnet18.safetensors", layout="torchvision")

A SOURCE is a local `.safetensors` file, a `.pth`/`.pt`/`.bin` file (read with
`torch.load(..., weights_only=True)`, so it needs torch), a Hugging Face model
folder (`config.json` + `model.safetensors` or `pytorch_model.bin`), a
`hf://ORG/NAME[@REVISION]` hub id (fetched with `huggingface_hub` into its
cache; `HF_HUB_OFFLINE=1` is honoured), an `https://` URL (cached under
`kzoo.weights.sources.cache_dir()`), or a preset name from the weights table
(`kzoo.weights.list_weights()`). Everything after reading the file is numpy:
no torch or torchvision is needed on the jax and tensorflow installs.

Writing a converter
-------------------
A converter is a `Converter` record registered with `register_converter`; it
maps one family of checkpoints onto one family of kzoo models, both ways::

    from kzoo.weights import Converter, register_converter, ports

    def _arguments(checkpoint):             # kzoo kwargs the checkpoint fixes
        return {"num_classes": checkpoint.state["fc.weight"].shape[0]}

    def _ports(model, checkpoint):          # every kzoo weight <-> source key(s)
        out = ports.conv(model.get_layer("stem_conv"), "conv1")
        out += ports.batch_norm(model.get_layer("stem_bn"), "bn1")
        out += ports.dense(model.get_layer("head"), "fc", head=True)
        return out

    register_converter(Converter(
        name="torchvision.resnet", layout="torchvision",
        models=("resnet18", "resnet34", "resnet50"),     # fnmatch patterns
        detect=lambda checkpoint: "layer1.0.conv1.weight" in checkpoint.state,
        arguments=_arguments, ports=_ports,
        ignored=("*.num_batches_tracked",),              # source keys kzoo drops
        extras=ports.batch_norm_counters,                # tensors `export` adds back
    ))

`ports(model, checkpoint)` returns a list of `Port`s. A `Port` ties kzoo
weights (`keras.Variable`s) to source keys and carries the two functions that
convert one to the other (`load`: source arrays -> kzoo arrays, `save`: the
inverse), so a converter written for loading also exports. `kzoo.weights.ports`
has the common ones: `conv` (OIHW <-> HWIO), `depthwise_conv`, `dense`
(transpose), `batch_norm`, `layer_norm`, `copy` (identity or a reshape).
Ports flagged `head=True` are the classifier: when the caller's `num_classes`
contradicts the checkpoint's, those are skipped (and re-initialised) and the
rest loads.

`WeightLoader` applies the ports and proves the load complete: every source
tensor is used exactly once (or matched by `ignored`), every kzoo weight is set
exactly once, and every shape fits; anything else is one `ValueError` sentence
naming the first missing, unexpected or mis-shaped tensor.

`arguments(checkpoint)` returns the kzoo constructor arguments the checkpoint
fixes (sizes from a Hugging Face `config.json`, `num_classes` from the head);
the caller's own arguments win, and a contradicted `num_classes` resets the head.
Optional fields: `metadata(checkpoint, model)` (preprocessing, class names),
`export_config(model)` (a `config.json` for layout "transformers"),
`describe` (one phrase for error messages). `detect` sees a `Checkpoint`
(`state`: dict of numpy arrays, `config`: the parsed `config.json` or None).
"""

# Register the built-in converters.
from kzoo.weights import text as _text  # noqa: E402,F401
from kzoo.weights import vision as _vision  # noqa: E402,F401
from kzoo.weights.core import (
    Checkpoint,
    Converter,
    Port,
    WeightLoader,
    WeightsError,
    converters,
    find_converter,
    load_into,
    load_weights,
    register_converter,
)
from kzoo.weights.exporting import export, state_dict
from kzoo.weights.sources import read_checkpoint
from kzoo.weights.table import list_weights, weights_table_markdown

__all__ = [
    "Checkpoint",
    "Converter",
    "Port",
    "WeightLoader",
    "WeightsError",
    "converters",
    "export",
    "find_converter",
    "list_weights",
    "load_into",
    "load_weights",
    "read_checkpoint",
    "register_converter",
    "state_dict",
    "weights_table_markdown",
]
