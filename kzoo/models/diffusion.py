"""Denoising diffusion (DDPM, Ho et al., 2020) with DDIM sampling and EMA weights.

Training adds Gaussian noise to clean images at a random timestep,
`x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`, and teaches a small U-Net
to predict `eps` (mean squared error). Sampling runs the learned reverse
process from pure noise: ancestral DDPM over every timestep, or deterministic
DDIM (Song et al., 2021) over a few of them. An exponential moving average of
the U-Net's weights, updated every training step, is what samples.

The model plugs into Keras' own `train_step` on every backend: calling it on
clean images draws the timesteps and noise (from the model's seed generator
in training, from a fixed seed at inference so evaluation is repeatable) and
returns `{"noise", "predicted_noise"}`; `compute_loss` takes their squared
error and updates the moving average.
"""

import math

import keras
import numpy as np
from keras import ops

from kzoo import validation
from kzoo.layers.unet import build_unet
from kzoo.models.base import SelfTrainingModel, check_value_range, rescale
from kzoo.registry import register_model, uniform_inputs
from kzoo.vocabulary import SquareImage, renamed_arguments

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")
#: The range the U-Net denoises images in.
UNIT_RANGE = (-1.0, 1.0)


# === Noise schedules ===


def noise_schedule(name, num_timesteps):
    """Return the betas `(num_timesteps,)` of a linear or cosine schedule.

    Linear: betas from 1e-4 to 0.02 scaled by `1000 / num_timesteps` (Ho et
    al.). Cosine: `abar_t = cos^2(((t/T + s) / (1 + s)) pi/2)` with s = 0.008,
    betas clipped at 0.999 (Nichol & Dhariwal, 2021).

    Args:
        name: str. `"linear"` or `"cosine"`.
        num_timesteps: int. Diffusion steps T.

    Example:

    >>> betas = noise_schedule("linear", 1000)
    >>> betas.shape, float(betas[0]), round(float(betas[-1]), 4)
    ((1000,), 0.0001, 0.02)
    >>> abar = np.cumprod(1 - noise_schedule("cosine", 1000))
    >>> bool(abar[0] > 0.999 and abar[-1] < 1e-4)
    True
    """
    validation.choice("schedule", name, SCHEDULES)
    num_timesteps = validation.positive_int("num_timesteps", num_timesteps)
    if name == "linear":
        scale = 1000.0 / num_timesteps
        return np.linspace(1e-4 * scale, 0.02 * scale, num_timesteps, dtype="float64")
    s = 0.008
    steps = np.arange(num_timesteps + 1, dtype="float64") / num_timesteps
    abar = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return np.clip(1 - abar[1:] / abar[:-1], 0.0, 0.999)


# === The model ===


