"""GAN-specific checks: each player gets exactly its own loss's gradient."""

import keras
import numpy as np
import pytest
from recipe_runs import smoke_run

import kzoo
from kzoo.models.gan import AdversarialModel, TwoPlayerOptimizer


class LinearGame(AdversarialModel):
    """A game small enough to differentiate by hand.

    The generator ignores z and outputs its bias `b`; the discriminator is
    linear, `logit = w . x + c`.
    """

    def __init__(self, b, w, c=0.0, name="linear_game"):
        z = keras.Input((1,))
        fake = keras.layers.Dense(
            2, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(b),
            name="g_dense",
        )(z)
        x = keras.Input((2,))
        logit = keras.layers.Dense(
            1, kernel_initializer=keras.initializers.Constant(w),
            bias_initializer=keras.initializers.Constant(c), name="d_dense",
        )(x)
        super().__init__(name=name)
        self._finish_init(keras.Model(z, fake), keras.Model(x, logit), 1, "linear_game_seed")
        self._set_config(b=b, w=w, c=c)


def one_sgd_step(model, x):
    model.compile(d_optimizer=keras.optimizers.SGD(1.0), g_optimizer=keras.optimizers.SGD(1.0))
    model.train_on_batch(x)
    d_kernel, d_bias = (keras.ops.convert_to_numpy(v) for v in model.discriminator.weights)
    g_bias = keras.ops.convert_to_numpy(model.generator.weights[1])
    return d_kernel[:, 0], float(d_bias[0]), g_bias


def test_discriminator_gets_only_its_own_gradient():
    # With w = c = 0 every logit is 0, so d/dw of softplus(-D(x)) + softplus(D(fake))
    # is 0.5 * (b - mean(x)) and d/dc is 0. Were the generator's loss
    # softplus(-D(fake)) leaking into D, d/dw would lose the b term and d/dc be -0.5.
    x = np.array([[1.0, 3.0], [3.0, 1.0]], "float32")
    w, c, _ = one_sgd_step(LinearGame(b=0.5, w=0.0), x)  # b = 0.5 on both pixels
    b = np.array([0.5, 0.5])
    np.testing.assert_allclose(w, 0.5 * x.mean(axis=0) - 0.5 * b, atol=1e-6)
    assert abs(c) < 1e-6


def test_generator_gets_only_its_own_gradient():
    # At b = 0, c = 0: d/db softplus(-(w . b + c)) = -0.5 w. Were the
    # discriminator's softplus(D(fake)) reaching G, it would add +0.5 w.
    x = np.ones((2, 2), "float32")
    _, _, g_bias = one_sgd_step(LinearGame(b=0.0, w=1.0), x)
    np.testing.assert_allclose(g_bias, [0.5, 0.5], atol=1e-6)


def test_two_player_optimizer_routes_by_variable():
    d, g = keras.Variable([1.0, 1.0], name="d_weight"), keras.Variable([1.0], name="g_weight")
    opt = TwoPlayerOptimizer(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.5), [d.path])
    opt.build([d, g])
    assert len(opt.variables) == len(opt._variables) + len(opt.d_optimizer.variables) + len(
        opt.g_optimizer.variables
    )
    opt.apply([keras.ops.ones((2,)), keras.ops.ones((1,))], [d, g])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(d), [0.9, 0.9], atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(g), [0.5], atol=1e-6)
    assert int(opt.d_optimizer.iterations) == 1 and int(opt.g_optimizer.iterations) == 1


def test_gan_learns_a_constant_image():
    # Real "images" are all 0.8: the generator must move its outputs there.
    keras.utils.set_random_seed(0)
    gan = kzoo.create_model("gan", input_shape=(4,), latent_dim=2, hidden_units=(16,), dropout=0.0)
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-2, beta_1=0.5),
                g_optimizer=keras.optimizers.Adam(1e-2, beta_1=0.5))
    before = gan.generate(256, seed=0).mean()
    gan.fit(np.full((512, 4), 0.8, "float32"), batch_size=64, epochs=30, verbose=0)
    after = gan.generate(256, seed=0)
    assert abs(before - 0.8) > 0.2
    assert abs(after.mean() - 0.8) < 0.1, after.mean()


def test_generate_is_seeded_and_in_range():
    gan = kzoo.create_model("dcgan", input_shape=(8, 8, 1), latent_dim=4, filters=4, value_range=(-1.0, 3.0))
    a, b = gan.generate(5, seed=3), gan.generate(5, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5, 8, 8, 1) and a.min() >= -1.0 and a.max() <= 3.0


def test_compiled_model_reloads_with_its_optimizers(tmp_path):
    gan = kzoo.create_model("gan", input_shape=(4,), latent_dim=2, hidden_units=(4,))
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.SGD(0.1))
    gan.fit(np.zeros((8, 4), "float32"), batch_size=4, epochs=1, verbose=0)
    gan.save(tmp_path / "gan.keras")
    restored = keras.saving.load_model(tmp_path / "gan.keras", safe_mode=True)
    assert isinstance(restored.d_optimizer, keras.optimizers.Adam)
    assert isinstance(restored.g_optimizer, keras.optimizers.SGD)
    np.testing.assert_allclose(restored.generate(3, seed=1), gan.generate(3, seed=1), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (30, 30, 1)}, "multiple of 4"),
        ({"input_shape": (16, 16, 2)}, r"expected \(1, 3\) channels"),
        ({"value_range": (1.0, 0.0)}, "low < high"),
    ],
)
def test_dcgan_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kzoo.create_model("dcgan", **kwargs)


@pytest.mark.slow
@pytest.mark.once
@pytest.mark.parametrize("recipe", ["gan", "dcgan"])
def test_recipe_smoke(recipe, tmp_path):
    import json

    smoke_run(recipe, tmp_path)
    for name in ("model.keras", "history.csv", "metrics.json", "samples_epoch_001.png"):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert len(metrics["samples_class_fractions"]) == 10
    assert abs(sum(metrics["samples_class_fractions"]) - 1.0) < 1e-3
    assert 0.0 <= metrics["samples_label_entropy"] <= 1.0
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert restored.generate(2, seed=0).shape == (2, 16, 16, 1)
