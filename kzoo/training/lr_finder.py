"""Learning-rate range test: `LRFinder` sweeps the rate and suggests one.

The rate grows exponentially from `min_lr` to `max_lr`, one step per batch,
while the (smoothed) training loss is recorded. The sweep stops when the loss
diverges (exceeds `divergence` times its best value). The suggestion is a
tenth of the rate at the smoothed loss's minimum: the minimum sits just
before divergence, and a rate ten times lower still trains fast (Smith,
"Cyclical Learning Rates for Training Neural Networks", 2017; the "minimum
/ 10" rule of fastai's `lr_find`). The steepest-descent point is noisier:
bias-corrected smoothing makes the first steps look steep.
"""

import json
import math
from pathlib import Path

import keras
import numpy as np

from kzoo.training import plots
from kzoo.training.checkpoint import atomic_write, save_figure


class LRFinder(keras.callbacks.Callback):
    """Exponential learning-rate sweep that stops on divergence.

    Compile the model with a constant learning rate, then `fit` with this
    callback for at least `num_steps` batches. After training, `lrs` and
    `losses` hold the sweep, `suggestion` the suggested rate, and the weights
    are restored to where the sweep started (`restore_weights=True`).

    Args:
        min_lr: float. First rate. Defaults to 1e-6.
        max_lr: float. Last rate. Defaults to 1.
        num_steps: int. Steps from `min_lr` to `max_lr`. Defaults to 100.
        smoothing: float. Exponential smoothing of the loss, in [0, 1).
            Defaults to 0.9.
        divergence: float. Stop once the smoothed loss exceeds this multiple
            of the best smoothed loss. Defaults to 4.
        restore_weights: bool. Put the weights back after the sweep.
            Defaults to True.
        path: str, Path or None. Write the loss-vs-rate PNG here (and the
            sweep as JSON beside it) when the sweep ends. Defaults to None.
        title: str. The first line of the plot's title, such as the run's
            (recipe, model, dataset, backend). Defaults to none.

    Example:

    >>> import numpy as np, keras
    >>> from kzoo.training.lr_finder import LRFinder
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(1e-3), "mse")
    >>> finder = LRFinder(min_lr=1e-4, max_lr=10.0, num_steps=30)
    >>> x = np.random.default_rng(0).normal(size=(240, 3)).astype("float32")
    >>> _ = model.fit(x, x.sum(1), batch_size=8, epochs=1, verbose=0,
    ...               callbacks=[finder])
    >>> 1e-4 <= finder.suggestion <= 10.0
    True
    """

    def __init__(self, min_lr=1e-6, max_lr=1.0, num_steps=100, smoothing=0.9,
                 divergence=4.0, restore_weights=True, path=None, title=""):
        super().__init__()
        if not 0 < min_lr < max_lr:
            raise ValueError(
                f"Received min_lr={min_lr!r} and max_lr={max_lr!r}; expected "
                "0 < min_lr < max_lr, such as min_lr=1e-6, max_lr=1."
            )
        if int(num_steps) < 2:
            raise ValueError(
                f"Received num_steps={num_steps!r}; expected an integer >= 2 such as 100."
            )
        self.min_lr, self.max_lr, self.num_steps = float(min_lr), float(max_lr), int(num_steps)
        self.smoothing = float(smoothing)
        self.divergence = float(divergence)
        self.restore_weights = restore_weights
        self.path = None if path is None else Path(path)
        self.title = str(title)
        self.factor = (self.max_lr / self.min_lr) ** (1.0 / (self.num_steps - 1))
        self.lrs, self.losses, self.raw_losses = [], [], []
        self.suggestion = None
        self.stopped_by = None

    def _set_lr(self, lr):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            raise ValueError(
                f"Received a model ({self.model.name}) with no single optimizer; LRFinder "
                "sweeps model.optimizer, so compile the model with one optimizer."
            )
        rate = optimizer.learning_rate
        if not hasattr(rate, "assign"):
            raise ValueError(
                f"Received an optimizer whose learning rate is {type(rate).__name__}; "
                "LRFinder needs a constant learning rate, so compile without a schedule."
            )
        rate.assign(lr)

    def on_train_begin(self, logs=None):
        self._initial = self.model.get_weights() if self.restore_weights else None
        self._lr = self.min_lr
        self._avg, self._best, self._step = 0.0, math.inf, 0
        self._set_lr(self._lr)

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", np.nan))
        self._step += 1
        self._avg = self.smoothing * self._avg + (1 - self.smoothing) * loss
        smoothed = self._avg / (1 - self.smoothing**self._step)  # bias correction
        self.lrs.append(self._lr)
        self.raw_losses.append(loss)
        self.losses.append(smoothed)
        if not np.isfinite(smoothed) or (self._step > 1 and smoothed > self.divergence * self._best):
            self.stopped_by = "divergence"
            self.model.stop_training = True
            return
        self._best = min(self._best, smoothed)
        if self._step >= self.num_steps:
            self.stopped_by = "max_lr"
            self.model.stop_training = True
            return
        self._lr *= self.factor
        self._set_lr(self._lr)

    def on_train_end(self, logs=None):
        self.suggestion = suggest_lr(self.lrs, self.losses)
        if self._initial is not None:
            self.model.set_weights(self._initial)
        if self.path is not None and self.lrs:
            self.plot(self.path)
            text = json.dumps({
                "suggestion": self.suggestion, "stopped_by": self.stopped_by,
                "lrs": self.lrs, "losses": self.losses, "raw_losses": self.raw_losses,
            }, indent=1) + "\n"
            atomic_write(self.path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))

    def plot(self, path):
        """Write the loss-vs-learning-rate curve (log x axis) as a PNG; return the figure."""
        plt = plots.pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.raw_losses, alpha=0.3, label="loss")
        ax.plot(self.lrs, self.losses, label="smoothed loss")
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="red", linestyle="--",
                       label=f"suggested lr = {self.suggestion:.2e}")
        finite = [v for v in self.losses if np.isfinite(v)]
        if finite:  # keep the divergent tail from squashing the curve
            ax.set_ylim(min(finite) * 0.95 - 1e-3, min(max(finite), 3 * finite[0]) * 1.05)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        what = f"learning-rate range test over {len(self.lrs)} steps (stopped by " \
            f"{self.stopped_by or 'end of data'})"
        ax.set_title(f"{self.title}\n{what}" if self.title else what)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        fig.tight_layout()
        save_figure(fig, path)
        plt.close(fig)
        return fig


def suggest_lr(lrs, losses):
    """A tenth of the rate where the smoothed loss is lowest, or None.

    Never below the first rate of the sweep.

    Args:
        lrs: list of float. Rates in increasing order.
        losses: list of float. Smoothed losses at those rates.
    """
    lrs, losses = np.asarray(lrs, "float64"), np.asarray(losses, "float64")
    keep = np.isfinite(losses)
    lrs, losses = lrs[keep], losses[keep]
    if not len(lrs):
        return None
    return float(max(lrs[0], lrs[int(np.argmin(losses))] / 10))
