"""Transfer learning: freeze and unfreeze by layer name or stage, per-layer learning rates.

kzoo's convolutional models name their layers by stage (`stem_*`,
`stage1_*`, ..., `pool`, `head`), so "freeze the backbone", "unfreeze the last
stage" and "train the early stages ten times slower" are one call each.
Patterns are shell-style wildcards on top-level layer names, as in
`kzoo.list_models("resnet*")`.

Keras has no per-layer learning rate; `layerwise_learning_rates` builds one
for every backend from Keras' own `MultiOptimizer`: variables are grouped by
multiplier and each group gets a copy of the optimizer whose learning rate
(or schedule) is scaled. Scaling the update, not the gradient, keeps the
multiplier exact for adaptive optimizers such as Adam, which are invariant to
gradient scale.

Changing `trainable` takes effect at the next `compile`, as always in Keras.

Example:

>>> import keras, kzoo
>>> from kzoo.training import transfer
>>> model = kzoo.create_model("resnet20_cifar", input_shape=(8, 8, 3), num_classes=3,
...                           width=4, stage_blocks=(1, 1, 1))
>>> transfer.stages(model)
['stem', 'stage1', 'stage2', 'stage3']
>>> _ = transfer.unfreeze_last_stages(model, 1)
>>> sorted({layer.name.split("_")[0] for layer in model.layers if layer.trainable_weights})
['head', 'stage3']
"""

import fnmatch
import re

import keras

_STAGE = re.compile(r"^(stem|stage\d+)(?:_|$)")


# === Finding layers ===
def _patterns(patterns):
    if isinstance(patterns, str):
        return (patterns,)
    items = tuple(patterns) if isinstance(patterns, (list, tuple, set)) else ()
    if not items or not all(isinstance(p, str) for p in items):
        raise TypeError(
            f"Received patterns={patterns!r}; expected a layer-name wildcard or a "
            "sequence of them, such as 'stage4_*' or ['stem_*', 'stage1_*']."
        )
    return items


def match_layers(model, patterns):
    """Return the top-level layers of `model` whose names match `patterns`.

    Args:
        model: keras.Model. A functional model.
        patterns: str or sequence of str. Shell-style wildcards such as
            `"stage4_*"`; a layer matching any of them is returned.

    Raises:
        ValueError: a pattern matches no layer (most often a typo).

    Example:

    >>> import kzoo
    >>> from kzoo.training.transfer import match_layers
    >>> model = kzoo.create_model("simple_cnn", input_shape=(8, 8, 1), widths=(4,))
    >>> [layer.name for layer in match_layers(model, "stage1_1_*")]
    ['stage1_1_conv', 'stage1_1_bn', 'stage1_1_act']
    """
    patterns = _patterns(patterns)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(layer.name, pattern) for layer in layers):
            raise ValueError(
                f"Received layer pattern {pattern!r}, which matches no layer of "
                f"{model.name!r}; use a wildcard over its layer names, whose stages "
                f"are {stages(model) or [layer.name for layer in layers][:8]}."
            )
    return [
        layer
        for layer in layers
        if any(fnmatch.fnmatchcase(layer.name, pattern) for pattern in patterns)
    ]


def stages(model):
    """Return the stage prefixes of `model` in order, e.g. `['stem', 'stage1', ...]`.

    Stages are read from layer names (`stem_*`, `stage{i}_*`), the convention
    of kzoo's convolutional models.
    """
    found = []
    for layer in model.layers:
        match = _STAGE.match(layer.name)
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return found


def _head_name(model):
    name = getattr(model, "classifier_name", "head")
    if name not in [layer.name for layer in model.layers]:
        raise ValueError(
            f"Received model {model.name!r} without a layer named {name!r}; expected "
            "a classifier whose logits layer is named 'head' (kzoo's classifiers are)."
        )
    return name


