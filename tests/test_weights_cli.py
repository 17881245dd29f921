"""`python -m kzoo convert`, `predict --weights`, preprocessing and `recipes/transfer.py --weights`."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file

import kzoo
from kzoo.__main__ import main
from kzoo.weights.preprocessing import preprocess_images

TINY = {"input_shape": (32, 32, 3), "num_classes": 1000, "width": 4}


@pytest.fixture
def checkpoint(tmp_path):
    model = kzoo.create_model("resnet18", **TINY)
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path
                 else rng.normal(0, 0.2, w.shape).astype("float32"))
    return model, kzoo.weights.export(model, tmp_path / "r18.safetensors")


def test_convert_writes_a_keras_file_and_back_to_torchvision(checkpoint, tmp_path, capsys):
    model, path = checkpoint
    out = tmp_path / "r18.keras"
    assert main(["convert", "--model", "resnet18", "--weights", str(path), "--input-shape",
                 "32,32,3", "--output", str(out)]) == 0
    loaded = keras.saving.load_model(out)
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert loaded.metadata["class_names"][0] == "tench"
    back = tmp_path / "back.safetensors"
    assert main(["convert", "--model", str(out), "--to", "timm", str(back)]) == 0
    original, again = load_file(str(path)), load_file(str(back))
    assert set(original) == set(again)
    for key in original:
        np.testing.assert_array_equal(original[key], again[key])


@pytest.mark.parametrize("argv, phrase", [
    (["convert", "--model", "resnet18", "--weights", "missing.safetensors", "--output", "o.keras"],
     "no file, folder"),
    (["convert", "--model", "resnet18", "--output", "o.keras"], "without --weights"),
    (["convert", "--model", "resnet18", "--weights", "x"], "either --output"),
    (["convert", "--model", "nothing.keras", "--to", "timm", "o.safetensors"], "neither a registered"),
])
def test_convert_errors_are_one_line_and_write_nothing(argv, phrase, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert phrase in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_predict_with_weights_prints_top5_class_names(checkpoint, tmp_path, capsys):
    from PIL import Image

    _, path = checkpoint
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype="uint8")).save(photo)
    code = main(["predict", "--model", "resnet18", "--weights", str(path), str(photo)])
    out = capsys.readouterr().out
    assert code == 0
    line = out.strip().splitlines()[-1]
    assert line.startswith(f"{photo}: ") and line.count("(") == 5
    names = set(kzoo.weights.table.imagenet_classes())
    labels = [part.rsplit(" (", 1)[0] for part in line.split(": ", 1)[1].split(", ")
              if " (" in part]
    assert any(label in names for label in labels)


def test_preprocess_images_resizes_the_shorter_side_crops_and_normalises():
    spec = {"resize": 8, "crop": 6, "interpolation": "bilinear", "value_range": [0, 1],
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    image = np.zeros((10, 20, 3), "uint8")
    image[:, 10:] = 255  # right half white
    batch = preprocess_images([image, image], spec)
    assert batch.shape == (2, 6, 6, 3)
    # resize to 8x16, crop columns 5..11: left half (x - .5)/.25 = -2, right half +2
    np.testing.assert_allclose(batch[0, :, 0], -2.0, atol=1e-5)
    np.testing.assert_allclose(batch[0, :, -1], 2.0, atol=1e-5)
    with pytest.raises(ValueError, match="centre crop"):
        preprocess_images(np.zeros((4, 4, 3), "uint8"), {**spec, "resize": None})


def test_torchvision_resize_matches_for_the_shorter_side():
    pytest.importorskip("torch")
    sys.path.insert(0, "tests/weights")
    from torch_imports import import_torchvision

    tv = import_torchvision()
    import torch

    image = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype="uint8")
    spec = {"resize": 20, "crop": 16, "interpolation": "bilinear", "value_range": [0, 1],
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    t = tv.transforms.Compose([
        tv.transforms.Resize(20, antialias=True), tv.transforms.CenterCrop(16),
        tv.transforms.Normalize(spec["mean"], spec["std"])])
    ref = t(torch.from_numpy(image).permute(2, 0, 1).float() / 255).permute(1, 2, 0).numpy()
    ours = preprocess_images(image, spec)[0]
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).mean() < 0.05  # antialiasing filters differ slightly


@pytest.mark.slow
@pytest.mark.once
def test_transfer_recipe_fine_tunes_a_checkpoint_file(tmp_path):
    import runpy
    from pathlib import Path

    model = kzoo.create_model("resnet18", input_shape=(12, 12, 3))
    path = kzoo.weights.export(model, tmp_path / "r18.safetensors")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "transfer.py"
    recipe_main = runpy.run_path(str(recipe))["main"]
    metrics = recipe_main(["--smoke", "--model", "resnet18", "--weights", str(path),
                           "--image-size", "12", "--output-dir", str(tmp_path / "run"),
                           "--verbose", "0"])
    assert 0.0 <= metrics["finetuned_test_accuracy"] <= 1.0
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["smoke"] is True
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras", safe_mode=True)
    assert saved.output_shape == (None, 10)
    assert saved.metadata["source"]["path"] == str(path)


def test_python_m_kzoo_convert_help_runs():
    result = subprocess.run([sys.executable, "-m", "kzoo", "convert", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--to" in result.stdout
