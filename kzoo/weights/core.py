"""The converter registry and the loader that proves a load complete."""

from __future__ import annotations

import dataclasses
import fnmatch
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import os

    import keras


class WeightsError(ValueError):
    """A checkpoint that does not fit: one sentence naming the first problem."""


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint read into numpy.

    Attributes:
        state: dict of str to `np.ndarray`. The state dict, source key names.
        config: dict or None. The parsed `config.json` of a model folder.
        preprocessor: dict or None. The parsed `preprocessor_config.json`.
        origin: dict. Where it came from (`path`, `hub_id`, `url`, `preset`).
        files: dict of str to str. Other files of a model folder by name
            (`tokenizer.json`, `vocab.txt`, ...), as local paths.
    """

    state: dict
    config: dict | None = None
    preprocessor: dict | None = None
    origin: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)

    def describe(self):
        """One phrase naming the checkpoint, for messages."""
        o = self.origin
        return repr(o.get("preset") or o.get("hub_id") or o.get("url") or o.get("path") or "weights")


def _identity(arrays):
    return list(arrays)


@dataclasses.dataclass
class Port:
    """kzoo weights tied to source keys, with the conversion each way.

    Attributes:
        weights: list of `keras.Variable`. The kzoo weights this port sets.
        keys: list of str. The source keys it reads (and `export` writes).
        load: callable. Source arrays (in `keys` order) -> kzoo arrays (in
            `weights` order). Defaults to the identity.
        save: callable. The inverse of `load`. Defaults to the identity.
        head: bool. Part of the classifier, skipped when the head is reset.
    """

    weights: list
    keys: list
    load: Callable[[list], list] = _identity
    save: Callable[[list], list] = _identity
    head: bool = False


@dataclasses.dataclass
class Converter:
    """How one family of checkpoints maps onto one family of kzoo models.

    See the `kzoo.weights` module docstring for a complete example.

    Attributes:
        name: str. Unique, e.g. `"torchvision.resnet"`.
        layout: str. `"torchvision"`, `"timm"` or `"transformers"` (the
            `layout=` of `export`).
        models: tuple of str. fnmatch patterns of the kzoo names it loads.
        detect: callable. `detect(checkpoint) -> bool`: the checkpoint is this
            family's (from its keys or `config.json`).
        ports: callable. `ports(model, checkpoint) -> list of Port`.
        arguments: callable. `arguments(checkpoint) -> dict` of kzoo
            constructor arguments the checkpoint fixes. Defaults to none.
        ignored: tuple of str. fnmatch patterns of source keys that hold
            nothing kzoo needs (e.g. `*.num_batches_tracked`).
        extras: callable or None. `extras(model, state) -> dict` of tensors
            `export` adds to the exported `state` so the reference loads
            strictly (the ignored buffers).
        metadata: callable or None. `metadata(checkpoint, model) -> dict`,
            merged into `model.metadata`.
        export_config: callable or None. `export_config(model) -> dict`, the
            `config.json` written by `export` for layout "transformers".
        describe: str. A phrase naming the checkpoints, for messages.
        aliases: tuple of str. Other layouts with the same keys (timm's
            ResNets use torchvision's names), accepted by `export`.
    """

    name: str
    layout: str
    models: tuple
    detect: Callable[[Checkpoint], bool]
    ports: Callable[[Any, Checkpoint], list]
    arguments: Callable[[Checkpoint], dict] = lambda checkpoint: {}
    ignored: tuple = ()
    extras: Callable[[Any, dict], dict] | None = None
    metadata: Callable[[Checkpoint, Any], dict] | None = None
    export_config: Callable[[Any], dict] | None = None
    describe: str = ""
    aliases: tuple = ()

    def handles(self, model_name):
        return any(fnmatch.fnmatchcase(model_name, p) for p in self.models)


_CONVERTERS: dict[str, Converter] = {}


def register_converter(converter: Converter) -> Converter:
    """Register a `Converter`; its `name` must be new.

    Args:
        converter: `Converter`. The converter to register.

    Example:

    >>> import kzoo
    >>> "torchvision.resnet" in [c.name for c in kzoo.weights.converters()]
    True
    """
    if not isinstance(converter, Converter):
        raise TypeError(
            f"Received a converter of type {type(converter).__name__}; expected a "
            "kzoo.weights.Converter, so wrap the functions in one."
        )
    if converter.name in _CONVERTERS:
        raise ValueError(
            f"Received a second converter named {converter.name!r}; converter names "
            "must be unique, so choose another name."
        )
    _CONVERTERS[converter.name] = converter
    return converter


def converters(model_name: str | None = None, layout: str | None = None) -> list[Converter]:
    """Return the registered converters, optionally for one model or layout."""
    return [
        c for c in _CONVERTERS.values()
        if (model_name is None or c.handles(model_name))
        and (layout is None or layout == c.layout or layout in c.aliases)
    ]


def find_converter(model_name: str, checkpoint: Checkpoint) -> Converter:
    """Return the converter that loads `checkpoint` into the kzoo model `model_name`.

    Raises:
        WeightsError: no registered converter reads this checkpoint into
            this model; the message says what the checkpoint looks like.
    """
    own = converters(model_name)
    for converter in own:
        if converter.detect(checkpoint):
            return converter
    others = [c for c in _CONVERTERS.values() if c not in own and c.detect(checkpoint)]
    if others:
        other = others[0]
        raise WeightsError(
            f"Received {checkpoint.describe()}, which holds {other.describe or other.name} "
            f"weights, for kzoo model {model_name!r}; they load into {list(other.models)}, "
            "so create one of those instead."
        )
    if not own:
        raise WeightsError(
            f"Received weights={checkpoint.describe()} for kzoo model {model_name!r}, which "
            "no converter loads yet; kzoo.weights.list_weights() lists the models that load "
            "published weights."
        )
    kinds = ", ".join(c.describe or c.name for c in own)
    what = _looks_like(checkpoint)
    raise WeightsError(
        f"Received {checkpoint.describe()} ({what}) for kzoo model {model_name!r}, which "
        f"loads {kinds}; pass a checkpoint of one of those."
    )


def _looks_like(checkpoint):
    if checkpoint.config and checkpoint.config.get("model_type"):
        return f"a transformers {checkpoint.config['model_type']!r} model"
    keys = list(checkpoint.state)
    return f"{len(keys)} tensors, the first {keys[0]!r}" if keys else "no tensors"


def _weight_name(variable):
    return getattr(variable, "path", None) or variable.name


class WeightLoader:
    """Applies `Port`s to a model and proves that nothing was left out.

    Every source tensor must be used exactly once (or match `ignored`), and
    every kzoo weight must be set exactly once (heads skipped by
    `reset_head` excepted); shapes must fit.

    Args:
        state: dict of str to array. The source state dict.
        model: `keras.Model`. The model whose weights are set.
        ignored: tuple of str. fnmatch patterns of source keys to drop.
        reset_head: bool. Skip the ports flagged `head`. Defaults to False.
        model_name: str. Names the model in messages. Defaults to its name.
        source: str. Names the checkpoint in messages.
    """

    def __init__(self, state, model, *, ignored=(), reset_head=False, model_name=None,
                 source="the checkpoint"):
        self.state = state
        self.model = model
        self.ignored = tuple(ignored)
        self.reset_head = reset_head
        self.model_name = model_name or model.name
        self.source = source

    def load(self, port_list):
        """Assign every port, then check completeness; raises `WeightsError`."""
        used, set_ids, skipped_ids = set(), set(), set()
        assignments = []
        for port in port_list:
            for key in port.keys:
                if key in used:
                    raise WeightsError(
                        f"Received a mapping that reads source tensor {key!r} twice for "
                        f"{self.model_name!r}; each tensor maps to one kzoo weight, so the "
                        "converter is wrong."
                    )
                used.add(key)
            if port.head and self.reset_head:
                skipped_ids.update(id(w) for w in port.weights)
                continue
            missing = [k for k in port.keys if k not in self.state]
            if missing:
                raise WeightsError(
                    f"Received {self.source} without tensor {missing[0]!r}, which kzoo "
                    f"weight {_weight_name(port.weights[0])!r} of {self.model_name!r} needs; "
                    "the checkpoint holds another architecture or size, so pick the "
                    "checkpoint made for this model."
                )
            arrays = port.load([np.asarray(self.state[k]) for k in port.keys])
            for weight, array in zip(port.weights, arrays, strict=True):
                if id(weight) in set_ids:
                    raise WeightsError(
                        f"Received a mapping that sets kzoo weight {_weight_name(weight)!r} "
                        "twice; the converter is wrong."
                    )
                set_ids.add(id(weight))
                if tuple(array.shape) != tuple(weight.shape):
                    raise WeightsError(
                        f"Received tensor {port.keys[0]!r} of shape "
                        f"{tuple(self.state[port.keys[0]].shape)} from {self.source}, which "
                        f"gives shape {tuple(array.shape)} where kzoo weight "
                        f"{_weight_name(weight)!r} of {self.model_name!r} has "
                        f"{tuple(weight.shape)}; the checkpoint holds another architecture "
                        "or size, so pick the checkpoint made for this model."
                    )
                assignments.append((weight, array))
        for key in self.state:
            if key not in used and not any(fnmatch.fnmatchcase(key, p) for p in self.ignored):
                raise WeightsError(
                    f"Received {self.source} with tensor {key!r} of shape "
                    f"{tuple(np.shape(self.state[key]))}, which no weight of "
                    f"{self.model_name!r} takes; the checkpoint holds another architecture "
                    "or size, so pick the checkpoint made for this model."
                )
        for weight in self.model.weights:
            if id(weight) not in set_ids and id(weight) not in skipped_ids:
                raise WeightsError(
                    f"Received {self.source}, which sets no value for kzoo weight "
                    f"{_weight_name(weight)!r} of {self.model_name!r}; the converter does not "
                    "cover this configuration, so report it."
                )
        for weight, array in assignments:
            weight.assign(array.astype(weight.dtype))


def load_into(model: keras.Model, checkpoint: Checkpoint, converter: Converter, *,
              reset_head: bool = False, model_name: str | None = None) -> None:
    """Load `checkpoint` into `model` with `converter` (see `WeightLoader`)."""
    port_list = converter.ports(model, checkpoint)
    WeightLoader(
        checkpoint.state, model, ignored=converter.ignored, reset_head=reset_head,
        model_name=model_name, source=checkpoint.describe(),
    ).load(port_list)


def load_weights(model: keras.Model, weights: str | os.PathLike, *,
                 model_name: str | None = None) -> keras.Model:
    """Load published weights into an existing kzoo model, in place.

    The model's architecture must already fit the checkpoint (use
    `kzoo.create_model(name, weights=...)` to build one that does); the
    same checks apply: every tensor used once, every weight set.

    Args:
        model: a kzoo model.
        weights: str. A SOURCE, as for `create_model(..., weights=...)`.
        model_name: str or None. The registered name whose converters
            apply. Defaults to `model.name`.

    Returns:
        The model.

    Example:

    >>> import kzoo, os, tempfile
    >>> model = kzoo.create_model("resnet18", input_shape=(32, 32, 3), num_classes=4, width=4)
    >>> path = kzoo.weights.export(model, os.path.join(tempfile.mkdtemp(), "w.safetensors"))
    >>> kzoo.weights.load_weights(model, str(path)).name
    'resnet18'
    """
    from kzoo.weights import sources

    name = model_name or model.name
    checkpoint = sources.read_checkpoint(weights, model_name=name)
    converter = find_converter(name, checkpoint)
    load_into(model, checkpoint, converter, model_name=name)
    return model


def build_with_weights(entry, weights, kwargs):
    """`create_model(name, weights=...)`: read, build to fit, load, attach metadata."""
    from kzoo.weights import sources

    checkpoint = sources.read_checkpoint(weights, model_name=entry.name)
    converter = find_converter(entry.name, checkpoint)
    fixed = converter.arguments(checkpoint)
    allowed = entry.defaults
    fixed = {k: v for k, v in fixed.items() if k in allowed}
    reset_head = False
    wanted = kwargs.get("num_classes", fixed.get("num_classes"))
    if "num_classes" in fixed and wanted != fixed["num_classes"]:
        reset_head = True
        warnings.warn(
            f"{checkpoint.describe()} has a {fixed['num_classes']}-class head and "
            f"num_classes={wanted!r} was asked for: the backbone is loaded and the head "
            "re-initialised.",
            stacklevel=3,
        )
    model = entry.builder(**{**entry.fixed, **fixed, **kwargs})
    load_into(model, checkpoint, converter, reset_head=reset_head, model_name=entry.name)
    metadata = dict(getattr(model, "metadata", {}) or {})
    if converter.metadata is not None:
        metadata.update(converter.metadata(checkpoint, model))
    preset = checkpoint.origin.get("preset_row")
    if preset:
        for key in ("preprocessing",):
            if preset.get(key):
                metadata[key] = preset[key]
    if reset_head:
        metadata.pop("class_names", None)
    metadata["source"] = {
        "converter": converter.name,
        "layout": converter.layout,
        **{k: v for k, v in checkpoint.origin.items() if k != "preset_row"},
        **({"license": preset["license"]} if preset and preset.get("license") else {}),
    }
    if hasattr(type(model), "metadata"):
        model.metadata = metadata
    return model