# === Freezing ===
def set_trainable(model, patterns, trainable, *, batch_norm=None):
    """Set `trainable` on the layers matching `patterns`; return their names.

    Args:
        model: keras.Model. A functional model.
        patterns: str or sequence of str. Layer-name wildcards.
        trainable: bool. The new value.
        batch_norm: bool or None. If given, batch norm layers among the
            matches get this value instead (a frozen batch norm also runs in
            inference mode, using its moving statistics). Defaults to None.

    Example:

    >>> import kzoo
    >>> from kzoo.training.transfer import set_trainable
    >>> model = kzoo.create_model("simple_cnn", input_shape=(8, 8, 1), widths=(4,))
    >>> set_trainable(model, "stage1_1_*", False)
    ['stage1_1_conv', 'stage1_1_bn', 'stage1_1_act']
    """
    changed = []
    for layer in match_layers(model, patterns):
        value = trainable
        if batch_norm is not None and isinstance(layer, keras.layers.BatchNormalization):
            value = batch_norm
        layer.trainable = value
        changed.append(layer.name)
    return changed


def freeze(model, patterns):
    """Freeze the layers matching `patterns` (see `set_trainable`)."""
    return set_trainable(model, patterns, False)


def unfreeze(model, patterns, *, batch_norm=None):
    """Unfreeze the layers matching `patterns` (see `set_trainable`)."""
    return set_trainable(model, patterns, True, batch_norm=batch_norm)


def freeze_stages(model, names):
    """Freeze whole stages by name, e.g. `freeze_stages(model, ["stem", "stage1"])`.

    Raises:
        ValueError: a name is not one of `stages(model)`.
    """
    names = _patterns(names)
    known = stages(model)
    for name in names:
        if name not in known:
            raise ValueError(
                f"Received stage {name!r}; expected one of {known}, the stages of {model.name!r}."
            )
    return freeze(model, [f"{name}_*" for name in names])


def freeze_backbone(model):
    """Freeze every layer but the classifier head; return the frozen names.

    The result trains a linear classifier on frozen features ("linear
    probing"), the first step of a fine-tuning schedule.
    """
    head = _head_name(model)
    for layer in model.layers:
        layer.trainable = layer.name == head
    return [layer.name for layer in model.layers if layer.name != head]


def unfreeze_last_stages(model, num_stages, *, train_batch_norm=False):
    """Freeze the backbone, then unfreeze the last `num_stages` stages and the head.

    Args:
        model: keras.Model. A kzoo convolutional classifier.
        num_stages: int. Stages to unfreeze, counted from the last one.
        train_batch_norm: bool. Also train (and update the statistics of) the
            batch norms of the unfrozen stages. Defaults to False, the usual
            choice when fine-tuning on a small dataset: their moving
            statistics stay those of the pre-training data.

    Returns:
        The names of the trainable layers.
    """
    known = stages(model)
    if (
        isinstance(num_stages, bool)
        or not isinstance(num_stages, int)
        or not (0 <= num_stages <= len(known))
    ):
        raise ValueError(
            f"Received num_stages={num_stages!r}; expected an integer from 0 to "
            f"{len(known)}, the number of stages of {model.name!r} ({known})."
        )
    freeze_backbone(model)
    unfrozen = known[len(known) - num_stages :]
    if unfrozen:
        unfreeze(model, [f"{name}_*" for name in unfrozen], batch_norm=train_batch_norm)
    return [layer.name for layer in model.layers if layer.trainable and layer.weights]


