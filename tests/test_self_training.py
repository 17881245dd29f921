"""The models that train themselves (GANs, VAEs, DDPM) share one base and one
value-range helper; tiny inputs are declared by their value range."""

import keras
import numpy as np
import pytest
from harness import tiny_inputs, tiny_model

import kzoo
from kzoo.models.base import SelfTrainingModel, rescale, rescaling
from kzoo.registry import get_entry, uniform_inputs

SELF_TRAINING = [n for n in kzoo.list_models()
                 if issubclass(get_entry(n).builder, SelfTrainingModel)]


def test_the_generative_models_share_the_base():
    assert {"gan", "dcgan", "vae", "conv_vae", "ddpm"} <= set(SELF_TRAINING)


@pytest.mark.parametrize("name", SELF_TRAINING)
@pytest.mark.parametrize("key", ["loss", "metrics"])
def test_compile_refuses_a_loss_in_one_sentence(name, key):
    model = tiny_model(name)
    with pytest.raises(ValueError) as err:
        model.compile(**{key: "mse"})
    message = str(err.value)
    assert message.startswith(f"Received compile({key}=...) for {model.name!r}; this model "
                              f"defines its own loss"), message
    assert message.endswith(f"so leave {key} out.") and "\n" not in message
    assert not model.compiled


def test_a_gan_refuses_one_optimizer_and_names_its_two():
    model = tiny_model("gan")
    with pytest.raises(ValueError, match=r"compile\(optimizer=\.\.\.\).*takes d_optimizer= "
                                         r"and g_optimizer=, so leave optimizer out\."):
        model.compile(optimizer=keras.optimizers.SGD(0.1))


@pytest.mark.parametrize("name", SELF_TRAINING)
def test_metrics_are_the_loss_and_its_declared_parts(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model(name)
    model.compile()
    history = model.fit(tiny_inputs(name, model, batch=4), batch_size=4, epochs=1, verbose=0)
    declared = list(type(model).metric_trackers.values())
    assert [m.name for m in model.metrics] == ["loss", *declared]
    assert sorted(history.history) == sorted(["loss", *declared])

    # A compiled file reloads compiled, with the optimizer's state (one step taken).
    model.save(tmp_path / f"{name}.keras")
    restored = keras.saving.load_model(tmp_path / f"{name}.keras", safe_mode=True)
    assert restored.compiled and type(restored.optimizer) is type(model.optimizer)
    assert int(keras.ops.convert_to_numpy(restored.optimizer.iterations)) == 1
    for saved, loaded in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded),
                                      keras.ops.convert_to_numpy(saved))


def test_the_default_optimizer_is_the_models_own():
    ddpm, vae = tiny_model("ddpm"), tiny_model("vae")
    ddpm.compile()
    vae.compile()
    lr = [float(keras.ops.convert_to_numpy(m.optimizer.learning_rate)) for m in (ddpm, vae)]
    assert lr == pytest.approx([2e-4, 1e-3])
    gan = tiny_model("gan")
    gan.compile()
    assert gan.d_optimizer is not gan.g_optimizer
    for opt in (gan.d_optimizer, gan.g_optimizer):
        assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(2e-4)
        assert opt.beta_1 == pytest.approx(0.5)


# === The value-range helper ===
@pytest.mark.parametrize("source, target", [((0.0, 255.0), (-1.0, 1.0)),
                                            ((-3.0, 5.0), (0.0, 1.0)),
                                            ((-1.0, 1.0), (0.2, 0.7))])
def test_rescale_maps_one_range_onto_the_other(source, target):
    x = np.random.default_rng(0).uniform(*source, size=64)
    expected = target[0] + (x - source[0]) / (source[1] - source[0]) * (target[1] - target[0])
    np.testing.assert_allclose(rescale(x, source, target), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rescale(np.array(source), source, target), target, atol=1e-12)
    np.testing.assert_allclose(rescale(rescale(x, source, target), target, source), x, atol=1e-9)
    layer = rescaling(source, target)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x.astype("float32"))),
                               expected, rtol=1e-5, atol=1e-4)
    # The inverse map is a different function: swapping the ranges must not pass.
    assert not np.allclose(rescale(x, target, source), expected)


@pytest.mark.parametrize("name", ["gan", "vae", "ddpm"])
def test_value_range_is_checked_in_one_sentence(name):
    with pytest.raises(ValueError, match=r"^Received value_range=\(1\.0, 0\.0\); expected "
                                         r"\(low, high\) with low < high"):
        kzoo.create_model(name, value_range=(1.0, 0.0))


# === Tiny inputs declared by value range ===
@pytest.mark.parametrize("name", SELF_TRAINING)
def test_declared_tiny_inputs_take_the_tiny_models_shape(name):
    model = tiny_model(name)
    x = tiny_inputs(name, model, batch=3, seed=1)
    assert x.shape == (3, *model.example_shape) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() < 1.0
    np.testing.assert_array_equal(x, tiny_inputs(name, model, batch=3, seed=1))


def test_uniform_inputs_draw_in_their_range_and_the_model_input_shape():
    model = kzoo.create_model("mlp", input_shape=(5,), num_classes=2, hidden_units=(4,))
    x = uniform_inputs(-3.0, -2.0).sample(model, 4, np.random.default_rng(0))
    assert x.shape == (4, 5) and x.min() >= -3.0 and x.max() < -2.0
    expected = np.random.default_rng(0).uniform(-3.0, -2.0, size=(4, 5)).astype("float32")
    np.testing.assert_array_equal(x, expected)


def test_uniform_inputs_refuse_an_empty_range():
    with pytest.raises(ValueError, match=r"^Received uniform_inputs\(1\.0, 1\.0\); expected two "
                                         r"numbers with low < high"):
        uniform_inputs(1.0, 1.0)


def test_registry_keeps_callable_tiny_inputs_and_refuses_other_values():
    calls = []

    def inputs(batch, rng):
        calls.append(batch)
        return rng.standard_normal((batch, 2)).astype("float32")

    try:
        @kzoo.register_model("test_callable_inputs", family="example", task="regression",
                             tiny={"input_dim": 2}, tiny_inputs=inputs)
        def linear(input_dim=2):
            x = keras.Input((input_dim,))
            return keras.Model(x, keras.layers.Dense(1)(x))

        model = tiny_model("test_callable_inputs")
        assert tiny_inputs("test_callable_inputs", model, batch=3).shape == (3, 2)
        assert calls == [3]
    finally:
        kzoo.registry.unregister_model("test_callable_inputs")
    with pytest.raises(TypeError, match=r"^Received tiny_inputs=\(0, 1\) for model 'bad'; "
                                        r"expected uniform_inputs\(low, high\)"):
        kzoo.register_model("bad", family="example", task="regression", tiny={},
                            tiny_inputs=(0, 1))
