"""Variational autoencoders (Kingma & Welling, 2014): dense and convolutional.

An encoder maps an image to a diagonal Gaussian `q(z|x)`; the
reparameterisation trick `z = mean + exp(log_var / 2) * eps` makes the sample
differentiable; a decoder maps `z` to per-pixel Bernoulli means. Training
minimises the negative ELBO = reconstruction (binary cross-entropy summed over
pixels) + KL(q(z|x) || N(0, I)), both reported as metrics, in nats per image.

The models are functional: calling one on images returns a dict with the
`reconstruction` (decoded from the posterior mean at inference, from a sample
in training), `z_mean` and `z_log_var`, and `compute_loss` reads that dict,
so Keras' own `train_step` trains them on every backend.
"""

import keras
import numpy as np
from keras import ops

from kzoo import validation
from kzoo.layers import fast
from kzoo.models.base import (
    SelfTrainingModel,
    ZooModel,
    check_value_range,
    conv_generator_shapes,
    rescale,
    rescaling,
)
from kzoo.registry import register_model, uniform_inputs
from kzoo.vocabulary import SquareImage, renamed_arguments

#: The range the encoder and decoder compute images in: Bernoulli means.
UNIT_RANGE = (0.0, 1.0)

# === Blocks ===


@keras.saving.register_keras_serializable(package="kzoo")
class GaussianSampling(keras.layers.Layer):
    """Reparameterised sample `mean + exp(log_var / 2) * eps` in training.

    At inference it returns `mean`, so a trained VAE reconstructs
    deterministically.

    Args:
        seed: int. Seed of the noise. Defaults to 0.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np
    >>> layer = GaussianSampling()
    >>> mean, log_var = np.ones((2, 3)), np.zeros((2, 3))
    >>> np.asarray(layer([mean, log_var])).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    >>> tuple(layer([mean, log_var], training=True).shape)
    (2, 3)
    """

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        mean, log_var = inputs
        if not training:
            return mean
        eps = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


# === The shared model: loss, encode, decode, generate ===


