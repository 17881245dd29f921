"""The figures a run writes, drawn so a reader understands them without the code.

Each `*_figure` function builds and returns a matplotlib `Figure` (titled, axes
labelled); each `plot_*` function draws one, saves it atomically as a PNG
(`checkpoint.save_figure`) and returns the closed figure, whose axes and texts
can still be read. `learning_curve_figure` draws loss and metric per epoch with
the learning-rate schedule beneath; `attention_figure` draws an attention heat
map with a colour bar. Sample grids live in `kzoo.training.sample_grid`.
"""

import numpy as np

from kzoo.training.checkpoint import save_figure

#: History keys that hold the learning rate rather than a loss or metric.
LEARNING_RATE_KEYS = ("learning_rate", "lr")


def pyplot():
    """`matplotlib.pyplot`, drawing off-screen (Agg) unless a notebook shows figures inline.

    A recipe or test draws to files only; in a Jupyter kernel the figures
    kzoo returns stay displayable.
    """
    import sys

    import matplotlib

    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_title(recipe, model_name, dataset, backend):
    """The title every figure of a run carries: recipe, model, dataset and backend.

    Args:
        recipe: str. The recipe's name.
        model_name: str or None. The model's name.
        dataset: str or None. The dataset's name.
        backend: str. The Keras backend.

    Example:

    >>> run_title("mlp", "mlp", "digits", "jax")
    'mlp recipe: mlp on digits (jax backend)'
    """
    what = model_name or "model"
    if dataset:
        what = f"{what} on {dataset}"
    return f"{recipe} recipe: {what} ({backend} backend)"


def _values(sequence):
    return np.asarray([np.nan if v is None else float(v) for v in sequence], "float64")


