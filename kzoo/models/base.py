"""`ZooModel`: the base of kzoo's functional models.

A zoo model is a functional `keras.Model` built entirely in `__init__`; its
config is its constructor arguments, so `from_config` is `cls(**config)` and a
`.keras` file records the hyperparameters a person would recognise. Classifiers
share one small interface (the one timm users rely on): name the classifier
layer, take the features without the head, and swap the head.
"""

import keras
import numpy as np
from keras import ops

from kzoo import validation, vocabulary
from kzoo.layers import fast
from kzoo.optimizers import Adam


class ModelConfig:
    """Config, and metadata, for models whose config is their constructor arguments.

    Shared by the functional `ZooModel` and the subclassed models (GAN, DDPM)
    that cannot derive from it. A subclass calls `self._set_config(...)` with
    every constructor argument once it is built.

    `metadata` is what a person needs to use the model besides its weights:
    the preprocessing its weights expect, its class names, its tokenizer, where
    its weights came from. It is a JSON-serialisable dict, saved in the model's
    `.keras` config under `"metadata"` (only when not empty) and restored on
    load. kzoo's conventional keys are listed in `METADATA_KEYS`.
    """

    def _set_config(self, **config):
        self.model_config = dict(config)

    @property
    def metadata(self):
        """dict. Preprocessing, class names, tokenizer and source of the model."""
        return self.__dict__.setdefault("_kzoo_metadata", {})

    @metadata.setter
    def metadata(self, value):
        self.__dict__["_kzoo_metadata"] = check_metadata(value)

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, **self.model_config}
        if self.metadata:
            config["metadata"] = self.metadata
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        metadata = config.pop("metadata", None)
        # Files saved before an argument was renamed still load, silently: the
        # file, not the user's code, holds the old name (kzoo.vocabulary).
        config = vocabulary.rename_arguments(
            cls.__name__, vocabulary.renames_of(cls), config, warn=False
        )
        _check_config_keys(cls, config)
        model = cls(**config)
        if metadata:
            model.metadata = metadata
        return model


#: Config keys every Keras model accepts besides its constructor arguments.
_KERAS_MODEL_KEYS = frozenset({"name", "trainable", "dtype"})


def _check_config_keys(cls, config):
    """Raise `ValueError` for a config key the class's constructor does not take.

    A `.keras` file whose config names an argument kzoo does not know was
    written by something else (or edited): loading it silently would build a
    model other than the one described, as `create_model` refuses it too.
    """
    import inspect

    params = inspect.signature(cls.__init__).parameters
    known = {n for n, p in params.items()
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n != "self"}
    unknown = sorted(set(config) - known - _KERAS_MODEL_KEYS)
    if unknown:
        raise ValueError(
            f"Received a saved config for {cls.__name__} with unknown keys {unknown}; expected "
            f"only its arguments {sorted(known)}, so load a file kzoo wrote for this version "
            "or remove those keys."
        )


#: Keys of `ModelConfig.metadata` that kzoo itself reads and writes.
METADATA_KEYS = (
    "preprocessing",  # dict: what inputs the weights expect (size, resize, crop, mean, std, ...)
    "class_names",  # list of str: the label of each output class, in order
    "tokenizer",  # dict: the tokenizer text models take strings with
    "source",  # dict: where the weights came from (library, id, license, ...)
)


def check_metadata(value):
    """Return `value` as a plain dict if JSON can hold it; else raise `TypeError`."""
    import json

    if not isinstance(value, dict):
        raise TypeError(
            f"Received metadata of type {type(value).__name__}; expected a dict such as "
            "{'class_names': [...]}, so wrap the values in a dict."
        )
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"Received metadata that JSON cannot hold ({err}); expected strings, numbers, "
            "lists and dicts only, so convert arrays with .tolist() first."
        ) from None


# === Pieces every family shares ===
def head(x, *, num_classes=None, num_outputs=None, dropout=0.0, name="head"):
    """Attach a classification (logits) or regression head to `x`.

    Exactly one of `num_classes` and `num_outputs` must be given. The head
    computes in float32 under mixed precision so that logits and losses stay
    accurate.
    """
    validation.exactly_one([("num_classes", num_classes), ("num_outputs", num_outputs)])
    units = validation.positive_int(
        "num_classes" if num_classes is not None else "num_outputs",
        num_classes if num_classes is not None else num_outputs,
    )
    if dropout:
        x = fast.Dropout(dropout, name=f"{name}_dropout")(x)
    return fast.Dense(units, dtype="float32", name=name)(x)


def image_or_signal_shape(input_shape):
    """Validate `(length, channels)` or `(height, width, channels)`."""
    input_shape = validation.shape("input_shape", input_shape, ranks=(2, 3))
    if input_shape[-1] is None:
        raise ValueError(
            f"Received input_shape={input_shape}; expected a known number of channels "
            "last, such as input_shape=(32, 32, 3) or (40, 1)."
        )
    return input_shape