class VariationalAutoencoder(SelfTrainingModel, ZooModel):
    """Base of `VAE` and `ConvVAE`: subclasses build the encoder and decoder.

    Subclasses call `_build(encoder, decoder, input_shape, ...)` where
    `encoder` maps images in [0, 1] to `[z_mean, z_log_var]` and `decoder`
    maps `z` to images in [0, 1]; images outside the model are in
    `value_range`.
    """

    metric_trackers = {"reconstruction_tracker": "reconstruction_loss", "kl_tracker": "kl_loss"}
    default_learning_rate = 1e-3
    loss_description = "its own loss (reconstruction + KL)"

    classifier_name = None

    def _build(self, encoder, decoder, input_shape, latent_dim, value_range, beta, name, kwargs):
        images = keras.Input(input_shape, name="images")
        unit = rescaling(value_range, UNIT_RANGE, name="to_unit")(images)
        z_mean, z_log_var = encoder(unit)
        z = GaussianSampling(name="sampling")([z_mean, z_log_var])
        decoded = decoder(z)
        reconstruction = rescaling(UNIT_RANGE, value_range, dtype="float32",
                                   name="reconstruction")(decoded)
        outputs = {"reconstruction": reconstruction, "z_mean": z_mean, "z_log_var": z_log_var}
        super().__init__(images, outputs, name=name, **kwargs)
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim, self.value_range, self.beta = latent_dim, value_range, beta

    def _unit(self, images):
        return rescale(ops.cast(images, "float32"), self.value_range, UNIT_RANGE)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        target = self._unit(x)
        decoded = ops.clip(self._unit(y_pred["reconstruction"]), 1e-6, 1 - 1e-6)
        # Bernoulli log-likelihood of every pixel, summed per image.
        bce = -(target * ops.log(decoded) + (1 - target) * ops.log(1 - decoded))
        reconstruction = ops.mean(ops.sum(ops.reshape(bce, (ops.shape(bce)[0], -1)), axis=1))
        mean = ops.cast(y_pred["z_mean"], "float32")
        log_var = ops.cast(y_pred["z_log_var"], "float32")
        kl = -0.5 * ops.sum(1 + log_var - ops.square(mean) - ops.exp(log_var), axis=1)
        kl = ops.mean(kl)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        return self._plus_layer_losses(reconstruction + self.beta * kl)

    def encode(self, images):
        """Return the posterior `(z_mean, z_log_var)` of `images` as NumPy arrays."""
        z_mean, z_log_var = self.encoder(self._unit(images), training=False)
        return ops.convert_to_numpy(z_mean), ops.convert_to_numpy(z_log_var)

    def decode(self, z):
        """Return the decoded images (Bernoulli means) in the data's range."""
        out = self.decoder(ops.convert_to_tensor(np.asarray(z, "float32")), training=False)
        return rescale(ops.convert_to_numpy(out), UNIT_RANGE, self.value_range)

    def elbo(self, images, num_samples=1, seed=0):
        """Monte Carlo estimate of the mean ELBO of `images`, in nats per image.

        Unlike `evaluate` (whose reconstruction uses the posterior mean),
        this averages the reconstruction term over `num_samples` draws of
        `z ~ q(z|x)`, which is the ELBO proper.

        Args:
            images: array of images in the data's range.
            num_samples: int. Draws of z per image. Defaults to 1.
            seed: int. Seed of the draws. Defaults to 0.
        """
        num_samples = validation.positive_int("num_samples", num_samples)
        target = ops.convert_to_numpy(self._unit(images)).astype("float64")
        target = target.reshape(len(target), -1)
        z_mean, z_log_var = (v.astype("float64") for v in self.encode(images))
        kl = -0.5 * np.sum(1 + z_log_var - z_mean**2 - np.exp(z_log_var), axis=1)
        rng = np.random.default_rng(seed)
        reconstruction = np.zeros(len(target))
        for _ in range(num_samples):
            z = z_mean + np.exp(0.5 * z_log_var) * rng.standard_normal(z_mean.shape)
            decoded = self.decode(z).reshape(len(target), -1).astype("float64")
            p = rescale(decoded, self.value_range, UNIT_RANGE)
            p = np.clip(p, 1e-6, 1 - 1e-6)
            nll = -(target * np.log(p) + (1 - target) * np.log(1 - p)).sum(axis=1)
            reconstruction += nll / num_samples
        return float(np.mean(-(reconstruction + kl)))

    def generate(self, n, seed=None, batch_size=256):
        """Decode `n` latent vectors drawn from the prior N(0, I).

        Args:
            n: int. How many images.
            seed: int or None. Fixes the latent vectors; None draws new ones.
            batch_size: int. Images per decoder call. Defaults to 256.
        """
        return self._from_prior(n, seed, batch_size, self.decode)


# === Dense VAE ===


