"""Hyperparameter search with KerasTuner over kzoo's registered models.

`search_space(name, overrides)` is the space of one registered model: the
space its family declares beside its registration (`search_space=` of
`kzoo.register_model`, a `kzoo.training.search_space.FamilySpace`; the
generic one where it declares none), plus the training hyperparameters every
search shares, narrowed or widened by overrides in the syntax of
`kzoo.training.search_space`. Names that already are builder arguments
(`dropout`, `units`, ...) pass straight through, so a user can widen the space
with any argument the model takes, or with a per-trial runner flag
(`TRIAL_FLAGS`).

`ZooHyperModel` builds and trains each trial through the runner
(`run.building`, `run.compile`, `run.fit`), so every runner flag means what it
means in any recipe. `make_tuner` makes a random, Bayesian or Hyperband
tuner: failing trials are counted and the search goes on, the Keras session
is cleared after every trial, and rerunning with the same directory continues
an interrupted search. `kzoo.training.tuning_report` writes what a search
found.

Distributed search uses KerasTuner's own chief/worker protocol: start the same
command on every machine with `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`
and `KERASTUNER_TUNER_ID` (`chief` on one machine, `tuner0`, `tuner1`, ... on
the workers) and a directory every process can read and write.
"""

import json
import os
import time
import warnings
from pathlib import Path

import keras
import numpy as np

import kzoo
from kzoo import losses
from kzoo.training import runner
from kzoo.training.search_space import GENERIC_SPACE, TRAINING_SPACE, FamilySpace

try:
    import keras_tuner
except ImportError as err:  # the optional 'tune' extra
    raise ImportError(
        "kzoo.training.search needs KerasTuner, which is not installed; install it with "
        "pip install 'kzoo[tune]'."
    ) from err

TUNERS = ("random", "bayesian", "hyperband")
#: Training hyperparameters named otherwise than the runner flag they set.
FLAG_NAMES = {"learning_rate": "lr"}
#: Runner flags a search may set per trial, by dest name (`--space label_smoothing=0..0.2`).
TRIAL_FLAGS = tuple(f for f in runner.OVERRIDABLE if f not in ("precision", "remat", "lr"))


# === The space of one model ===
def family_space(name):
    """The `FamilySpace` registered model `name` declares (`GENERIC_SPACE` if none).

    Example:

    >>> from kzoo.training.search import family_space
    >>> sorted(family_space("mlp").params)
    ['batch_norm', 'depth', 'dropout', 'width']
    """
    entry = kzoo.registry.get_entry(name)
    declared = entry.search_space
    if declared is None:
        return GENERIC_SPACE
    if isinstance(declared, dict):  # written as a dict of name to spec
        return FamilySpace(declared)
    if not isinstance(declared, FamilySpace):
        raise TypeError(
            f"Received search_space={declared!r} in the registration of model {name!r}; "
            "expected a kzoo.training.search_space.FamilySpace, a dict of name to spec or None."
        )
    return declared


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

    >>> from kzoo.training.search import search_space
    >>> from kzoo.training.search_space import parse_overrides
    >>> space = search_space("mlp", parse_overrides(["depth=2", "activation=relu|gelu"]))
    >>> space["depth"].kind, space["activation"].values
    ('fixed', ('relu', 'gelu'))
    """
    entry = kzoo.registry.get_entry(name)
    space = {**family_space(name).params_for(entry), **TRAINING_SPACE}
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
        if key in ("input_shape", "num_classes", "num_outputs", "name"):
            raise ValueError(
                f"Received a search-space override for {key!r}; it is set from the data, so "
                "tune another argument."
            )
        space[key] = param
    return space


# === Training hyperparameters, under the runner flags they set ===
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

    >>> from kzoo.training.search import flag_overrides
    >>> flag_overrides({"learning_rate": 3e-3, "optimizer": "lion", "batch_size": 32})
    {'lr': 0.003, 'optimizer': 'lion', 'batch_size': 32}
    """
    return {FLAG_NAMES.get(k, k): v for k, v in training.items()}


def flag_option(name):
    """The command-line flag a training hyperparameter sets: `learning_rate` -> `--lr`."""
    return "--" + FLAG_NAMES.get(name, name).replace("_", "-")


# === Hypermodel ===
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
    >>> from kzoo.training import search
    >>> hm = search.ZooHyperModel("mlp", search.search_space("mlp"),
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
        kwargs = family_space(self.model_name).model_kwargs(values, entry)
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
                loss = losses.classification_loss(overrides.get("label_smoothing", 0.0))
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
            print(f"Trial {trial.trial_id} failed: {last_line(trial.message)}")
        elif role() == "worker":
            print(f"Trial {trial.trial_id} completed by {self.tuner_id}.")
        # KerasTuner clears the session (and collects garbage) before each
        # build; this also lets go of the finished model while the oracle
        # picks the next trial. Without a gc.collect(), which is slow in a
        # process holding a backend, and which the next build does anyway.
        keras.backend.clear_session(free_memory=False)


def last_line(message):
    """The last non-empty line of an error message (KerasTuner keeps the traceback)."""
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
    return (*splits, {"input_shape": input_shape, "num_classes": data.num_classes})