@keras.saving.register_keras_serializable(package="kzoo")
@register_model(
    "ddpm",
    family="generative",
    task="self_supervised",
    tiny={"input_shape": (4, 4, 1), "filters": 4, "channel_multipliers": (1,),
          "attention_resolutions": (), "num_timesteps": 10},
    tiny_inputs=uniform_inputs(0.0, 1.0),
    recipe="recipes/diffusion.py",
)
@renamed_arguments(image_size=SquareImage(16, 1), channels=SquareImage(16, 1))
class DDPM(SelfTrainingModel, keras.Model):
    """Denoising diffusion model with a small U-Net, DDPM and DDIM sampling.

    The U-Net (`model.network`, `[noisy_images, timesteps] -> noise`) has
    residual blocks with a sinusoidal time embedding and self-attention at
    the listed resolutions (and always in the middle). `model.ema_network`
    holds the moving average of its weights and is used by `generate`.

    Args:
        input_shape: tuple. `(size, size, channels)` of the images: square,
            the size divisible by `2 ** (len(channel_multipliers) - 1)`.
            Defaults to `(16, 16, 1)`.
        filters: int. Base width of the U-Net. Defaults to 32.
        channel_multipliers: tuple of int. Width multiplier per resolution
            level. Defaults to `(1, 2, 2)`.
        attention_resolutions: tuple of int. Feature-map sizes with
            self-attention. Defaults to `(4,)`.
        dropout: float. Dropout in the residual blocks. Defaults to 0.
        num_timesteps: int. Diffusion steps T. Defaults to 1000.
        schedule: str. Noise schedule, `"linear"` or `"cosine"`. Defaults to
            `"cosine"`.
        ema_momentum: float. Momentum of the weights' moving average (warmed
            up as `min(m, (1 + n) / (10 + n))` after n updates). Defaults to
            0.999.
        value_range: tuple. `(low, high)` of the training images, mapped to
            [-1, 1] inside; samples come back in it. Defaults to `(0.0, 1.0)`.
        name: str. Model name. Defaults to `"ddpm"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("ddpm", input_shape=(8, 8, 1), filters=8,
    ...                           channel_multipliers=(1, 2), num_timesteps=50)
    >>> model.compile()
    >>> x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1))
    >>> history = model.fit(x, batch_size=8, epochs=1, verbose=0)
    >>> out = model(x[:2])
    >>> tuple(out["noise"].shape), tuple(out["predicted_noise"].shape)
    ((2, 8, 8, 1), (2, 8, 8, 1))
    >>> model.generate(3, seed=0, sampler="ddim", steps=5).shape
    (3, 8, 8, 1)
    """

    metric_trackers = {"noise_loss_tracker": "noise_mse"}
    default_learning_rate = 2e-4
    loss_description = "its own loss (noise-prediction MSE)"

    def __init__(
        self,
        input_shape=(16, 16, 1),
        filters=32,
        channel_multipliers=(1, 2, 2),
        attention_resolutions=(4,),
        dropout=0.0,
        num_timesteps=1000,
        schedule="cosine",
        ema_momentum=0.999,
        value_range=(0.0, 1.0),
        name="ddpm",
        **kwargs,
    ):
        image_size, channels = validation.square_image("input_shape", input_shape)
        filters = validation.positive_int("filters", filters)
        channel_multipliers = validation.int_sequence("channel_multipliers", channel_multipliers)
        attention_resolutions = validation.int_sequence(
            "attention_resolutions", attention_resolutions, allow_empty=True
        )
        factor = 2 ** (len(channel_multipliers) - 1)
        if image_size % factor:
            raise ValueError(
                f"Received input_shape={tuple(input_shape)} with {len(channel_multipliers)} "
                "levels; "
                f"expected a multiple of {factor}, so resize the images or use fewer levels."
            )
        dropout = validation.fraction("dropout", dropout)
        num_timesteps = validation.positive_int("num_timesteps", num_timesteps)
        validation.choice("schedule", schedule, SCHEDULES)
        ema_momentum = validation.fraction("ema_momentum", ema_momentum)
        value_range = check_value_range(value_range)

        # === Networks: the trained U-Net and its moving average ===
        unet_args = (image_size, channels, filters, channel_multipliers, attention_resolutions,
                     dropout)
        network = build_unet(*unet_args, name="network")
        ema_network = build_unet(*unet_args, name="ema_network")
        ema_network.set_weights(network.get_weights())
        ema_network.trainable = False

        super().__init__(name=name, **kwargs)
        self.network, self.ema_network = network, ema_network
        self.ema_updates = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                           name="ema_updates")
        self.seed_generator = keras.random.SeedGenerator(0, name=f"{name}_seed")

        # The schedule as NumPy constants (float64 for the sampler's algebra).
        self.betas = noise_schedule(schedule, num_timesteps)
        self.alpha_bars = np.cumprod(1.0 - self.betas)
        self.num_timesteps, self.ema_momentum = num_timesteps, ema_momentum
        self.value_range, self.image_shape = value_range, (image_size, image_size, channels)
        self.built = True

        # === Config ===
        self._set_config(
            input_shape=(image_size, image_size, channels), filters=filters,
            channel_multipliers=channel_multipliers, attention_resolutions=attention_resolutions,
            dropout=dropout, num_timesteps=num_timesteps, schedule=schedule,
            ema_momentum=ema_momentum, value_range=value_range,
        )

    # === Training: the denoising objective ===
    def call(self, images, training=False):
        x0 = rescale(ops.cast(images, "float32"), self.value_range, UNIT_RANGE)
        batch = ops.shape(x0)[0]
        # A fixed seed at inference makes evaluate() and predict() repeatable.
        t_seed = self.seed_generator if training else 1
        n_seed = self.seed_generator if training else 2
        t = keras.random.randint((batch,), 0, self.num_timesteps, dtype="int32", seed=t_seed)
        noise = keras.random.normal(ops.shape(x0), seed=n_seed)
        abar = ops.take(ops.convert_to_tensor(self.alpha_bars.astype("float32")), t)
        abar = ops.reshape(abar, (-1, 1, 1, 1))
        noisy = ops.sqrt(abar) * x0 + ops.sqrt(1.0 - abar) * noise
        predicted = self.network([noisy, t], training=training)
        return {"noise": noise, "predicted_noise": predicted}

    @property
    def example_shape(self):
        """tuple. The shape of one image (no batch axis)."""
        return self.image_shape

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        error = ops.cast(y_pred["predicted_noise"], "float32") - y_pred["noise"]
        loss = ops.mean(ops.square(error))
        self.noise_loss_tracker.update_state(loss)
        if training:
            self._update_ema()
        return self._plus_layer_losses(loss)

    def _update_ema(self):
        # Runs inside the training step, before the optimizer's update, so the
        # average trails the weights by one step: negligible, and it keeps the
        # update inside the (stateless, on JAX) step on every backend.
        n = self.ema_updates + 1.0
        decay = ops.minimum(self.ema_momentum, (1.0 + n) / (10.0 + n))
        for w, e in zip(self.network.weights, self.ema_network.weights):
            e.assign(decay * e + (1.0 - decay) * ops.stop_gradient(ops.cast(w, e.dtype)))
        self.ema_updates.assign(n)

    # === Sampling ===
    def _predict_noise(self, x, t, use_ema):
        network = self.ema_network if use_ema else self.network
        steps = np.full((len(x),), t, dtype="int32")
        return np.asarray(network.predict_on_batch([x.astype("float32"), steps]), "float64")

    def generate(self, n, seed=None, sampler="ddim", steps=50, use_ema=True, batch_size=256):
        """Sample `n` images in the data's range as a NumPy array.

        Args:
            n: int. How many images.
            seed: int or None. Fixes the starting noise and DDPM's noise;
                None draws new ones.
            sampler: str. `"ddpm"` (ancestral, every timestep) or `"ddim"`
                (deterministic, `steps` evenly spaced timesteps). Defaults
                to `"ddim"`.
            steps: int. DDIM steps (ignored by DDPM). Defaults to 50.
            use_ema: bool. Sample with the moving-average weights. Defaults
                to True.
            batch_size: int. Images denoised together. Defaults to 256.
        """
        n = validation.positive_int("n", n)
        validation.choice("sampler", sampler, SAMPLERS)
        steps = min(validation.positive_int("steps", steps), self.num_timesteps)
        rng = np.random.default_rng(seed)
        out = []
        for start in range(0, n, batch_size):
            x = rng.standard_normal((min(batch_size, n - start), *self.image_shape))
            if sampler == "ddpm":
                x = self._ddpm_loop(x, rng, use_ema)
            else:
                x = self._ddim_loop(x, steps, use_ema)
            out.append(x)
        x = np.clip(np.concatenate(out), *UNIT_RANGE)
        return rescale(x, UNIT_RANGE, self.value_range).astype("float32")

    def _ddpm_loop(self, x, rng, use_ema):
        betas, abar = self.betas, self.alpha_bars
        for t in reversed(range(self.num_timesteps)):
            abar_prev = abar[t - 1] if t > 0 else 1.0
            eps = self._predict_noise(x, t, use_ema)
            # Predict x0, clip it to the data range, then take the posterior mean.
            x0 = np.clip((x - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t]), -1.0, 1.0)
            mean = (
                betas[t] * np.sqrt(abar_prev) / (1 - abar[t]) * x0
                + (1 - abar_prev) * np.sqrt(1 - betas[t]) / (1 - abar[t]) * x
            )
            if t > 0:
                variance = betas[t] * (1 - abar_prev) / (1 - abar[t])
                x = mean + np.sqrt(variance) * rng.standard_normal(x.shape)
            else:
                x = mean
        return x

    def _ddim_loop(self, x, steps, use_ema):
        abar = self.alpha_bars
        times = np.unique(np.linspace(0, self.num_timesteps - 1, steps).round().astype(int))[::-1]
        for i, t in enumerate(times):
            abar_prev = abar[times[i + 1]] if i + 1 < len(times) else 1.0
            eps = self._predict_noise(x, t, use_ema)
            x0 = np.clip((x - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t]), -1.0, 1.0)
            eps = (x - np.sqrt(abar[t]) * x0) / np.sqrt(1 - abar[t])
            x = np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * eps
        return x
