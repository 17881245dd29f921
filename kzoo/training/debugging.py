"""Training debugging tools: gradients, activations, weights, gradient check.

Functions return plain rows (lists of dicts) that `format_table` prints as a
readable table and the `plot_*` functions draw as PNGs; the callbacks run them
during `fit` and write both into a folder. Gradients come from
`kzoo.backend.autodiff`, so everything here works on TensorFlow, PyTorch and
JAX without importing any of them.

Example:

>>> import numpy as np, kzoo
>>> from kzoo.training import debugging
>>> model = kzoo.create_model("mlp", input_shape=(4,), num_classes=3,
...                           hidden_units=(8,))
>>> x, y = np.ones((6, 4), "float32"), np.zeros((6,), "int32")
>>> rows = debugging.gradient_norms(model, x, y)
>>> [r["layer"] for r in rows]
['dense_0', 'head']
>>> print(debugging.format_table(debugging.weight_stats(model), ["variable", "shape"]))
variable        shape
--------------  ------
dense_0/kernel  (4, 8)
dense_0/bias    (8,)
head/kernel     (8, 3)
head/bias       (3,)
"""

import math
from pathlib import Path

import keras
import numpy as np

from kzoo.backend.autodiff import value_and_grad
from kzoo.training import plots
from kzoo.training.checkpoint import save_figure

RELU_LIKE = ("relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish")
# Output ranges where each saturating activation's gradient is nearly zero.
SATURATION = {
    "tanh": lambda a: np.abs(a) > 0.99,
    "sigmoid": lambda a: (a < 0.01) | (a > 0.99),
    "hard_sigmoid": lambda a: (a <= 0.0) | (a >= 1.0),
    "softmax": lambda a: a > 0.99,
}


