"""Safe loading: hostile `.keras` files are refused under safe_mode=True; no pickle in kzoo."""

import ast
import copy
import json
import zipfile
from pathlib import Path

import keras
import pytest

import kzoo

ROOT = Path(__file__).resolve().parents[1]


# === Crafting hostile files ===
def _read(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _write(path, files, config):
    """A `.keras` file with the given files but `config` as its config.json."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, json.dumps(config) if name == "config.json" else data)
    return path


def _function(module, name):
    """How a `.keras` config names a Python function."""
    return {"module": module, "class_name": "function", "config": name, "registered_name": name}


@pytest.fixture(scope="module")
def kzoo_file(tmp_path_factory):
    """A genuine kzoo model file (tiny MLP): its files and parsed config."""
    path = tmp_path_factory.mktemp("genuine") / "mlp.keras"
    kzoo.create_model("mlp", input_shape=(4,), num_classes=3, hidden_units=(4,)).save(path)
    files = _read(path)
    return path, files, json.loads(files["config.json"])


@pytest.fixture(scope="module")
def dense_file(tmp_path_factory):
    """A plain Keras functional model with one Dense layer: its files and config."""
    path = tmp_path_factory.mktemp("dense") / "dense.keras"
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs)).save(path)
    files = _read(path)
    return files, json.loads(files["config.json"])


def _dense_layer(config):
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")


def _load(path):
    kzoo.list_models()  # registers kzoo's classes, as a kzoo user's session would
    return keras.saving.load_model(path, safe_mode=True)


def _message(err):
    """The error's text with its chained context (Keras wraps nested failures)."""
    parts = []
    while err is not None:
        parts.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


def test_genuine_kzoo_file_loads_in_safe_mode(kzoo_file):
    path, _, _ = kzoo_file
    model = _load(path)
    assert model.output_shape == (None, 3)


def test_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: t * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match=r"deserialization of a `Lambda` layer whose `function` is a Python lambda"):
        _load(path)


def test_lambda_naming_os_system_is_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(keras.ops.negative, output_shape=(4,), name="lam")(inputs)
    path = tmp_path / "lambda_fn.keras"
    keras.Model(inputs, outputs).save(path)
    files = _read(path)
    config = json.loads(files["config.json"])
    layer = next(x for x in config["config"]["layers"] if x["class_name"] == "Lambda")
    layer["config"]["function"] = _function("os", "system")
    with pytest.raises(TypeError) as err:
        _load(_write(tmp_path / "hostile.keras", files, config))
    assert "Could not locate function 'system'" in _message(err.value)


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "eval"),
                                          ("subprocess", "call")])
def test_config_naming_an_arbitrary_function_is_refused(tmp_path, dense_file, module, name):
    files, config = copy.deepcopy(dense_file)
    _dense_layer(config)["config"]["activation"] = _function(module, name)
    with pytest.raises(TypeError) as err:
        _load(_write(tmp_path / "hostile.keras", files, config))
    assert f"Could not locate function '{name}'" in _message(err.value)


def test_top_level_object_naming_an_arbitrary_class_is_refused(tmp_path, kzoo_file):
    _, files, _ = kzoo_file
    config = {"module": "os", "class_name": "system", "registered_name": "system",
              "config": {"command": "touch pwned"}}
    with pytest.raises(TypeError, match=r"Could not locate class 'system'"):
        _load(_write(tmp_path / "hostile.keras", files, config))
    assert not (Path.cwd() / "pwned").exists()


def test_config_switching_unsafe_deserialization_on_is_refused(tmp_path, dense_file):
    files, config = copy.deepcopy(dense_file)
    _dense_layer(config)["config"]["activation"] = _function(
        "keras.config", "enable_unsafe_deserialization"
    )
    with pytest.raises(TypeError) as err:
        _load(_write(tmp_path / "hostile.keras", files, config))
    assert "Cannot deserialize `keras.config.enable_unsafe_deserialization`" in _message(err.value)
    # ... and safe mode is still on afterwards: a Lambda file is still refused.
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda t: t)(inputs)).save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="Lambda"):
        _load(tmp_path / "lambda.keras")


