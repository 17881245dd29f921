"""Generative adversarial networks: the original GAN and DCGAN, trained with `fit`.

Both models train with Keras' own `train_step` on every backend. The trick is
to write one step as one loss whose gradients land where they should:

    loss = d_loss(D(x), D(stop_gradient(G(z)))) + g_loss(D_frozen(G(z)))

`stop_gradient` keeps the discriminator's loss away from the generator, and
`D_frozen` (the discriminator run with `stateless_call` on stop-gradient copies
of its weights) keeps the generator's loss away from the discriminator. Each
variable therefore gets exactly the gradient of its own player's loss, and
`TwoPlayerOptimizer` hands the discriminator's gradients to one optimizer and
the generator's to the other. The two players update simultaneously from the
same step (simultaneous gradient descent) rather than one after the other.
"""

import math

import keras
from keras import ops

from kzoo import validation
from kzoo.layers import fast
from kzoo.models.base import (
    SelfTrainingModel,
    check_value_range,
    conv_generator_shapes,
    rescaling,
)
from kzoo.optimizers import Adam
from kzoo.registry import register_model, uniform_inputs
from kzoo.vocabulary import SquareImage, renamed_arguments

#: The range the players compute images in: the generator's tanh output.
UNIT_RANGE = (-1.0, 1.0)


# === Two optimizers behind Keras' one ===


