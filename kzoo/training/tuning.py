"""Hyperparameter search with KerasTuner over kzoo's registered models.

A search space is a small dict of named hyperparameters. Each model family has
a documented default space (`FAMILY_SPACES`) plus the training hyperparameters
every family shares (`TRAINING_SPACE`: learning rate on a log scale, decoupled
weight decay, optimizer, batch size). A family's `to_kwargs` maps the sampled
values onto `kzoo.create_model` keyword arguments; names that already are
builder arguments (`dropout`, `units`, ...) pass straight through, so a user
can widen the space with any argument the model takes.

Narrow or widen a space with overrides, on the command line or in a file, in
one small syntax:

    learning_rate=1e-4..1e-2:log     a float range sampled on a log scale
    width=32..512:log:step=2         an int range (32, 64, ..., 512)
    dropout=0.0..0.5:step=0.1        a float range on a grid
    optimizer=adam|sgd               a choice
    depth=2                          a fixed value (removes it from the search)

A spec file is either JSON (`{"depth": "1..4", "optimizer": ["adam", "sgd"],
"dropout": 0.1}`: strings in the syntax above, lists for choices, scalars for
fixed values) or YAML-ish lines `name: spec` with `#` comments.

`search` runs the search: trials are built by `ZooHyperModel`, failing trials
are counted and the search goes on, the Keras session is cleared after every
trial, and rerunning with the same directory continues an interrupted search.
`write_report` writes the ranked table, the best hyperparameters as JSON and a
PNG of the objective against trial and against the most important
hyperparameter.

Distributed search uses KerasTuner's own chief/worker protocol: start the same
command on every machine with `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`
and `KERASTUNER_TUNER_ID` (`chief` on one machine, `tuner0`, `tuner1`, ... on
the workers) and a directory every process can read and write.
"""

import dataclasses
import json
import math
import numbers
import os
import time
import warnings
from pathlib import Path

import keras
import numpy as np

import kzoo
from kzoo.training import runner
from kzoo.training.checkpoint import save_figure

try:
    import keras_tuner
except ImportError as err:  # the optional 'tune' extra
    raise ImportError(
        "kzoo.training.tuning needs KerasTuner, which is not installed; install it with "
        "pip install 'kzoo[tune]'."
    ) from err

TUNERS = ("random", "bayesian", "hyperband")
#: The optimizers the default space chooses from (any of `runner.OPTIMIZERS` can be searched).
OPTIMIZERS = ("adam", "sgd", "rmsprop")
#: Training hyperparameters named otherwise than the runner flag they set.
FLAG_NAMES = {"learning_rate": "lr"}
#: Runner flags a search may set per trial, by dest name (`--space label_smoothing=0..0.2`).
TRIAL_FLAGS = tuple(f for f in runner.OVERRIDABLE if f not in ("precision", "remat", "lr"))


# === Hyperparameter specs ===
@dataclasses.dataclass(frozen=True)
class Param:
    """One hyperparameter of a search space.

    Attributes:
        kind: str. `"int"`, `"float"`, `"choice"` or `"fixed"`.
        low, high: numbers. Bounds of an int or float range (inclusive).
        log: bool. Sample the range on a log scale.
        step: number or None. Grid step of a range (a factor when `log`).
        values: tuple. The options of a choice.
        value: the value of a fixed hyperparameter.
    """

    kind: str
    low: float = None
    high: float = None
    log: bool = False
    step: float = None
    values: tuple = ()
    value: object = None

    def declare(self, hp, name):
        """Declare this hyperparameter on a `keras_tuner.HyperParameters`."""
        sampling = "log" if self.log else "linear"
        if self.kind == "int":
            return hp.Int(name, int(self.low), int(self.high), step=self.step, sampling=sampling)
        if self.kind == "float":
            return hp.Float(name, float(self.low), float(self.high), step=self.step,
                            sampling=sampling)
        if self.kind == "choice" and set(self.values) == {False, True} and all(
            isinstance(v, bool) for v in self.values
        ):
            # KerasTuner's Choice would store booleans as the ints 0 and 1.
            return hp.Boolean(name)
        if self.kind == "choice":
            return hp.Choice(name, list(self.values))
        return hp.Fixed(name, self.value)

    def describe(self):
        """The spec in override syntax, e.g. `1e-4..1e-2:log`."""
        if self.kind in ("int", "float"):
            text = f"{self.low:g}..{self.high:g}"
            text += ":log" if self.log else ""
            return text + (f":step={self.step:g}" if self.step else "")
        if self.kind == "choice":
            return "|".join(_format_value(v) for v in self.values)
        return _format_value(self.value)


def Range(low, high, *, log=False, step=None):
    """An int range when both bounds are ints, else a float range."""
    ints = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (low, high))
    return Param("int" if ints else "float", low=low, high=high, log=log, step=step)