# === Losses evaluated at given weights ===
def stateless_loss(model, x, y, loss=None, training=False):
    """Return `loss_fn(values)`: the loss with trainable weights set to `values`.

    Args:
        model: keras.Model. A built model.
        x, y: a batch of inputs and targets (`y` None for models whose
            `compute_loss` needs no targets).
        loss: a Keras loss (object, name or callable) or None. None uses the
            model's compiled loss (its `compute_loss`, regularisers included),
            or sparse cross-entropy on logits if the model is not compiled.
        training: bool. Call the model in training mode (dropout, batch
            statistics). Defaults to False, which makes the loss deterministic.
    """
    if loss is None and not getattr(model, "compiled", False):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss = keras.losses.get(loss) if isinstance(loss, str) else loss
    variables = list(model.trainable_variables)

    def loss_fn(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            y_pred = model(x, training=training)
            if loss is None:
                return model.compute_loss(x=x, y=y, y_pred=y_pred, training=training)
            target = y
            if isinstance(y, np.ndarray) and y.dtype.kind == "f":
                # Keep float64 targets in float64 (torch would round them to floatx).
                target = keras.ops.convert_to_tensor(y, dtype=keras.backend.standardize_dtype(
                    y_pred.dtype))
            value = keras.ops.mean(loss(target, y_pred))
            for extra in model.losses:  # regularisers and add_loss terms
                value = value + keras.ops.cast(extra, value.dtype)
            return value

    return loss_fn


def _values(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def _layer_of(variable):
    path = variable.path
    return path.rsplit("/", 1)[0] if "/" in path else path


# === Gradient norms ===
def gradient_norms(model, x, y, loss=None, training=True, vanishing=1e-3, exploding=1e2):
    """Per-layer gradient norms on one batch, flagging vanishing and exploding layers.

    A layer is flagged `vanishing` when its gradient norm is below
    `vanishing` times the median layer's (or exactly zero), and `exploding`
    when it is above `exploding` or not finite.

    Args:
        model: keras.Model. A built model.
        x, y: one batch of inputs and targets.
        loss: as in `stateless_loss`. Defaults to the compiled loss.
        training: bool. Training-mode forward pass. Defaults to True.
        vanishing: float. Relative threshold (to the median norm). Defaults
            to 1e-3.
        exploding: float. Absolute threshold. Defaults to 100.

    Returns:
        A list of rows `{"layer", "params", "grad_norm", "weight_norm",
        "ratio", "flag"}`, in the model's variable order.
    """
    variables = list(model.trainable_variables)
    _, grads = value_and_grad(stateless_loss(model, x, y, loss, training), _values(model))
    layers = {}
    for var, grad in zip(variables, grads):
        entry = layers.setdefault(_layer_of(var), {"params": 0, "g2": 0.0, "w2": 0.0})
        grad = grad.astype("float64")
        weight = keras.ops.convert_to_numpy(var).astype("float64")
        entry["params"] += int(np.prod(var.shape))
        entry["g2"] += float(np.sum(grad**2))
        entry["w2"] += float(np.sum(weight**2))
    rows = []
    for name, e in layers.items():
        g, w = math.sqrt(e["g2"]), math.sqrt(e["w2"])
        rows.append({
            "layer": name, "params": e["params"], "grad_norm": g, "weight_norm": w,
            "ratio": g / w if w else float("inf"), "flag": "",
        })
    finite = [r["grad_norm"] for r in rows if np.isfinite(r["grad_norm"])]
    median = float(np.median(finite)) if finite else 0.0
    for r in rows:
        g = r["grad_norm"]
        if not np.isfinite(g) or g > exploding:
            r["flag"] = "exploding"
        elif g == 0.0 or g < vanishing * median:
            r["flag"] = "vanishing"
    return rows


# === Activations ===
def _activation_name(layer):
    if isinstance(layer, keras.layers.ReLU):
        return "relu"
    if isinstance(layer, keras.layers.LeakyReLU):
        return "leaky_relu"
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    fn = getattr(layer, "activation", None)
    if fn is None or not callable(fn):
        return None
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return None if name == "linear" else name


def activation_stats(model, x, training=False):
    """Statistics of every top-level layer's output on one batch.

    `dead_fraction` is the fraction of units (last axis) that never output a
    positive value on the batch, for ReLU-like layers; `saturated_fraction`
    is the fraction of outputs in the flat region of tanh, sigmoid and
    softmax, where the gradient is nearly zero.

    Args:
        model: keras.Model. A functional model (or Sequential).
        x: one batch of inputs.
        training: bool. Training-mode forward pass. Defaults to False.

    Returns:
        A list of rows `{"layer", "activation", "shape", "mean", "std",
        "zero_fraction", "dead_fraction", "saturated_fraction"}`; layers with
        several outputs (or shared layers) are skipped.
    """
    layers, outputs = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            out = layer.output
        except (AttributeError, ValueError):  # shared layers have no single output
            continue
        if isinstance(out, keras.KerasTensor):
            layers.append(layer)
            outputs.append(out)
    probe = keras.Model(model.inputs, outputs)
    values = probe(x, training=training)
    values = values if isinstance(values, (list, tuple)) else [values]
    rows = []
    for layer, value in zip(layers, values):
        a = keras.ops.convert_to_numpy(keras.ops.cast(value, "float32"))
        kind = _activation_name(layer)
        units = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(-1, 1)
        dead = float(np.mean(units.max(axis=0) <= 0)) if kind in RELU_LIKE else None
        saturated = float(np.mean(SATURATION[kind](a))) if kind in SATURATION else None
        rows.append({
            "layer": layer.name, "activation": kind or "", "shape": tuple(a.shape),
            "mean": float(a.mean()), "std": float(a.std()),
            "zero_fraction": float(np.mean(a == 0)),
            "dead_fraction": dead, "saturated_fraction": saturated,
        })
    return rows


# === Weights ===
def weight_stats(model):
    """Statistics of every weight: shape, dtype, mean, std, extremes, norm.

    Returns:
        A list of rows `{"variable", "shape", "dtype", "mean", "std", "min",
        "max", "norm", "finite"}`.
    """
    rows = []
    for var in model.weights:
        w = keras.ops.convert_to_numpy(var).astype("float64")
        rows.append({
            "variable": var.path, "shape": tuple(var.shape), "dtype": str(var.dtype),
            "mean": float(w.mean()) if w.size else 0.0, "std": float(w.std()) if w.size else 0.0,
            "min": float(w.min()) if w.size else 0.0, "max": float(w.max()) if w.size else 0.0,
            "norm": float(np.sqrt(np.sum(w**2))), "finite": bool(np.all(np.isfinite(w))),
        })
    return rows


# === Numerical gradient check ===
def gradient_check(model, x, y, loss=None, eps=None, checks_per_variable=4, seed=0, rtol=None):
    """Compare autodiff gradients with central finite differences.

    For a few random coordinates of each trainable variable,
    `(L(w + eps) - L(w - eps)) / (2 eps)` is compared with the backend's
    gradient. The forward pass runs in inference mode so the loss is
    deterministic. Build the model in float64 for a tight check (on JAX
    this needs `jax_enable_x64`); in float32 the finite differences are
    only good to ~1e-2.

    Args:
        model: keras.Model. A built model.
        x, y: one batch of inputs and targets.
        loss: as in `stateless_loss`. Defaults to the compiled loss.
        eps: float or None. Step; None picks 1e-6 for float64 weights and
            1e-2 otherwise.
        checks_per_variable: int. Coordinates checked per variable.
            Defaults to 4.
        seed: int. Which coordinates. Defaults to 0.
        rtol: float or None. Largest relative error that passes; None picks
            1e-5 for float64 and 5e-2 otherwise.

    Returns:
        A dict `{"passed", "max_relative_error", "rtol", "float64", "rows"}`
        (`float64`: whether the loss really was computed in float64); each row is
        `{"variable", "index", "autodiff", "numerical", "relative_error"}`.
    """
    variables = list(model.trainable_variables)
    values = _values(model)
    loss_fn = stateless_loss(model, x, y, loss, training=False)

    def loss_at(vals):
        return float(keras.ops.convert_to_numpy(loss_fn(vals)))

    # The precision the loss is really computed in, not the declared one:
    # JAX keeps float64 variables in float32 unless jax_enable_x64 is set,
    # and some backends' kernels round float64 through float32. A nudge far
    # below float32's resolution moves a true float64 loss only.
    double = all(v.dtype == np.float64 for v in values) and loss_at(
        [v * (1 + 1e-10) + 1e-10 for v in values]) != loss_at(values)
    eps = eps if eps is not None else (1e-6 if double else 1e-2)
    rtol = rtol if rtol is not None else (1e-5 if double else 5e-2)
    _, grads = value_and_grad(loss_fn, values)

    rng = np.random.default_rng(seed)
    rows = []
    for i, var in enumerate(variables):
        size = int(np.prod(var.shape))
        picks = rng.choice(size, size=min(size, checks_per_variable), replace=False)
        for flat in picks:
            index = np.unravel_index(flat, var.shape) if var.shape else ()
            shifted = []
            for sign in (1.0, -1.0):
                vals = [v.copy() for v in values]
                vals[i][index] += sign * eps
                shifted.append(loss_at(vals))
            numerical = (shifted[0] - shifted[1]) / (2 * eps)
            analytic = float(grads[i][index])
            scale = max(abs(analytic) + abs(numerical), 1e-8 if double else 1e-4)
            rows.append({
                "variable": var.path, "index": tuple(int(j) for j in index),
                "autodiff": analytic, "numerical": numerical,
                "relative_error": abs(analytic - numerical) / scale,
            })
    worst = max((r["relative_error"] for r in rows), default=0.0)
    return {"passed": worst <= rtol, "max_relative_error": worst, "rtol": rtol,
            "float64": double, "rows": rows}


# === Reports ===
def format_table(rows, columns=None):
    """Format rows (dicts) as an aligned plain-text table.

    Args:
        rows: list of dict. One dict per row.
        columns: list of str or None. Which keys, in order. Defaults to the
            first row's keys.
    """
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if v and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:.4f}"
        return str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)).rstrip() for b in body]
    return "\n".join(lines)


