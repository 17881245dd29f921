"""VAE-specific checks: the sampling layer, the loss against NumPy, the ELBO."""

import keras
import numpy as np
import pytest
from recipe_runs import smoke_run

import kzoo
from kzoo.models.vae import GaussianSampling


def test_sampling_draws_from_the_posterior_in_training_only():
    layer = GaussianSampling(seed=1)
    mean = np.full((20000, 2), [1.0, -2.0], "float32")
    log_var = np.full((20000, 2), [0.0, np.log(0.25)], "float32")
    z = keras.ops.convert_to_numpy(layer([mean, log_var], training=True))
    np.testing.assert_allclose(z.mean(axis=0), [1.0, -2.0], atol=0.03)
    np.testing.assert_allclose(z.std(axis=0), [1.0, 0.5], atol=0.03)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer([mean, log_var])), mean)


def numpy_negative_elbo_at_mean(model, x):
    out = {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}
    p = np.clip(out["reconstruction"].reshape(len(x), -1).astype("float64"), 1e-6, 1 - 1e-6)
    t = x.reshape(len(x), -1)
    reconstruction = -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum(axis=1).mean()
    m, lv = out["z_mean"].astype("float64"), out["z_log_var"].astype("float64")
    kl = (-0.5 * (1 + lv - m**2 - np.exp(lv)).sum(axis=1)).mean()
    return reconstruction, kl


@pytest.mark.parametrize("name", ["vae", "conv_vae"])
def test_loss_matches_numpy_reference(name):
    keras.utils.set_random_seed(0)
    model = kzoo.create_model(name, **kzoo.registry.get_entry(name).tiny)
    model.compile()
    x = np.random.default_rng(0).uniform(size=(8, *model.input_shape[1:])).astype("float32")
    result = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    reconstruction, kl = numpy_negative_elbo_at_mean(model, x)
    np.testing.assert_allclose(result["reconstruction_loss"], reconstruction, rtol=1e-4)
    np.testing.assert_allclose(result["kl_loss"], kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result["loss"], reconstruction + kl, rtol=1e-4)


def test_beta_weights_the_kl_term():
    x = np.random.default_rng(0).uniform(size=(8, 6, 6, 1)).astype("float32")
    results = []
    for beta in (1.0, 3.0):
        keras.utils.set_random_seed(0)
        model = kzoo.create_model("vae", input_shape=(6, 6, 1), latent_dim=2, hidden_units=(8,),
                                  beta=beta)
        model.compile()
        results.append(model.evaluate(x, batch_size=8, verbose=0, return_dict=True))
    for r, beta in zip(results, (1.0, 3.0)):
        np.testing.assert_allclose(r["loss"], r["reconstruction_loss"] + beta * r["kl_loss"],
                                   rtol=1e-5)


def test_training_raises_the_elbo_on_digits():
    from sklearn.datasets import load_digits

    x = (load_digits().images[:512] / 16.0).astype("float32")[..., None]
    keras.utils.set_random_seed(0)
    model = kzoo.create_model("vae", input_shape=(8, 8, 1), latent_dim=4, hidden_units=(64,))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = model.elbo(x, num_samples=2)
    model.fit(x, batch_size=64, epochs=15, verbose=0)
    after = model.elbo(x, num_samples=2)
    # An untrained decoder pays about 64 * log(2) = 44 nats; a trained one far less.
    assert before < -40 and after > before + 10, (before, after)


def test_value_range_maps_in_and_out():
    model = kzoo.create_model("vae", input_shape=(4,), latent_dim=2, hidden_units=(4,),
                              value_range=(-1.0, 1.0))
    samples = model.generate(16, seed=0)
    assert samples.min() >= -1.0 and samples.max() <= 1.0 and samples.min() < 0.0
    np.testing.assert_array_equal(samples, model.generate(16, seed=0))


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("conv_vae", {"input_shape": (10, 10, 1)}, "multiple of 4"),
        ("vae", {"beta": -1.0}, "beta=-1.0"),
        ("vae", {"latent_dim": 0}, "latent_dim=0"),
    ],
)
def test_rejects_bad_arguments(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kzoo.create_model(name, **kwargs)


@pytest.mark.slow
@pytest.mark.once
def test_recipe_smoke(tmp_path):
    import json

    smoke_run("vae", tmp_path)
    for name in ("model.keras", "history.csv", "metrics.json", "samples_epoch_001.png"):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert metrics["test_elbo"] < 0
    assert abs(sum(metrics["samples_class_fractions"]) - 1.0) < 1e-3