def Choice(*values):
    """A choice among `values`."""
    return Param("choice", values=tuple(values))


def parse_param(name, spec):
    """Parse one override into a `Param`.

    Args:
        name: str. The hyperparameter's name (for error messages).
        spec: str, list, dict or scalar. `"LOW..HIGH[:log][:step=S]"`,
            `"A|B|C"`, a plain value, a list (a choice), or a dict with
            `min`, `max` and optional `log`, `step` (a range) or `values`.

    Example:

    >>> from kzoo.training.tuning import parse_param
    >>> parse_param("lr", "1e-4..1e-2:log").describe()
    '0.0001..0.01:log'
    >>> parse_param("width", "32..256:log:step=2").kind
    'int'
    >>> parse_param("optimizer", "adam|sgd").values
    ('adam', 'sgd')
    >>> parse_param("depth", 2).value
    2
    """
    if isinstance(spec, dict):
        if "values" in spec:
            return _checked_choice(name, tuple(spec["values"]))
        if not {"min", "max"} <= set(spec):
            raise ValueError(
                f"Received {name}={spec!r}; expected a dict with 'min' and 'max' (and "
                "optional 'log', 'step') or with 'values', such as {'min': 1, 'max': 4}."
            )
        return _checked_range(name, spec["min"], spec["max"], bool(spec.get("log")),
                              spec.get("step"))
    if isinstance(spec, (list, tuple)):
        return _checked_choice(name, tuple(spec))
    if not isinstance(spec, str):
        return Param("fixed", value=spec)
    text = spec.strip()
    if "|" in text:
        return _checked_choice(name, tuple(_parse_value(v) for v in text.split("|")))
    if ".." in text:
        bounds, *options = text.split(":")
        low, _, high = bounds.partition("..")
        log, step = False, None
        for option in options:
            option = option.strip()
            if option == "log":
                log = True
            elif option.startswith("step="):
                step = _parse_value(option[len("step="):])
            else:
                raise ValueError(
                    f"Received {name}={spec!r} with unknown option {option!r}; expected "
                    "LOW..HIGH with optional ':log' and ':step=S', such as 1e-4..1e-2:log."
                )
        return _checked_range(name, _parse_value(low), _parse_value(high), log, step)
    return Param("fixed", value=_parse_value(text))


def _checked_choice(name, values):
    if not values:
        raise ValueError(f"Received {name}=[] ; expected at least one value to choose from.")
    return Choice(*values)


def _checked_range(name, low, high, log, step):
    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (low, high))
    if not numeric or low > high or (log and low <= 0) or (step is not None and step <= 0):
        raise ValueError(
            f"Received {name}={low!r}..{high!r} (log={log}, step={step}); expected numbers "
            "with low <= high, low > 0 on a log scale and step > 0, such as 1e-4..1e-2:log."
        )
    return Range(low, high, log=log, step=step)