def _titled(title, what):
    return f"{title}\n{what}" if title else what


def _saved(plt, fig, path):
    # Every debug plot ends the same way: lay out, write atomically, close, return the figure.
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return fig


def plot_gradient_norms(history, path, title="", epochs=None):
    """Plot gradient norms per layer (log scale) over the recorded epochs; return the figure.

    Args:
        history: list of `gradient_norms` results, one per recorded epoch.
        path: str or Path. The PNG to write.
        title: str. The first line of the title, such as the run's. Defaults to none.
        epochs: list of int or None. The (1-based) epoch of each entry of
            `history`. Defaults to 1, 2, ...
    """
    epochs = list(epochs or range(1, len(history) + 1))
    plt = plots.pyplot()
    layers = [r["layer"] for r in history[-1]]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(layers) + 2), 4))
    for epoch, rows in enumerate(history):
        norms = {r["layer"]: r["grad_norm"] for r in rows}
        ax.plot(range(len(layers)), [max(norms.get(n, np.nan), 1e-12) for n in layers],
                marker="o", label=f"epoch {epochs[epoch]}",
                alpha=0.5 + 0.5 * (epoch + 1) / len(history))
    for i, r in enumerate(history[-1]):
        if r["flag"]:
            ax.annotate(r["flag"], (i, max(r["grad_norm"], 1e-12)), color="red", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("gradient L2 norm (log scale)")
    ax.set_title(_titled(title, "gradient norm per layer on a fixed batch"))
    ax.grid(alpha=0.3)
    if len(history) <= 10:
        ax.legend(fontsize=7)
    return _saved(plt, fig, path)


def plot_activation_stats(rows, path, title="", epoch=None):
    """Plot each layer's output std, dead fraction and saturated fraction; return the figure.

    Args:
        rows: the result of `activation_stats`.
        path: str or Path. The PNG to write.
        title: str. The first line of the title, such as the run's. Defaults to none.
        epoch: int or None. The (1-based) epoch the rows are from, for the title.
    """
    plt = plots.pyplot()
    names = [r["layer"] for r in rows]
    idx = np.arange(len(rows))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(6, 0.45 * len(rows) + 2), 6), sharex=True)
    a1.bar(idx, [r["std"] for r in rows], color="tab:blue")
    a1.set_ylabel("output std")
    when = f" after epoch {epoch}" if epoch else ""
    a1.set_title(_titled(title, f"layer outputs on a fixed batch{when}"))
    a2.bar(idx - 0.2, [r["dead_fraction"] or 0 for r in rows], 0.4, label="dead units (ReLU)")
    a2.bar(idx + 0.2, [r["saturated_fraction"] or 0 for r in rows], 0.4, label="saturated outputs")
    a2.set_ylim(0, 1)
    a2.set_ylabel("fraction")
    a2.legend(fontsize=8)
    a2.set_xticks(idx, names, rotation=60, ha="right", fontsize=8)
    a2.set_xlabel("layer")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    return _saved(plt, fig, path)


