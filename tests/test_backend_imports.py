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
