"""`ZooModel`: the base of kzoo's functional models.

A zoo model is a functional `keras.Model` built entirely in `__init__`; its
config is its constructor arguments, so `from_config` is `cls(**config)` and a
`.keras` file records the hyperparameters a person would recognise. Classifiers
share one small interface (the one timm users rely on): name the classifier
layer, take the features without the head, and swap the head.
"""

import keras

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
    return keras.layers.Dense(units, dtype="float32", name=name)(x)


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
    classifier_name = "head"

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


class SelfLossMixin:
    """`compile` and `metrics` for a model whose `compute_loss` is its own loss.

    A subclass sets `default_learning_rate` and `loss_description` (the loss
    named in the error for `compile(loss=...)`), and lists its loss-part
    trackers in `own_metrics()`. Reloading a compiled `.keras` file rebuilds
    the optimizer so its saved variables load.
    """

    default_learning_rate = 1e-3
    loss_description = "its own loss"

    def compile(self, optimizer=None, **kwargs):
        """Configure training; the model defines its own loss.

        Args:
            optimizer: `keras.optimizers.Optimizer`. Defaults to Adam at the
                model's `default_learning_rate`.
            **kwargs: other `keras.Model.compile` arguments; `loss` and
                `metrics` must stay None.
        """
        for key in ("loss", "metrics"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"Received compile({key}=...) for {self.name!r}; this model defines "
                    f"{self.loss_description}, so leave {key} out."
                )
        optimizer = optimizer or Adam(self.default_learning_rate)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        self.optimizer.build(self.trainable_variables)

    def own_metrics(self):
        return []

    @property
    def metrics(self):
        return ([self._loss_tracker] if self.compiled else []) + self.own_metrics()