# The docstring mirrors plot_activation_stats' on purpose: the same arguments, each in place.
def plot_weight_stats(rows, path, title="", epoch=None):
    """Plot each weight's mean +- std and its extremes; return the figure.

    Args:
        rows: the result of `weight_stats`.
        path: str or Path. The PNG to write.
        title: str. The first line of the title, such as the run's. Defaults to none.
        epoch: int or None. The (1-based) epoch the rows are from, for the title.
    """
    plt = plots.pyplot()
    idx = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(rows) + 2), 4))
    ax.errorbar(idx, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], fmt="o",
                label="mean +- std")
    ax.scatter(idx, [r["min"] for r in rows], marker="v", s=12, label="min")
    ax.scatter(idx, [r["max"] for r in rows], marker="^", s=12, label="max")
    ax.set_xticks(idx, [r["variable"] for r in rows], rotation=70, ha="right", fontsize=7)
    ax.set_xlabel("variable")
    ax.set_ylabel("weight value")
    when = f" after epoch {epoch}" if epoch else ""
    ax.set_title(_titled(title, f"weights{when}"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _saved(plt, fig, path)


# === Callbacks ===
class _ReportCallback(keras.callbacks.Callback):
    def __init__(self, directory, every, verbose, title=""):
        super().__init__()
        self.directory = Path(directory)
        self.every = every
        self.verbose = verbose
        self.title = str(title)
        self.epochs = []  # the 1-based epoch of each entry of `history`

    def _write(self, stem, table, epoch):
        self.directory.mkdir(parents=True, exist_ok=True)
        text = f"epoch {epoch + 1}\n{table}\n\n"
        with open(self.directory / f"{stem}.txt", "a") as f:
            f.write(text)
        if self.verbose:
            print(f"\n[{stem}] {text}", end="")


class GradientNormMonitor(_ReportCallback):
    """Record per-layer gradient norms on a fixed batch after each epoch.

    Writes `gradients.txt` (a table per epoch, flags included) and
    `gradients.png` into `directory`; `self.history` keeps the rows.

    Args:
        x, y: a fixed batch to compute the gradients on.
        directory: str or Path. Where the reports go.
        every: int. Record every `every` epochs. Defaults to 1.
        loss: as in `stateless_loss`. Defaults to the compiled loss.
        verbose: bool. Print the table too. Defaults to True.
        title: str. The first line of the plot's title, such as the run's.
            Defaults to none.
    """

    COLUMNS = ["layer", "params", "grad_norm", "weight_norm", "ratio", "flag"]

    def __init__(self, x, y, directory, every=1, loss=None, verbose=True, title=""):
        super().__init__(directory, every, verbose, title)
        self.x, self.y, self.loss = x, y, loss
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:
            return
        rows = gradient_norms(self.model, self.x, self.y, loss=self.loss)
        self.history.append(rows)
        self.epochs.append(epoch + 1)
        self._write("gradients", format_table(rows, self.COLUMNS), epoch)

    def on_train_end(self, logs=None):
        if self.history:
            plot_gradient_norms(self.history, self.directory / "gradients.png",
                                title=self.title, epochs=self.epochs)


class ActivationMonitor(_ReportCallback):
    """Record activation statistics on a fixed batch after each epoch.

    Writes `activations.txt` and `activations.png` (the last epoch) into
    `directory`; `self.history` keeps the rows.

    Args:
        x: a fixed batch of inputs.
        directory: str or Path. Where the reports go.
        every: int. Record every `every` epochs. Defaults to 1.
        verbose: bool. Print the table too. Defaults to True.
        title: str. The first line of the plot's title, such as the run's.
            Defaults to none.
    """

    COLUMNS = ["layer", "activation", "shape", "mean", "std", "zero_fraction",
               "dead_fraction", "saturated_fraction"]

    def __init__(self, x, directory, every=1, verbose=True, title=""):
        super().__init__(directory, every, verbose, title)
        self.x = x
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:
            return
        rows = activation_stats(self.model, self.x)
        self.history.append(rows)
        self.epochs.append(epoch + 1)
        self._write("activations", format_table(rows, self.COLUMNS), epoch)

    def on_train_end(self, logs=None):
        if self.history:
            plot_activation_stats(self.history[-1], self.directory / "activations.png",
                                  title=self.title, epoch=self.epochs[-1])


class WeightMonitor(_ReportCallback):
    """Record weight statistics after each epoch (`weights.txt`, `weights.png`).

    Args:
        directory: str or Path. Where the reports go.
        every: int. Record every `every` epochs. Defaults to 1.
        verbose: bool. Print the table too. Defaults to False.
        title: str. The first line of the plot's title, such as the run's.
            Defaults to none.
    """

    COLUMNS = ["variable", "shape", "dtype", "mean", "std", "min", "max", "norm", "finite"]

    def __init__(self, directory, every=1, verbose=False, title=""):
        super().__init__(directory, every, verbose, title)
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:
            return
        rows = weight_stats(self.model)
        self.history.append(rows)
        self.epochs.append(epoch + 1)
        self._write("weights", format_table(rows, self.COLUMNS), epoch)

    def on_train_end(self, logs=None):
        if self.history:
            plot_weight_stats(self.history[-1], self.directory / "weights.png",
                              title=self.title, epoch=self.epochs[-1])
