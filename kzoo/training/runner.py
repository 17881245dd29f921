"""The recipe runner: the flags, callbacks and outputs every recipe shares.

A recipe is data, a model, and a few calls here:

    parser = runner.make_parser(__doc__, epochs=20, dataset="digits")
    args = parser.parse_args(argv)
    run = runner.Run(args, recipe="mlp")
    data = run.load_data()
    model = kzoo.create_model("mlp", input_shape=data.input_shape,
                              num_classes=data.num_classes)
    run.compile(model)
    run.fit(model, data.x_train, data.y_train,
            validation_data=(data.x_val, data.y_val))
    run.finish(model, model.evaluate(data.x_test, data.y_test, return_dict=True))

Every run writes one folder (`--output-dir`, default `runs/<recipe>-<backend>`,
and `runs/<recipe>-<backend>-smoke` for `--smoke`): `run.json` (the run's
fingerprint and progress), `model.keras` (the trained model, with what
`predict` needs in its metadata), `best.keras` (best validation loss),
`history.csv`, `learning_curve.png`, `metrics.json` (final metrics, backend,
versions, wall time), TensorBoard logs under `logs/` where TensorFlow is
installed, and `backup/` while the run is unfinished. Every file is written
atomically; `kzoo.training.run_folder` describes the folder, `--resume` and
`--overwrite`.

The toolkit flags (listed by every recipe's `--help`) come from here too:
precision (`--precision`), memory (`--grad-accum`, `--remat`), schedules and
regularisation (`--schedule`, `--label-smoothing`, `--l1`, `--l2`,
`--patience`), the learning-rate range test (`--find-lr`), debugging reports
(`--debug-gradients`, `--debug-activations`, `--debug-weights`,
`--gradient-check`, written under `debug/`) and data-parallel training on the
engine's own machinery (`--distribute data_parallel`, see
`kzoo.backend.distribution` and docs/results/toolkit.md for launch commands).

Code that trains several models in one run (KerasTuner's trials, see
`recipes/tune.py`) goes through the same calls, with flags for one model
under the flags' own names (`OVERRIDABLE`) and layers created in a scope
restored afterwards:

    with run.building():                       # --precision, --remat
        model = kzoo.create_model("mlp", ...)
    run.compile(model, overrides={"lr": 3e-3, "optimizer": "adamw"}, record=False)
    run.fit(model, x, y, overrides={"batch_size": 32}, record=False)

`make_optimizer` and `building` also work without a `Run`, from explicit
arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import keras
import numpy as np

from kzoo import data as kzoo_data
from kzoo import optimizers
from kzoo.backend import memory
from kzoo.losses import classification_loss
from kzoo.training import plots, run_folder
from kzoo.training.checkpoint import CrashSafeBackup

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam", "lion")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step", "exponential", "plateau")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
REMAT_MODES = ("none", "full", "activations")
DISTRIBUTIONS = ("none", "data_parallel")
#: The flags a caller may set for one model only (a KerasTuner trial), by dest name:
#: `run.compile(model, overrides={"lr": 3e-3, "optimizer": "adamw"})`.
OVERRIDABLE = ("lr", "optimizer", "weight_decay", "schedule", "warmup_epochs",
               "label_smoothing", "grad_clip", "grad_accum", "l1", "l2", "batch_size",
               "patience", "precision", "remat")


def _number(text, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = _number(text, int)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    value = _number(text, int)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, received {text!r}")
    return value


def non_negative_float(text):
    """argparse type: a finite number >= 0."""
    value = _number(text, float)
    if value is None or not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, received {text!r}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0."""
    value = _number(text, float)
    if value is None or not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}")
    return value


def fraction(text):
    """argparse type: a number in [0, 1) (dropout, smoothing)."""
    value = _number(text, float)
    if value is None or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), received {text!r}")
    return value


def seed(text):
    """argparse type: a random seed in [0, 2**32 - 1]."""
    value = _number(text, int)
    if value is None or not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 0 to {2**32 - 1}, received {text!r}")
    return value