# === Per-layer learning rates ===
@keras.saving.register_keras_serializable(package="kzoo")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule (or constant) multiplied by a constant.

    Args:
        schedule: `LearningRateSchedule` or float. The base learning rate.
        multiplier: float. The factor.

    Example:

    >>> import keras
    >>> from kzoo.training.transfer import ScaledSchedule
    >>> base = keras.optimizers.schedules.ExponentialDecay(1.0, 10, 0.5)
    >>> round(float(ScaledSchedule(base, 0.1)(10)), 4)
    0.05
    """

    def __init__(self, schedule, multiplier):
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        self.schedule = schedule
        self.multiplier = float(multiplier)

    def __call__(self, step):
        if isinstance(self.schedule, keras.optimizers.schedules.LearningRateSchedule):
            return self.schedule(step) * self.multiplier
        return keras.ops.convert_to_tensor(self.schedule * self.multiplier)

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.optimizers.schedules.serialize(schedule)
        return {"schedule": schedule, "multiplier": self.multiplier}


def _scaled_copy(optimizer, multiplier):
    """A fresh optimizer like `optimizer` whose learning rate is `multiplier` times."""
    config = optimizer.get_config()
    lr = config["learning_rate"]
    if isinstance(lr, dict):
        config["learning_rate"] = ScaledSchedule(lr, multiplier)
    else:
        config["learning_rate"] = float(lr) * multiplier
    config["name"] = f"{optimizer.name}_x{multiplier:g}"
    return type(optimizer).from_config(config)


def layerwise_learning_rates(optimizer, model, multipliers):
    """Wrap `optimizer` so that each layer trains at its own learning rate.

    Every trainable variable of a layer matching a pattern gets the learning
    rate (or schedule) of `optimizer` times that pattern's multiplier; the
    first matching pattern wins and other layers keep a multiplier of 1.
    Works on every backend and saves with the model. Each multiplier group has
    its own copy of the optimizer, so `global_clipnorm` clips each group
    separately, and `ReduceLROnPlateau` cannot change the rates (use a
    schedule instead).

    Args:
        optimizer: keras.optimizers.Optimizer. The base optimizer, not yet
            used; it serves the layers whose multiplier is 1.
        model: keras.Model. The model whose layers are matched.
        multipliers: dict. Layer-name wildcard -> float >= 0, e.g.
            `{"stage4_*": 0.1, "head": 1.0}`.

    Returns:
        A `keras.optimizers.MultiOptimizer` to pass to `model.compile`.

    Example:

    >>> import keras, kzoo
    >>> from kzoo.training.transfer import layerwise_learning_rates
    >>> model = kzoo.create_model("simple_cnn", input_shape=(8, 8, 1), widths=(4, 8))
    >>> opt = layerwise_learning_rates(keras.optimizers.Adam(1e-3), model,
    ...                                {"stage1_*": 0.1, "stage2_*": 0.5})
    >>> sorted(round(float(o.learning_rate), 6) for o in opt.optimizers)
    [0.0001, 0.0005, 0.001]
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"Received optimizer={optimizer!r}; expected a keras.optimizers.Optimizer "
            "instance such as keras.optimizers.Adam(1e-3)."
        )
    if not isinstance(multipliers, dict) or not multipliers:
        raise TypeError(
            f"Received multipliers={multipliers!r}; expected a non-empty dict from "
            "layer-name wildcard to factor, such as {'stage4_*': 0.1}."
        )
    for pattern, factor in multipliers.items():
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 0:
            raise ValueError(
                f"Received multiplier {factor!r} for {pattern!r}; expected a number "
                ">= 0 such as 0.1."
            )
    # Variable paths per multiplier; the first pattern a layer matches wins.
    groups = {}
    claimed = set()
    for pattern, factor in multipliers.items():
        for layer in match_layers(model, pattern):
            if layer.name in claimed:
                continue
            claimed.add(layer.name)
            if float(factor) != 1.0:
                groups.setdefault(float(factor), []).extend(v.path for v in layer.trainable_weights)
    # One exact-alternation regex per group: OptimizerMap matches variable
    # paths with re.fullmatch and serialises with the model.
    optimizer_map = {
        "|".join(re.escape(path) for path in paths): _scaled_copy(optimizer, factor)
        for factor, paths in groups.items()
        if paths
    }
    return keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(optimizer, optimizer_map), name="layerwise"
    )


def stage_decay_multipliers(model, decay):
    """Layer-wise learning-rate decay: the head at 1, each earlier stage `decay` times less.

    Returns a `multipliers` dict for `layerwise_learning_rates`: the last
    stage gets `decay`, the one before `decay ** 2`, and so on to the stem.

    Example:

    >>> import kzoo
    >>> from kzoo.training.transfer import stage_decay_multipliers
    >>> model = kzoo.create_model("simple_cnn", input_shape=(8, 8, 1), widths=(4, 8))
    >>> stage_decay_multipliers(model, 0.5)
    {'stage2_*': 0.5, 'stage1_*': 0.25}
    """
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError(f"Received decay={decay!r}; expected a number in (0, 1] such as 0.5.")
    return {f"{name}_*": decay ** (i + 1) for i, name in enumerate(reversed(stages(model)))}
