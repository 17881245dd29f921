"""Published-layout checkpoints load exactly, on every backend, through the public API.

The reference checkpoints come from `tests/weights/make_references.py` (run
in the torch env): random-initialised torchvision, timm and transformers
models with every parameter and buffer re-randomised, saved as
`.safetensors`, `.pth` and `save_pretrained` folders, with their inputs and
outputs. Here each is loaded with `kzoo.create_model(name, weights=...)` and
must reproduce the reference's outputs to 1e-4 (relative to the largest
output); a deliberately wrong mapping of the same weights must not. The
folder is `$KZOO_REFERENCE_CHECKPOINTS`; where it is unset and torch is
installed, the references are built here; elsewhere the tests skip, except
under `CI=true`, where they fail so that CI never runs blind.
"""

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kzoo

HERE = Path(__file__).parent / "weights"
sys.path.insert(0, str(HERE))
from make_references import all_cases  # noqa: E402

CASES = all_cases()
HAS_TORCH = importlib.util.find_spec("torch") is not None
ENV = "KZOO_REFERENCE_CHECKPOINTS"


def _params():
    out = []
    for name, case in CASES.items():
        marks = [pytest.mark.slow] if case.slow else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.fixture(scope="session")
def references(tmp_path_factory):
    folder = os.environ.get(ENV)
    if folder:
        manifest = Path(folder) / "manifest.json"
        if not manifest.exists():
            pytest.fail(f"{ENV}={folder!r} has no manifest.json; run tests/weights/make_references.py")
        return Path(folder), json.loads(manifest.read_text())
    if not HAS_TORCH:
        message = (f"{ENV} is unset and torch is absent: no reference checkpoints to load "
                   "(run tests/weights/make_references.py in the torch env)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return None  # built per case, below


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    return tmp_path_factory.mktemp("reference-checkpoints"), {}


def _entry(name, references, built):
    if references is not None:
        folder, manifest = references
        if name not in manifest:
            if CASES[name].slow:
                pytest.skip(f"{name!r} is a slow case; make_references.py --slow writes it")
            pytest.fail(f"{name!r} is missing from {folder}/manifest.json; regenerate it")
        return folder, manifest[name]
    import make_references

    folder, manifest = built
    if name not in manifest:
        manifest[name] = make_references.write_case(name, CASES[name], folder)
    return folder, manifest[name]


def _outputs(model, x):
    out = model.predict(x, verbose=0)
    if isinstance(out, (list, tuple)):
        out = np.concatenate([np.asarray(o) for o in out], axis=1)
    return np.asarray(out)


def _close(out, y, tolerance):
    return out.shape == y.shape and np.max(np.abs(out - y)) <= tolerance * np.max(np.abs(y))


_LOADED = {}  # the model each load test built, reused by the export test


@pytest.mark.parametrize("name", _params())
def test_reference_checkpoint_loads_exactly_in_every_format(name, references, built):
    folder, entry = _entry(name, references, built)
    io = np.load(folder / entry["io"])
    _LOADED.clear()
    model = None
    for fmt, source in entry["sources"].items():
        if fmt == "pth" and not HAS_TORCH:
            with pytest.raises(ValueError, match="needs torch to read"):
                kzoo.create_model(entry["model"], weights=str(folder / source), **entry["kwargs"])
            continue
        model = kzoo.create_model(entry["model"], weights=str(folder / source), **entry["kwargs"])
        out = _outputs(model, io["x"])
        err = np.max(np.abs(out - io["y"])) / np.max(np.abs(io["y"]))
        assert _close(out, io["y"], entry["tolerance"]), f"{name} from {fmt}: relative error {err}"
        assert model.metadata["source"]["layout"] in ("torchvision", "timm", "transformers")
    _LOADED[name] = model
    # The same weights through a wrong mapping, into the same model: they must not
    # match, even at ten times the tolerance the right mapping meets.
    wrong = kzoo.weights.load_weights(model, str(folder / entry["wrong"]), model_name=entry["model"])
    assert not _close(_outputs(wrong, io["x"]), io["y"], 10 * entry["tolerance"]), (
        f"{name}: the wrong mapping matched")
    kzoo.weights.load_weights(model, str(folder / next(iter(entry["sources"].values()))),
                              model_name=entry["model"])


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.keras_file])
def test_keras_file_converted_under_torch_gives_the_reference_outputs(name, references, built):
    if references is None:
        pytest.skip(f"{ENV} is unset: no .keras file from the torch env to load")
    folder, entry = _entry(name, references, built)
    io = np.load(folder / entry["io"])
    model = keras.saving.load_model(folder / entry["keras"])
    assert _close(_outputs(model, io["x"]), io["y"], entry["tolerance"])
    assert model.metadata["preprocessing"]["mean"]


@pytest.mark.skipif(not HAS_TORCH, reason="the reference libraries need torch")
@pytest.mark.parametrize("name", _params())
def test_export_loads_strictly_in_the_reference_library(name, references, built, tmp_path):
    import torch

    folder, entry = _entry(name, references, built)
    case = CASES[name]
    io = np.load(folder / entry["io"])
    model = _LOADED.get(name) or kzoo.create_model(
        entry["model"], weights=str(folder / next(iter(entry["sources"].values()))), **entry["kwargs"])
    if entry["layout"] == "transformers":
        from transformers import AutoModelForImageClassification

        path = kzoo.weights.export(model, tmp_path / "exported", layout="transformers")
        reference, info = AutoModelForImageClassification.from_pretrained(
            path, output_loading_info=True)
        reference.eval()
        # from_pretrained only warns; strict means none missing, unexpected or mis-shaped.
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    else:
        from safetensors.torch import load_file

        path = kzoo.weights.export(model, tmp_path / "exported.safetensors", layout=entry["layout"])
        reference = case.build().eval()
        reference.load_state_dict(load_file(str(path)), strict=True)
    torch_x = io["torch_x"]
    import make_references

    out = (case.forward or make_references.default_forward)(reference, torch_x)
    assert _close(np.asarray(out), io["y"], entry["tolerance"])
    del torch


@pytest.mark.parametrize("name", ["timm_resnet18", "hf_vit"])
def test_hub_ids_load_from_a_local_hub_cache_offline(name, references, built, tmp_path, monkeypatch):
    from huggingface_hub import constants

    folder, entry = _entry(name, references, built)
    io = np.load(folder / entry["io"])
    repo = tmp_path / "hub" / "models--kzoo-tests--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(folder / entry["sources"]["folder"], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = kzoo.create_model(entry["model"], weights="hf://kzoo-tests/tiny@v1", **entry["kwargs"])
    assert _close(_outputs(model, io["x"]), io["y"], entry["tolerance"])
    assert model.metadata["source"] == {**model.metadata["source"], "hub_id": "kzoo-tests/tiny",
                                        "revision": "v1"}


def test_a_bert_folder_into_a_vit_raises_one_sentence(tmp_path):
    from safetensors.numpy import save_file

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    save_file({"bert.embeddings.word_embeddings.weight": np.zeros((4, 8), "float32")},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="(?i)bert") as info:
        kzoo.create_model("vit_base", weights=str(tmp_path))
    assert "\n" not in str(info.value) and str(info.value).count(". ") == 0


def test_hf_vit_labels_and_preprocessing_travel_with_the_model(references, built):
    folder, entry = _entry("hf_vit", references, built)
    model = kzoo.create_model("vit_base", weights=str(folder / entry["sources"]["folder"]),
                              **entry["kwargs"])
    assert model.metadata["class_names"] == [f"class_{i}" for i in range(6)]
    assert model.metadata["preprocessing"]["input_size"] == [32, 32]