# The shared flags' own names for these types (kept for older imports).
_positive_int, _non_negative_float, _positive_float, _fraction = (
    positive_int, non_negative_float, positive_float, fraction)


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the recipe's docstring as written and shows every flag's default."""


def make_parser(description: str, **defaults: Any) -> argparse.ArgumentParser:
    """Return an `argparse.ArgumentParser` with the flags every recipe shares.

    Args:
        description: str. The recipe's docstring (shown by `--help`).
        **defaults: the recipe's defaults for the shared flags, by dest name
            (`epochs=20, batch_size=64, lr=1e-3, dataset="digits"`, ...).

    Example:

    >>> from kzoo.training import runner
    >>> parser = runner.make_parser("A recipe.", epochs=3, dataset="digits")
    >>> args = parser.parse_args(["--smoke", "--lr", "0.01"])
    >>> args.epochs, args.lr, args.smoke
    (3, 0.01, True)
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    # One add_argument per flag on purpose: the calls look alike, each declares a different flag.
    g = parser.add_argument_group("training (shared by every recipe)")
    g.add_argument("--epochs", type=_positive_int, default=10, help="training epochs")
    g.add_argument("--batch-size", type=_positive_int, default=64, help="examples per step")
    g.add_argument("--lr", type=_positive_float, default=1e-3, help="peak learning rate")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                   help="optimizer (sgd: momentum 0.9, Nesterov)")
    g.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                   help="decoupled weight decay (AdamW-style for every optimizer)")
    g.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="learning-rate schedule; warmup_cosine warms up for --warmup-epochs")
    g.add_argument("--warmup-epochs", type=_non_negative_float, default=1.0,
                   help="epochs of linear warm-up for --schedule warmup_cosine")
    g.add_argument("--label-smoothing", type=_fraction, default=0.0,
                   help="probability mass spread over all classes in the cross-entropy")
    g.add_argument("--grad-clip", type=_positive_float, default=None,
                   help="clip gradients to this global norm")
    g.add_argument("--grad-accum", type=_positive_int, default=1,
                   help="accumulate gradients over N steps before each update")
    g.add_argument("--patience", type=non_negative_int, default=0,
                   help="early stopping patience in epochs, restoring the best weights (0: off)")
    g.add_argument("--seed", type=seed, default=0,
                   help="random seed of weights, data order and dropout")
    g.add_argument("--dataset", default="digits",
                   help="an offline dataset (python -c 'import kzoo.data as d; "
                        "print(d.list_datasets())') or tfds:NAME")
    g.add_argument("--output-dir", default=None,
                   help="run folder (default: runs/<recipe>-<backend>, with -smoke for --smoke)")
    g.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                   help="XLA/torch.compile: auto lets Keras decide per backend")
    g.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="Keras dtype policy; mixed_float16 adds loss scaling")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in the run folder from its last "
                        "completed epoch (the same flags only; a complete run is left as is)")
    g.add_argument("--overwrite", action="store_true",
                   help="delete the run already in the run folder and start over")
    g.add_argument("--smoke", action="store_true",
                   help="a few steps on a tiny slice: every code path, in seconds "
                        "(into its own -smoke run folder)")
    g.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                   help="Keras fit verbosity (default: 1 on a terminal, else 2)")

    t = parser.add_argument_group("toolkit: memory, regularisation, debugging, scale-out")
    t.add_argument("--remat", choices=REMAT_MODES, default="none",
                   help="rematerialise activations in the backward pass (keras.RematScope): "
                        "less memory, more compute")
    t.add_argument("--l1", type=_non_negative_float, default=0.0,
                   help="L1 penalty added on every kernel/embedding weight")
    t.add_argument("--l2", type=_non_negative_float, default=0.0,
                   help="L2 penalty added on every kernel/embedding weight")
    t.add_argument("--find-lr", action="store_true",
                   help="run a learning-rate range test instead of training: writes "
                        "lr_finder.png and prints a suggested --lr")
    t.add_argument("--find-lr-range", type=_positive_float, nargs=2, default=(1e-6, 1.0),
                   metavar=("MIN", "MAX"), help="learning rates swept by --find-lr")
    t.add_argument("--find-lr-steps", type=_positive_int, default=100,
                   help="steps of the --find-lr sweep")
    t.add_argument("--debug-gradients", action="store_true",
                   help="per-layer gradient norms each epoch, flagging vanishing/exploding "
                        "layers (debug/gradients.txt, .png)")
    t.add_argument("--debug-activations", action="store_true",
                   help="activation statistics each epoch: dead ReLU fraction, saturation "
                        "(debug/activations.txt, .png)")
    t.add_argument("--debug-weights", action="store_true",
                   help="weight statistics each epoch (debug/weights.txt, .png)")
    t.add_argument("--gradient-check", action="store_true",
                   help="before training, compare autodiff gradients with central finite "
                        "differences on a few examples (debug/gradient_check.txt)")
    t.add_argument("--distribute", choices=DISTRIBUTIONS, default="none",
                   help="data-parallel training: JAX DataParallel (+ multi-process), TF "
                        "MirroredStrategy / MultiWorkerMirroredStrategy (TF_CONFIG), "
                        "PyTorch DDP under torchrun; --batch-size is the global batch")
    known = {a.dest for a in parser._actions}
    unknown = set(defaults) - known
    if unknown:
        raise ValueError(
            f"Received unknown runner defaults {sorted(unknown)}; expected flags among "
            f"{sorted(known - {'help'})}."
        )
    parser.set_defaults(**defaults)
    return parser


class _DeprecatedFlag(argparse.Action):
    """An old spelling of a flag: stores into the new flag's dest and says so on stderr."""

    def __init__(self, option_strings, dest, new_option=None, **kwargs):
        self.new_option = new_option
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated and goes in the next release; "
              f"use {self.new_option} instead.", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept flag `old` as the old spelling of flag `new`, for one release.

    The old flag sets the same dest as `new` (so `args`, the run's
    fingerprint and `--resume` see one flag), takes the same values, is
    hidden from `--help`, and each use prints one line on stderr naming the
    flag to use. `kzoo.training.run_folder.RENAMED_FLAGS` lists every rename,
    so a run folder recorded under the old name still resumes.

    Args:
        parser: the recipe's parser, with `new` already added.
        old: str. The old option string, e.g. `"--d-model"`.
        new: str. The option string that replaces it, e.g. `"--hidden-dim"`.

    Raises:
        ValueError: `new` is not a flag of `parser`, or is one that takes no value.

    Example:

    >>> from kzoo.training import runner
    >>> parser = runner.make_parser("A recipe.")
    >>> _ = parser.add_argument("--hidden-dim", type=runner.positive_int, default=64,
    ...                         help="token width")
    >>> runner.add_deprecated_alias(parser, "--d-model", "--hidden-dim")
    >>> parser.parse_args(["--hidden-dim", "32"]).hidden_dim
    32
    """
    action = parser._option_string_actions.get(new)
    if action is None or action.nargs == 0:
        raise ValueError(
            f"Received new={new!r}; expected a flag of the parser that takes a value, so add "
            f"{new} before its deprecated alias {old}.")
    alias = parser.add_argument(old, action=_DeprecatedFlag, new_option=new, dest=action.dest,
                                nargs=action.nargs, choices=action.choices,
                                metavar=action.metavar or action.dest.upper(),
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    alias.type = action.type  # the new flag's parsing, so a bad value reads the same


def make_optimizer(name: str = "adam",
                   learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-3,
                   *, weight_decay: float = 0.0, grad_clip: float | None = None,
                   grad_accum: int = 1) -> keras.optimizers.Optimizer:
    """Build one of the runner's optimizers (`--optimizer`) from explicit arguments.

    The classes are kzoo's (`kzoo.optimizers`), so a compiled model saves under
    backend-neutral names. `Run.make_optimizer` calls this with the flags.

    Args:
        name: str. One of `OPTIMIZERS`: "sgd" (momentum 0.9, Nesterov), "adam",
            "adamw", "rmsprop", "nadam" or "lion". Defaults to "adam".
        learning_rate: float or a `keras.optimizers.schedules` schedule.
            Defaults to 1e-3.
        weight_decay: float. Decoupled weight decay (AdamW-style) for every
            optimizer; 0 leaves AdamW its own default of 0.004. Defaults to 0.
        grad_clip: float or None. Clip gradients to this global norm.
            Defaults to None.
        grad_accum: int. Accumulate gradients over this many steps before
            each update. Defaults to 1.

    Example:

    >>> from kzoo.training.runner import make_optimizer
    >>> opt = make_optimizer("lion", 3e-4, grad_clip=1.0, grad_accum=2)
    >>> type(opt).__name__, opt.global_clipnorm, opt.gradient_accumulation_steps
    ('Lion', 1.0, 2)
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"Received optimizer={name!r}; expected one of {list(OPTIMIZERS)}, "
                         "such as 'adam'.")
    common = {
        "learning_rate": learning_rate,
        "global_clipnorm": grad_clip,
        "gradient_accumulation_steps": grad_accum if grad_accum > 1 else None,
    }
    if weight_decay:
        common["weight_decay"] = weight_decay
    # kzoo's classes: saved under backend-neutral names (Keras' torch classes are not).
    if name == "sgd":
        return optimizers.SGD(momentum=0.9, nesterov=True, **common)
    cls = {
        "adam": optimizers.Adam,
        "adamw": optimizers.AdamW,
        "rmsprop": optimizers.RMSprop,
        "nadam": optimizers.Nadam,
        "lion": optimizers.Lion,
    }[name]
    if name == "adamw" and not weight_decay:
        common["weight_decay"] = 0.004  # AdamW's own default
    return cls(**common)