@keras.saving.register_keras_serializable(package="kzoo")
class TwoPlayerOptimizer(keras.optimizers.Optimizer):
    """Routes each gradient to the optimizer of the player owning the variable.

    Keras trainers (on every backend) apply one `model.optimizer`; this one
    wraps the discriminator's and the generator's optimizers, so both keep
    their own hyperparameters and slots. On JAX its `variables` are both inner
    optimizers' variables, so they travel in the stateless training state.

    Args:
        d_optimizer: `keras.optimizers.Optimizer` for the discriminator.
        g_optimizer: `keras.optimizers.Optimizer` for the generator.
        d_variable_paths: list of str. Paths of the discriminator's
            variables; every other variable belongs to the generator.
        name: str. Defaults to `"two_player_optimizer"`.

    Example:

    >>> import keras
    >>> d, g = keras.Variable(1.0, name="d"), keras.Variable(1.0, name="g")
    >>> opt = TwoPlayerOptimizer(keras.optimizers.SGD(0.5),
    ...                          keras.optimizers.SGD(0.25), [d.path])
    >>> opt.apply([keras.ops.ones(()), keras.ops.ones(())], [d, g])
    >>> float(keras.ops.convert_to_numpy(d)), float(keras.ops.convert_to_numpy(g))
    (0.5, 0.75)
    """

    def __init__(self, d_optimizer, g_optimizer, d_variable_paths, name="two_player_optimizer"):
        super().__init__(learning_rate=0.0, name=name)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.d_variable_paths = list(d_variable_paths)

    def _split(self, grads, variables):
        d_paths = set(self.d_variable_paths)
        d, g = ([], []), ([], [])
        for grad, var in zip(grads, variables):
            side = d if var.path in d_paths else g
            side[0].append(grad)
            side[1].append(var)
        return d, g

    def build(self, var_list):
        (_, d_vars), (_, g_vars) = self._split([None] * len(var_list), var_list)
        self.d_optimizer.build(d_vars)
        self.g_optimizer.build(g_vars)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.d_optimizer.variables + self.g_optimizer.variables

    @property
    def learning_rate(self):
        return self.g_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        # Set by the base constructor only; each player keeps its own rate.
        pass

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        (d_grads, d_vars), (g_grads, g_vars) = self._split(grads, list(trainable_variables))
        self.d_optimizer.apply(d_grads, d_vars)
        self.g_optimizer.apply(g_grads, g_vars)
        self._iterations.assign_add(1)

    def finalize_variable_values(self, var_list):
        (_, d_vars), (_, g_vars) = self._split([None] * len(var_list), var_list)
        self.d_optimizer.finalize_variable_values(d_vars)
        self.g_optimizer.finalize_variable_values(g_vars)

    def get_config(self):
        return {
            "name": self.name,
            "d_optimizer": keras.saving.serialize_keras_object(self.d_optimizer),
            "g_optimizer": keras.saving.serialize_keras_object(self.g_optimizer),
            "d_variable_paths": self.d_variable_paths,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("d_optimizer", "g_optimizer"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


# === The adversarial model (shared by gan and dcgan) ===


class AdversarialModel(SelfTrainingModel, keras.Model):
    """Holds a generator and a discriminator and trains them with one loss.

    Subclasses build `self.generator` (latent vector to image in
    `value_range`) and `self.discriminator` (image to one logit) and call
    `_finish_init` (or build the discriminator's features and call
    `_assemble`). Calling the model on images returns the discriminator's
    logits (high means "real").

    A `SelfTrainingModel` whose `compile` takes one optimizer per player
    (wrapped in a `TwoPlayerOptimizer`, the one Keras applies) and saves both.
    """

    metric_trackers = {
        "d_loss_tracker": "d_loss",
        "g_loss_tracker": "g_loss",
        "real_score_tracker": "real_score",
        "fake_score_tracker": "fake_score",
    }
    loss_description = "its own loss and takes d_optimizer= and g_optimizer="
    refused_compile_arguments = ("optimizer", "loss", "metrics")

    def _assemble(self, generator, images, features, latent_dim, name, kwargs):
        """Put the one float32 logit on the discriminator's `features`, then `_finish_init`."""
        logits = fast.Dense(1, dtype="float32", name="d_logit")(features)
        discriminator = keras.Model(images, logits, name="discriminator")
        super().__init__(name=name, **kwargs)
        self._finish_init(generator, discriminator, latent_dim, f"{name}_seed")

    def _finish_init(self, generator, discriminator, latent_dim, seed_name):
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.seed_generator = keras.random.SeedGenerator(0, name=seed_name)
        self.built = True

    def call(self, images, training=False):
        return self.discriminator(images, training=training)

    @property
    def example_shape(self):
        """tuple. The shape of one image (no batch axis)."""
        return tuple(self.discriminator.inputs[0].shape[1:])

    def default_optimizer(self):
        """Each player's optimizer when `compile()` gets none: the DCGAN paper's Adam."""
        return Adam(2e-4, beta_1=0.5)

    def compile(self, d_optimizer=None, g_optimizer=None, **kwargs):
        """Configure training with one optimizer per player.

        Args:
            d_optimizer: `keras.optimizers.Optimizer` for the discriminator.
                Defaults to `Adam(2e-4, beta_1=0.5)` (the DCGAN paper's).
            g_optimizer: `keras.optimizers.Optimizer` for the generator.
                Defaults to `Adam(2e-4, beta_1=0.5)`.
            **kwargs: other `keras.Model.compile` arguments (`jit_compile`,
                `steps_per_execution`, `run_eagerly`...). No loss: the model
                defines its own.
        """
        self._refuse_compile_arguments(kwargs)
        d_optimizer = d_optimizer or self.default_optimizer()
        g_optimizer = g_optimizer or self.default_optimizer()
        paths = [v.path for v in self.discriminator.trainable_variables]
        # Routing is by variable path, so the players' paths must not overlap.
        clash = set(paths) & {v.path for v in self.generator.trainable_variables}
        if clash:
            raise ValueError(
                f"Received generator and discriminator variables sharing paths {sorted(clash)}; "
                "expected distinct layer names in the two players, so rename those layers."
            )
        super().compile(TwoPlayerOptimizer(d_optimizer, g_optimizer, paths), **kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    def get_compile_config(self):
        # The players' optimizers, as `compile` takes them (not the wrapper).
        if not self.compiled:
            return {}
        return {
            "d_optimizer": keras.saving.serialize_keras_object(self.d_optimizer),
            "g_optimizer": keras.saving.serialize_keras_object(self.g_optimizer),
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # y_pred is D(x) on the real images (the model's call).
        real_logits = ops.cast(y_pred, "float32")
        batch = ops.shape(real_logits)[0]
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        fake = self.generator(z, training=training)

        # The discriminator's loss: real -> 1, fake -> 0; no gradient to G.
        fake_logits = ops.cast(self.discriminator(ops.stop_gradient(fake), training=training), "float32")
        d_loss = ops.mean(ops.softplus(-real_logits)) + ops.mean(ops.softplus(fake_logits))

        # The generator's non-saturating loss -log D(G(z)), through a frozen D.
        frozen = [ops.stop_gradient(v.value) for v in self.discriminator.trainable_variables]
        state = [v.value for v in self.discriminator.non_trainable_variables]
        judged, _ = self.discriminator.stateless_call(frozen, state, fake, training=training)
        g_loss = ops.mean(ops.softplus(-ops.cast(judged, "float32")))

        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.real_score_tracker.update_state(ops.mean(ops.sigmoid(real_logits)))
        self.fake_score_tracker.update_state(ops.mean(ops.sigmoid(fake_logits)))
        return self._plus_layer_losses(d_loss + g_loss)

    def generate(self, n, seed=None, batch_size=256):
        """Sample `n` images in the data's range as a NumPy array.

        Args:
            n: int. How many images.
            seed: int or None. Fixes the latent vectors; None draws new ones.
            batch_size: int. Images per generator call. Defaults to 256.
        """
        return self._from_prior(
            n, seed, batch_size,
            lambda z: ops.convert_to_numpy(self.generator(z, training=False)),
        ).astype("float32")


# === GAN: fully connected players (Goodfellow et al., 2014) ===


def _image_inputs(input_shape):
    input_shape = validation.shape("input_shape", input_shape, ranks=(1, 2, 3))
    if None in input_shape:
        raise ValueError(
            f"Received input_shape={input_shape!r}; a generator needs a fixed size, "
            "so give every axis, such as input_shape=(16, 16, 1)."
        )
    return input_shape


# Registration parallel to every family's on purpose: the registry reads family, task, tiny
# and recipe from here.
@keras.saving.register_keras_serializable(package="kzoo")
@register_model(
    "gan",
    family="generative",
    task="self_supervised",
    tiny={"input_shape": (6, 6, 1), "latent_dim": 4, "hidden_units": (8,)},
    tiny_inputs=uniform_inputs(0.0, 1.0),
    recipe="recipes/gan.py",
)
@renamed_arguments(image_shape="input_shape")
class GAN(AdversarialModel):
    """The original GAN: fully connected generator and discriminator.

    The generator maps a standard normal latent vector through dense layers
    (ReLU, batch norm) to an image in `value_range`; the discriminator maps an
    image through dense layers (leaky ReLU, dropout) to one logit. Training
    uses the non-saturating generator loss `-log D(G(z))`. Calling the model
    on images returns the discriminator's logits; `generate(n)` samples.

    Args:
        input_shape: tuple. Shape of one image, e.g. `(16, 16, 1)`; any rank
            1 to 3. Defaults to `(16, 16, 1)`.
        latent_dim: int. Size of the latent vector. Defaults to 64.
        hidden_units: tuple of int. Widths of the generator's hidden layers;
            the discriminator uses them in reverse order. Defaults to
            `(256, 512)`.
        dropout: float. Dropout in the discriminator. Defaults to 0.3.
        value_range: tuple. `(low, high)` of the training images; the
            generator's outputs lie in it. Defaults to `(0.0, 1.0)`.
        name: str. Model name. Defaults to `"gan"`.

    Example:

    >>> import numpy as np, kzoo
    >>> gan = kzoo.create_model("gan", input_shape=(8, 8, 1), latent_dim=8,
    ...                         hidden_units=(16,))
    >>> gan.compile()
    >>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1))
    >>> history = gan.fit(x, batch_size=16, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['d_loss', 'fake_score', 'g_loss', 'loss', 'real_score']
    >>> samples = gan.generate(4, seed=0)
    >>> samples.shape, bool(samples.min() >= 0 and samples.max() <= 1)
    ((4, 8, 8, 1), True)
    """

    def __init__(
        self,
        input_shape=(16, 16, 1),
        latent_dim=64,
        hidden_units=(256, 512),
        dropout=0.3,
        value_range=(0.0, 1.0),
        name="gan",
        **kwargs,
    ):
        input_shape = _image_inputs(input_shape)
        latent_dim = validation.positive_int("latent_dim", latent_dim)
        hidden_units = validation.int_sequence("hidden_units", hidden_units)
        dropout = validation.fraction("dropout", dropout)
        value_range = check_value_range(value_range)
        pixels = math.prod(input_shape)

        # === Generator: z -> dense blocks -> tanh image in value_range ===
        z = keras.Input((latent_dim,), name="latent")
        x = z
        for i, units in enumerate(hidden_units):
            x = fast.Dense(units, use_bias=False, name=f"g_dense_{i}")(x)
            x = fast.BatchNormalization(name=f"g_bn_{i}")(x)
            x = keras.layers.ReLU(name=f"g_relu_{i}")(x)
        x = fast.Dense(pixels, name="g_out")(x)
        x = keras.layers.Activation("tanh", dtype="float32", name="g_tanh")(x)
        x = keras.layers.Reshape(input_shape, name="g_image")(x)
        x = rescaling(UNIT_RANGE, value_range, name="g_rescale")(x)
        generator = keras.Model(z, x, name="generator")

        # === Discriminator: image -> dense blocks -> one logit ===
        images = keras.Input(input_shape, name="images")
        x = rescaling(value_range, UNIT_RANGE, name="d_rescale")(images)
        x = keras.layers.Flatten(name="d_flatten")(x)
        for i, units in enumerate(reversed(hidden_units)):
            x = fast.Dense(units, name=f"d_dense_{i}")(x)
            x = keras.layers.LeakyReLU(0.2, name=f"d_lrelu_{i}")(x)
            if dropout:
                x = fast.Dropout(dropout, name=f"d_dropout_{i}")(x)
        self._assemble(generator, images, x, latent_dim, name, kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, latent_dim=latent_dim, hidden_units=hidden_units,
            dropout=dropout, value_range=value_range,
        )


# === DCGAN: convolutional players (Radford et al., 2016) ===


@keras.saving.register_keras_serializable(package="kzoo")
@register_model(
    "dcgan",
    family="generative",
    task="self_supervised",
    tiny={"input_shape": (8, 8, 1), "latent_dim": 4, "filters": 4},
    tiny_inputs=uniform_inputs(0.0, 1.0),
    recipe="recipes/dcgan.py",
)
@renamed_arguments(image_size=SquareImage(16, 1), channels=SquareImage(16, 1))
class DCGAN(AdversarialModel):
    """DCGAN: transposed-convolution generator and strided-conv discriminator.

    The generator projects the latent vector to a `(size/4, size/4,
    2*filters)` map, then two stride-2 transposed convolutions (batch norm,
    ReLU) double it twice; a 3x3 convolution with tanh gives the image. The
    discriminator mirrors it: two stride-2 convolutions (leaky ReLU, batch
    norm on the second, none on the first as in the paper), then one logit.
    Any square size that is a multiple of 4 works (16, 28, 32, 64...).

    Args:
        input_shape: tuple. `(size, size, channels)` of the images: square,
            the size a multiple of 4, 1 (grayscale) or 3 (colour) channels.
            Defaults to `(16, 16, 1)`.
        latent_dim: int. Size of the latent vector. Defaults to 64.
        filters: int. Filters of the generator's last hidden layer and the
            discriminator's first; the other layer has twice as many.
            Defaults to 64.
        dropout: float. Dropout before the discriminator's logit. Defaults
            to 0.3.
        value_range: tuple. `(low, high)` of the training images; the
            generator's outputs lie in it. Defaults to `(0.0, 1.0)`.
        name: str. Model name. Defaults to `"dcgan"`.

    Example:

    >>> import numpy as np, kzoo
    >>> gan = kzoo.create_model("dcgan", input_shape=(8, 8, 1), latent_dim=8, filters=4)
    >>> gan.compile()
    >>> x = np.random.default_rng(0).uniform(size=(32, 8, 8, 1))
    >>> _ = gan.fit(x, batch_size=16, epochs=1, verbose=0)
    >>> gan.generate(3, seed=0).shape
    (3, 8, 8, 1)
    >>> tuple(gan(x[:2]).shape)  # the discriminator's logits
    (2, 1)
    """

    def __init__(
        self,
        input_shape=(16, 16, 1),
        latent_dim=64,
        filters=64,
        dropout=0.3,
        value_range=(0.0, 1.0),
        name="dcgan",
        **kwargs,
    ):
        input_shape, channels, base, latent_dim, filters = conv_generator_shapes(
            input_shape, latent_dim, filters
        )
        dropout = validation.fraction("dropout", dropout)
        value_range = check_value_range(value_range)

        # === Generator: z -> (size/4)^2 map -> two 2x transposed convs -> image ===
        z = keras.Input((latent_dim,), name="latent")
        x = fast.Dense(base * base * 2 * filters, use_bias=False, name="g_project")(z)
        x = fast.BatchNormalization(name="g_project_bn")(x)
        x = keras.layers.ReLU(name="g_project_relu")(x)
        x = keras.layers.Reshape((base, base, 2 * filters), name="g_reshape")(x)  # (B, s/4, s/4, 2f)
        for i, width in enumerate((2 * filters, filters)):
            x = fast.Conv2DTranspose(
                width, 4, strides=2, padding="same", use_bias=False, name=f"g_deconv_{i}"
            )(x)
            x = fast.BatchNormalization(name=f"g_bn_{i}")(x)
            x = keras.layers.ReLU(name=f"g_relu_{i}")(x)  # (B, s/2 then s, ...)
        x = fast.Conv2D(channels, 3, padding="same", name="g_out")(x)
        x = keras.layers.Activation("tanh", dtype="float32", name="g_tanh")(x)
        x = rescaling(UNIT_RANGE, value_range, name="g_rescale")(x)
        generator = keras.Model(z, x, name="generator")

        # === Discriminator: image -> two stride-2 convs -> one logit ===
        images = keras.Input(input_shape, name="images")
        x = rescaling(value_range, UNIT_RANGE, name="d_rescale")(images)
        x = fast.Conv2D(filters, 4, strides=2, padding="same", name="d_conv_0")(x)
        x = keras.layers.LeakyReLU(0.2, name="d_lrelu_0")(x)
        x = fast.Conv2D(2 * filters, 4, strides=2, padding="same", use_bias=False,
                                name="d_conv_1")(x)
        x = fast.BatchNormalization(name="d_bn_1")(x)
        x = keras.layers.LeakyReLU(0.2, name="d_lrelu_1")(x)  # (B, s/4, s/4, 2f)
        x = keras.layers.Flatten(name="d_flatten")(x)
        if dropout:
            x = fast.Dropout(dropout, name="d_dropout")(x)
        self._assemble(generator, images, x, latent_dim, name, kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, latent_dim=latent_dim, filters=filters,
            dropout=dropout, value_range=value_range,
        )