@keras.saving.register_keras_serializable(package="kzoo")
@register_model(
    "vae",
    family="generative",
    task="self_supervised",
    tiny={"input_shape": (6, 6, 1), "latent_dim": 2, "hidden_units": (8,)},
    tiny_inputs=uniform_inputs(0.0, 1.0),
    recipe="recipes/vae.py",
)
@renamed_arguments(image_shape="input_shape")
class VAE(VariationalAutoencoder):
    """Variational autoencoder with fully connected encoder and decoder.

    Calling the model returns `{"reconstruction", "z_mean", "z_log_var"}`;
    `fit(x)` minimises the negative ELBO (metrics `reconstruction_loss` and
    `kl_loss`, nats per image); `encode`, `decode` and `generate` work on
    NumPy arrays in the data's range.

    Args:
        input_shape: tuple. Shape of one image, e.g. `(16, 16, 1)`. Defaults
            to `(16, 16, 1)`.
        latent_dim: int. Size of the latent space. Defaults to 16.
        hidden_units: tuple of int. Encoder hidden widths; the decoder uses
            them in reverse. Defaults to `(512, 256)`.
        beta: float. Weight of the KL term (1 gives the ELBO; >1 a beta-VAE).
            Defaults to 1.0.
        value_range: tuple. `(low, high)` of the pixel values; the likelihood
            is Bernoulli on pixels scaled to [0, 1]. Defaults to `(0.0, 1.0)`.
        name: str. Model name. Defaults to `"vae"`.

    Example:

    >>> import numpy as np, kzoo
    >>> vae = kzoo.create_model("vae", input_shape=(8, 8, 1), latent_dim=2,
    ...                         hidden_units=(16,))
    >>> vae.compile()
    >>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1))
    >>> history = vae.fit(x, batch_size=16, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['kl_loss', 'loss', 'reconstruction_loss']
    >>> tuple(vae(x[:2])["reconstruction"].shape)
    (2, 8, 8, 1)
    >>> z_mean, z_log_var = vae.encode(x[:3])
    >>> z_mean.shape, vae.decode(z_mean).shape, vae.generate(5, seed=0).shape
    ((3, 2), (3, 8, 8, 1), (5, 8, 8, 1))
    >>> bool(vae.elbo(x, num_samples=2) < 0)  # a log-likelihood bound, in nats
    True
    """

    def __init__(
        self,
        input_shape=(16, 16, 1),
        latent_dim=16,
        hidden_units=(512, 256),
        beta=1.0,
        value_range=(0.0, 1.0),
        name="vae",
        **kwargs,
    ):
        input_shape = validation.shape("input_shape", input_shape, ranks=(1, 2, 3))
        latent_dim = validation.positive_int("latent_dim", latent_dim)
        hidden_units = validation.int_sequence("hidden_units", hidden_units)
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta < 0:
            raise ValueError(f"Received beta={beta!r}; expected a number >= 0 such as beta=1.0.")
        value_range = check_value_range(value_range)
        pixels = int(np.prod(input_shape))

        # === Encoder: image -> dense -> (z_mean, z_log_var) ===
        images = keras.Input(input_shape, name="images")
        x = keras.layers.Flatten(name="flatten")(images)
        for i, units in enumerate(hidden_units):
            x = fast.Dense(units, activation="relu", name=f"enc_dense_{i}")(x)
        z_mean = fast.Dense(latent_dim, dtype="float32", name="z_mean")(x)
        z_log_var = fast.Dense(latent_dim, dtype="float32", name="z_log_var")(x)
        encoder = keras.Model(images, [z_mean, z_log_var], name="encoder")

        # === Decoder: z -> dense -> sigmoid image ===
        z = keras.Input((latent_dim,), name="z")
        x = z
        for i, units in enumerate(reversed(hidden_units)):
            x = fast.Dense(units, activation="relu", name=f"dec_dense_{i}")(x)
        x = fast.Dense(pixels, name="dec_out")(x)
        x = keras.layers.Activation("sigmoid", dtype="float32", name="dec_sigmoid")(x)
        x = keras.layers.Reshape(input_shape, name="dec_image")(x)
        decoder = keras.Model(z, x, name="decoder")

        self._build(encoder, decoder, input_shape, latent_dim, value_range, float(beta), name, kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, latent_dim=latent_dim, hidden_units=hidden_units,
            beta=float(beta), value_range=value_range,
        )


# === Convolutional VAE ===


