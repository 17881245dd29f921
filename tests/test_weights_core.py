"""kzoo.weights' core on every backend: sources, the loader's proofs, errors, export."""

import os

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import kzoo
from kzoo.weights import WeightsError

TINY = {"input_shape": (20, 18, 3), "num_classes": 5, "width": 4}


def _randomised_resnet18(seed=0, **kwargs):
    model = kzoo.create_model("resnet18", **{**TINY, **kwargs})
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(0, 0.3, w.shape)
        if "moving_variance" in w.path:
            value = rng.uniform(0.5, 1.5, w.shape)
        w.assign(value.astype("float32"))
    return model


def _predict(model, x):
    return np.asarray(model.predict(x, verbose=0))


@pytest.fixture
def saved(tmp_path):
    model = _randomised_resnet18()
    path = kzoo.weights.export(model, tmp_path / "r18.safetensors")
    x = np.random.default_rng(1).normal(size=(2, 20, 18, 3)).astype("float32")
    return model, path, x


def test_exported_state_dict_has_torchvision_names_and_reloads_exactly(saved):
    model, path, x = saved
    state = load_file(str(path))
    assert state["conv1.weight"].shape == (4, 3, 7, 7)  # torch's (out, in, kh, kw)
    assert state["layer2.0.downsample.0.weight"].shape == (8, 4, 1, 1)
    assert state["bn1.num_batches_tracked"].dtype == np.int64
    loaded = kzoo.create_model("resnet18", weights=str(path), input_shape=(20, 18, 3), width=4)
    assert loaded.model_config["num_classes"] == 5  # taken from the checkpoint's head
    np.testing.assert_allclose(_predict(loaded, x), _predict(model, x), rtol=1e-5, atol=1e-5)
    assert loaded.metadata["source"]["layout"] == "torchvision"
    assert loaded.metadata["preprocessing"]["mean"] == [0.485, 0.456, 0.406]


def test_a_transposed_kernel_is_caught(saved, tmp_path):
    model, path, x = saved
    state = load_file(str(path))
    # A square kernel transposed (kh <-> kw) keeps its shape: only the numbers can tell.
    state["conv1.weight"] = np.ascontiguousarray(state["conv1.weight"].transpose(0, 1, 3, 2))
    save_file(state, str(tmp_path / "wrong.safetensors"))
    wrong = kzoo.create_model("resnet18", weights=str(tmp_path / "wrong.safetensors"),
                              input_shape=(20, 18, 3), width=4)
    assert not np.allclose(_predict(wrong, x), _predict(model, x), rtol=1e-3, atol=1e-3)


def _one_sentence(message):
    assert message.count(". ") == 0 and message.endswith("."), message
    assert "\n" not in message


@pytest.mark.parametrize("edit, phrase", [
    (lambda s: s.pop("layer3.0.bn2.running_var"), "without tensor 'layer3.0.bn2.running_var'"),
    (lambda s: s.__setitem__("extra.weight", np.zeros(3, "float32")), "tensor 'extra.weight'"),
    (lambda s: s.__setitem__("layer1.0.conv1.weight", np.zeros((4, 4, 1, 1), "float32")),
     "kzoo weight 'stage1_block1_1_conv/kernel'"),
])
def test_missing_unexpected_and_misshaped_tensors_raise_one_sentence(saved, tmp_path, edit, phrase):
    _, path, _ = saved
    state = load_file(str(path))
    edit(state)
    save_file(state, str(tmp_path / "edited.safetensors"))
    with pytest.raises(WeightsError) as info:
        kzoo.create_model("resnet18", weights=str(tmp_path / "edited.safetensors"),
                          input_shape=(20, 18, 3), width=4)
    assert phrase in str(info.value)
    _one_sentence(str(info.value))


def test_resnet18_weights_into_resnet50_raise_one_sentence(saved):
    _, path, _ = saved
    with pytest.raises(ValueError, match="stage1_block1_1_conv") as info:
        kzoo.create_model("resnet50", weights=str(path), input_shape=(20, 18, 3), width=4)
    _one_sentence(str(info.value))


def test_a_contradicted_num_classes_keeps_the_backbone_and_resets_the_head(saved):
    model, path, x = saved
    with pytest.warns(UserWarning, match="5-class head and num_classes=3") as record:
        loaded = kzoo.create_model("resnet18", weights=str(path), input_shape=(20, 18, 3),
                                   width=4, num_classes=3)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert loaded.output_shape == (None, 3)
    features = loaded.feature_extractor()
    np.testing.assert_allclose(_predict(features, x), _predict(model.feature_extractor(), x),
                               rtol=1e-5, atol=1e-5)


