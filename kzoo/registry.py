"""The model registry: one decorator registers a builder, one call builds it.

A builder is a plain function whose keyword arguments (all with documented
defaults) describe the model; it returns a built, uncompiled `keras.Model`.
Every registration also carries a tiny configuration, which the generic test
suite uses to exercise every registered model on every backend.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os

    import keras

from kzoo import vocabulary

TASKS = (
    "classification",  # logits (batch, classes), integer labels
    "regression",  # (batch, outputs), float targets
    "sequence",  # logits (batch, steps, vocab), integer labels per step
    "self_supervised",  # model.compile() and model.fit(x) with no targets
)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one registered model.

    Attributes:
        name: str. The registered name, e.g. `"resnet50"`.
        builder: callable. Returns a built, uncompiled `keras.Model`.
        family: str. The model family, e.g. `"cnn"`, `"rnn"`, `"transformer"`.
        task: str. One of `kzoo.registry.TASKS`; tells tests and tools what
            the model's outputs mean.
        tiny: dict. Keyword arguments for a tiny configuration used by tests.
        tiny_inputs: `UniformInputs`, callable or None. Inputs for the tiny
            configuration, drawn by `make_tiny_inputs`; None means "random
            floats shaped like `model.inputs`".
        recipe: str or None. The recipe in `recipes/` that trains the model.
        search_space: `kzoo.training.search_space.FamilySpace`, a dict of
            name to spec, or None. The family's default hyperparameter search
            space (`recipes/tune.py`); None means the generic one.
    """

    name: str
    builder: Callable[..., Any]
    family: str
    task: str
    tiny: dict
    tiny_inputs: UniformInputs | Callable[..., Any] | None = None
    recipe: str | None = None
    fixed: dict = dataclasses.field(default_factory=dict)
    variant_summary: str | None = None
    search_space: Any = None

    @property
    def defaults(self):
        """The builder's keyword arguments and their default values."""
        params = inspect.signature(self.builder).parameters.values()
        found = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        return {**found, **self.fixed}

    @property
    def doc(self):
        """The builder's docstring (a variant's summary, then its class's)."""
        doc = inspect.getdoc(self.builder) or ""
        if self.variant_summary:
            doc = self.variant_summary + "\n\n" + doc
        return doc

    @property
    def summary(self):
        """The first line of the builder's docstring."""
        doc = self.doc
        return doc.splitlines()[0] if doc else ""

    def make_tiny_inputs(self, model, batch_size, rng):
        """Inputs for `model`, the tiny configuration, as `tiny_inputs` declares them.

        Returns None when the registration declares none (the caller picks).
        """
        if isinstance(self.tiny_inputs, UniformInputs):
            return self.tiny_inputs.sample(model, batch_size, rng)
        if self.tiny_inputs is not None:
            return self.tiny_inputs(batch_size, rng)
        return None


@dataclasses.dataclass(frozen=True)
class UniformInputs:
    """Tiny inputs declared by their value range: floats uniform in `[low, high)`.

    Made by `uniform_inputs`. They are drawn in the tiny model's own input
    shape: its `example_shape` (models that train themselves on `fit(x)` have
    one) or else the shape of its one input, unknown axes taken as 8.
    """

    low: float
    high: float

    def sample(self, model, batch_size, rng):
        """A float32 array `(batch_size, *input shape)` drawn with NumPy's `rng`."""
        shape = getattr(model, "example_shape", None)
        if shape is None:
            if len(model.inputs) != 1:
                raise ValueError(
                    f"Received uniform_inputs for {model.name!r}, which has {len(model.inputs)} "
                    "inputs; expected one, so pass a tiny_inputs(batch_size, rng) function."
                )
            shape = model.inputs[0].shape[1:]
        shape = tuple(8 if d is None else int(d) for d in shape)
        return rng.uniform(self.low, self.high, size=(batch_size, *shape)).astype("float32")