@keras.saving.register_keras_serializable(package="kzoo")
@register_model(
    "conv_vae",
    family="generative",
    task="self_supervised",
    tiny={"input_shape": (8, 8, 1), "latent_dim": 2, "filters": 4, "hidden_units": 8},
    tiny_inputs=uniform_inputs(0.0, 1.0),
    recipe="recipes/vae.py",
)
@renamed_arguments(image_size=SquareImage(16, 1), channels=SquareImage(16, 1))
class ConvVAE(VariationalAutoencoder):
    """Variational autoencoder with a convolutional encoder and decoder.

    The encoder halves the image twice with stride-2 convolutions; the
    decoder mirrors it with stride-2 transposed convolutions. Same interface
    as `vae`.

    Args:
        input_shape: tuple. `(size, size, channels)` of the images: square,
            the size a multiple of 4, 1 or 3 channels. Defaults to
            `(16, 16, 1)`.
        latent_dim: int. Size of the latent space. Defaults to 16.
        filters: int. Filters of the first convolution; the second has
            twice as many. Defaults to 32.
        hidden_units: int. Width of the dense layer between the convolutions
            and the latent space. Defaults to 256.
        beta: float. Weight of the KL term. Defaults to 1.0.
        value_range: tuple. `(low, high)` of the pixel values. Defaults to
            `(0.0, 1.0)`.
        name: str. Model name. Defaults to `"conv_vae"`.

    Example:

    >>> import numpy as np, kzoo
    >>> vae = kzoo.create_model("conv_vae", input_shape=(8, 8, 1), latent_dim=2,
    ...                         filters=4, hidden_units=8)
    >>> vae.compile()
    >>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1))
    >>> _ = vae.fit(x, batch_size=16, epochs=1, verbose=0)
    >>> vae.generate(3, seed=0).shape
    (3, 8, 8, 1)
    """

    # Signature parallel to DCGAN's on purpose: both convolutional generators take the same
    # image and latent arguments.
    def __init__(
        self,
        input_shape=(16, 16, 1),
        latent_dim=16,
        filters=32,
        hidden_units=256,
        beta=1.0,
        value_range=(0.0, 1.0),
        name="conv_vae",
        **kwargs,
    ):
        input_shape, channels, base, latent_dim, filters = conv_generator_shapes(
            input_shape, latent_dim, filters
        )
        hidden_units = validation.positive_int("hidden_units", hidden_units)
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta < 0:
            raise ValueError(f"Received beta={beta!r}; expected a number >= 0 such as beta=1.0.")
        value_range = check_value_range(value_range)

        # === Encoder: two stride-2 convs -> dense -> (z_mean, z_log_var) ===
        images = keras.Input(input_shape, name="images")
        x = fast.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                                name="enc_conv_0")(images)
        x = fast.Conv2D(2 * filters, 3, strides=2, padding="same", activation="relu",
                                name="enc_conv_1")(x)  # (B, s/4, s/4, 2f)
        x = keras.layers.Flatten(name="enc_flatten")(x)
        x = fast.Dense(hidden_units, activation="relu", name="enc_dense")(x)
        z_mean = fast.Dense(latent_dim, dtype="float32", name="z_mean")(x)
        z_log_var = fast.Dense(latent_dim, dtype="float32", name="z_log_var")(x)
        encoder = keras.Model(images, [z_mean, z_log_var], name="encoder")

        # === Decoder: dense -> (s/4)^2 map -> two stride-2 transposed convs ===
        z = keras.Input((latent_dim,), name="z")
        x = fast.Dense(hidden_units, activation="relu", name="dec_dense")(z)
        x = fast.Dense(base * base * 2 * filters, activation="relu", name="dec_project")(x)
        x = keras.layers.Reshape((base, base, 2 * filters), name="dec_reshape")(x)
        x = fast.Conv2DTranspose(2 * filters, 3, strides=2, padding="same",
                                         activation="relu", name="dec_deconv_0")(x)
        x = fast.Conv2DTranspose(filters, 3, strides=2, padding="same",
                                         activation="relu", name="dec_deconv_1")(x)
        x = fast.Conv2D(channels, 3, padding="same", name="dec_out")(x)
        x = keras.layers.Activation("sigmoid", dtype="float32", name="dec_sigmoid")(x)
        decoder = keras.Model(z, x, name="decoder")

        self._build(encoder, decoder, input_shape, latent_dim, value_range, float(beta), name, kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, latent_dim=latent_dim, filters=filters,
            hidden_units=hidden_units, beta=float(beta), value_range=value_range,
        )
