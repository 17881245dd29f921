"""Recurrent family: numerics against torch.nn.LSTM/GRU, masking, pooling, errors.

The generic suite (tests/test_models.py) already covers forward, fit, config
and .keras round trips for every registered RNN model.
"""

import keras
import numpy as np
import pytest

import kzoo
from kzoo.layers.recurrent import SequencePooling

# === Loading torch.nn weights into the kzoo models ===


def _gru_reorder(matrix, units):
    """torch.nn.GRU stacks gates as (r, z, n); Keras as (z, r, h)."""
    r, z, n = (matrix[i * units:(i + 1) * units] for i in range(3))
    return np.concatenate([z, r, n], axis=0)


def _keras_cell_weights(cell, torch_rnn, layer, suffix):
    """[kernel, recurrent_kernel, bias] of one Keras cell from one torch direction."""
    get = lambda key: getattr(torch_rnn, f"{key}_l{layer}{suffix}").detach().numpy()  # noqa: E731
    w_ih, w_hh, b_ih, b_hh = get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")
    units = torch_rnn.hidden_size
    if cell == "lstm":
        # Same gate order (i, f, g, o); Keras has one bias where torch has two.
        return [w_ih.T, w_hh.T, b_ih + b_hh]
    # GRU with reset_after=True keeps the input and recurrent biases apart,
    # exactly as torch does: row 0 is the input bias, row 1 the recurrent one.
    return [
        _gru_reorder(w_ih, units).T,
        _gru_reorder(w_hh, units).T,
        np.stack([_gru_reorder(b_ih, units), _gru_reorder(b_hh, units)]),
    ]


def load_torch_weights(model, cell, torch_rnn, torch_linear):
    """Copy a torch recurrent stack and its linear head into a kzoo model."""
    for i in range(torch_rnn.num_layers):
        layer = model.get_layer(f"{cell}_{i}")
        if torch_rnn.bidirectional:
            layer.forward_layer.set_weights(_keras_cell_weights(cell, torch_rnn, i, ""))
            layer.backward_layer.set_weights(_keras_cell_weights(cell, torch_rnn, i, "_reverse"))
        else:
            layer.set_weights(_keras_cell_weights(cell, torch_rnn, i, ""))
    head = model.get_layer("head")
    head.set_weights([torch_linear.weight.detach().numpy().T, torch_linear.bias.detach().numpy()])


def torch_reference(torch, torch_rnn, torch_linear, x, pooling):
    """The usual PyTorch forward: stack, then h_n (both directions) or pooled steps."""
    with torch.no_grad():
        out, state = torch_rnn(torch.as_tensor(x))
        h_n = state[0] if isinstance(state, tuple) else state  # (L*D, B, H)
        if pooling == "last":
            directions = 2 if torch_rnn.bidirectional else 1
            features = torch.cat(list(h_n[-directions:]), dim=-1)
        elif pooling == "mean":
            features = out.mean(dim=1)
        else:
            features = out.max(dim=1).values
        return torch_linear(features).numpy()


def build_pair(torch, cell, *, features, units, num_layers, bidirectional, classes, **kwargs):
    torch.manual_seed(0)
    rnn_cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    torch_rnn = rnn_cls(features, units, num_layers=num_layers, batch_first=True,
                        bidirectional=bidirectional)
    torch_linear = torch.nn.Linear(units * (2 if bidirectional else 1), classes)
    model = kzoo.create_model(
        f"{cell}_classifier", units=units, num_layers=num_layers,
        bidirectional=bidirectional, num_classes=classes, **kwargs,
    )
    load_torch_weights(model, cell, torch_rnn, torch_linear)
    return model, torch_rnn, torch_linear