def uniform_inputs(low, high):
    """Declare a model's tiny inputs as floats uniform in `[low, high)`.

    Pass it as `register_model(..., tiny_inputs=uniform_inputs(0.0, 1.0))`
    for a model whose inputs must lie in a range (images in `[0, 1]`); the
    shape comes from the tiny model itself.

    Args:
        low: float. Smallest value.
        high: float. Upper bound (excluded); above `low`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("mlp", input_shape=(3,), num_classes=2, hidden_units=(4,))
    >>> x = uniform_inputs(-1.0, 1.0).sample(model, 2, np.random.default_rng(0))
    >>> x.shape, x.dtype.name, bool(x.min() >= -1.0 and x.max() < 1.0)
    ((2, 3), 'float32', True)
    """
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high):
        raise ValueError(
            f"Received uniform_inputs({low!r}, {high!r}); expected two numbers with "
            "low < high, such as uniform_inputs(0.0, 1.0)."
        )
    return UniformInputs(float(low), float(high))


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, family: str, task: str, tiny: dict[str, Any],
    tiny_inputs: UniformInputs | Callable[..., Any] | None = None, recipe: str | None = None,
    search_space: Any = None,
) -> Callable[..., Any]:
    """Register a model builder (a function or a model class) under `name`.

    Args:
        name: str. The registered name; must be new.
        family: str. The model family, shown by `python -m kzoo list`.
        task: str. One of `kzoo.registry.TASKS`.
        tiny: dict. Keyword arguments of a tiny configuration for tests.
        tiny_inputs: `uniform_inputs(low, high)`, callable or None. Inputs
            for the tiny configuration: declared by their value range, or
            given by a function `tiny_inputs(batch_size, rng)`. Defaults to
            None (random floats shaped like the model's inputs).
        recipe: str or None. The recipe that trains this model. Defaults to
            None.
        search_space: `kzoo.training.search_space.FamilySpace`, a dict of
            name to spec (`{"units": "16..128:log:step=2"}`), or None. The
            hyperparameter search space the tuner uses for this model.
            Defaults to None (the generic space: dropout and training).

    Example:

    >>> import keras, kzoo
    >>> @kzoo.register_model("doc_example_linear", family="example",
    ...                      task="regression", tiny={"input_dim": 2})
    ... def linear(input_dim=4, num_outputs=1):
    ...     '''A linear regression model.'''
    ...     inputs = keras.Input((input_dim,))
    ...     return keras.Model(inputs, keras.layers.Dense(num_outputs)(inputs))
    >>> kzoo.create_model("doc_example_linear", input_dim=3).count_params()
    4
    >>> kzoo.registry.unregister_model("doc_example_linear")
    """
    if task not in TASKS:
        raise ValueError(
            f"Received task={task!r} for model {name!r}; expected one of "
            f"{TASKS}, so pick the one that describes the model's outputs."
        )
    if not (tiny_inputs is None or isinstance(tiny_inputs, UniformInputs) or callable(tiny_inputs)):
        raise TypeError(
            f"Received tiny_inputs={tiny_inputs!r} for model {name!r}; expected "
            "uniform_inputs(low, high), a function tiny_inputs(batch_size, rng) or None."
        )

    def decorator(builder, *, fixed=None, variant_summary=None):
        if name in _REGISTRY:
            raise ValueError(
                f"Received a second registration for model name {name!r}; "
                "registered names must be unique, so choose another name."
            )
        _REGISTRY[name] = ModelEntry(
            name=name,
            builder=builder,
            family=family,
            task=task,
            tiny=dict(tiny),
            tiny_inputs=tiny_inputs,
            recipe=recipe,
            fixed=dict(fixed or {}),
            variant_summary=variant_summary,
            search_space=search_space,
        )
        return builder

    return decorator


def register_variant(
    name: str, cls: type[keras.Model], /, *, summary: str, family: str, task: str,
    tiny: dict[str, Any], tiny_inputs: UniformInputs | Callable[..., Any] | None = None,
    recipe: str | None = None, search_space: Any = None, **fixed: Any,
) -> None:
    """Register `cls` with some arguments fixed, as a named variant.

    A variant is three lines: the class does the work and `fixed` picks the
    configuration. Every fixed argument can still be overridden by
    `create_model`.

    Args:
        name: str. The registered name, e.g. `"resnet18"`.
        cls: a model class (or builder function) to call.
        summary: str. One line saying what the variant is.
        family, task, tiny, tiny_inputs, recipe, search_space: as in
            `register_model`.
        **fixed: the arguments that define the variant (a `name=` among them
            names the built model).
    """
    register_model(
        name, family=family, task=task, tiny=tiny, tiny_inputs=tiny_inputs, recipe=recipe,
        search_space=search_space,
    )(cls, fixed=fixed, variant_summary=summary)


