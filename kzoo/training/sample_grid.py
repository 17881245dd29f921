"""Look at and score what a generative model makes.

`save_image_grid` writes images as one PNG, `SampleGrid` does it during
`fit` every few epochs, and `sample_quality` asks a classifier trained on the
real data to label the samples: how confident it is (recognisable samples get
confident labels) and how the labels spread over the classes (mode collapse
shows as one class taking most of them).
"""

from pathlib import Path

import keras
import numpy as np

import kzoo
from kzoo.optimizers import Adam
from kzoo.training import plots
from kzoo.training.checkpoint import save_figure


def image_grid(images, ncols=None, pad=1, value_range=(0.0, 1.0)):
    """Tile `(n, h, w, c)` images into one `(H, W)` or `(H, W, 3)` array in [0, 1].

    Args:
        images: array `(n, h, w, c)` with c = 1 or 3.
        ncols: int or None. Images per row; None makes the grid square.
        pad: int. Pixels of white between images. Defaults to 1.
        value_range: tuple. `(low, high)` of the pixel values.

    Example:

    >>> import numpy as np
    >>> image_grid(np.zeros((6, 4, 4, 1)), ncols=3).shape
    (9, 14)
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"Received images of shape {images.shape}; expected (n, height, width, 1 or 3), "
            "so reshape them to NHWC first."
        )
    low, high = value_range
    images = np.clip((images - low) / (high - low), 0.0, 1.0)
    n, h, w, c = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c), "float32")
    for i, image in enumerate(images):
        r, col = divmod(i, ncols)
        grid[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = image
    return grid[..., 0] if c == 1 else grid


def image_grid_figure(images, title="", caption=None, ncols=None, value_range=(0.0, 1.0),
                      zoom=None):
    """`images` tiled into one titled Figure, each image pixel drawn `zoom` x `zoom`.

    Args:
        images: array `(n, h, w, c)`.
        title: str. The figure's title (what made the images, when).
        caption: str or None. Written under the grid (the axes' x label);
            None says how many images the grid holds.
        ncols: int or None. Images per row; None makes the grid square.
        value_range: tuple. `(low, high)` of the pixel values.
        zoom: int or None. Pixel repetition so small images stay visible;
            None picks about 32 pixels per image (at least 2) and a grid at
            least 200 pixels across.

    Returns:
        A `matplotlib.figure.Figure` with one axes (no ticks: the tiles are
        images, not a plot).

    Example:

    >>> import numpy as np
    >>> fig = image_grid_figure(np.zeros((4, 8, 8, 1)), title="samples")
    >>> fig.axes[0].get_title(), fig.axes[0].get_xlabel()
    ('samples', '4 images')
    """
    plt = plots.pyplot()
    grid = image_grid(images, ncols=ncols, value_range=value_range)
    if zoom is None:
        # About 32 pixels per image, and a grid of a few images still 200 wide.
        zoom = max(2, 32 // np.shape(images)[1], -(-200 // max(grid.shape[:2])))
    height, width = grid.shape[0] * zoom, grid.shape[1] * zoom
    n = len(images)
    caption = caption if caption is not None else f"{n} image{'s' if n != 1 else ''}"
    # Sized so each grid pixel maps to whole screen pixels at dpi 100, with room
    # for the title's lines above and the caption below (about 7 pixels a
    # character at these font sizes).
    dpi, lines = 100, str(title).split("\n") if title else []
    above, below = 12 + 17 * len(lines), 28
    text = max([len(line) for line in lines] + [len(caption)])
    fig_w, fig_h = max(width + 20, 7 * text + 20, 300), height + above + below
    fig = plt.figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    ax = fig.add_axes([(fig_w - width) / 2 / fig_w, below / fig_h, width / fig_w,
                       height / fig_h])
    gray = grid.ndim == 2
    ax.imshow(grid, cmap="gray" if gray else None, vmin=0.0, vmax=1.0,
              interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(caption, fontsize=9)
    ax.set_title(title, fontsize=10)
    return fig


def save_image_grid(images, path, ncols=None, value_range=(0.0, 1.0), zoom=None, title="",
                    caption=None):
    """Write `images` as one titled PNG grid (see `image_grid_figure`).

    Args:
        images: array `(n, h, w, c)`.
        path: str or Path. The PNG file, written atomically.
        ncols: int or None. Images per row; None makes the grid square.
        value_range: tuple. `(low, high)` of the pixel values.
        zoom: int or None. Pixel repetition so small images stay visible;
            None picks about 32 pixels per image (at least 2) and a grid at
            least 200 pixels across.
        title: str. The grid's title.
        caption: str or None. Written under the grid.

    Returns:
        The (closed) Figure that was saved.

    Example:

    >>> import numpy as np, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "grid.png"
    >>> fig = save_image_grid(np.random.default_rng(0).uniform(size=(4, 8, 8, 1)), path,
    ...                       title="noise")
    >>> path.stat().st_size > 0, fig.axes[0].get_title()
    (True, 'noise')
    """
    import matplotlib.pyplot as plt

    fig = image_grid_figure(images, title=title, caption=caption, ncols=ncols,
                            value_range=value_range, zoom=zoom)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    plt.close(fig)
    return fig


class SampleGrid(keras.callbacks.Callback):
    """Write a PNG grid of `model.generate(n, seed=seed)` during `fit`.

    Files are `<directory>/samples_epoch_<NNN>.png`, after every `every`
    epochs and after the last one. The same seed each time shows how the
    same latent vectors (or starting noise) evolve.

    Args:
        directory: str or Path. Where the PNGs go.
        n: int. Images per grid. Defaults to 64.
        every: int. Epochs between grids. Defaults to 10.
        seed: int. Seed passed to `generate`. Defaults to 0.
        value_range: tuple. `(low, high)` of the images. Defaults to (0, 1).
        generate_kwargs: dict or None. Extra `generate` arguments (e.g. a
            diffusion sampler's steps).
        title: str or None. What the grids show (`Run.figure_title(model)`
            names recipe, model, dataset and backend); the epoch is added.
            None uses the model's name.

    Example:

    >>> import numpy as np, pathlib, tempfile, kzoo
    >>> vae = kzoo.create_model("vae", input_shape=(8, 8, 1), latent_dim=2,
    ...                         hidden_units=(8,))
    >>> vae.compile()
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1))
    >>> _ = vae.fit(x, epochs=2, verbose=0, callbacks=[SampleGrid(folder, n=4, every=1)])
    >>> sorted(p.name for p in folder.glob("*.png"))
    ['samples_epoch_001.png', 'samples_epoch_002.png']
    """

    def __init__(self, directory, n=64, every=10, seed=0, value_range=(0.0, 1.0),
                 generate_kwargs=None, title=None):
        super().__init__()
        self.title = title
        self.directory = Path(directory)
        self.n, self.every, self.seed = n, every, seed
        self.value_range = value_range
        self.generate_kwargs = dict(generate_kwargs or {})
        self.written = []
        self._epochs = None

    def on_train_begin(self, logs=None):
        self._epochs = self.params.get("epochs")

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every and done != self._epochs:
            return
        images = self.model.generate(self.n, seed=self.seed, **self.generate_kwargs)
        path = self.directory / f"samples_epoch_{done:03d}.png"
        what = self.title or f"{self.model.name} samples"
        of = f" of {self._epochs}" if self._epochs else ""
        caption = ", ".join([f"{self.n} samples, seed {self.seed} (the same every epoch)"]
                            + [f"{k} {v}" for k, v in self.generate_kwargs.items()])
        save_image_grid(images, path, value_range=self.value_range,
                        title=f"{what}\nafter epoch {done}{of}", caption=caption)
        self.written.append(path)


def train_judge(data, epochs=30, seed=0, verbose=0):
    """Train kzoo's `mlp` on the real training images, to judge samples.

    Args:
        data: `kzoo.data.Dataset` with labelled images.
        epochs: int. Training epochs. Defaults to 30.
        seed: int. Seed of the initialisation. Defaults to 0.
        verbose: int. Keras verbosity. Defaults to 0.

    Returns:
        `(classifier, test_accuracy)`: the trained model (logits) and its
        accuracy on the real test images.
    """
    keras.utils.set_random_seed(seed)
    judge = kzoo.create_model(
        "mlp", input_shape=tuple(data.input_shape), num_classes=data.num_classes,
        hidden_units=(256, 128), dropout=0.2,
    )
    judge.compile(
        optimizer=Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    judge.fit(data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=verbose)
    accuracy = judge.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)["accuracy"]
    return judge, float(accuracy)


def sample_quality(classifier, images, num_classes, threshold=0.9):
    """Label `images` with `classifier` and summarise its verdict.

    Args:
        classifier: a `keras.Model` mapping images to class logits.
        images: array of images shaped like the classifier's input.
        num_classes: int. Number of classes.
        threshold: float. Confidence counted as "confidently recognised".
            Defaults to 0.9.

    Returns:
        dict with `mean_confidence` (mean top softmax probability),
        `confident_fraction` (share above `threshold`), `class_fractions`
        (share of samples given each label), `label_entropy` (entropy of
        those shares over log(num_classes): 1 is an even spread, 0 means
        every sample got one label) and `top_class_fraction`.

    Example:

    >>> import numpy as np, keras
    >>> inputs = keras.Input((2,))
    >>> clf = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> q = sample_quality(clf, np.zeros((4, 2)), num_classes=2)
    >>> q["mean_confidence"], q["label_entropy"], len(q["class_fractions"])
    (0.5, 0.0, 2)
    """
    logits = np.asarray(classifier.predict(images, verbose=0, batch_size=256), "float64")
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    confidence = probs.max(axis=1)
    labels = probs.argmax(axis=1)
    fractions = np.bincount(labels, minlength=num_classes) / len(labels)
    nonzero = fractions[fractions > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum() / np.log(num_classes))
    return {
        "mean_confidence": round(float(confidence.mean()), 4),
        "confident_fraction": round(float((confidence > threshold).mean()), 4),
        "class_fractions": [round(float(f), 4) for f in fractions],
        "label_entropy": round(abs(entropy), 4),
        "top_class_fraction": round(float(fractions.max()), 4),
    }


def judge_samples(model, data, n=1000, seed=0, judge_epochs=30, generate_kwargs=None,
                  prefix="samples"):
    """Score `model.generate(n)` against the real test images with one judge.

    Trains the judge (`train_judge`), scores the samples and, for reference,
    the same number of real test images, and returns flat metrics named
    `<prefix>_mean_confidence`, `<prefix>_label_entropy`, ...,
    `real_mean_confidence`, ..., and `judge_test_accuracy`.
    """
    judge, accuracy = train_judge(data, epochs=judge_epochs, seed=seed)
    samples = model.generate(n, seed=seed, **dict(generate_kwargs or {}))
    metrics = {"judge_test_accuracy": round(accuracy, 4)}
    for name, images in ((prefix, samples), ("real", data.x_test[:n])):
        for key, value in sample_quality(judge, images, data.num_classes).items():
            metrics[f"{name}_{key}"] = value
    return metrics


# === The steps the generative recipes share (gan, dcgan, vae, diffusion) ===
def compile_players(run, model, beta_1):
    """Compile a GAN with one optimizer per player, each made from the run's flags.

    Args:
        run: `kzoo.training.runner.Run`. Its `--optimizer`, `--lr`,
            `--schedule`, ... make both optimizers; `--jit-compile` applies.
        model: a two-player model (`compile(d_optimizer=..., g_optimizer=...)`).
        beta_1: float. Set on each optimizer that has one (Adam's first-moment
            decay: the DCGAN paper's 0.5 instead of 0.9).

    Example:

    >>> import pathlib, tempfile, kzoo
    >>> from kzoo.training import runner
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> run = runner.Run(runner.make_parser("").parse_args(
    ...     ["--smoke", "--output-dir", str(folder)]), recipe="gan")
    >>> gan = kzoo.create_model("gan", input_shape=(8, 8, 1), latent_dim=2,
    ...                         hidden_units=(8,))
    >>> compile_players(run, gan, beta_1=0.5)
    >>> float(gan.d_optimizer.beta_1), float(gan.g_optimizer.beta_1)
    (0.5, 0.5)
    """
    d_optimizer, g_optimizer = run.make_optimizer(), run.make_optimizer()
    for optimizer in (d_optimizer, g_optimizer):
        if hasattr(optimizer, "beta_1"):
            optimizer.beta_1 = beta_1
    model.compile(d_optimizer=d_optimizer, g_optimizer=g_optimizer, jit_compile=run.jit_compile)


def fit_with_sample_grids(run, model, x, *, every, value_range, generate_kwargs=None,
                          **fit_kwargs):
    """`run.fit(model, x)` writing a grid of samples every `every` epochs into the run folder.

    Args:
        run: `kzoo.training.runner.Run`. Trains the model, holds the grids,
            and titles them (`run.figure_title(model)`).
        model: a generative model with `generate(n, seed=...)`.
        x: the training images.
        every: int. Epochs between grids (`--samples-every`).
        value_range: tuple. `(low, high)` of the images.
        generate_kwargs: dict or None. Extra `generate` arguments (a
            diffusion sampler and its steps).
        **fit_kwargs: passed to `run.fit` (`validation_data`, ...).

    Returns:
        The `SampleGrid` callback (its `written` lists the PNGs).

    Example:

    >>> import contextlib, io, pathlib, tempfile, numpy as np, kzoo
    >>> from kzoo.training import runner
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> run = runner.Run(runner.make_parser("").parse_args(
    ...     ["--smoke", "--verbose", "0", "--output-dir", str(folder)]), recipe="vae")
    >>> vae = kzoo.create_model("vae", input_shape=(8, 8, 1), latent_dim=2,
    ...                         hidden_units=(8,))
    >>> _ = run.compile(vae, loss=None, metrics=None)
    >>> x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1))
    >>> with contextlib.redirect_stdout(io.StringIO()):  # the run's own notes
    ...     grids = fit_with_sample_grids(run, vae, x, every=1, value_range=(0.0, 1.0))
    >>> [p.name for p in grids.written]
    ['samples_epoch_001.png']
    """
    grids = SampleGrid(run.dir, every=every, value_range=value_range,
                       generate_kwargs=generate_kwargs, title=run.figure_title(model))
    run.fit(model, x, callbacks=[grids], **fit_kwargs)
    return grids


def judge_run_samples(run, model, data, n=None, **kwargs):
    """`judge_samples` at the run's size: 1,000 samples and a 30-epoch judge, or 64 and 1 with --smoke.

    Args:
        run: `kzoo.training.runner.Run`. Its `--smoke` sets the sizes.
        model: a generative model with `generate(n, seed=...)`.
        data: `kzoo.data.Dataset`. The real labelled images the judge learns.
        n: int or None. Samples judged; None: 1,000 (64 with `--smoke`).
        **kwargs: passed to `judge_samples` (`generate_kwargs`, `prefix`).

    Returns:
        dict. `judge_samples`' metrics.

    Example:

    >>> import tempfile, kzoo
    >>> from kzoo.training import runner
    >>> args = runner.make_parser("").parse_args(["--smoke", "--output-dir", tempfile.mkdtemp()])
    >>> run = runner.Run(args, recipe="vae")
    >>> data = run.load_data("digits", needs_arrays=True)
    >>> vae = kzoo.create_model("vae", input_shape=(8, 8, 1), latent_dim=2, hidden_units=(8,))
    >>> metrics = judge_run_samples(run, vae, data, n=8)
    >>> 0 <= metrics["samples_mean_confidence"] <= 1, "judge_test_accuracy" in metrics
    (True, True)
    """
    if n is None:
        n = 64 if run.smoke else 1000
    return judge_samples(model, data, n=n, judge_epochs=1 if run.smoke else 30, **kwargs)