@pytest.mark.torch_only
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(
    "num_layers, bidirectional, pooling",
    [(1, False, "last"), (2, True, "last"), (2, False, "mean"), (1, True, "max")],
)
def test_matches_torch_nn(cell, num_layers, bidirectional, pooling):
    torch = pytest.importorskip("torch")
    model, torch_rnn, torch_linear = build_pair(
        torch, cell, features=3, units=5, num_layers=num_layers,
        bidirectional=bidirectional, classes=4, input_shape=(7, 3), pooling=pooling,
    )
    x = np.random.default_rng(0).standard_normal((3, 7, 3)).astype("float32")
    expected = torch_reference(torch, torch_rnn, torch_linear, x, pooling)
    got = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.torch_only
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padded_tokens_match_torch_on_unpadded_sequences(cell):
    """Masking: padding after a sequence changes nothing, in either direction."""
    torch = pytest.importorskip("torch")
    model, torch_rnn, torch_linear = build_pair(
        torch, cell, features=4, units=3, num_layers=2, bidirectional=True, classes=2,
        input_shape=(None,), vocabulary_size=9, embedding_dim=4,
    )
    table = keras.ops.convert_to_numpy(model.get_layer("embedding").embeddings)
    tokens = np.array([[3, 1, 4, 1, 5, 0, 0], [2, 6, 5, 3, 5, 8, 7]], dtype="int32")
    got = keras.ops.convert_to_numpy(model(tokens, training=False))
    for row, logits in zip(tokens, got):
        kept = row[row != 0]
        expected = torch_reference(torch, torch_rnn, torch_linear, table[kept][None], "last")
        np.testing.assert_allclose(logits, expected[0], atol=1e-5, rtol=1e-5)


# === Masking and pooling without a reference library ===


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_trailing_padding_does_not_change_the_output(pooling):
    keras.utils.set_random_seed(0)
    model = kzoo.create_model(
        "gru_classifier", input_shape=(None,), vocabulary_size=10, embedding_dim=4, units=3,
        num_classes=2, bidirectional=True, pooling=pooling,
    )
    short = np.array([[4, 2, 7]], dtype="int32")
    padded = np.array([[4, 2, 7, 0, 0, 0]], dtype="int32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(short)), keras.ops.convert_to_numpy(model(padded)),
        atol=1e-6,
    )


def test_sequence_pooling_ignores_masked_steps():
    x = np.array([[[1.0, -5.0], [3.0, -1.0], [100.0, 100.0]]], dtype="float32")
    mask = np.array([[True, True, False]])
    mean = keras.ops.convert_to_numpy(SequencePooling("mean")(x, mask=mask))
    high = keras.ops.convert_to_numpy(SequencePooling("max")(x, mask=mask))
    np.testing.assert_allclose(mean, [[2.0, -3.0]])
    np.testing.assert_allclose(high, [[3.0, -1.0]])
    unmasked = keras.ops.convert_to_numpy(SequencePooling("max")(x))
    np.testing.assert_allclose(unmasked, [[100.0, 100.0]])


def test_regressor_head_and_shapes():
    model = kzoo.create_model("gru_regressor", input_shape=(12, 2), num_outputs=3, units=4)
    assert model.output_shape == (None, 3)
    assert model.get_layer("head").units == 3
    layers = [layer.name for layer in model.layers]
    assert "gru_0" in layers and "lstm_0" not in layers


def test_bidirectional_doubles_the_features():
    model = kzoo.create_model("lstm_classifier", input_shape=(6, 2), units=5,
                              bidirectional=True, num_classes=3)
    assert model.get_layer("head").input.shape == (None, 10)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"cell": "rnn"}, "cell='rnn'"),
        ({"pooling": "first"}, "pooling='first'"),
        ({"num_layers": 0}, "num_layers=0"),
        ({"dropout": 1.5}, "dropout=1.5"),
        ({"input_shape": (40,)}, "input_shape=(40,)"),
        ({"vocabulary_size": 100, "input_shape": (40, 1)}, "input_shape=(40, 1)"),
    ],
)
def test_invalid_arguments_raise_one_clear_sentence(kwargs, fragment):
    with pytest.raises(ValueError, match="Received") as info:
        kzoo.create_model("lstm_classifier", **kwargs)
    assert fragment in str(info.value)