@contextlib.contextmanager
def building(precision: str | None = None, remat: str | None = None) -> Iterator[None]:
    """Create layers under a dtype policy and a remat mode, both restored on exit.

    Layers read the policy and the remat mode when they are created, so only
    the models built inside the block get them; code outside (another
    trial, an export) sees the policy that was set before.

    Args:
        precision: str or None. A Keras dtype policy (`--precision`), such as
            "mixed_bfloat16"; None keeps the current one. Defaults to None.
        remat: str or None. A `keras.RematScope` mode (`--remat`: "full",
            "activations"); None or "none" rematerialises nothing. Defaults
            to None.

    Example:

    >>> import keras
    >>> from kzoo.training.runner import building
    >>> with building(precision="mixed_bfloat16", remat="activations"):
    ...     layer = keras.layers.Dense(2)
    >>> layer.dtype_policy.name, layer._remat_mode.mode, keras.config.dtype_policy().name
    ('mixed_bfloat16', 'activations', 'float32')
    """
    previous = keras.config.dtype_policy()
    scope = None if remat in (None, "none") else keras.RematScope(mode=remat)
    try:
        if precision is not None:
            keras.config.set_dtype_policy(precision)
        if scope is not None:
            scope.__enter__()
        yield
    finally:
        if scope is not None:
            _exit_remat_scope(scope)
        keras.config.set_dtype_policy(previous)


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> set[str]:
    """The dest names of the flags given on the command line (even at their default value).

    Example:

    >>> from kzoo.training import runner
    >>> sorted(runner.given_flags(runner.make_parser(""), ["--lr", "1e-3", "--smoke"]))
    ['lr', 'smoke']
    """
    import copy

    # The same parser with no defaults: only the flags given set an attribute.
    probe = copy.deepcopy(parser)
    probe._defaults = {}
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def help_missing(parser):
    """The flags of `parser` without help text (every flag needs one)."""
    return [a.option_strings[0] for a in parser._actions
            if a.option_strings and not a.help and a.dest != "help"]


class RunError(SystemExit):
    """Raised (as a clean exit) when a run cannot go on; prints one sentence."""

    def __init__(self, message, code=1):
        print(f"error: {message}", file=sys.stderr)
        super().__init__(code)


