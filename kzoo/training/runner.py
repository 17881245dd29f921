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

Every run writes one folder (`--output-dir`, default `runs/<recipe>-<backend>`):
`model.keras` (the trained model), `best.keras` (best validation loss),
`history.csv`, `learning_curve.png`, `metrics.json` (final metrics, backend,
versions, wall time), TensorBoard logs under `logs/` where TensorFlow is
installed, and `backup/` when `--resume` is given.

The toolkit flags (listed by every recipe's `--help`) come from here too:
precision (`--precision`), memory (`--grad-accum`, `--remat`), schedules and
regularisation (`--schedule`, `--label-smoothing`, `--l1`, `--l2`,
`--patience`), the learning-rate range test (`--find-lr`), debugging reports
(`--debug-gradients`, `--debug-activations`, `--debug-weights`,
`--gradient-check`, written under `debug/`) and data-parallel training on the
engine's own machinery (`--distribute data_parallel`, see
`kzoo.backend.distribution` and docs/results/toolkit.md for launch commands).
"""

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np

from kzoo import data as kzoo_data
from kzoo import optimizers
from kzoo.backend import memory
from kzoo.training.checkpoint import CrashSafeBackup

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam", "lion")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step", "exponential", "plateau")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
REMAT_MODES = ("none", "full", "activations")
DISTRIBUTIONS = ("none", "data_parallel")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text}")
    return value


def _non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, received {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text}")
    return value


def _fraction(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), received {text}")
    return value


def make_parser(description, **defaults):
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
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = parser.add_argument_group("training (shared by every recipe)")
    g.add_argument("--epochs", type=_positive_int, default=10, help="training epochs")
    g.add_argument("--batch-size", type=_positive_int, default=64, help="examples per step")
    g.add_argument("--lr", type=_positive_float, default=1e-3, help="peak learning rate")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    g.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                   help="decoupled weight decay (AdamW-style for every optimizer)")
    g.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="learning-rate schedule; warmup_cosine warms up for --warmup-epochs")
    g.add_argument("--warmup-epochs", type=_non_negative_float, default=1.0)
    g.add_argument("--label-smoothing", type=_fraction, default=0.0)
    g.add_argument("--grad-clip", type=_positive_float, default=None,
                   help="clip gradients to this global norm")
    g.add_argument("--grad-accum", type=_positive_int, default=1,
                   help="accumulate gradients over N steps before each update")
    g.add_argument("--patience", type=int, default=0,
                   help="early stopping patience in epochs, restoring the best weights (0: off)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dataset", default="digits",
                   help="an offline dataset (python -c 'import kzoo.data as d; "
                        "print(d.list_datasets())') or tfds:NAME")
    g.add_argument("--output-dir", default=None,
                   help="run folder (default: runs/<recipe>-<backend>)")
    g.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                   help="XLA/torch.compile: auto lets Keras decide per backend")
    g.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="Keras dtype policy; mixed_float16 adds loss scaling")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its backup in the run folder")
    g.add_argument("--smoke", action="store_true",
                   help="a few steps on a tiny slice: every code path, in seconds")
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
    """

    def __init__(self, args, recipe):
        memory.retain_freed_memory()  # before the backend starts its threads
        self.args = args
        self.recipe = recipe
        self.smoke = bool(args.smoke)
        self.epochs = 1 if self.smoke else args.epochs
        self.start = time.time()
        self.backend = keras.config.backend()
        # Before anything else runs on the engine (TF fixes its devices then).
        self.distribution = _setup_distribution(args)
        self.dir = Path(args.output_dir or Path("runs") / f"{recipe}-{self.backend}")
        if self.distribution is not None and not self.distribution.is_chief:
            self.dir = self.dir / f"worker-{self.distribution.process_id}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.train_size = None
        self.dataset = None
        self.history = None
        keras.utils.set_random_seed(args.seed)
        keras.config.set_dtype_policy(args.precision)
        # Layers record the remat mode when they are created, so the scope is
        # open from here (before the recipe builds its model) until compile().
        remat = None if args.remat == "none" else args.remat
        why = _full_remat_unsupported(self.backend, args.precision)
        if remat == "full" and why:
            print(f"note: {why}, so --remat full rematerialises the activations only here.")
            remat = "activations"
        _set_remat_scope(remat)

    # === Data ===
    def load_data(self, name=None, **kwargs):
        """Load `--dataset` (or `name`) offline; failures exit with one sentence."""
        try:
            dataset = kzoo_data.load(
                name or self.args.dataset, seed=self.args.seed, smoke=self.smoke, **kwargs
            )
        except kzoo_data.DataError as err:
            raise RunError(str(err)) from None
        if self.distribution is not None:
            dataset = _fit_to_replicas(dataset, self.distribution.local_devices)
        self.dataset = dataset
        self.train_size = dataset.sizes[0]
        return dataset

    # === Optimisation ===
    @property
    def steps_per_epoch(self):
        n = self.train_size or 1000 * self.args.batch_size
        return max(1, math.ceil(n / self.args.batch_size))

    def learning_rate(self):
        """The learning rate or schedule chosen by `--lr` and `--schedule`."""
        a = self.args
        total = self.steps_per_epoch * self.epochs
        if a.schedule in ("constant", "plateau"):
            return a.lr
        if a.schedule == "cosine":
            return keras.optimizers.schedules.CosineDecay(a.lr, decay_steps=total)
        if a.schedule == "warmup_cosine":
            warmup = min(total - 1, int(a.warmup_epochs * self.steps_per_epoch))
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

    def make_optimizer(self, lr=None):
        """Build the optimizer chosen by the flags (clipping, accumulation, decay)."""
        a = self.args
        _set_remat_scope(None)  # models that compile themselves are built by now
        common = {
            "learning_rate": self.learning_rate() if lr is None else lr,
            "global_clipnorm": a.grad_clip,
            "gradient_accumulation_steps": a.grad_accum if a.grad_accum > 1 else None,
        }
        if a.weight_decay:
            common["weight_decay"] = a.weight_decay
        if a.optimizer == "sgd":
            return keras.optimizers.SGD(momentum=0.9, nesterov=True, **common)
        cls = {
            "adam": optimizers.Adam,
            "adamw": optimizers.AdamW,
            "rmsprop": keras.optimizers.RMSprop,
            "nadam": keras.optimizers.Nadam,
            "lion": keras.optimizers.Lion,
        }[a.optimizer]
        if a.optimizer == "adamw" and not a.weight_decay:
            common["weight_decay"] = 0.004  # AdamW's own default
        return cls(**common)

    @property
    def jit_compile(self):
        return {"auto": "auto", "true": True, "false": False}[self.args.jit_compile]

    def compile(self, model, loss="default", metrics="default", **kwargs):
        """Compile `model` with the flags' optimizer.

        `loss="default"` is sparse categorical cross-entropy on logits with
        `--label-smoothing` (one-hot internally when smoothing); `metrics`
        defaults to accuracy. `loss=None` leaves the model's own loss (for
        models that define `compute_loss`).
        """
        if loss == "default":
            loss = classification_loss(self.args.label_smoothing)
        if metrics == "default":
            metrics = ["accuracy"] if loss is not None else None
        if self.args.l1 or self.args.l2:
            add_weight_penalty(model, l1=self.args.l1, l2=self.args.l2)
        if self.args.remat != "none":
            # The model exists now; ops created while tracing must not be remat'd.
            _set_remat_scope(None)
            _remat_layers_only(model)
        # The range test drives a constant rate itself.
        lr = self.args.find_lr_range[0] if self.args.find_lr else None
        model.compile(
            optimizer=self.make_optimizer(lr=lr),
            loss=loss,
            metrics=metrics,
            jit_compile=self.jit_compile,
            **kwargs,
        )
        if self.distribution is not None:
            self.distribution.prepare(model)
        return model

    # === Training ===
    def callbacks(self, monitor=None):
        """The standard callbacks, wired to the run folder."""
        a = self.args
        monitor = monitor or "val_loss"
        cbs = [
            keras.callbacks.TerminateOnNaN(),
            keras.callbacks.CSVLogger(str(self.dir / "history.csv"), append=a.resume),
            keras.callbacks.ModelCheckpoint(
                str(self.dir / "best.keras"), monitor=monitor, save_best_only=True
            ),
        ]
        # Keras' TensorBoard callback writes through tf.summary.
        if all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard")):
            cbs.append(keras.callbacks.TensorBoard(str(self.dir / "logs")))
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
        if a.resume:
            cbs.append(CrashSafeBackup(self.dir / "backup"))
        return cbs

    def fit(self, model, x, y=None, validation_data=None, callbacks=(), monitor=None, **kwargs):
        """`model.fit` with the flags' epochs and batch size and the standard callbacks."""
        if validation_data is None and monitor is None:
            monitor = "loss"
        verbose = self.args.verbose
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        _set_remat_scope(None)
        if self.args.find_lr:
            return self.find_lr(model, x, y, verbose=verbose)
        extra = self.debug_callbacks(model, x, y)
        kwargs.setdefault("batch_size", None if _is_dataset(x) else self.args.batch_size)
        x, y, kwargs = self._distribute_inputs(x, y, kwargs)
        self._prepare_fit(model, x, y, kwargs)
        history = model.fit(
            x,
            y,
            epochs=self.epochs,
            validation_data=validation_data,
            callbacks=self.callbacks(monitor) + extra + list(callbacks),
            verbose=verbose,
            **kwargs,
        )
        self.history = history
        losses = history.history.get("loss", [])
        if losses and not np.isfinite(losses[-1]):
            best = self.dir / "best.keras"
            kept = (
                f"the last good checkpoint is {best}"
                if best.exists() and np.isfinite(losses[:-1]).any()
                else "no epoch finished with a finite loss, so there is no checkpoint"
            )
            raise RunError(
                f"training stopped: the loss became {losses[-1]} in epoch {len(losses)}; "
                f"lower --lr, add --grad-clip or use --precision float32 ({kept})."
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
    def find_lr(self, model, x, y=None, verbose=2):
        """Run the `--find-lr` sweep instead of training, then exit cleanly.

        Writes `lr_finder.png` and `lr_finder.json` into the run folder and
        prints the suggested learning rate. The model is left as it was.
        """
        from kzoo.training.lr_finder import LRFinder

        low, high = self.args.find_lr_range
        steps = 10 if self.smoke else self.args.find_lr_steps
        try:
            finder = LRFinder(min_lr=low, max_lr=high, num_steps=steps,
                              path=self.dir / "lr_finder.png")
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
    def debug_callbacks(self, model, x, y=None):
        """Callbacks for `--debug-*` flags (and the `--gradient-check` report)."""
        from kzoo.training import debugging

        a = self.args
        if not (a.debug_gradients or a.debug_activations or a.debug_weights or a.gradient_check):
            return []
        folder = self.dir / "debug"
        folder.mkdir(exist_ok=True)
        bx, by = _first_batch(x, y, min(self.args.batch_size, 32))
        cbs = []
        if a.gradient_check:
            n = min(8, _batch_length(bx))
            cx, cy = _first_batch(bx, by, n)
            report = debugging.gradient_check(model, cx, cy)
            verdict = "passed" if report["passed"] else "FAILED"
            text = (
                f"gradient check {verdict}: max relative error "
                f"{report['max_relative_error']:.2e} (tolerance {report['rtol']:.0e}, "
                f"{len(report['rows'])} coordinates, {n} examples)\n"
                + debugging.format_table(report["rows"]) + "\n"
            )
            (folder / "gradient_check.txt").write_text(text)
            print(text.splitlines()[0])
        if a.debug_gradients:
            cbs.append(debugging.GradientNormMonitor(bx, by, folder, verbose=not self.smoke))
        if a.debug_activations:
            cbs.append(debugging.ActivationMonitor(bx, folder, verbose=not self.smoke))
        if a.debug_weights:
            cbs.append(debugging.WeightMonitor(folder))
        return cbs

    # === Outputs ===
    def finish(self, model, metrics):
        """Save the model, learning curve and `metrics.json`; return the metrics."""
        _set_remat_scope(None)
        if self.distribution is not None and not self.distribution.is_chief:
            return {k: _jsonable(v) for k, v in dict(metrics).items()}
        model.save(self.dir / "model.keras")
        if self.history is not None and self.history.history:
            plot_history(self.history.history, self.dir / "learning_curve.png", title=self.recipe)
        record = {
            "recipe": self.recipe,
            "dataset": self.args.dataset if self.dataset is None else self.dataset.name,
            "dataset_source": None if self.dataset is None else self.dataset.source,
            "metrics": {k: _jsonable(v) for k, v in dict(metrics).items()},
            # Epoch indices continue across --resume, so the last one counts all.
            "epochs_run": (
                None if self.history is None or not self.history.epoch
                else self.history.epoch[-1] + 1
            ),
            "wall_time_s": round(time.time() - self.start, 2),
            "backend": self.backend,
            "versions": versions(),
            "precision": self.args.precision,
            "distribution": None if self.distribution is None else self.distribution.describe(),
            "smoke": self.smoke,
            "args": {k: _jsonable(v) for k, v in vars(self.args).items()},
        }
        (self.dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in record["metrics"].items())
        print(f"[{self.recipe} on {self.backend}] {shown} ({record['wall_time_s']} s) -> {self.dir}")
        return record["metrics"]


def add_weight_penalty(model, l1=0.0, l2=0.0):
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


def classification_loss(label_smoothing=0.0):
    """Cross-entropy on logits for integer labels, with optional smoothing."""
    if label_smoothing:
        return SparseCategoricalCrossentropyWithSmoothing(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@keras.saving.register_keras_serializable(package="kzoo")
class SparseCategoricalCrossentropyWithSmoothing(keras.losses.Loss):
    """Cross-entropy on logits for integer labels, with label smoothing.

    Keras' sparse cross-entropy has no label smoothing; this one-hot encodes
    the labels inside the loss so datasets keep integer labels.

    Args:
        label_smoothing: float. Mass spread over all classes. Defaults to 0.1.
    """

    def __init__(self, label_smoothing=0.1, name="sparse_smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        num_classes = keras.ops.shape(y_pred)[-1]
        y_true = keras.ops.one_hot(keras.ops.cast(y_true, "int32"), num_classes)
        return keras.losses.categorical_crossentropy(
            y_true, y_pred, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def plot_history(history, path, title=""):
    """Write the learning curves (loss and the first metric) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in history if not k.startswith("val_") and k not in ("learning_rate", "lr")]
    keys = ["loss"] + [k for k in keys if k != "loss"][:1] if "loss" in keys else keys[:2]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def versions():
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
        _remat_scope.__exit__(None, None, None)
        _remat_scope = None
    if mode is not None:
        _remat_scope = keras.RematScope(mode=mode)
        _remat_scope.__enter__()


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
        if a is None:
            return None
        if isinstance(a, dict):
            return {k: cut(v) for k, v in a.items()}
        if isinstance(a, (list, tuple)):
            return type(a)(cut(v) for v in a)
        return a[: len(a) - len(a) % devices]

    return dataclasses.replace(dataset, **{
        f: cut(getattr(dataset, f))
        for f in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    })


def _batch_length(x):
    if isinstance(x, dict):
        x = next(iter(x.values()))
    elif isinstance(x, (list, tuple)):
        x = x[0]
    return len(x)


def _first_batch(x, y, n):
    """The first `n` examples of arrays (or the first batch of a dataset)."""
    if _is_dataset(x):
        batch = next(iter(x))
        return (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)

    def cut(a):
        if a is None:
            return None
        if isinstance(a, dict):
            return {k: cut(v) for k, v in a.items()}
        if isinstance(a, (list, tuple)):
            return type(a)(cut(v) for v in a)
        return a[:n]

    return cut(x), cut(y)


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
