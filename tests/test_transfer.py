"""Transfer learning helpers: freezing by pattern and stage, per-layer learning rates."""

import keras
import numpy as np
import pytest
from recipe_runs import load_recipe, smoke_run

import kzoo
from kzoo.training import transfer


def tiny_resnet():
    return kzoo.create_model(
        "resnet20_cifar", input_shape=(8, 8, 3), num_classes=3, width=4, stage_blocks=(1, 1, 1)
    )


def data(n=8, shape=(8, 8, 3), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape)).astype("float32"), rng.integers(0, classes, n)


def values(layer):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in layer.weights]


def compile_model(model, optimizer=None):
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def test_stages_and_pattern_matching():
    model = tiny_resnet()
    assert transfer.stages(model) == ["stem", "stage1", "stage2", "stage3"]
    names = [layer.name for layer in transfer.match_layers(model, ["stem_*", "head"])]
    assert names == ["stem_conv", "stem_bn", "stem_act", "head"]
    with pytest.raises(ValueError, match="'stage9_\\*', which matches no layer"):
        transfer.freeze(model, "stage9_*")
    with pytest.raises(ValueError, match="Received stage 'stage7'"):
        transfer.freeze_stages(model, ["stage7"])
    with pytest.raises(TypeError, match="Received patterns=3"):
        transfer.freeze(model, 3)


def test_freeze_stages_freezes_exactly_those_layers():
    model = tiny_resnet()
    frozen = transfer.freeze_stages(model, ["stem", "stage1"])
    assert frozen and all(n.startswith(("stem_", "stage1_")) for n in frozen)
    trainable = {layer.name for layer in model.layers if layer.trainable_weights}
    assert not any(n.startswith(("stem_", "stage1_")) for n in trainable)
    assert "stage2_block1_1_conv" in trainable and "head" in trainable


def test_frozen_backbone_trains_only_the_head_and_keeps_batch_norm_statistics():
    model = tiny_resnet()
    transfer.freeze_backbone(model)
    assert [layer.name for layer in model.layers if layer.trainable_weights] == ["head"]
    before = {layer.name: values(layer) for layer in model.layers if layer.weights}
    compile_model(model)
    x, y = data()
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    for layer in model.layers:
        if not layer.weights:
            continue
        same = all(np.array_equal(a, b) for a, b in zip(before[layer.name], values(layer)))
        # Frozen batch norms run in inference mode: moving statistics stay put too.
        assert same == (layer.name != "head"), layer.name


def test_unfreeze_last_stages():
    model = tiny_resnet()
    trainable = transfer.unfreeze_last_stages(model, 1)
    assert trainable[-1] == "head"
    assert all(n.startswith("stage3_") for n in trainable[:-1])
    assert not any(n.endswith("_bn") for n in trainable)  # batch norms stay frozen
    with_bn = transfer.unfreeze_last_stages(model, 2, train_batch_norm=True)
    assert "stage2_block1_1_bn" in with_bn and "stage1_block1_1_conv" not in with_bn
    assert transfer.unfreeze_last_stages(model, 0) == ["head"]
    with pytest.raises(ValueError, match="num_stages=5"):
        transfer.unfreeze_last_stages(model, 5)


def layered_model():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, activation="tanh", name="stage1_dense")(inputs)
    x = keras.layers.Dense(6, activation="tanh", name="stage2_dense")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_per_layer_learning_rates_scale_adam_updates_exactly():
    # Adam's first step moves every weight by lr * sign(grad): scaling the
    # gradient would change nothing, so this checks the update itself is scaled.
    model = layered_model()
    optimizer = transfer.layerwise_learning_rates(
        keras.optimizers.Adam(1e-2, epsilon=1e-12), model, {"stage1_*": 0.1, "stage2_*": 0.0}
    )
    compile_model(model, optimizer)
    before = {n: values(model.get_layer(n)) for n in ("stage1_dense", "stage2_dense", "head")}
    x, y = data(16, (4,))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for name, lr in (("stage1_dense", 1e-3), ("stage2_dense", 0.0), ("head", 1e-2)):
        for old, new in zip(before[name], values(model.get_layer(name))):
            np.testing.assert_allclose(np.abs(new - old), lr, rtol=1e-3, atol=1e-7)


def test_per_layer_learning_rates_scale_schedules_and_save(tmp_path):
    model = layered_model()
    schedule = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=10)
    optimizer = transfer.layerwise_learning_rates(
        keras.optimizers.SGD(schedule), model, {"stage*": 0.5}
    )
    scaled = [o for o in optimizer.optimizers if o.name.endswith("_x0.5")]
    assert len(scaled) == 1
    assert float(scaled[0].learning_rate) == pytest.approx(5e-3)
    compile_model(model, optimizer)
    x, y = data(16, (4,))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    # After 4 of 10 cosine steps, the scaled group's rate is half the base rate.
    assert float(scaled[0].learning_rate) == pytest.approx(0.5 * float(schedule(4)), rel=1e-5)
    path = tmp_path / "layerwise.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert type(restored.optimizer).__name__ == "MultiOptimizer"


def test_first_matching_pattern_wins_and_bad_multipliers_raise():
    model = layered_model()
    opt = transfer.layerwise_learning_rates(
        keras.optimizers.SGD(1.0), model, {"stage1_*": 0.25, "stage*": 0.5}
    )
    assert sorted(float(o.learning_rate) for o in opt.optimizers) == [0.25, 0.5, 1.0]
    with pytest.raises(ValueError, match="Received multiplier -1"):
        transfer.layerwise_learning_rates(keras.optimizers.SGD(), model, {"head": -1})
    with pytest.raises(TypeError, match="Received optimizer='sgd'"):
        transfer.layerwise_learning_rates("sgd", model, {"head": 1.0})
    with pytest.raises(ValueError, match="decay=2"):
        transfer.stage_decay_multipliers(model, 2)


# === The recipe ===
@pytest.mark.slow
@pytest.mark.once
def test_transfer_recipe_smoke_run(tmp_path):
    import json

    metrics = smoke_run("transfer", tmp_path, "--width", "4", "--image-size", "12")
    for key in ("pretrain", "frozen_backbone", "finetuned", "scratch"):
        assert 0.0 <= metrics[f"{key}_test_accuracy"] <= 1.0
    for f in ["model.keras", "history.csv", "learning_curve.png", "metrics.json"]:
        assert (tmp_path / f).stat().st_size > 0, f
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["smoke"] is True
    # The saved model is the fine-tuned digits classifier, with its layerwise optimizer.
    model = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert model.output_shape == (None, 10)
    with pytest.raises(SystemExit):
        load_recipe("transfer").main(
            ["--smoke", "--schedule", "plateau", "--output-dir", str(tmp_path)])


def test_a_reloaded_partially_frozen_model_keeps_its_frozen_layers(tmp_path):
    model = tiny_resnet()
    trainable = transfer.unfreeze_last_stages(model, 1)
    model.save(tmp_path / "partly_frozen.keras")
    restored = keras.saving.load_model(tmp_path / "partly_frozen.keras", safe_mode=True)
    assert [layer.name for layer in restored.layers if layer.trainable and layer.weights] == \
        trainable
    assert len(restored.trainable_weights) == len(model.trainable_weights)
    assert len(restored.trainable_weights) < len(tiny_resnet().trainable_weights)