# === Datasets and the recipe ===


def test_generated_datasets_are_offline_deterministic_and_shaped():
    import kzoo.data

    a, b = kzoo.data.load("waveforms", seed=3), kzoo.data.load("waveforms", seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.input_shape == (40, 1) and a.num_classes == 10 and "generated" in a.source
    assert set(np.unique(a.y_train)) == set(range(10))
    s = kzoo.data.load("seasonal")
    assert s.x_train.shape[1:] == (48, 1) and s.y_train.shape[1:] == (1,)
    # The split is by time: the naive forecasts are recomputable from the windows.
    last = s.info["baselines"]["last_value"]["mae"]
    np.testing.assert_allclose(last, np.abs(s.x_test[:, -1, 0] - s.y_test[:, 0]).mean(), rtol=1e-6)


def recipe_main(name):
    import pathlib
    import runpy

    path = pathlib.Path(__file__).resolve().parents[1] / "recipes" / f"{name}.py"
    return runpy.run_path(str(path))["main"]


@pytest.mark.slow
@pytest.mark.once
@pytest.mark.parametrize("task", ["classify", "forecast"])
def test_recipe_smoke_run_writes_the_run_folder(task, tmp_path):
    import json

    metrics = recipe_main("rnn")(["--smoke", "--task", task, "--units", "8",
                                  "--output-dir", str(tmp_path)])
    outputs = ["model.keras", "history.csv", "learning_curve.png", "metrics.json"]
    if task == "classify":
        assert 0.0 <= metrics["test_accuracy"] <= 1.0
        assert 0.0 < metrics["majority_class_accuracy"] < 1.0
    else:
        assert metrics["test_mae"] > 0 and metrics["last_value_mae"] > 0
        assert metrics["seasonal_naive_rmse"] >= metrics["seasonal_naive_mae"]
        outputs.append("forecast.png")
    for f in outputs:
        assert (tmp_path / f).stat().st_size > 0, f
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["smoke"] is True and "generated by kzoo" in record["dataset_source"]
    keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)


# === The PyTorch fast path (kzoo/backend/rnn.py) ===


def _outputs_and_gradients(model, x, y):
    """Outputs and gradients of a squared-error loss, through torch autograd."""
    import torch

    model.zero_grad()
    out = model(torch.as_tensor(x), training=True)
    loss = ((out - torch.as_tensor(y)) ** 2).sum()
    loss.backward()
    grads = [w.value.grad.detach().numpy().copy() for w in model.trainable_weights]
    return out.detach().numpy(), grads


@pytest.mark.torch_only
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_fast_path_matches_keras_loop_with_gradients(cell, monkeypatch):
    if keras.config.backend() != "torch":
        pytest.skip("the fast path exists only on the torch backend")
    from kzoo.backend import rnn as rnn_backend

    keras.utils.set_random_seed(0)
    # No dropout: two training calls would draw different masks, not compare the kernels.
    model = kzoo.create_model(f"{cell}_regressor", input_shape=(6, 3), units=5,
                              num_layers=2, bidirectional=True, num_outputs=2, dropout=0.0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 3)).astype("float32")
    y = rng.standard_normal((4, 2)).astype("float32")
    calls = []
    fused = getattr(rnn_backend, cell)
    monkeypatch.setattr(rnn_backend, cell, lambda *a, **k: calls.append(1) or fused(*a, **k))
    fast = _outputs_and_gradients(model, x, y)
    assert len(calls) == 4  # 2 layers x 2 directions took the fused kernel
    monkeypatch.setattr(rnn_backend, "ENABLED", False)
    slow = _outputs_and_gradients(model, x, y)
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-6)
    for a, b in zip(fast[1], slow[1]):
        np.testing.assert_allclose(a, b, atol=1e-5)
