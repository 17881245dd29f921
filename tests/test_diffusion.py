"""Diffusion-specific checks: schedules, the objective, EMA, and the samplers."""

import math

import keras
import numpy as np
import pytest
from recipe_runs import smoke_run

import kzoo
from kzoo.models.diffusion import noise_schedule


def tiny_ddpm(**overrides):
    return kzoo.create_model("ddpm", **{**kzoo.registry.get_entry("ddpm").tiny, **overrides})


def test_schedules_match_their_definitions():
    linear = noise_schedule("linear", 100)
    np.testing.assert_allclose([linear[0], linear[-1]], [1e-3, 0.2])  # scaled by 1000 / T
    assert np.all(np.diff(linear) > 0)
    abar = np.cumprod(1 - noise_schedule("cosine", 50))
    t = np.arange(1, 51) / 50
    f = np.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    np.testing.assert_allclose(abar[:-1], f[:-1], rtol=1e-6)  # the last beta is clipped
    with pytest.raises(ValueError, match="schedule='quadratic'"):
        noise_schedule("quadratic", 10)


def test_loss_is_the_noise_prediction_error():
    model = tiny_ddpm()
    model.compile()
    x = np.random.default_rng(0).uniform(size=(4, 4, 4, 1)).astype("float32")
    out = {k: keras.ops.convert_to_numpy(v) for k, v in model(x).items()}
    expected = np.mean((out["predicted_noise"] - out["noise"]) ** 2)
    result = model.evaluate(x, batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["loss"], expected, rtol=1e-5)
    # At inference the timesteps and noise are fixed, so evaluation repeats.
    again = model.evaluate(x, batch_size=4, verbose=0, return_dict=True)
    assert result["loss"] == again["loss"]
    assert np.std(out["noise"]) > 0.5


def test_ema_follows_the_weights_with_warmup():
    model = tiny_ddpm(ema_momentum=0.9)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    # Make the average differ from the weights so the update is visible.
    for e in model.ema_network.weights:
        e.assign(np.zeros(e.shape, "float32"))
    before = [keras.ops.convert_to_numpy(w) for w in model.network.weights]
    model.train_on_batch(np.random.default_rng(0).uniform(size=(4, 4, 4, 1)))
    decay = min(0.9, 2 / 11)  # first update: (1 + n) / (10 + n) with n = 1
    for w, e in zip(before, model.ema_network.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(e), (1 - decay) * w, atol=1e-6)
    assert float(keras.ops.convert_to_numpy(model.ema_updates)) == 1.0


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_samplers_recover_the_data_with_an_oracle_denoiser(sampler):
    # If the data is one image x*, the ideal denoiser predicts
    # eps = (x_t - sqrt(abar_t) x*) / sqrt(1 - abar_t); both samplers must then end at x*.
    model = tiny_ddpm(num_timesteps=50, schedule="linear")
    target = np.linspace(-0.9, 0.9, 16).reshape(1, 4, 4, 1)

    def oracle(x, t, use_ema):
        abar = model.alpha_bars[t]
        return (x - np.sqrt(abar) * target) / np.sqrt(1 - abar)

    model._predict_noise = oracle
    images = model.generate(3, seed=0, sampler=sampler, steps=10)
    expected = np.broadcast_to((target + 1) / 2, images.shape)  # value_range (0, 1)
    np.testing.assert_allclose(images, expected, atol=1e-4)


def test_generate_is_seeded_and_in_range():
    model = tiny_ddpm(value_range=(-2.0, 2.0))
    a = model.generate(3, seed=1, steps=3)
    np.testing.assert_array_equal(a, model.generate(3, seed=1, steps=3))
    assert a.shape == (3, 4, 4, 1) and a.min() >= -2.0 and a.max() <= 2.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (6, 6, 1), "channel_multipliers": (1, 2, 2)}, "multiple of 4"),
        ({"input_shape": (8, 6, 1)}, "expected a square"),
        ({"schedule": "quadratic"}, "schedule="),
        ({"ema_momentum": 1.5}, "ema_momentum=1.5"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kzoo.create_model("ddpm", **kwargs)


def test_generate_rejects_an_unknown_sampler():
    with pytest.raises(ValueError, match="sampler='euler'"):
        tiny_ddpm().generate(2, sampler="euler")


@pytest.mark.slow
@pytest.mark.once
def test_recipe_smoke(tmp_path):
    import json

    smoke_run("diffusion", tmp_path, "--filters", "8", "--timesteps", "20", "--ddpm-samples", "4")
    for name in ("model.keras", "metrics.json", "samples_epoch_001.png", "samples_ddpm.png"):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert metrics["test_noise_mse"] > 0
    for prefix in ("ddim", "ddpm"):
        assert abs(sum(metrics[f"{prefix}_class_fractions"]) - 1.0) < 1e-3


def test_compile_rejects_a_loss_and_reloads_compiled(tmp_path):
    model = tiny_ddpm()
    with pytest.raises(ValueError, match=r"defines its own loss \(noise-prediction MSE\), "
                                         r"so leave loss out"):
        model.compile(loss="mse")
    model.compile()
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(2e-4)
    model.save(tmp_path / "ddpm.keras")
    restored = keras.saving.load_model(tmp_path / "ddpm.keras", safe_mode=True)
    assert [m.name for m in restored.metrics] == [m.name for m in model.metrics]