class ZooModel(ModelConfig, keras.Model):
    """Base class: functional model whose config is its constructor arguments.

    For functional models only (Keras turns a built functional subclass's
    bases into `Functional`); subclassed models such as the GANs derive from
    `ModelConfig` and `keras.Model` directly.

    Subclasses build their graph, call `super().__init__(inputs, outputs, ...)`
    and then `self._set_config(...)` with every constructor argument.
    """

    #: Name of the layer that maps features to logits (None: no classifier).
    classifier_name: str | None = "head"  # None: a model with no classifier layer

    def get_config(self):
        config = super().get_config()
        # The model is rebuilt from its constructor arguments, which know nothing of
        # layers frozen afterwards (transfer learning); record them so a reloaded
        # model resumes fine-tuning with the same layers frozen.
        frozen = [layer.name for layer in self.layers if not layer.trainable]
        if frozen and self.trainable:
            config["frozen_layers"] = frozen
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        frozen = config.pop("frozen_layers", [])
        if not isinstance(frozen, list) or not all(isinstance(n, str) for n in frozen):
            raise ValueError(
                f"Received frozen_layers={frozen!r} in a saved {cls.__name__} config; expected "
                "a list of layer names, as kzoo writes it, so remove or fix the entry."
            )
        model = super().from_config.__func__(cls, config)
        names = {layer.name for layer in model.layers}
        missing = sorted(set(frozen) - names)
        if missing:
            raise ValueError(
                f"Received frozen_layers naming {missing}, which {cls.__name__} does not have; "
                "expected names of its layers, so remove those entries."
            )
        for layer in model.layers:
            if layer.name in frozen:
                layer.trainable = False
        return model

    # === Classifier interface ===
    def get_classifier(self):
        """Return the classifier (head) layer.

        Raises:
            ValueError: the model has no classifier layer.
        """
        names = [layer.name for layer in self.layers]
        if self.classifier_name not in names:
            raise ValueError(
                f"Received a request for the classifier of {self.name!r}, which has "
                f"no layer named {self.classifier_name!r}; it is not a classifier."
            )
        return self.get_layer(self.classifier_name)

    def feature_extractor(self):
        """Return a `keras.Model` that maps the inputs to the head's input.

        The returned model shares weights with this one.
        """
        head = self.get_classifier()
        features = head.input
        # A dropout right before the head belongs to the head, not the features.
        dropout_name = f"{self.classifier_name}_dropout"
        if dropout_name in [layer.name for layer in self.layers]:
            features = self.get_layer(dropout_name).input
        return keras.Model(self.inputs, features, name=f"{self.name}_features")

    def reset_classifier(self, num_classes):
        """Return a copy of this model with a new, freshly initialised head.

        Every weight except the head's is copied, so the result is ready for
        fine-tuning on a task with `num_classes` classes.

        Args:
            num_classes: int. Classes of the new head.
        """
        if "num_classes" not in self.model_config:
            raise ValueError(
                f"Received reset_classifier(num_classes={num_classes!r}) on "
                f"{self.name!r}, which has no num_classes argument to change."
            )
        config = {**self.get_config(), "num_classes": num_classes}
        if "num_outputs" in config:
            config["num_outputs"] = None
        new = type(self).from_config(config)
        head = self.get_classifier().name
        for layer in self.layers:
            if layer.name != head and layer.weights:
                new.get_layer(layer.name).set_weights(layer.get_weights())
        return new


