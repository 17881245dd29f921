"""Layers and models are written once: no backend import anywhere under them."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "kzoo"
BACKENDS = {"tensorflow", "torch", "jax", "jaxlib", "tensorflow_datasets"}
# The only modules allowed to import a backend: kzoo/backend/ (one concern
# each, branching on keras.config.backend()), the TFDS loader and export.
ALLOWED = ("backend/", "data/tfds.py", "export.py")


def backend_imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found += [n for n in names if n.split(".")[0] in BACKENDS]
    return found


FILES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_no_backend_import_outside_backend_modules(path):
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith(ALLOWED[0]) or rel in ALLOWED[1:]:
        return
    assert backend_imports(path) == [], f"{rel} imports a backend; move that code to kzoo/backend/"


def test_scanner_sees_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom jax import numpy as jnp\ndef f():\n    import tensorflow as tf\n")
    assert backend_imports(bad) == ["torch", "jax", "tensorflow"]


# === Every model builds from kzoo.layers ===
# `kzoo.layers.fast` holds Keras' layers of the same names on faster kernels;
# a model that builds `keras.layers.Dense` where `fast.Dense` exists misses the
# fast path (and its KZOO_FASTPATH=0 switch) for no reason.
FAST = {node.name for node in ast.parse((ROOT / "layers" / "fast.py").read_text()).body
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_")}
BUILDERS = sorted([*(ROOT / "models").glob("*.py"), *(ROOT / "layers").glob("*.py")])


def keras_layers_with_a_fast_twin(path):
    """`keras.layers.NAME(...)` calls in `path` whose NAME `kzoo.layers.fast` also defines."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        func = getattr(node, "func", None) if isinstance(node, ast.Call) else None
        if (isinstance(func, ast.Attribute) and func.attr in FAST
                and isinstance(func.value, ast.Attribute) and func.value.attr == "layers"
                and isinstance(func.value.value, ast.Name) and func.value.value.id == "keras"):
            found.append(f"{path.name}:{node.lineno} keras.layers.{func.attr}")
    return found


@pytest.mark.parametrize("path", BUILDERS, ids=[p.name for p in BUILDERS])
def test_models_and_layers_build_with_kzoo_layers(path):
    if path.name == "fast.py":
        return
    assert keras_layers_with_a_fast_twin(path) == [], "use kzoo.layers.fast's layer of that name"


def test_the_layer_scanner_sees_a_plain_keras_dense(tmp_path):
    assert {"Dense", "Conv2D", "Dropout"} <= FAST
    bad = tmp_path / "bad.py"
    bad.write_text("import keras\nx = keras.layers.Dense(3)(x)\ny = keras.layers.Flatten()(x)\n")
    assert keras_layers_with_a_fast_twin(bad) == ["bad.py:2 keras.layers.Dense"]
