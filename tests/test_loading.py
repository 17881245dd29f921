"""kzoo has one loader: every entry point reads a `.keras` file through it.

`kzoo.load_model`, `kzoo.export.load_model` and `kzoo.predict.load_model` are
one function, so a damaged file gives the same one-sentence `ExportError`
whether a user loads it from Python, exports it, converts its weights or
predicts with it.
"""

import zipfile

import keras
import numpy as np
import pytest

import kzoo
from kzoo import export, predict
from kzoo.weights import cli as weights_cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("loading")
    model = kzoo.create_model("mlp", input_shape=(6,), num_classes=3, hidden_units=(4,),
                              dropout=0.0)
    good = root / "run" / "model.keras"
    good.parent.mkdir()
    model.save(good)
    data = good.read_bytes()
    (root / "truncated.keras").write_bytes(data[: len(data) // 2])
    (root / "empty.keras").write_bytes(b"")
    return root, model


def test_every_entry_point_is_the_one_loader():
    assert kzoo.load_model is export.load_model
    assert predict.load_model is export.load_model


def test_the_loader_takes_a_file_or_a_run_folder(files):
    root, model = files
    x = np.random.default_rng(0).normal(size=(2, 6)).astype("float32")
    for path in (root / "run", root / "run" / "model.keras", str(root / "run")):
        loaded = kzoo.load_model(path)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                                   keras.ops.convert_to_numpy(model(x)), atol=1e-6)


@pytest.mark.parametrize("name, message", [
    ("truncated.keras", "not a readable .keras archive"),
    ("empty.keras", "an empty file"),
])
def test_a_damaged_file_is_one_sentence_from_every_entry_point(files, name, message):
    root, _ = files
    path = root / name
    before = sorted(p.name for p in root.rglob("*"))
    calls = {
        "kzoo.load_model": lambda: kzoo.load_model(path),
        "export.export_model": lambda: export.export_model(str(path), root / "out.keras",
                                                           format="keras"),
        "weights.cli": lambda: weights_cli.load_source_model(str(path), None, {}),
    }
    for where, call in calls.items():
        with pytest.raises(export.ExportError) as caught:
            call()
        text = str(caught.value)
        assert message in text and len(text.splitlines()) == 1, (where, text)
    assert sorted(p.name for p in root.rglob("*")) == before
    assert zipfile.is_zipfile(root / "run" / "model.keras")