class Run:
    """One recipe run: seed, precision, run folder, callbacks and outputs.

    Args:
        args: argparse.Namespace. Parsed flags from `make_parser`.
        recipe: str. The recipe's name, used for the default run folder.
        own_folder: bool. The recipe keeps its own record in the folder
            (KerasTuner's search): the runner does not refuse an existing
            folder or delete it for `--overwrite`; it still locks it.
            Defaults to False.
    """

    def __init__(self, args: argparse.Namespace, recipe: str, own_folder: bool = False) -> None:
        memory.retain_freed_memory()  # before the backend starts its threads
        self.args = args
        self.recipe = recipe
        self.smoke = bool(args.smoke)
        self.epochs = 1 if self.smoke else args.epochs
        self.start = time.time()
        self.backend = keras.config.backend()
        default_dir = Path("runs") / f"{recipe}-{self.backend}{'-smoke' if self.smoke else ''}"
        self.dir = Path(args.output_dir or default_dir)
        self.fingerprint = run_folder.flag_fingerprint(args, recipe)
        self.own_folder = own_folder
        # The run folder's record and lock, from the first write on (`_claim`).
        self.state: Any = None
        self._lock: Any = None
        self._models: list[keras.Model] = []
        self._phases: list[str] = []
        self._backups: list[CrashSafeBackup] = []
        # Before anything else runs on the engine (TF fixes its devices then).
        self.distribution = _setup_distribution(args)
        if self.distribution is not None and not self.distribution.is_chief:
            # A worker writes only its own subfolder, so it checks only that one: the
            # chief may already be writing the run folder itself.
            self.dir = self.dir / f"{run_folder.WORKER_PREFIX}{self.distribution.process_id}"
        # Refuse, changing nothing, before any data is loaded or file written.
        self._check_folder()
        self.train_size = None
        self.dataset = None
        self.history = None
        self.metadata: dict[str, Any] = {}
        keras.utils.set_random_seed(args.seed)
        keras.config.set_dtype_policy(args.precision)
        # Layers record the remat mode when they are created, so the scope is
        # open from here (before the recipe builds its model) until compile().
        _set_remat_scope(self._remat_mode(args.remat, args.precision, tell=True))

    def _remat_mode(self, remat, precision, tell=False):
        """The RematScope mode `--remat` runs as on this backend and policy (or None)."""
        remat = None if remat == "none" else remat
        why = _full_remat_unsupported(self.backend, precision)
        if remat == "full" and why:
            if tell:
                print(f"note: {why}, so --remat full rematerialises the activations only "
                      "here.")
            remat = "activations"
        return remat

    def settings(self, overrides: Mapping[str, Any] | None = None) -> argparse.Namespace:
        """The flags with `overrides` (flag dest names, `OVERRIDABLE`) applied.

        Args:
            overrides: dict or None. Values for one model only, under the
                flags' own names: `{"lr": 3e-3, "optimizer": "adamw"}`.

        Returns:
            An `argparse.Namespace` like `args`; `args` itself is unchanged.
        """
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(OVERRIDABLE))
        if unknown:
            raise ValueError(
                f"Received overrides for {unknown}, which are not per-model runner flags; "
                f"expected flag names among {list(OVERRIDABLE)}, such as 'lr'.")
        return argparse.Namespace(**{**vars(self.args), **overrides})

    @contextlib.contextmanager
    def building(self, overrides: Mapping[str, Any] | None = None) -> Iterator[None]:
        """Build models under the run's `--precision` and `--remat`, restored on exit.

        The scoped alternative to the process-wide scope `Run()` opens for a
        recipe's one model: a search builds one model per trial, each inside
        `with run.building(overrides):`, and the policy and remat mode are
        restored after each (KerasTuner clears the Keras session between
        trials, which drops process-wide ones).

        Args:
            overrides: dict or None. Per-model flags (`"precision"`, `"remat"`).
        """
        a = self.settings(overrides)
        _set_remat_scope(None)  # the process-wide scope of Run() ends here
        with building(a.precision, self._remat_mode(a.remat, a.precision)):
            yield

    # === The run folder ===
    def _check_folder(self):
        """Refuse (one sentence, nothing changed) a folder this run may not write."""
        a, folder = self.args, self.dir
        resume, overwrite = bool(a.resume), bool(getattr(a, "overwrite", False))
        if resume and overwrite:
            raise RunError("--resume continues the run in the folder and --overwrite deletes "
                           "it; pass only one of them.")
        if folder.exists() and not folder.is_dir():
            raise RunError(f"--output-dir {folder} is a file, not a folder; choose a folder "
                           "path for the run.")
        ancestor = folder
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise RunError(f"--output-dir {folder} cannot be written ({ancestor} is not "
                           "writable); choose a folder you can write to.")
        if getattr(a, "find_lr", False) or self.own_folder:
            return  # the range test writes only its own files; a tuner keeps its own record
        try:
            state = run_folder.read_state(folder)
        except run_folder.RunFolderError as err:
            if overwrite:
                return
            raise RunError(str(err)) from None
        entries = run_folder.visible_entries(folder)
        if state is None:
            if not entries:
                return
            if not run_folder.is_run_folder(folder):
                raise RunError(f"--output-dir {folder} holds files that are not a kzoo run; "
                               "choose an empty or new folder.")
            if overwrite:
                return
            raise RunError(f"--output-dir {folder} holds an earlier run without a run.json "
                           "record, which cannot be resumed; pass --overwrite to start over "
                           "there, or choose another --output-dir.")
        if overwrite:
            return
        if not resume:
            raise RunError(f"--output-dir {folder} holds a {state.get('status', 'previous')} "
                           f"run already; pass --resume to continue it, --overwrite to start "
                           "over, or choose another --output-dir.")
        differs = run_folder.differing_flag(state.get("fingerprint", {}), self.fingerprint)
        if differs:
            raise RunError(f"--resume would continue {folder} with different settings: "
                           f"{differs}; resume with the run's own flags, or pass --overwrite "
                           "to start over.")
        if state.get("status") == "complete":
            print(f"[{self.recipe} on {self.backend}] {folder} holds a complete run "
                  f"(see {folder / 'metrics.json'}); nothing to do. Pass --overwrite to train "
                  "it again.")
            raise SystemExit(0)
        self.state = run_folder.RunState(folder, state)

    def _claim(self):
        """Lock the folder and record the run (once): every write comes after this."""
        if self._lock is not None:
            return
        self._check_folder()  # again, now that no other run can change it
        try:
            self._lock = run_folder.FolderLock(self.dir).acquire()
        except run_folder.RunFolderError as err:
            raise RunError(str(err)) from None
        except OSError as err:
            raise RunError(f"--output-dir {self.dir} cannot be written ({err.strerror}); "
                           "choose a folder you can write to.") from None
        if self.state is None and self.own_folder:
            with contextlib.suppress(run_folder.RunFolderError):
                previous = run_folder.read_state(self.dir)
                if previous is not None:
                    self.state = run_folder.RunState(self.dir, previous)
        if self.state is None:
            if getattr(self.args, "overwrite", False) and not self.own_folder:
                run_folder.clear_folder(self.dir)
            self.state = run_folder.RunState(self.dir, {
                "format": run_folder.FORMAT,
                "status": "running",
                "fingerprint": self.fingerprint,
                "backend": self.backend,
                "models": [],
                "phases": {},
            })
        else:
            self.state.record["status"] = "running"
        run_folder.remove_stale_temporaries(self.dir)
        self.state.save()

    def _record_model(self, model):
        """Add `model`'s fingerprint (or check it against the resumed run's)."""
        index = len(self._models)
        self._models.append(model)
        print_ = run_folder.model_fingerprint(model)
        recorded = self.state.record.setdefault("models", [])
        # A run recorded before the glossary renamed the model's arguments resumes too.
        if index < len(recorded) and recorded[index] not in run_folder.model_fingerprints(model):
            raise RunError(
                f"--resume would continue {self.dir} with a different model (its architecture "
                "differs from the one the run trained); resume with the run's own flags, or "
                "pass --overwrite to start over.")
        if index >= len(recorded):
            recorded.append(print_)
            self.state.save()

    def figure_title(self, model: keras.Model | None = None) -> str:
        """The title of this run's figures: recipe, model, dataset and backend.

        Args:
            model: a Keras model or None. Its name goes into the title.
        """
        dataset = getattr(self.args, "dataset", None) if self.dataset is None \
            else self.dataset.name
        return plots.run_title(self.recipe, getattr(model, "name", None), dataset,
                               self.backend)

    def write_text(self, name: str, text: str) -> None:
        """Write a text file into the run folder, atomically."""
        self._claim()
        run_folder.write_text(self.dir / name, text)

    # === Data ===
    def load_data(self, name: str | None = None, needs_arrays: bool = False,
                  **kwargs: Any) -> kzoo_data.Dataset:
        """Load `--dataset` (or `name`) offline; failures exit with one sentence.

        Args:
            name: str or None. The dataset; defaults to `--dataset`.
            needs_arrays: bool. The recipe trains on arrays in memory, so a
                streamed dataset (`tfds:NAME`) is refused in one sentence
                before anything is written. Defaults to False.
            **kwargs: passed to `kzoo.data.load`.
        """
        name = name or self.args.dataset
        if isinstance(name, str) and name.startswith("tfds:"):
            if needs_arrays:
                raise RunError(
                    f"--dataset {name} streams its examples in batches, and the {self.recipe} "
                    "recipe trains on arrays held in memory; use a keras: dataset (such as "
                    "keras:mnist) or one of kzoo's own datasets (see --help).")
            kwargs.setdefault("batch_size", self.args.batch_size)  # streams come batched
        try:
            dataset = kzoo_data.load(name, seed=self.args.seed, smoke=self.smoke, **kwargs)
        except kzoo_data.DataError as err:
            raise RunError(str(err)) from None
        if self.distribution is not None:
            dataset = _fit_to_replicas(dataset, self.distribution.local_devices)
        self.dataset = dataset
        self.train_size = dataset.sizes[0]
        return dataset

    # === Optimisation ===
    @property
    def steps_per_epoch(self) -> int:
        return self._steps_per_epoch(self.args.batch_size)

    def _steps_per_epoch(self, batch_size):
        n = self.train_size or 1000 * batch_size
        return max(1, math.ceil(n / batch_size))

    def learning_rate(
        self, overrides: Mapping[str, Any] | None = None,
    ) -> float | keras.optimizers.schedules.LearningRateSchedule:
        """The learning rate or schedule chosen by `--lr` and `--schedule`."""
        a = self.settings(overrides)
        steps_per_epoch = self._steps_per_epoch(a.batch_size)
        total = steps_per_epoch * self.epochs
        if a.schedule in ("constant", "plateau"):
            return a.lr
        if a.schedule == "cosine":
            return keras.optimizers.schedules.CosineDecay(a.lr, decay_steps=total)
        if a.schedule == "warmup_cosine":
            warmup = min(total - 1, int(a.warmup_epochs * steps_per_epoch))
            return keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps=max(1, total - warmup), warmup_target=a.lr,
                warmup_steps=max(0, warmup),
            )
        if a.schedule == "step":  # divide by 10 at 50% and 75% of training
            bounds = [max(1, total // 2), max(2, (3 * total) // 4)]
            return keras.optimizers.schedules.PiecewiseConstantDecay(
                bounds, [a.lr, a.lr / 10, a.lr / 100]
            )
        # exponential: the rate falls 100-fold over the whole run
        return keras.optimizers.schedules.ExponentialDecay(
            a.lr, decay_steps=max(1, total), decay_rate=0.01
        )

    def make_optimizer(
        self, lr: float | keras.optimizers.schedules.LearningRateSchedule | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> keras.optimizers.Optimizer:
        """Build the optimizer chosen by the flags (clipping, accumulation, decay).

        Args:
            lr: float, schedule or None. Replaces `--lr` and `--schedule`.
            overrides: dict or None. Per-model flags (see `settings`).
        """
        a = self.settings(overrides)
        _set_remat_scope(None)  # models that compile themselves are built by now
        return make_optimizer(
            a.optimizer, self.learning_rate(overrides) if lr is None else lr,
            weight_decay=a.weight_decay, grad_clip=a.grad_clip, grad_accum=a.grad_accum)

    @property
    def jit_compile(self) -> bool | str:
        modes: dict[str, bool | str] = {"auto": "auto", "true": True, "false": False}
        return modes[self.args.jit_compile]

    def compile(self, model: keras.Model, loss: Any = "default", metrics: Any = "default",
                overrides: Mapping[str, Any] | None = None, record: bool = True,
                **kwargs: Any) -> None:
        """Compile `model` with the flags' optimizer.

        `loss="default"` is sparse categorical cross-entropy on logits with
        `--label-smoothing` (one-hot internally when smoothing); `metrics`
        defaults to accuracy. `loss=None` leaves the model's own loss (for
        models that define `compute_loss`).

        Args:
            model: keras.Model. The built model.
            loss, metrics: as in `model.compile`, with the defaults above.
            overrides: dict or None. Flags for this model only, under the
                flags' own dest names (`OVERRIDABLE`), such as
                `{"lr": 3e-3, "optimizer": "adamw", "l2": 1e-4}`: a search's
                trial. Defaults to None (the flags as given).
            record: bool. Record the model in the run folder's `run.json`
                (its fingerprint, checked by `--resume`). False for a model
                that something else records, such as a KerasTuner trial.
                Defaults to True.
            **kwargs: passed to `model.compile`.
        """
        a = self.settings(overrides)
        if record and not a.find_lr:
            self._claim()
            self._record_model(model)
        if loss == "default":
            loss = classification_loss(a.label_smoothing)
        if metrics == "default":
            metrics = ["accuracy"] if loss is not None else None
        if a.l1 or a.l2:
            add_weight_penalty(model, l1=a.l1, l2=a.l2)
        if a.remat != "none":
            # The model exists now; ops created while tracing must not be remat'd.
            _set_remat_scope(None)
            _remat_layers_only(model)
        # The range test drives a constant rate itself.
        lr = a.find_lr_range[0] if a.find_lr else None
        model.compile(
            optimizer=self.make_optimizer(lr=lr, overrides=overrides),
            loss=loss,
            metrics=metrics,
            jit_compile=self.jit_compile,
            **kwargs,
        )
        if self.distribution is not None:
            self.distribution.prepare(model)
        return model

    # === Training ===
    def callbacks(self, monitor: str | None = None, phase: str | None = None,
                  overrides: Mapping[str, Any] | None = None) -> list[keras.callbacks.Callback]:
        """The standard callbacks, wired to the run folder.

        Args:
            monitor: str. The value `best.keras` and early stopping watch.
                Defaults to "val_loss".
            phase: str or None. A named training phase before the main one
                (BERT's pretraining): its files go under `<phase>/`.
            overrides: dict or None. Per-model flags (`patience`, `schedule`).
        """
        a = self.settings(overrides)
        monitor = monitor or "val_loss"
        key = phase or "main"
        folder = self.dir / phase if phase else self.dir
        backup_dir = self.dir / "backup" / phase if phase else self.dir / "backup"
        divergence = run_folder.DivergenceMonitor(self.state, key)
        backup = CrashSafeBackup(backup_dir, delete_on_finish=False)
        backup.skip_epoch = lambda: divergence.diverged is not None
        progress = run_folder.EpochProgress(self.state, key)
        self._divergence, self._backups = divergence, self._backups + [backup]
        # on_train_begin: the backup restores first; on_epoch_end: the history row,
        # best.keras, the backup, then run.json (a kill between two of them loses
        # at most the epoch in progress, which the resumed run redoes).
        cbs = [
            _RecordLearningRate(),
            _Forward(backup, "on_train_begin"),
            divergence,
            run_folder.AtomicHistory(folder / "history.csv"),
            run_folder.BestCheckpoint(folder / "best.keras", monitor, self.state, key),
            _Forward(backup, "on_epoch_end"),
            progress,
        ]
        # Keras' TensorBoard callback writes through tf.summary.
        if all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard")):
            cbs.append(keras.callbacks.TensorBoard(str(self.dir / "logs")))
        elif not getattr(self, "_told_tensorboard", False):
            self._told_tensorboard = True
            print("note: no TensorBoard logs (they need tensorflow and tensorboard installed).")
        return cbs + self._flag_callbacks(monitor, a)

    @staticmethod
    def _flag_callbacks(monitor, a):
        """Early stopping (`--patience`) and `--schedule plateau`, watching `monitor`."""
        cbs = []
        if a.patience > 0:
            cbs.append(
                keras.callbacks.EarlyStopping(
                    monitor=monitor, patience=a.patience, restore_best_weights=True
                )
            )
        if a.schedule == "plateau":
            cbs.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor=monitor, factor=0.5, patience=max(1, a.patience // 2 or 2)
                )
            )
        return cbs

    def fit(self, model: keras.Model, x: Any, y: Any = None, validation_data: Any = None,
            callbacks: Sequence[keras.callbacks.Callback] = (), monitor: str | None = None,
            phase: str | None = None, overrides: Mapping[str, Any] | None = None,
            record: bool = True, **kwargs: Any) -> keras.callbacks.History:
        """`model.fit` with the flags' epochs and batch size and the standard callbacks.

        A recipe that trains twice (pretraining, then the task) names the first
        phase (`phase="pretrain"`); each phase has its own history, best model
        and backups, and `--resume` continues the phase that was interrupted.

        Args:
            model: keras.Model. A model compiled by `compile`.
            x, y, validation_data: as in `model.fit`.
            callbacks: more callbacks, after the runner's.
            monitor: str. What `best.keras`, `--patience` and `--schedule
                plateau` watch. Defaults to "val_loss" ("loss" without
                validation data).
            phase: str or None. A named training phase before the main one;
                with `record=False`, the name of the subfolder of `debug/`
                that the `--debug-*` reports go to (a trial's).
            overrides: dict or None. Flags for this fit only, under their dest
                names (`OVERRIDABLE`): `batch_size`, `patience`, `schedule`.
            record: bool. Keep the run folder's record of this fit
                (history.csv, best.keras, backups, run.json progress and
                `--resume`, stopping the run if the loss diverges). False for
                a fit that something else records, such as a KerasTuner
                trial: it keeps the flags' callbacks (`--patience`,
                `--schedule plateau`, `--debug-*`) and stops on a NaN loss.
                Defaults to True.
            **kwargs: passed to `model.fit` (`epochs` and `verbose` replace
                the flags').
        """
        a = self.settings(overrides)
        if validation_data is None and monitor is None:
            monitor = "loss"
        verbose = kwargs.pop("verbose", a.verbose)
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        _set_remat_scope(None)
        if a.find_lr:
            return self.find_lr(model, x, y, verbose=verbose)
        if not record:
            folder = self.dir / "debug" / phase if phase else None
            extra = self.debug_callbacks(model, x, y, folder=folder)
            kwargs.setdefault("batch_size", None if _is_dataset(x) else a.batch_size)
            kwargs.setdefault("epochs", self.epochs)
            x, y, kwargs = self._distribute_inputs(x, y, kwargs)
            self._prepare_fit(model, x, y, kwargs)
            cbs = [keras.callbacks.TerminateOnNaN(),
                   *self._flag_callbacks(monitor or "val_loss", a), *extra, *callbacks]
            return model.fit(x, y, validation_data=validation_data, callbacks=cbs,
                             verbose=verbose, **kwargs)
        self._claim()
        if model not in self._models:
            self._record_model(model)
        key = phase or "main"
        if key in self._phases:
            raise ValueError(
                f"Received a second fit() for phase {key!r}; expected each phase once, so "
                "name the earlier one with fit(..., phase='pretrain').")
        self._phases.append(key)
        if phase:
            (self.dir / phase).mkdir(exist_ok=True)
        extra = self.debug_callbacks(model, x, y)
        kwargs.setdefault("batch_size", None if _is_dataset(x) else a.batch_size)
        kwargs.setdefault("epochs", self.epochs)
        x, y, kwargs = self._distribute_inputs(x, y, kwargs)
        self._prepare_fit(model, x, y, kwargs)
        history = model.fit(
            x,
            y,
            validation_data=validation_data,
            callbacks=self.callbacks(monitor, phase=phase, overrides=overrides) + extra
            + list(callbacks),
            verbose=verbose,
            **kwargs,
        )
        self.history = history
        diverged = self._divergence.diverged
        if diverged is not None:
            self.state.record["status"] = "diverged"
            self.state.save()
            best = self.state.phase(key).get("best")
            folder = self.dir / phase if phase else self.dir
            backup = self._backups[-1]
            if best is not None:
                kept = (f"the last good model is {folder / 'best.keras'} (epoch {best['epoch']}, "
                        f"{best['monitor']} {best['value']:.4g})")
            elif backup.latest_epoch():
                kept = (f"the last good weights are the backup of epoch {backup.latest_epoch()} "
                        f"in {backup.backup_dir}")
            else:
                kept = "no epoch finished with a finite loss, so there is no good model to keep"
            loss = diverged["loss"]
            what = f"became {loss}" if not math.isfinite(loss) else f"rose to {loss:.3g}"
            raise RunError(
                f"training diverged: the loss {what} in epoch {diverged['epoch']}; {kept}; "
                "lower --lr, add --grad-clip or use --precision float32."
            )
        return history

    def _distribute_inputs(self, x, y, kwargs):
        """Give this process its slice of every global batch (multi-process runs)."""
        dist = self.distribution
        batch = kwargs.get("batch_size")
        if dist is None or batch is None or _is_dataset(x):
            return x, y, kwargs
        if batch % dist.num_replicas:
            raise RunError(
                f"--batch-size {batch} does not split evenly across {dist.num_replicas} "
                f"replicas; use a multiple of {dist.num_replicas}."
            )
        if dist.feeds_local_slice:
            x, y = dist.local_slice(x, batch), dist.local_slice(y, batch)
            kwargs = {**kwargs, "batch_size": batch // dist.num_processes}
        return x, y, kwargs

    def _prepare_fit(self, model, x, y, kwargs):
        if self.distribution is not None and not _is_dataset(x):
            self.distribution.before_fit(model, x, y, kwargs.get("batch_size") or 32)

    # === Learning-rate range test ===
    def find_lr(self, model: keras.Model, x: Any, y: Any = None, verbose: int = 2) -> NoReturn:
        """Run the `--find-lr` sweep instead of training, then exit cleanly.

        Writes `lr_finder.png` and `lr_finder.json` into the run folder and
        prints the suggested learning rate. The model is left as it was.
        """
        from kzoo.training.lr_finder import LRFinder

        low, high = self.args.find_lr_range
        self.dir.mkdir(parents=True, exist_ok=True)
        steps = 10 if self.smoke else self.args.find_lr_steps
        try:
            finder = LRFinder(min_lr=low, max_lr=high, num_steps=steps,
                              path=self.dir / "lr_finder.png",
                              title=self.figure_title(model))
        except ValueError as err:
            raise RunError(str(err)) from None
        batch = None if _is_dataset(x) else self.args.batch_size
        n = self.train_size or (len(x) if batch else steps)
        epochs = math.ceil(steps / max(1, math.ceil(n / batch))) if batch else 1
        try:
            model.fit(x, y, batch_size=batch, epochs=epochs, callbacks=[finder],
                      verbose=0 if verbose == 2 else verbose)
        except ValueError as err:
            raise RunError(str(err).splitlines()[0]) from None
        self.lr_finder = finder
        print(
            f"[{self.recipe} on {self.backend}] learning-rate range test: {len(finder.lrs)} "
            f"steps from {low:g} to {finder.lrs[-1]:.3g} (stopped by "
            f"{finder.stopped_by or 'end of data'}); suggested --lr {finder.suggestion:.3g}; "
            f"curve in {self.dir / 'lr_finder.png'}"
        )
        raise SystemExit(0)

    # === Debugging ===
    def debug_callbacks(self, model: keras.Model, x: Any, y: Any = None,
                        folder: str | os.PathLike | None = None) -> list[keras.callbacks.Callback]:
        """Callbacks for `--debug-*` flags (and the `--gradient-check` report).

        Their reports go to `folder` (default: `debug/` in the run folder).
        """
        from kzoo.training import debugging

        a = self.args
        if not (a.debug_gradients or a.debug_activations or a.debug_weights or a.gradient_check):
            return []
        folder = Path(folder) if folder is not None else self.dir / "debug"
        folder.mkdir(parents=True, exist_ok=True)
        bx, by = _first_batch(x, y, min(self.args.batch_size, 32))
        cbs = []
        if a.gradient_check:
            n = min(8, kzoo_data.num_examples(bx))
            cx, cy = _first_batch(bx, by, n)
            report = debugging.gradient_check(model, cx, cy)
            verdict = "passed" if report["passed"] else "FAILED"
            text = (
                f"gradient check {verdict}: max relative error "
                f"{report['max_relative_error']:.2e} (tolerance {report['rtol']:.0e}, "
                f"{len(report['rows'])} coordinates, {n} examples)\n"
                + debugging.format_table(report["rows"]) + "\n"
            )
            run_folder.write_text(folder / "gradient_check.txt", text)
            print(text.splitlines()[0])
        title = self.figure_title(model)
        if a.debug_gradients:
            cbs.append(debugging.GradientNormMonitor(bx, by, folder, verbose=not self.smoke,
                                                     title=title))
        if a.debug_activations:
            cbs.append(debugging.ActivationMonitor(bx, folder, verbose=not self.smoke,
                                                   title=title))
        if a.debug_weights:
            cbs.append(debugging.WeightMonitor(folder, title=title))
        return cbs

    # === Outputs ===
    def finish(self, model: keras.Model, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Save the model, learning curve and `metrics.json`; return the metrics.

        The backups are removed only after `model.keras`, `metrics.json` and
        `run.json` are safely written.
        """
        _set_remat_scope(None)
        if self.distribution is not None and not self.distribution.is_chief:
            return {k: _jsonable(v) for k, v in dict(metrics).items()}
        self._claim()
        self._attach_metadata(model)
        run_folder.save_model(model, self.dir / "model.keras")
        if self.history is not None and self.history.history:
            history = self._full_history() or self.history.history
            plots.plot_history(history, self.dir / "learning_curve.png",
                               title=self.figure_title(model))
        main = self.state.phase("main") if self._phases else {}
        record = {
            "recipe": self.recipe,
            "dataset": self.args.dataset if self.dataset is None else self.dataset.name,
            "dataset_source": None if self.dataset is None else self.dataset.source,
            "metrics": {k: _jsonable(v) for k, v in dict(metrics).items()},
            # Counted across --resume, from the run's record.
            "epochs_run": main.get("epochs_done"),
            "best": main.get("best"),
            "wall_time_s": round(time.time() - self.start, 2),
            "backend": self.backend,
            "versions": versions(),
            "precision": self.args.precision,
            "distribution": None if self.distribution is None else self.distribution.describe(),
            "smoke": self.smoke,
            "args": {k: _jsonable(v) for k, v in vars(self.args).items()},
        }
        run_folder.write_json(self.dir / "metrics.json", record)
        self.state.record["status"] = "complete"
        self.state.save()
        for backup in self._backups:
            backup.delete_all()
        with contextlib.suppress(OSError):
            (self.dir / "backup").rmdir()
        self._lock.release()
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in record["metrics"].items())
        print(f"[{self.recipe} on {self.backend}] {shown} ({record['wall_time_s']} s) -> {self.dir}")
        return record["metrics"]

    def _full_history(self):
        """The main phase's history.csv as {column: [values]} (every epoch, resumes too)."""
        import csv

        path = self.dir / "history.csv"
        if not path.is_file():
            return None
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
        try:
            return {k: [float(r[k]) if r.get(k) else float("nan") for r in rows] for k in keys}
        except ValueError:
            return None

    def _attach_metadata(self, model):
        """Put what `predict` needs into the model's metadata (kzoo models only)."""
        if not hasattr(type(model), "metadata"):
            return
        found = dict(model.metadata)
        data = self.dataset
        if data is not None:
            # Only the names of the classes this model's head outputs (a transfer run
            # loads its source data too).
            classes = getattr(model, "model_config", {}).get("num_classes")
            if data.class_names and "class_names" not in found and classes == len(
                    data.class_names):
                found["class_names"] = [str(c) for c in data.class_names]
            if "preprocessing" not in found:
                found["preprocessing"] = describe_preprocessing(data)
            for key, value in dataset_tokenizer(data).items():
                found.setdefault(key, value)
            found.setdefault("source", {"recipe": self.recipe, "dataset": data.name,
                                        "dataset_source": data.source})
        found.update(self.metadata)
        model.metadata = found


def describe_preprocessing(data):
    """What kzoo's loaders did to the inputs, for `predict` to repeat it."""
    shape = tuple(data.input_shape) if data.input_shape else ()
    value_range = data.info.get("value_range")
    if len(shape) == 3 and value_range is not None:
        low, high = value_range
        return {"kind": "image", "size": [shape[0], shape[1]], "channels": shape[2],
                "resize": "bilinear", "scale": [float(low), float(high)]}
    if value_range is not None:
        return {"kind": "array", "scale": [float(v) for v in value_range]}
    return {"kind": "array"}


def dataset_tokenizer(data):
    """Tokenizer metadata of kzoo's text datasets, as `kzoo.tokenizers.from_metadata` reads it.

    Returns a dict of metadata entries (`tokenizer`, and `target_tokenizer`
    when the targets have their own vocabulary), empty for other data.
    """
    info = data.info

    def vocabulary(tokens, level, split="whitespace", **special):
        return {"kind": "vocabulary", "vocabulary": [str(t) for t in tokens], "level": level,
                "split": split, "lowercase": False,
                **{f"{role}_token": special.get(role)
                   for role in ("unknown", "pad", "start", "end")}}

    tokens = info.get("vocabulary")
    if isinstance(tokens, str):  # characters (kzoo.data.text): id 0 is the unknown one
        return {"tokenizer": vocabulary(tokens, "character", unknown=tokens[0])}
    if tokens is not None and "start_id" in info:
        # words: kzoo.data.translation (with an end token), keras: and tfds: texts (an
        # out-of-vocabulary id, no end token)
        tokens = list(tokens)
        unknown = "<unk>" if "<unk>" in tokens else None
        if info.get("oov_id") is not None:
            unknown = tokens[info["oov_id"]]
        end = tokens[info["end_id"]] if info.get("end_id") is not None else None
        return {"tokenizer": vocabulary(
            tokens, "word", "words_and_punctuation", unknown=unknown,
            pad=tokens[info["pad_id"]], start=tokens[info["start_id"]], end=end)}
    if info.get("vocab") is not None:  # words with [CLS] first (kzoo.data.captions)
        tokens = list(info["vocab"])
        return {"tokenizer": vocabulary(tokens, "word", unknown="[UNK]", pad="[PAD]",
                                        start="[CLS]")}
    if info.get("source_chars") is not None:  # characters both ways (kzoo.data.dates)
        source = ["<pad>"] + list(info["source_chars"])
        target = ["<pad>", "<start>", "<end>"] + list(info["target_chars"])
        return {"tokenizer": vocabulary(source, "character", pad="<pad>"),
                "target_tokenizer": vocabulary(target, "character", pad="<pad>",
                                               start="<start>", end="<end>")}
    return {}


class _RecordLearningRate(keras.callbacks.Callback):
    """Puts the optimizer's rate at the end of each epoch into the logs as `learning_rate`.

    It runs first, so `history.csv`, the `History` and the learning curve see it;
    a callback that sets the rate itself (ReduceLROnPlateau) keeps its own entry.
    """

    def on_epoch_end(self, epoch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        rate = getattr(optimizer, "learning_rate", None)
        if logs is None or rate is None or "learning_rate" in logs:
            return
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


class _Forward(keras.callbacks.Callback):
    """Runs one hook of `callback` at this place in the list (and no other hook)."""

    def __init__(self, callback, hook):
        super().__init__()
        self.callback = callback
        setattr(self, hook, lambda *args, **kwargs: getattr(callback, hook)(*args, **kwargs))

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)


def add_weight_penalty(model: keras.Model, l1: float = 0.0, l2: float = 0.0) -> int:
    """Add an L1/L2 penalty on every kernel and embedding weight of `model`.

    Biases, normalisation scales and offsets stay free, as usual. The
    penalty joins the loss through Keras' regularisation losses, on every
    backend; layers that already have a regulariser keep theirs.

    Args:
        model: keras.Model. A built model.
        l1: float. L1 coefficient. Defaults to 0.
        l2: float. L2 coefficient. Defaults to 0.

    Returns:
        The number of weights that received the penalty.
    """
    penalty = keras.regularizers.L1L2(l1=l1, l2=l2)
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for attr in ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings",
                     "recurrent_kernel"):
            variable = getattr(layer, f"_{attr}", None)
            if variable is None:
                variable = getattr(layer, attr, None)
            if not isinstance(variable, keras.Variable) or not variable.trainable:
                continue
            if getattr(variable, "regularizer", None) is None:
                variable.regularizer = penalty
                count += 1
    return count


def versions() -> dict[str, Any]:
    """Versions of Python, Keras, kzoo and the active backend's library."""
    import kzoo

    found = {"python": platform.python_version(), "keras": keras.__version__, "kzoo": kzoo.__version__}
    module = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}.get(keras.config.backend())
    if module:
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            pass
    found["threads"] = os.cpu_count()
    return found


_remat_scope = None


def _set_remat_scope(mode):
    """Open a `keras.RematScope(mode)` for the layers created from now on."""
    global _remat_scope
    if _remat_scope is not None:
        _exit_remat_scope(_remat_scope)
        _remat_scope = None
    if mode is not None:
        _remat_scope = keras.RematScope(mode=mode)
        _remat_scope.__enter__()


def _exit_remat_scope(scope):
    """Close `scope`, even after `keras.backend.clear_session()` dropped Keras' scope stack.

    The public `scope.__exit__` pops the top of Keras' stack, whichever scope
    that is, and fails on a cleared stack. Only then, or when `scope` is not
    on top, is Keras' private stack read (`keras.src.backend.common.
    global_state`, Keras 3.x); where it is missing, there is nothing to close.
    """
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # another Keras layout: the public exit is all there is
        with contextlib.suppress(AttributeError, IndexError):
            scope.__exit__(None, None, None)
        return
    stack = global_state.get_global_attribute("remat_scope_stack")
    if not stack or scope not in stack:
        return  # cleared by clear_session(): already closed
    if stack[-1] is scope:
        scope.__exit__(None, None, None)
    else:
        stack.remove(scope)


def _full_remat_unsupported(backend, precision):
    """Why whole-layer remat cannot run on this backend and policy (or None)."""
    if backend == "tensorflow":
        return ("TensorFlow's recompute_grad cannot rematerialise whole Keras layers in "
                "graph mode (their call takes keyword arguments)")
    if backend == "torch" and precision != "float32":
        return ("PyTorch recomputes a checkpointed layer outside Keras' autocast, so "
                "under mixed precision its weights come back in float32 and torch rejects it")
    return None


def _remat_layers_only(model):
    """Rematerialise stateless layers, not whole models or stateful layers.

    A RematScope also marks the functional models created inside it, and a
    checkpointed model call cannot be traced symbolically when Keras builds
    it; its layers are rematerialised one by one either way. Layers that
    update state in their call (dropout's seed, batch-norm statistics) stay
    out: a checkpointed function must be pure (jax.checkpoint leaks the state
    update's tracer, and a recomputation would draw a second dropout mask).
    """
    for layer in [model, *model._flatten_layers(include_self=False, recursive=True)]:
        stateful = layer.non_trainable_variables or any(
            isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values()
        )
        if isinstance(layer, keras.Model) or stateful:
            layer._remat_mode = None


def _setup_distribution(args):
    if getattr(args, "distribute", "none") == "none":
        return None
    from kzoo.backend import distribution

    try:
        dist = distribution.setup()
    except distribution.DistributionError as err:
        raise RunError(str(err)) from None
    print(f"distributed training: {dist.describe()}")
    return dist


def _fit_to_replicas(dataset, devices):
    """Trim every split to a multiple of the device count (equal shards)."""
    if devices <= 1:
        return dataset
    import dataclasses

    def cut(a):
        if _is_dataset(a):  # a stream's batches are split by the strategy
            return a
        return a[: len(a) - len(a) % devices]

    return dataclasses.replace(dataset, **{
        f: kzoo_data.map_arrays(cut, getattr(dataset, f))
        for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    })


def _first_batch(x, y, n):
    """The first `n` examples of arrays (or the first batch of a dataset)."""
    if _is_dataset(x):
        batch = next(iter(x))
        return (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)

    return kzoo_data.map_arrays(lambda a: a[:n], x), kzoo_data.map_arrays(lambda a: a[:n], y)


def _is_dataset(x):
    return hasattr(x, "__iter__") and not isinstance(x, (np.ndarray, list, tuple, dict))


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if hasattr(v, "shape") and getattr(v, "shape", None) == ():
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def _fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else str(v)