@pytest.mark.parametrize("payload", [
    _function("os", "system"),
    _function("keras.config", "enable_unsafe_deserialization"),
])
def test_kzoo_config_with_a_function_in_an_argument_is_refused(tmp_path, kzoo_file, payload):
    _, files, config = kzoo_file
    config = copy.deepcopy(config)
    config["config"]["activation"] = payload
    with pytest.raises(ValueError, match=r"Received activation=\{'module': .*; expected one of \["):
        _load(_write(tmp_path / "hostile.keras", files, config))


# === No pickle, no unsafe loading, anywhere in kzoo ===
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_uses(path):
    """(line, what) for every pickle-style import or unsafe loading call in `path`."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names
                      if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLE_MODULES:
                found.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            kwargs = {k.arg: k.value for k in node.keywords}
            flag = {k: v.value for k, v in kwargs.items() if isinstance(v, ast.Constant)}
            if func.endswith("torch.load") and flag.get("weights_only") is not True:
                found.append((node.lineno, "torch.load without weights_only=True"))
            if flag.get("allow_pickle") is True:
                found.append((node.lineno, "allow_pickle=True"))
            if "safe_mode" in flag and flag["safe_mode"] is not True:
                found.append((node.lineno, "safe_mode=False"))
            if func.endswith("enable_unsafe_deserialization"):
                found.append((node.lineno, "enable_unsafe_deserialization()"))
            if func in ("eval", "exec"):
                found.append((node.lineno, f"{func}()"))
    return found


SOURCES = sorted([*(ROOT / "kzoo").rglob("*.py"), *(ROOT / "recipes").rglob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_no_pickle_or_unsafe_loading(path):
    assert unsafe_uses(path) == [], f"{path.relative_to(ROOT)} deserialises unsafely"


def test_scanner_sees_unsafe_code(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nfrom joblib import load\nimport torch\nimport numpy as np\n"
        "torch.load('m.pt')\ntorch.load('m.pt', weights_only=True)\n"
        "np.load('a.npy', allow_pickle=True)\nkeras.saving.load_model('m', safe_mode=False)\n"
        "keras.config.enable_unsafe_deserialization()\n"
    )
    assert [what for _, what in unsafe_uses(bad)] == [
        "import pickle", "from joblib import", "torch.load without weights_only=True",
        "allow_pickle=True", "safe_mode=False", "enable_unsafe_deserialization()",
    ]


def test_no_kzoo_file_is_written_with_pickle_bytes(kzoo_file):
    """A `.keras` file is JSON plus HDF5 weights: no pickle stream inside."""
    _, files, _ = kzoo_file
    assert sorted(files) == ["config.json", "metadata.json", "model.weights.h5"]
    for name, data in files.items():
        assert not data.startswith(b"\x80"), f"{name} starts like a pickle stream"


# === A config that describes another model is refused, not half-read ===
@pytest.mark.parametrize("key, value, message", [
    ("bogus_width", 7, r"unknown keys \['bogus_width'\]"),
    ("frozen_layers", {"dense_0": True}, "expected a list of layer names"),
    ("frozen_layers", ["no_such_layer"], r"naming \['no_such_layer'\], which MLP does not have"),
])
def test_unknown_or_malformed_config_entries_are_refused(tmp_path, kzoo_file, key, value,
                                                         message):
    _, files, config = kzoo_file
    config = copy.deepcopy(config)
    config["config"][key] = value
    with pytest.raises(ValueError) as err:
        _load(_write(tmp_path / "edited.keras", files, config))
    import re

    assert re.search(message, _message(err.value))


def test_kzoo_metadata_and_frozen_layers_still_load(tmp_path):
    model = kzoo.create_model("mlp", input_shape=(4,), num_classes=3, hidden_units=(4,))
    model.metadata = {"class_names": ["a", "b", "c"]}
    frozen = model.layers[1].name
    model.layers[1].trainable = False
    model.save(tmp_path / "m.keras")
    restored = _load(tmp_path / "m.keras")
    assert restored.metadata == {"class_names": ["a", "b", "c"]}
    assert not restored.get_layer(frozen).trainable
