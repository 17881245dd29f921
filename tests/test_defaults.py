"""The small-problem families' defaults are the published ones their docstrings name.

What they learn is measured in docs/results/defaults/ (study.py); these tests
pin the architecture a user gets from `create_model(name)` with no arguments
besides the shapes, and the MLP's per-layer dropout argument.
"""

import keras
import numpy as np
import pytest

import kzoo


def _dropout_rates(model):
    return [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]


def test_mlp_defaults_are_wang_et_al_2017():
    """Three layers of 500 ReLU units, dropout 0.1 on the inputs, then 0.2, 0.2, 0.3."""
    model = kzoo.create_model("mlp", input_shape=(40, 1), num_classes=10)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [500, 500, 500, 10]
    assert _dropout_rates(model) == [0.1, 0.2, 0.2, 0.3]
    names = [layer.name for layer in model.layers]
    # Input dropout comes before the first dense layer, the 0.3 after the last one.
    assert names.index("dropout_input") < names.index("dense_0")
    assert names.index("dense_2") < names.index("dropout_2") < names.index("head")
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


@pytest.mark.parametrize(
    "kwargs, rates, input_dropout",
    [
        ({"hidden_units": (32,)}, [0.1, 0.3], True),  # the schedule follows the depth
        ({"hidden_units": ()}, [0.1], True),
        ({"hidden_units": (8, 8), "dropout": 0.25}, [0.25, 0.25], False),  # a float: as before
        ({"hidden_units": (8, 8), "dropout": 0.0}, [], False),
        ({"hidden_units": (8, 8), "dropout": (0.0, 0.5, 0.25)}, [0.5, 0.25], False),
    ],
)
def test_mlp_dropout_float_schedule_or_one_rate_per_layer(kwargs, rates, input_dropout):
    model = kzoo.create_model("mlp", input_shape=(6,), num_classes=3, **kwargs)
    assert _dropout_rates(model) == rates
    assert ("dropout_input" in [layer.name for layer in model.layers]) == input_dropout


def test_mlp_dropout_of_the_wrong_length_says_how_many_rates():
    with pytest.raises(ValueError) as err:
        kzoo.create_model("mlp", input_shape=(6,), hidden_units=(8, 8), dropout=(0.1, 0.2))
    message = str(err.value)
    assert message.startswith("Received dropout=(0.1, 0.2) for 2 hidden layers; expected a "
                              "float or 3 rates"), message
    assert "\n" not in message and message.endswith(".")
    with pytest.raises(ValueError, match=r"Received dropout=1\.5; expected a number in \[0, 1\)"):
        kzoo.create_model("mlp", input_shape=(6,), hidden_units=(8,), dropout=(0.1, 1.5))


def test_mlp_with_per_layer_dropout_round_trips_through_a_keras_file(tmp_path):
    model = kzoo.create_model("mlp", input_shape=(6,), num_classes=3, hidden_units=(8, 4))
    assert model.get_config()["dropout"] == (0.1, 0.2, 0.3)
    model.save(tmp_path / "mlp.keras")
    restored = keras.saving.load_model(tmp_path / "mlp.keras", safe_mode=True)
    assert _dropout_rates(restored) == [0.1, 0.2, 0.3]
    assert restored.get_config() == model.get_config()
    x = np.random.default_rng(0).standard_normal((2, 6)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)),
                               keras.ops.convert_to_numpy(model(x)), atol=1e-6)


@pytest.mark.parametrize("name", ["gru_classifier", "lstm_classifier", "gru_regressor",
                                  "lstm_regressor"])
def test_rnn_defaults_are_two_stacked_layers_of_128_units(name):
    cell = name.split("_")[0]
    model = kzoo.create_model(name, input_shape=(12, 1))
    first, second = model.get_layer(f"{cell}_0"), model.get_layer(f"{cell}_1")
    assert (first.units, second.units) == (128, 128)
    assert first.return_sequences and not second.return_sequences  # pooled on the last state
    assert f"{cell}_2" not in [layer.name for layer in model.layers]
    # Dropout 0.1 on the non-recurrent connections only (Zaremba et al., 2014).
    assert _dropout_rates(model) == [0.1, 0.1]
    assert first.cell.dropout == first.cell.recurrent_dropout == 0