def _parse_value(text):
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def load_spec(path):
    """Read overrides from a JSON file or YAML-ish `name: spec` lines.

    Returns:
        dict of name to `Param`.

    Example:

    >>> import pathlib, tempfile
    >>> from kzoo.training.tuning import load_spec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "space.txt"
    >>> _ = path.write_text("# narrow the MLP search\\ndepth: 2\\nwidth: 64..256:log:step=2\\n")
    >>> sorted(load_spec(path))
    ['depth', 'width']
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"Received spec file {str(path)!r}, which does not exist; pass the path of a "
            "JSON or 'name: spec' file."
        )
    text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"Received spec file {str(path)!r} that is not valid JSON ({err}); fix the "
                "JSON or use 'name: spec' lines."
            ) from None
        return {name: parse_param(name, spec) for name, spec in raw.items()}
    overrides = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, spec = _split_assignment(line)
        if not sep:
            raise ValueError(
                f"Received line {number} of {str(path)!r}, {line!r}; expected 'name: spec' "
                "such as 'learning_rate: 1e-4..1e-2:log'."
            )
        overrides[name] = parse_param(name, _yamlish(spec))
    return overrides


def parse_overrides(items):
    """Parse `name=spec` strings (the `--space` flag) into a dict of `Param`."""
    overrides = {}
    for item in items or ():
        name, sep, spec = _split_assignment(item)
        if not sep or not name:
            raise ValueError(
                f"Received override {item!r}; expected name=spec such as "
                "'learning_rate=1e-4..1e-2:log' or 'optimizer=adam|sgd'."
            )
        overrides[name] = parse_param(name, spec)
    return overrides


def _split_assignment(text):
    # "name=spec" or "name: spec", whichever separator comes first.
    positions = [(text.find(s), s) for s in ("=", ":") if s in text]
    if not positions:
        return text.strip(), "", ""
    _, sep = min(positions)
    name, _, spec = text.partition(sep)
    return name.strip(), sep, spec.strip()


def _yamlish(spec):
    # YAML-style lists "[adam, sgd]" are choices.
    if spec.startswith("[") and spec.endswith("]"):
        return [_parse_value(v) for v in spec[1:-1].split(",") if v.strip()]
    return spec


# === Search spaces per family ===
#: Hyperparameters every family shares; they set runner flags (`FLAG_NAMES`) per trial.
TRAINING_SPACE = {
    # Log scale: the useful rates span two orders of magnitude.
    "learning_rate": Range(1e-4, 1e-2, log=True),
    # Decoupled (AdamW-style) weight decay, for every optimizer.
    "weight_decay": Range(1e-6, 1e-2, log=True),
    "optimizer": Choice(*OPTIMIZERS),
    # Small data: the batch size changes the number of updates per epoch.
    "batch_size": Choice(32, 64, 128),
}


@dataclasses.dataclass(frozen=True)
class FamilySpace:
    """The default search space of one kind of model.

    Attributes:
        name: str. Name of the space (shown in reports).
        applies: callable. `applies(entry)` is True for the registry entries
            this space fits.
        params: dict. Model hyperparameters, name to `Param`.
        to_kwargs: callable. `to_kwargs(values, entry)` turns the sampled
            values of the names it knows into `create_model` kwargs; the other
            values that are builder arguments pass through unchanged.
    """

    name: str
    applies: object
    params: dict
    to_kwargs: object = None


def _mlp_kwargs(values, entry):
    # A constant width per layer: one width and a depth cover the usual shapes.
    return {"hidden_units": (values.pop("width"),) * values.pop("depth")}


def _simple_cnn_kwargs(values, entry):
    # Widths double at every stage, as in VGG.
    width, depth = values.pop("width"), values.pop("depth")
    return {"widths": tuple(width * 2**i for i in range(depth))}


def _resnet_kwargs(values, entry):
    # The same number of residual blocks in every stage of the variant.
    stages = len(entry.defaults["stage_blocks"])
    return {"stage_blocks": (values.pop("blocks_per_stage"),) * stages}


def _vit_kwargs(values, entry):
    # The MLP's width as a multiple of the model width, as in the ViT papers.
    return {"mlp_dim": values["hidden_dim"] * values.pop("mlp_ratio")}


FAMILY_SPACES = (
    FamilySpace(
        "mlp",
        applies=lambda e: e.family == "mlp",
        params={
            "depth": Range(1, 3),
            "width": Range(32, 512, log=True, step=2),
            "dropout": Range(0.0, 0.5, step=0.1),
            "batch_norm": Choice(False, True),
        },
        to_kwargs=_mlp_kwargs,
    ),
    FamilySpace(
        "simple_cnn",
        applies=lambda e: {"widths", "convs_per_stage"} <= set(e.defaults),
        params={
            "depth": Range(1, 3),
            "width": Range(8, 64, log=True, step=2),
            "convs_per_stage": Range(1, 2),
            "dropout": Range(0.0, 0.5, step=0.1),
        },
        to_kwargs=_simple_cnn_kwargs,
    ),
    FamilySpace(
        "resnet",
        applies=lambda e: "stage_blocks" in e.defaults,
        params={
            "blocks_per_stage": Range(1, 3),
            "width": Range(8, 32, log=True, step=2),
            "dropout": Range(0.0, 0.3, step=0.1),
        },
        to_kwargs=_resnet_kwargs,
    ),
    FamilySpace(
        "rnn",
        applies=lambda e: e.family == "rnn" and "cell" in e.defaults,
        params={
            "units": Range(16, 128, log=True, step=2),
            "num_layers": Range(1, 2),
            "bidirectional": Choice(False, True),
            "dropout": Range(0.0, 0.3, step=0.1),
            "pooling": Choice("last", "mean", "max"),
        },
    ),
    FamilySpace(
        "vit",
        applies=lambda e: {"patch_size", "hidden_dim", "num_heads"} <= set(e.defaults),
        params={
            # Small models for small images: patches of 2 or 4 pixels tile 8x8 digits.
            "patch_size": Choice(2, 4),
            "hidden_dim": Choice(32, 64, 128),
            "num_heads": Choice(2, 4),
            "num_layers": Range(1, 4),
            "mlp_ratio": Choice(2, 4),
            "dropout": Range(0.0, 0.3, step=0.1),
        },
        to_kwargs=_vit_kwargs,
    ),
    # Any other classifier: the training hyperparameters, and dropout if it has one.
    FamilySpace(
        "generic",
        applies=lambda e: True,
        params={"dropout": Range(0.0, 0.5, step=0.1)},
    ),
)


def family_space(name):
    """Return the `FamilySpace` that fits the registered model `name`."""
    entry = kzoo.registry.get_entry(name)
    return next(s for s in FAMILY_SPACES if s.applies(entry))


def search_space(name, overrides=None):
    """The search space of model `name`: defaults, narrowed or widened.

    Args:
        name: str. A registered model name.
        overrides: dict of name to `Param` (from `parse_overrides` or
            `load_spec`). An override replaces the default of the same name;
            a new name must be an argument of the model's builder.

    Returns:
        dict of hyperparameter name to `Param`, training names last.

    Example:

    >>> from kzoo.training.tuning import search_space, parse_overrides
    >>> space = search_space("mlp", parse_overrides(["depth=2", "activation=relu|gelu"]))
    >>> space["depth"].kind, space["activation"].values
    ('fixed', ('relu', 'gelu'))
    """
    entry = kzoo.registry.get_entry(name)
    family = family_space(name)
    params = {k: v for k, v in family.params.items() if family.to_kwargs or k in entry.defaults}
    space = {**params, **TRAINING_SPACE}
    for key, param in (overrides or {}).items():
        key = "learning_rate" if key == "lr" else key  # the flag's name for the same thing
        if key not in space and key not in entry.defaults and key not in TRIAL_FLAGS:
            raise ValueError(
                f"Received a search-space override for {key!r}, which model {name!r} does not "
                "take and is not a per-trial runner flag; expected one of "
                f"{sorted(set(space) | set(entry.defaults) | set(TRIAL_FLAGS))}."
            )
        if key == "optimizer":
            options = param.values if param.kind == "choice" else (param.value,)
            unknown = [o for o in options if o not in runner.OPTIMIZERS]
            if unknown:
                raise ValueError(
                    f"Received optimizer={param.describe()} in the search space; expected "
                    f"optimizers among {list(runner.OPTIMIZERS)}, such as optimizer=adam|lion."
                )
        if key in ("input_shape", "image_shape", "num_classes", "num_outputs", "name"):
            raise ValueError(
                f"Received a search-space override for {key!r}; it is set from the data, so "
                "tune another argument."
            )
        space[key] = param
    return space


# === Hypermodel ===
def training_names(model_name, names):
    """The names among `names` that set runner flags for model `model_name`.

    `TRAINING_SPACE` names always do; another name does when it is a
    per-trial runner flag (`TRIAL_FLAGS`) and no argument of the model's
    builder (an MLP's own `l2` stays the model's).
    """
    defaults = kzoo.registry.get_entry(model_name).defaults
    return [n for n in names if n in TRAINING_SPACE or (n in TRIAL_FLAGS and n not in defaults)]


def flag_overrides(training):
    """Sampled training values under the runner flags' own names (`Run.compile` overrides).

    Example:

    >>> from kzoo.training.tuning import flag_overrides
    >>> flag_overrides({"learning_rate": 3e-3, "optimizer": "lion", "batch_size": 32})
    {'lr': 0.003, 'optimizer': 'lion', 'batch_size': 32}
    """
    return {FLAG_NAMES.get(k, k): v for k, v in training.items()}


def flag_option(name):
    """The command-line flag a training hyperparameter sets: `learning_rate` -> `--lr`."""
    return "--" + FLAG_NAMES.get(name, name).replace("_", "-")


class ZooHyperModel(keras_tuner.HyperModel):
    """A KerasTuner hypermodel for a registered kzoo classifier.

    `build(hp)` samples the space and maps it onto `create_model` kwargs and
    runner flags; with a `run`, it builds inside `run.building()` (the
    run's `--precision` and `--remat`, for this trial only) and compiles
    with `run.compile(model, overrides=...)`, and `fit(hp, model, ...)`
    trains with `run.fit(model, ..., overrides=..., record=False)`: every
    runner flag means what it means in any recipe, and the sampled training
    values (`learning_rate`, `optimizer`, `weight_decay`, `batch_size`, or
    any `TRIAL_FLAGS` name put in the space) override the flags of the same
    name for their trial.

    Args:
        model_name: str. A registered model name.
        space: dict. Name to `Param`, from `search_space`.
        model_kwargs: dict. Fixed `create_model` kwargs (input shape, classes).
        run: `kzoo.training.runner.Run` or None. The run whose flags every
            trial trains with. Without one, trials compile with the runner's
            optimizer factory (`runner.make_optimizer`) and Keras' defaults.
            Defaults to None.
        loss: Keras loss or "default". "default" is the runner's
            cross-entropy on logits (with the trial's `--label-smoothing`).
            Defaults to "default".
        monitor: str. What `--patience` and `--schedule plateau` watch.
            Defaults to "val_loss".

    Example:

    >>> import keras_tuner, kzoo
    >>> from kzoo.training import tuning
    >>> hm = tuning.ZooHyperModel("mlp", tuning.search_space("mlp"),
    ...                           {"input_shape": (4,), "num_classes": 3})
    >>> model = hm.build(keras_tuner.HyperParameters())
    >>> model.output_shape, type(model.optimizer).__module__
    ((None, 3), 'kzoo.optimizers')
    """

    def __init__(self, model_name, space, model_kwargs, run=None, loss="default",
                 monitor="val_loss"):
        super().__init__(name=model_name)
        self.model_name = model_name
        self.space = dict(space)
        self.model_kwargs = dict(model_kwargs)
        self.run = run
        self.loss = loss
        self.monitor = monitor
        self.trial_id = None  # set by the tuner before each trial

    def values(self, hp):
        """Declare every hyperparameter on `hp` and return the sampled values."""
        return {name: param.declare(hp, name) for name, param in self.space.items()}

    def model_and_training_kwargs(self, values):
        """Split sampled values into `create_model` kwargs and training settings."""
        values = dict(values)
        training = {k: values.pop(k) for k in training_names(self.model_name, list(values))}
        entry = kzoo.registry.get_entry(self.model_name)
        family = family_space(self.model_name)
        kwargs = family.to_kwargs(values, entry) if family.to_kwargs else {}
        kwargs.update({k: v for k, v in values.items() if k in entry.defaults})
        return {**kwargs, **self.model_kwargs}, training

    def overridden_flags(self):
        """The runner flags the search sets per trial, instead of the command line's values.

        Returns:
            dict of flag (`--lr`) to the hyperparameter that sets it
            (`learning_rate`). A hyperparameter fixed at the flag's own value
            overrides nothing.
        """
        found = {}
        for name in training_names(self.model_name, list(self.space)):
            param, flag = self.space[name], FLAG_NAMES.get(name, name)
            given = getattr(self.run.args, flag, None) if self.run is not None else None
            if param.kind == "fixed" and given is not None and param.value == given:
                continue
            found[flag_option(name)] = name
        return found

    def _overrides(self, values):
        names = training_names(self.model_name, list(values))
        return flag_overrides({k: values[k] for k in names})

    def build(self, hp):
        kwargs, training = self.model_and_training_kwargs(self.values(hp))
        overrides = flag_overrides(training)
        loss = self.loss
        if self.run is None:
            if loss == "default":
                loss = runner.classification_loss(overrides.get("label_smoothing", 0.0))
            with runner.building():
                model = kzoo.create_model(self.model_name, **kwargs)
            model.compile(
                optimizer=runner.make_optimizer(
                    overrides.get("optimizer", "adam"), overrides.get("lr", 1e-3),
                    weight_decay=overrides.get("weight_decay", 0.0),
                    grad_clip=overrides.get("grad_clip"),
                    grad_accum=overrides.get("grad_accum", 1)),
                loss=loss,
                metrics=["accuracy"],
            )
            return model
        with self.run.building():
            model = kzoo.create_model(self.model_name, **kwargs)
        return self.run.compile(model, loss=loss, overrides=overrides, record=False)

    def fit(self, hp, model, *args, **kwargs):
        overrides = self._overrides(hp.values)
        if self.run is None:
            if "batch_size" in overrides:
                kwargs["batch_size"] = overrides["batch_size"]
            return model.fit(*args, **kwargs)
        phase = f"trial_{self.trial_id}" if self.trial_id is not None else None
        return self.run.fit(model, *args, monitor=self.monitor, phase=phase,
                            overrides=overrides, record=False, **kwargs)


# === Tuners ===
def _serve_chief(oracle, poll_seconds=0.5):
    """Serve the oracle to workers until every trial has ended.

    The same gRPC service as `keras_tuner`'s `oracle_chief.start_server`; its
    loop polls every 20 s once a worker has finished, which adds up to 20 s to
    the end of every distributed search, so this one polls faster.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server.add_insecure_port(address)
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll_seconds)
    finally:
        server.stop(grace=2)


def role():
    """`"chief"`, `"worker"` or `"single"`: this process's part in a search."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    from keras_tuner.src.distribute import utils as dist_utils

    return "chief" if dist_utils.is_chief_oracle() else "worker"


class _ZooTuner:
    """What kzoo adds to every KerasTuner tuner."""

    def search(self, *args, **kwargs):
        if role() == "chief":
            self.oracle.verbose = kwargs.get("verbose", self.oracle.verbose)
            self.save()
            _serve_chief(self.oracle)
            return
        super().search(*args, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        # The hypermodel names the trial's --debug-* folder after it.
        self.hypermodel.trial_id = trial.trial_id
        return super().run_trial(trial, *args, **kwargs)

    def _build_hypermodel(self, hp):
        with warnings.catch_warnings():
            # Hyperband restores only the weights of the trial it continues.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return super()._build_hypermodel(hp)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if trial.status != "COMPLETED":
            print(f"Trial {trial.trial_id} failed: {_last_line(trial.message)}")
        elif role() == "worker":
            print(f"Trial {trial.trial_id} completed by {self.tuner_id}.")
        # KerasTuner clears the session (and collects garbage) before each
        # build; this also lets go of the finished model while the oracle
        # picks the next trial. Without a gc.collect(), which is slow in a
        # process holding a backend, and which the next build does anyway.
        keras.backend.clear_session(free_memory=False)


def _last_line(message):
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def _tuner_class(kind):
    base = {
        "random": keras_tuner.RandomSearch,
        "bayesian": keras_tuner.BayesianOptimization,
        "hyperband": keras_tuner.Hyperband,
    }[kind]
    return type(f"Zoo{base.__name__}", (_ZooTuner, base), {})


def make_tuner(
    hypermodel,
    kind="random",
    *,
    directory,
    project_name="search",
    objective="val_loss",
    max_trials=20,
    max_epochs=20,
    hyperband_factor=3,
    seed=0,
    max_consecutive_failures=3,
    overwrite=False,
):
    """Build a KerasTuner tuner of `kind` around `hypermodel`.

    Args:
        hypermodel: a `ZooHyperModel`.
        kind: str. `"random"`, `"bayesian"` or `"hyperband"`. Defaults to
            `"random"`.
        directory: path. Where trials are recorded; the same directory
            continues a search.
        project_name: str. Sub-folder of `directory`. Defaults to `"search"`.
        objective: str. `"val_loss"` (minimised) or `"val_accuracy"`
            (maximised). Defaults to `"val_loss"`.
        max_trials: int. Trials of random and Bayesian search. Defaults to 20.
        max_epochs: int. Hyperband's largest budget per trial. Defaults to 20.
        hyperband_factor: int. Hyperband's reduction factor. Defaults to 3.
        seed: int. Seed of the oracle. Defaults to 0.
        max_consecutive_failures: int. Stop the search after this many failed
            trials in a row (a space that cannot build). Defaults to 3.
        overwrite: bool. Start over instead of continuing. Defaults to False.
    """
    if kind not in TUNERS:
        raise ValueError(f"Received tuner={kind!r}; expected one of {list(TUNERS)}.")
    if objective not in ("val_loss", "val_accuracy"):
        raise ValueError(
            f"Received objective={objective!r}; expected 'val_loss' or 'val_accuracy'."
        )
    direction = "min" if objective.endswith("loss") else "max"
    common = {
        "objective": keras_tuner.Objective(objective, direction),
        "seed": seed,
        "max_consecutive_failed_trials": max_consecutive_failures,
        "directory": str(directory),
        "project_name": project_name,
        # Workers must never delete the shared project the chief serves.
        "overwrite": overwrite and role() != "worker",
    }
    if kind == "hyperband":
        extra = {"max_epochs": max_epochs, "factor": hyperband_factor}
    elif kind == "bayesian":
        # A few random points first, then the Gaussian process proposes.
        extra = {"max_trials": max_trials, "num_initial_points": min(max_trials - 1, 5) or 1}
    else:
        extra = {"max_trials": max_trials}
    return _tuner_class(kind)(hypermodel, **common, **extra)


def _space_record(project_dir):
    return Path(project_dir) / "kzoo_space.json"


def check_space(project_dir, space):
    """Raise if `project_dir` holds a search over a different space.

    KerasTuner reloads the space of an existing project, so continuing with a
    different space would silently search the old one.
    """
    path = _space_record(project_dir)
    if not path.exists():
        return
    recorded = json.loads(path.read_text())
    described = {name: param.describe() for name, param in space.items()}
    if recorded != described:
        changed = sorted(k for k in set(recorded) | set(described)
                         if recorded.get(k) != described.get(k))
        raise ValueError(
            f"Received a search space that differs from the one recorded in {path} "
            f"(changed: {changed}); rerun with the same space to continue, or pass "
            "--overwrite (or another --output-dir) to start a new search."
        )


def record_space(project_dir, space):
    """Record the space of the search in `project_dir` (see `check_space`)."""
    path = _space_record(project_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    described = {name: param.describe() for name, param in space.items()}
    # Write then rename: workers may be reading the record at the same time.
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(described, indent=2) + "\n")
    os.replace(partial, path)


# === Results ===
@dataclasses.dataclass
class TrialRow:
    """One trial of a finished search, for tables and plots."""

    trial_id: str
    status: str
    score: float
    metrics: dict
    values: dict
    message: str = ""


def trial_rows(tuner):
    """Every trial of `tuner`, in the order they started."""
    oracle = tuner.oracle
    order = list(getattr(oracle, "start_order", [])) or sorted(oracle.trials)
    rows = []
    for trial_id in order:
        trial = oracle.trials[trial_id]
        metrics = {}
        for name in trial.metrics.metrics:
            best = trial.metrics.get_best_value(name)
            if best is not None:
                metrics[name] = float(best)
        score = trial.score if trial.status == "COMPLETED" else None
        rows.append(TrialRow(
            trial_id=trial_id,
            status=trial.status,
            score=None if score is None or not math.isfinite(score) else float(score),
            metrics=metrics,
            values=dict(trial.hyperparameters.values),
            message=_last_line(trial.message) if trial.status != "COMPLETED" else "",
        ))
    return rows


def ranked(rows, direction="min"):
    """Completed trials best first, then failed ones."""
    done = [r for r in rows if r.score is not None]
    done.sort(key=lambda r: r.score if direction == "min" else -r.score)
    return done + [r for r in rows if r.score is None]


def markdown_table(rows, objective, space_names, direction="min"):
    """The ranked trials as a Markdown table."""
    names = [n for n in space_names if any(n in r.values for r in rows)]
    if any("tuner/epochs" in r.values for r in rows):
        names.append("tuner/epochs")
    metric_names = [objective] + [m for m in ("val_accuracy", "val_loss") if m != objective]
    header = ["rank", "trial", "status"] + metric_names + [n.replace("tuner/", "") for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(ranked(rows, direction), 1):
        cells = [str(rank) if row.score is not None else "-", row.trial_id, row.status.lower()]
        cells += [_format_cell(row.metrics.get(m)) for m in metric_names]
        cells += [_format_cell(row.values.get(n)) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format_cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def importance(rows, space):
    """How much of the objective's variance each searched hyperparameter explains.

    Numeric ranges: the squared Spearman rank correlation with the objective.
    Choices: the correlation ratio eta^2 (between-group over total variance).
    Both lie in [0, 1]. Fixed hyperparameters and those with one observed
    value are left out.

    Returns:
        dict of name to importance, most important first.
    """
    done = [r for r in rows if r.score is not None]
    if len(done) < 3:
        return {}
    scores = np.array([r.score for r in done])
    if np.ptp(scores) == 0:
        return {}
    found = {}
    for name, param in space.items():
        if param.kind == "fixed" or not all(name in r.values for r in done):
            continue
        values = [r.values[name] for r in done]
        if len({repr(v) for v in values}) < 2:
            continue
        if param.kind in ("int", "float"):
            rho = np.corrcoef(_ranks(np.array(values, float)), _ranks(scores))[0, 1]
            found[name] = float(rho**2)
        else:
            groups = {}
            for v, s in zip(values, scores):
                groups.setdefault(repr(v), []).append(s)
            between = sum(len(g) * (np.mean(g) - scores.mean()) ** 2 for g in groups.values())
            found[name] = float(between / ((scores - scores.mean()) ** 2).sum())
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def _ranks(values):
    # Average ranks, so ties (ints, grids) are treated fairly.
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def plot_search(rows, space, objective, path, direction="min", title=""):
    """PNG: the objective per trial, and against the most important hyperparameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    positions = np.arange(len(rows))
    done = [(i, r) for i, r in zip(positions, rows) if r.score is not None]
    failed = [i for i, r in zip(positions, rows) if r.score is None]
    if done:
        xs, ys = zip(*((i, r.score) for i, r in done))
        ax1.plot(xs, ys, "o", label="trial")
        best = np.minimum.accumulate(ys) if direction == "min" else np.maximum.accumulate(ys)
        ax1.step(xs, best, where="post", label="best so far")
    if failed:
        low = min((r.score for _, r in done), default=0.0)
        ax1.plot(failed, [low] * len(failed), "rx", label="failed")
    ax1.set_xlabel("trial (start order)")
    ax1.set_ylabel(objective)
    ax1.grid(alpha=0.3)
    ax1.legend()

    ranking = importance(rows, space)
    name = next(iter(ranking), None)
    if name is None:  # too few trials to rank: show the first searched one
        name = next((n for n, p in space.items() if p.kind != "fixed"), None)
    if name is not None and done:
        points = [(r.values.get(name), r.score) for _, r in done if name in r.values]
        param = space[name]
        if param.kind in ("int", "float"):
            ax2.plot([p[0] for p in points], [p[1] for p in points], "o")
            if param.log:
                ax2.set_xscale("log")
        else:
            labels = [_format_value(v) for v in param.values]
            where = {repr(v): k for k, v in enumerate(param.values)}
            ax2.plot([where.get(repr(p[0]), 0) for p in points], [p[1] for p in points], "o")
            ax2.set_xticks(range(len(labels)), labels)
        share = f" (explains {ranking[name]:.0%} of the variance)" if name in ranking else ""
        ax2.set_xlabel(name + share)
        ax2.set_ylabel(objective)
        ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return name


def write_report(tuner, hypermodel, out_dir, objective="val_loss", title=""):
    """Write the ranked table, best hyperparameters JSON and the search PNG.

    Files in `out_dir`: `trials.md` (ranked Markdown table), `trials.json`
    (every trial: status, metrics, values, error), `best_hyperparameters.json`
    (the values, the `create_model` kwargs and training settings they map to,
    and the runner flags they set) and `search.png`. Both `trials.md` and
    the returned dict name the runner flags the search overrode.

    Returns:
        dict with `table`, `completed`, `failed`, `best` (a `TrialRow` or
        None), `importance` and `overridden_flags` (flag to hyperparameter).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    direction = "min" if objective.endswith("loss") else "max"
    rows = trial_rows(tuner)
    space = hypermodel.space
    table = markdown_table(rows, objective, list(space), direction)
    overridden = hypermodel.overridden_flags()
    note = overridden_note(overridden)
    (out_dir / "trials.md").write_text(table + "\n" + (f"\n{note}\n" if note else ""))
    (out_dir / "trials.json").write_text(json.dumps(
        [dataclasses.asdict(r) for r in rows], indent=2, default=str) + "\n")
    ranking = importance(rows, space)
    plot_search(rows, space, objective, out_dir / "search.png", direction, title)
    order = ranked(rows, direction)
    best = order[0] if order and order[0].score is not None else None
    if best is not None:
        values = {k: v for k, v in best.values.items() if not k.startswith("tuner/")}
        model_kwargs, training = hypermodel.model_and_training_kwargs(values)
        record = {
            "model": hypermodel.model_name,
            "trial_id": best.trial_id,
            "objective": {objective: best.score},
            "metrics": best.metrics,
            "hyperparameters": values,
            "create_model_kwargs": {k: _jsonable(v) for k, v in model_kwargs.items()},
            "training": training,
            "flags": {flag_option(k): _jsonable(v) for k, v in training.items()
                      if flag_option(k) in overridden},
            "importance": ranking,
        }
        (out_dir / "best_hyperparameters.json").write_text(
            json.dumps(record, indent=2, default=str) + "\n")
    return {
        "table": table,
        "completed": sum(r.score is not None for r in rows),
        "failed": sum(r.score is None for r in rows),
        "best": best,
        "importance": ranking,
        "rows": rows,
        "overridden_flags": overridden,
    }


def overridden_note(overridden):
    """One sentence naming the runner flags a search set per trial (empty if none)."""
    if not overridden:
        return ""
    named = ", ".join(f"{flag} ({name})" if name in FLAG_NAMES else flag
                      for flag, name in overridden.items())
    return (f"The search set these runner flags per trial, overriding the command line: "
            f"{named}.")


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def best_model(tuner, hypermodel, fit_args=None, fit_kwargs=None):
    """The best trial's model with its best epoch's weights.

    Loads the trial's checkpoint; if it is not on this machine (a chief whose
    workers write to their own disks) the best configuration is retrained with
    `fit_args`/`fit_kwargs`.
    """
    trial = tuner.oracle.get_best_trials(1)[0]
    checkpoint = Path(tuner._get_checkpoint_fname(trial.trial_id))
    if checkpoint.exists():
        with warnings.catch_warnings():
            # Only weights are restored; the fresh optimizer's state is not needed.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return tuner.load_model(trial)
    print(f"The checkpoint of trial {trial.trial_id} is not on this machine; retraining it.")
    keras.backend.clear_session()
    model = hypermodel.build(trial.hyperparameters)
    kwargs = dict(fit_kwargs or {})
    if "tuner/epochs" in trial.hyperparameters.values:
        kwargs["epochs"] = trial.hyperparameters.values["tuner/epochs"]
    hypermodel.fit(trial.hyperparameters, model, *(fit_args or ()), **kwargs)
    return model


# === Data ===
def prepare_data(model_name, data):
    """Shape a `kzoo.data.Dataset` for model `name`; return splits and model kwargs.

    Images go to image models and MLPs (which flatten) unchanged. Recurrent
    models read an image row by row, as a sequence of `height` steps of
    `width * channels` features (the classic sequential-digits task).

    Returns:
        `((x_train, y_train), (x_val, y_val), (x_test, y_test), model_kwargs)`
        where `model_kwargs` holds `input_shape` and `num_classes`.
    """
    entry = kzoo.registry.get_entry(model_name)
    if entry.task != "classification" or data.task != "classification":
        raise ValueError(
            f"Received model {model_name!r} (task {entry.task!r}) and dataset {data.name!r} "
            f"(task {data.task!r}); the tuner searches classifiers on classification data, "
            "so pick a classifier such as 'mlp' and a labelled dataset such as 'digits'."
        )
    splits = [(data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)]
    input_shape = tuple(data.input_shape)
    if entry.family == "rnn" and len(input_shape) == 3:
        height, width, channels = input_shape
        splits = [(np.reshape(x, (len(x), height, width * channels)), y) for x, y in splits]
        input_shape = (height, width * channels)
    # Image transformers call their input shape `image_shape`.
    shape_name = "image_shape" if "image_shape" in entry.defaults else "input_shape"
    return (*splits, {shape_name: input_shape, "num_classes": data.num_classes})