def unregister_model(name):
    """Remove a registered model (for tests and interactive experiments)."""
    _REGISTRY.pop(name, None)


def list_models(pattern: str = "*") -> list[str]:
    """Return the sorted names of registered models matching `pattern`.

    Args:
        pattern: str. A shell-style wildcard such as `"resnet*"`. Defaults
            to `"*"` (every model).

    Example:

    >>> import kzoo
    >>> kzoo.list_models("mlp")
    ['mlp']
    """
    _load_families()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_entry(name):
    """Return the `ModelEntry` registered as `name`.

    Raises:
        ValueError: `name` is not registered; the message names the closest
            registered names.
    """
    _load_families()
    if not isinstance(name, str):
        raise TypeError(
            f"Received model name {name!r} of type {type(name).__name__}; "
            "expected a string such as 'mlp'; see kzoo.list_models()."
        )
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = (
            f"the closest registered names are {close}"
            if close
            else "kzoo.list_models() lists the registered names"
        )
        raise ValueError(f"Received unknown model name {name!r}; {hint}.")
    return _REGISTRY[name]


def check_kwargs(entry, kwargs):
    """Raise `ValueError` for any keyword argument the builder does not take.

    Old names the builder still accepts (`kzoo.vocabulary.renamed_arguments`)
    pass; the builder renames them with a `DeprecationWarning`.
    """
    allowed = entry.defaults
    renamed = vocabulary.renames_of(entry.builder)
    for key, value in kwargs.items():
        if key not in allowed and key not in renamed:
            raise ValueError(
                f"Received unknown argument {key}={value!r} for model "
                f"{entry.name!r}; allowed arguments are {sorted(allowed)}."
            )


def create_model(name: str, /, weights: str | os.PathLike | None = None,
                 **kwargs: Any) -> keras.Model:
    """Build the registered model `name` with keyword overrides.

    Returns a built, uncompiled `keras.Model`; classifiers output logits.

    Args:
        name: str. A name from `kzoo.list_models()`.
        weights: str or None. Published weights to load: a `.safetensors`
            or `.pth` file, a Hugging Face model folder, `hf://ORG/NAME`, or
            a preset name from `kzoo.weights.list_weights(name)` such as
            `"imagenet"` (see `kzoo.weights`). Architecture arguments the
            checkpoint fixes are taken from it; a `num_classes` it
            contradicts keeps the backbone and re-initialises the head.
            Defaults to None (random initialisation).
        **kwargs: overrides of the builder's defaults; `kzoo.model_info(name)`
            lists them.

    Raises:
        ValueError: unknown name, unknown argument, or an invalid value.

    Example:

    >>> import kzoo
    >>> model = kzoo.create_model("mlp", input_shape=(40,), num_classes=10)
    >>> model.output_shape
    (None, 10)
    """
    entry = get_entry(name)
    kwargs = vocabulary.rename_arguments(name, vocabulary.renames_of(entry.builder), kwargs)
    check_kwargs(entry, kwargs)
    if weights is not None:
        from kzoo.weights.core import build_with_weights

        return build_with_weights(entry, weights, kwargs)
    return entry.builder(**{**entry.fixed, **kwargs})


def model_info(name: str, /, **kwargs: Any) -> dict[str, Any]:
    """Describe a registered model: family, task, parameters and config.

    Builds the model (with `kwargs` applied) to count its parameters.

    Example:

    >>> import kzoo
    >>> info = kzoo.model_info("mlp", input_shape=(4,), num_classes=3,
    ...                        hidden_units=(8,))
    >>> info["family"], info["params"]
    ('mlp', 67)
    """
    entry = get_entry(name)
    kwargs = vocabulary.rename_arguments(name, vocabulary.renames_of(entry.builder), kwargs)
    model = create_model(name, **kwargs)
    config = {**entry.defaults, **kwargs}
    trainable = sum(int(_size(w.shape)) for w in model.trainable_weights)
    return {
        "name": name,
        "family": entry.family,
        "task": entry.task,
        "summary": entry.summary,
        "recipe": entry.recipe,
        "params": int(model.count_params()),
        "trainable_params": trainable,
        "config": config,
    }


def _size(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


_loaded = False


def _load_families():
    """Import every module under `kzoo.models` so their models register."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil

    from kzoo import models

    for info in pkgutil.walk_packages(models.__path__, models.__name__ + "."):
        importlib.import_module(info.name)