def test_metadata_and_weights_survive_a_keras_file(saved, tmp_path):
    model, path, x = saved
    loaded = kzoo.create_model("resnet18", weights=str(path), input_shape=(20, 18, 3), width=4)
    loaded.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    assert again.metadata == loaded.metadata
    np.testing.assert_allclose(_predict(again, x), _predict(model, x), rtol=1e-5, atol=1e-5)


def test_hub_ids_read_a_local_hub_cache_offline(saved, tmp_path, monkeypatch):
    from huggingface_hub import constants

    model, path, x = saved
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-resnet" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(path.read_bytes())
    (cache / "models--someone--tiny-resnet" / "refs").mkdir()
    (cache / "models--someone--tiny-resnet" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    loaded = kzoo.create_model("resnet18", weights="hf://someone/tiny-resnet",
                               input_shape=(20, 18, 3), width=4)
    np.testing.assert_allclose(_predict(loaded, x), _predict(model, x), rtol=1e-5, atol=1e-5)
    assert loaded.metadata["source"]["hub_id"] == "someone/tiny-resnet"
    with pytest.raises(WeightsError, match="huggingface_hub could not fetch") as info:
        kzoo.create_model("resnet18", weights="hf://someone/absent", **TINY)
    _one_sentence(str(info.value))


def test_url_checkpoints_come_from_the_documented_cache(saved, tmp_path, monkeypatch):
    model, path, x = saved
    monkeypatch.setenv("KZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KZOO_OFFLINE", "1")
    target = kzoo.weights.sources.cache_dir() / "tiny-resnet18.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
    loaded = kzoo.create_model("resnet18", weights="https://example.org/w/tiny-resnet18.safetensors",
                               input_shape=(20, 18, 3), width=4)
    np.testing.assert_allclose(_predict(loaded, x), _predict(model, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(WeightsError, match="not in the cache"):
        kzoo.create_model("resnet18", weights="https://example.org/w/other-0123abcd.pth", **TINY)


def test_bad_sources_raise_one_sentence(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"")
    for source, phrase in [
        ("no-such-preset", "presets for 'resnet18' are"),
        (str(tmp_path / "w.npz"), "suffix '.npz'"),
        ("hf://only-one-part", "expected 'hf://ORG/NAME'"),
    ]:
        with pytest.raises(WeightsError, match=phrase) as info:
            kzoo.create_model("resnet18", weights=source, **TINY)
        _one_sentence(str(info.value))
    with pytest.raises(WeightsError, match="no converter loads yet"):
        save_file({"a": np.zeros(2, "float32")}, str(tmp_path / "a.safetensors"))
        kzoo.create_model("mlp", weights=str(tmp_path / "a.safetensors"))


@pytest.mark.skipif(__import__("importlib").util.find_spec("torch") is not None,
                    reason="torch is installed here; the message is for installs without it")
def test_torch_files_without_torch_say_so_in_one_sentence(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"not read")
    with pytest.raises(WeightsError, match="needs torch to read") as info:
        kzoo.create_model("resnet18", weights=str(tmp_path / "w.pth"), **TINY)
    _one_sentence(str(info.value))


def test_weights_table_lists_presets_with_published_figures():
    rows = kzoo.weights.list_weights("resnet50")
    imagenet = [r for r in rows if r["preset"] == "imagenet"][0]
    assert imagenet["reference"] == "ResNet50_Weights.IMAGENET1K_V2"
    assert imagenet["source"].startswith("hf://timm/")
    assert imagenet["metrics"]["ImageNet-1K acc@1"] > 0
    table = kzoo.weights.weights_table_markdown()
    assert table.count("\n") == len(kzoo.weights.list_weights()) + 1
    assert len(kzoo.weights.table.imagenet_classes()) == 1000


def test_an_export_killed_mid_write_leaves_the_previous_file_whole(saved, monkeypatch):
    model, path, _ = saved
    before = path.read_bytes()
    import safetensors.numpy

    def dies_half_way(state, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(before[: len(before) // 2])
        raise KeyboardInterrupt  # the user's Ctrl-C, or a kill, mid-write

    monkeypatch.setattr(safetensors.numpy, "save_file", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        kzoo.weights.export(_randomised_resnet18(seed=5), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_export_errors_are_one_sentence(tmp_path):
    model = kzoo.create_model("resnet18", **TINY)
    for kwargs, phrase in [({"layout": "onnx"}, "expected one of"),
                           ({"layout": "transformers"}, "which exports to")]:
        with pytest.raises(WeightsError, match=phrase) as info:
            kzoo.weights.export(model, tmp_path / "x.safetensors", **kwargs)
        _one_sentence(str(info.value))
    with pytest.raises(WeightsError, match="expected a .safetensors file"):
        kzoo.weights.export(model, tmp_path / "x.pth")
    assert not os.listdir(tmp_path)