def padded_range(values, include_zero=False):
    """(low, high) around finite `values`, never degenerate; None if none is finite."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    low, high = float(finite.min()), float(finite.max())
    if include_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    span = high - low
    if span <= 1e-12 * max(1.0, abs(high)):
        # One value (or a flat curve): a range its own size around it, not a
        # sliver of a few percent that makes rounding noise look like a trend.
        span = abs(high) if high else 1.0
        return low - 0.5 * span, high + 0.5 * span
    # Bars from zero get head room for their value labels and the legend.
    return low - 0.08 * span, high + (0.4 if include_zero else 0.08) * span


#: Axis names for history keys whose abbreviation a reader may not know.
QUANTITY_NAMES = {
    "d_loss": "discriminator loss",
    "g_loss": "generator loss",
    "mae": "mean absolute error",
    "mse": "mean squared error",
    "noise_mse": "noise MSE",
    "kl_loss": "KL divergence",
}


def _label(key):
    return QUANTITY_NAMES.get(key, key.replace("_", " "))


def _curve_keys(history):
    keys = [k for k in history if not k.startswith("val_") and k not in LEARNING_RATE_KEYS]
    if "d_loss" in keys and "g_loss" in keys:
        # A GAN's `loss` is their sum; the two players' losses say more.
        return ["d_loss", "g_loss"]
    if "loss" in keys:
        return ["loss"] + [k for k in keys if k != "loss"][:1]
    return keys[:2]


def _epoch_axis(ax, epochs):
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, epochs + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")


def _draw_quantity(ax, key, history, epochs):
    series = [("train", _values(history[key]))]
    if f"val_{key}" in history:
        series.append(("validation", _values(history[f"val_{key}"])))
    values = np.concatenate([v for _, v in series])
    if epochs == 1:
        # One epoch: bars with their values written on them, from zero up.
        width = 0.5 / len(series)
        for i, (name, v) in enumerate(series):
            x = 1 - 0.25 + width * (i + 0.5)
            ax.bar([x], v, width=width * 0.9, label=name, color=f"C{i}")
            if np.isfinite(v[0]):
                ax.annotate(f"{v[0]:.4g}", (x, v[0]), ha="center", va="bottom",
                            xytext=(0, 2), textcoords="offset points")
        limits = padded_range(values, include_zero=True)
    else:
        for i, (name, v) in enumerate(series):
            ax.plot(np.arange(1, epochs + 1), v, marker="o", markersize=4, label=name,
                    color=f"C{i}")
        limits = padded_range(values)
    if limits is not None:
        ax.set_ylim(*limits)
    _epoch_axis(ax, epochs)
    ax.set_ylabel(_label(key))
    ax.set_title(f"{_label(key)} per epoch")
    ax.grid(alpha=0.3)
    if epochs == 1:
        ax.legend(loc="upper center", ncols=len(series))
    else:
        ax.legend()


def _draw_learning_rate(ax, rates, epochs):
    from matplotlib.ticker import FuncFormatter

    positive = rates[np.isfinite(rates) & (rates > 0)]
    if epochs == 1:
        ax.bar([1], rates, width=0.25, color="C2", label="learning rate")
        if np.isfinite(rates[0]):
            ax.annotate(f"{rates[0]:.3g}", (1, rates[0]), ha="center", va="bottom",
                        xytext=(0, 2), textcoords="offset points")
        limits = padded_range(rates, include_zero=True)
    else:
        ax.plot(np.arange(1, epochs + 1), rates, marker="o", markersize=4, color="C2",
                label="learning rate")
        limits = padded_range(rates)
    if positive.size and epochs > 1 and positive.max() > 20 * positive.min():
        ax.set_yscale("log")
    elif limits is not None:
        ax.set_ylim(*limits)
        # Plain numbers on every tick (3e-04, not an offset "1e-3" in the corner).
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    _epoch_axis(ax, epochs)
    ax.set_ylabel("learning rate")
    ax.set_title("learning-rate schedule (rate at the end of each epoch)")
    ax.grid(alpha=0.3)


def learning_curve_figure(history, title=""):
    """The learning curve as a Figure: loss and one metric per epoch, the rate beneath.

    Train and validation values share a panel per quantity; the learning rate
    (history key `learning_rate` or `lr`, when recorded) gets a panel of its
    own under them. Epoch ticks are whole numbers. A single epoch is drawn as
    labelled bars from zero, so the value reads at a glance.

    Args:
        history: dict. `{key: [value per epoch]}` as `History.history` holds,
            `val_<key>` for validation values.
        title: str. The figure's title (see `run_title`).

    Returns:
        A `matplotlib.figure.Figure`; its first axes are the quantities, the
        last the learning rate when the history has one.

    Example:

    >>> fig = learning_curve_figure({"loss": [0.9, 0.5], "val_loss": [1.0, 0.7],
    ...                              "learning_rate": [1e-3, 5e-4]}, title="demo")
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['loss', 'learning rate']
    """
    plt = pyplot()
    keys = _curve_keys(history)
    if not keys:
        raise ValueError(
            f"Received a history with keys {sorted(history)}; expected at least one loss "
            "or metric per epoch, so pass `History.history` after `fit`."
        )
    epochs = max(len(history[k]) for k in keys)
    rate_key = next((k for k in LEARNING_RATE_KEYS if k in history), None)
    rates = None if rate_key is None else _values(history[rate_key])
    if rates is not None and (len(rates) != epochs or not np.isfinite(rates).any()):
        rates = None
    ncols = len(keys)
    if rates is None:
        fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.8), squeeze=False)
        quantity_axes = list(axes[0])
    else:
        fig = plt.figure(figsize=(5.2 * ncols, 6.0))
        grid = fig.add_gridspec(2, ncols, height_ratios=(3, 1.6))
        quantity_axes = [fig.add_subplot(grid[0, i]) for i in range(ncols)]
        rate_axes = fig.add_subplot(grid[1, :])
    for ax, key in zip(quantity_axes, keys):
        _draw_quantity(ax, key, history, epochs)
    if rates is not None:
        _draw_learning_rate(rate_axes, rates, epochs)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(history, path, title=""):
    """Write `learning_curve_figure(history, title)` as a PNG at `path`.

    Args:
        history: dict. `{key: [value per epoch]}` (see `learning_curve_figure`).
        path: str or Path. The PNG file, written atomically.
        title: str. The figure's title.

    Returns:
        The (closed) Figure that was saved.

    Example:

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "learning_curve.png"
    >>> fig = plot_history({"loss": [0.7], "val_loss": [0.8]}, path, title="demo")
    >>> path.stat().st_size > 0, fig.axes[0].get_xlabel()
    (True, 'epoch')
    """
    plt = pyplot()
    fig = learning_curve_figure(history, title=title)
    save_figure(fig, path)
    plt.close(fig)
    return fig


def attention_figure(weights, key_tokens=None, query_tokens=None, title="attention",
                     xlabel="key position", ylabel="query position",
                     colorbar_label="attention weight (each row sums to 1)"):
    """An attention heat map as a Figure: one row per query, one column per key.

    Args:
        weights: array `(queries, keys)` of attention weights (rows sum to 1).
        key_tokens: list of str or None. Tick labels of the columns; None
            numbers the positions.
        query_tokens: list of str or None. Tick labels of the rows.
        title: str. The figure's title.
        xlabel: str. What the columns are. Defaults to "key position".
        ylabel: str. What the rows are. Defaults to "query position".
        colorbar_label: str. What the colour means.

    Returns:
        A `matplotlib.figure.Figure` with the heat map's axes first and the
        colour bar's second.

    Example:

    >>> import numpy as np
    >>> fig = attention_figure(np.full((2, 3), 1 / 3), key_tokens=["a", "b", "c"])
    >>> fig.axes[0].get_xlabel(), fig.axes[1].get_ylabel()
    ('key position', 'attention weight (each row sums to 1)')
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    weights = np.asarray(weights, "float64")
    if weights.ndim != 2:
        raise ValueError(
            f"Received attention weights of shape {weights.shape}; expected (queries, keys), "
            "so pick one example and one head (or average the heads) first."
        )
    rows, cols = weights.shape
    fig, ax = plt.subplots(figsize=(min(16, 0.4 * cols + 3.2), min(12, 0.35 * rows + 2.0)))
    # The scale reaches at least twice the uniform weight 1/keys, so attention
    # spread evenly shows mid-scale instead of looking like a peak everywhere.
    top = float(np.nanmax(weights)) if weights.size else 1.0
    top = max(top, 2.0 / max(cols, 1))
    image = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=top,
                      interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    bar.set_label(colorbar_label)
    if key_tokens is not None:
        long = any(len(str(t)) > 2 for t in key_tokens)
        ax.set_xticks(range(cols), list(key_tokens)[:cols], rotation=45 if long else 0,
                      ha="right" if long else "center")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if query_tokens is not None:
        ax.set_yticks(range(rows), list(query_tokens)[:rows])
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_attention(weights, path, **kwargs):
    """Write `attention_figure(weights, **kwargs)` as a PNG at `path`.

    Args:
        weights: array `(queries, keys)`.
        path: str or Path. The PNG file, written atomically.
        **kwargs: passed to `attention_figure` (tokens, title, labels).

    Returns:
        The (closed) Figure that was saved.

    Example:

    >>> import numpy as np, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "attention.png"
    >>> fig = plot_attention(np.eye(3), path, title="identity")
    >>> path.stat().st_size > 0, fig.axes[0].get_title()
    (True, 'identity')
    """
    plt = pyplot()
    fig = attention_figure(weights, **kwargs)
    save_figure(fig, path)
    plt.close(fig)
    return fig