class SelfTrainingModel(ModelConfig):
    """Base of the models that train themselves: `compute_loss` is their own loss.

    `compile()` needs no loss and refuses one, `fit(x)` takes no targets, and
    the parts of the loss are reported as metrics. Used by the GANs, the VAEs
    and DDPM. It is a mixin, placed before the Keras base: before `ZooModel`
    for a functional model (`class VAE(SelfTrainingModel, ZooModel)`), before
    `keras.Model` for a subclassed one (`class DDPM(SelfTrainingModel,
    keras.Model)`); it cannot derive from `keras.Model` itself, because Keras
    rewrites the bases of a functional subclass to `Functional`.

    A subclass declares:

    - `metric_trackers`: `{attribute: metric name}`, one `keras.metrics.Mean`
      per part of the loss that `compute_loss` updates, created on
      construction and listed, in order, in `metrics` after the total loss.
      A saved file holds each tracker's state under its attribute, so an
      attribute is never renamed.
    - `default_learning_rate` (Adam's, when `compile()` gets no optimizer) or
      its own `default_optimizer()`.
    - `loss_description`: the loss, as the error for `compile(loss=...)`
      names it.

    Reloading a compiled `.keras` file compiles the model from what
    `get_compile_config` saved and builds the optimizer, so its saved
    variables load.
    """

    metric_trackers: dict[str, str] = {}
    default_learning_rate = 1e-3
    loss_description = "its own loss"
    #: `compile` arguments the model refuses (it defines its own loss).
    refused_compile_arguments: tuple[str, ...] = ("loss", "metrics")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for attribute, metric_name in self.metric_trackers.items():
            setattr(self, attribute, keras.metrics.Mean(name=metric_name))

    def default_optimizer(self):
        """The optimizer `compile()` uses when given none: Adam at `default_learning_rate`."""
        return Adam(self.default_learning_rate)

    def compile(self, optimizer=None, **kwargs):
        """Configure training; the model defines its own loss.

        Args:
            optimizer: `keras.optimizers.Optimizer`. Defaults to
                `default_optimizer()` (Adam at the model's
                `default_learning_rate`).
            **kwargs: other `keras.Model.compile` arguments (`jit_compile`,
                `steps_per_execution`, `run_eagerly`...); `loss` and `metrics`
                must stay None.
        """
        self._refuse_compile_arguments(kwargs)
        super().compile(optimizer=optimizer or self.default_optimizer(), **kwargs)

    def _refuse_compile_arguments(self, kwargs):
        """Raise for a refused `compile` argument given a value; drop those left None."""
        for key in self.refused_compile_arguments:
            if kwargs.pop(key, None) is not None:
                raise ValueError(
                    f"Received compile({key}=...) for {self.name!r}; this model defines "
                    f"{self.loss_description}, so leave {key} out."
                )

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        trackers = [getattr(self, attribute) for attribute in self.metric_trackers]
        return ([self._loss_tracker] if self.compiled else []) + trackers

    @property
    def example_shape(self):
        """tuple. The shape of one example `fit(x)` takes (no batch axis)."""
        return tuple(self.inputs[0].shape[1:])

    def _plus_layer_losses(self, loss):
        """`loss` plus the layers' own losses (weight regularisers, `add_loss`)."""
        if self.losses:
            loss = loss + ops.sum(ops.stack([ops.cast(v, "float32") for v in self.losses]))
        return loss

    def _from_prior(self, n, seed, batch_size, decode):
        """Decode `n` latent vectors drawn from N(0, I) with `seed`, `batch_size` at a time."""
        n = validation.positive_int("n", n)
        z = np.random.default_rng(seed).standard_normal((n, self.latent_dim)).astype("float32")
        return np.concatenate([decode(z[i : i + batch_size]) for i in range(0, n, batch_size)])


def conv_generator_shapes(input_shape, latent_dim, filters):
    """Validate what the convolutional GAN and VAE share: a square image whose side 4 divides.

    Args:
        input_shape: `(size, size, channels)`, channels 1 or 3, size a multiple of 4.
        latent_dim: int. Width of the latent vector.
        filters: int. Base number of convolution filters.

    Returns:
        `(input_shape, channels, base, latent_dim, filters)`, with `base` the
        side of the `(size/4)^2` map that two stride-2 layers turn into the image.

    Example:

    >>> conv_generator_shapes([16, 16, 1], 8, 4)
    ((16, 16, 1), 1, 4, 8, 4)
    """
    image_size, channels = validation.square_image(
        "input_shape", input_shape, multiple_of=4, channels=(1, 3)
    )
    latent_dim = validation.positive_int("latent_dim", latent_dim)
    filters = validation.positive_int("filters", filters)
    return (image_size, image_size, channels), channels, image_size // 4, latent_dim, filters


#: The former name of `SelfTrainingModel`.
SelfLossMixin = SelfTrainingModel


# === Value ranges: the data's `(low, high)` and the range a model computes in ===
def check_value_range(value):
    """Return `value` as a `(low, high)` tuple of floats with low < high.

    Args:
        value: a pair of numbers, the range of the training data.

    Raises:
        ValueError: `value` is not two numbers with low < high.

    Example:

    >>> check_value_range([0, 255])
    (0.0, 255.0)
    """
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        low = high = None
    if low is None or not low < high:
        raise ValueError(
            f"Received value_range={value!r}; expected (low, high) with low < high "
            "such as (0.0, 1.0), the range of the training images."
        )
    return (low, high)


def rescale(x, source, target):
    """Map `x` affinely from the range `source` to the range `target`.

    Works on tensors and NumPy arrays alike: from the data's range to the
    model's unit range (`(-1, 1)` for a tanh output or a diffusion model,
    `(0, 1)` for Bernoulli pixels) and back.

    Args:
        x: tensor or array.
        source: `(low, high)` that `x` lies in.
        target: `(low, high)` to map it to.

    Example:

    >>> import numpy as np
    >>> rescale(np.array([0.0, 2.0, 4.0]), (0.0, 4.0), (-1.0, 1.0)).tolist()
    [-1.0, 0.0, 1.0]
    """
    (s0, s1), (t0, t1) = source, target
    return (x - s0) * ((t1 - t0) / (s1 - s0)) + t0


def rescaling(source, target, **kwargs):
    """A `keras.layers.Rescaling` layer mapping the range `source` to `target`.

    Args:
        source: `(low, high)` of the layer's inputs.
        target: `(low, high)` of its outputs.
        **kwargs: `keras.layers.Rescaling` arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np
    >>> layer = rescaling((0.0, 1.0), (-1.0, 1.0))
    >>> np.asarray(layer(np.array([0.0, 0.5, 1.0]))).tolist()
    [-1.0, 0.0, 1.0]
    """
    (s0, s1), (t0, t1) = source, target
    return keras.layers.Rescaling(
        (t1 - t0) / (s1 - s0), offset=(t0 * s1 - t1 * s0) / (s1 - s0), **kwargs
    )
