"""Portable model files: a `.keras` file saved under one backend gives the same outputs under each.

Two complementary checks:

- golden files (tests/golden/, written under one backend by make_golden.py and
  checked in): every test environment, whichever single backend it has, loads
  them and must reproduce the recorded outputs to 1e-5. Across the tox matrix
  this is "save in one backend, load in the others" and "same function on
  every backend" for every registered model.
- where several backends are installed (the dev venv), a fresh process saves
  every tiny model under this backend and fresh processes of the other
  backends load and compare them.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import kzoo

GOLDEN = Path(__file__).resolve().parent / "golden"
SCRIPT = GOLDEN / "make_golden.py"
REGENERATE = "KERAS_BACKEND=jax python tests/golden/make_golden.py"
BACKENDS = ("jax", "torch", "tensorflow")
MODELS = kzoo.list_models()
# Models whose inference call draws from keras.random with a fixed seed: Keras'
# random streams differ between backends, so their outputs can match only on
# the backend that wrote the golden file.
BACKEND_RANDOM = {
    "ddpm": "call() adds noise at a fixed-seed random timestep to compute its loss",
}


def _load_script():
    spec = importlib.util.spec_from_file_location("make_golden", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_script()


def _golden_backend(name):
    import numpy as np

    return json.loads(str(np.load(GOLDEN / f"{name}.npz")["meta"]))["backend"]


def _skipped():
    path = GOLDEN / "SKIPPED.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("name", MODELS)
def test_golden_file_gives_the_golden_outputs_on_this_backend(name):
    if not (GOLDEN / f"{name}.npz").exists():
        reason = _skipped().get(name)
        if reason is None:
            reason = f"no golden file yet (a new model?); regenerate with `{REGENERATE}`"
        pytest.skip(f"{name}: {reason}")
    if name in BACKEND_RANDOM and _golden_backend(name) != keras.config.backend():
        pytest.skip(f"{name}: {BACKEND_RANDOM[name]}; its golden outputs come from "
                    f"{_golden_backend(name)}'s random stream")
    try:
        make_golden.check_one(name, GOLDEN)
    except (TypeError, ValueError) as err:
        pytest.fail(
            f"{name}'s golden file no longer loads or computes the recorded outputs on "
            f"{keras.config.backend()}: {err}\nIf the model changed on purpose, regenerate "
            f"with `{REGENERATE}`."
        )
    finally:
        keras.backend.clear_session()


def test_every_golden_file_belongs_to_a_registered_model():
    stale = sorted({p.stem for p in GOLDEN.glob("*.npz")} - set(MODELS))
    assert not stale, f"golden files for unregistered models {stale}; regenerate with `{REGENERATE}`"


def test_golden_files_stay_small():
    sizes = {p.name: p.stat().st_size for p in [*GOLDEN.glob("*.keras"), *GOLDEN.glob("*.npz")]}
    too_big = {k: v for k, v in sizes.items() if v > make_golden.MAX_FILE_BYTES}
    assert not too_big


# === Fresh processes, one per backend (where more than one is installed) ===
def _installed(backend):
    return importlib.util.find_spec(backend) is not None


def _run_script(backend, *args):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="module")
def saved_in_fresh_process(tmp_path_factory):
    """Every registered model's tiny config, saved by a fresh process of this backend."""
    out = tmp_path_factory.mktemp(f"saved_by_{keras.config.backend()}")
    _run_script(keras.config.backend(), "--out", str(out))
    return out


OTHERS = [b for b in BACKENDS if b != keras.config.backend()]


@pytest.mark.slow
@pytest.mark.parametrize("target", OTHERS)
def test_saved_here_loads_in_a_fresh_process_of_another_backend(target, request):
    if not _installed(target):
        pytest.skip(f"the {target} backend is not installed in this environment "
                    "(the golden-file test covers it in the {target} test env)")
    saved = request.getfixturevalue("saved_in_fresh_process")
    written = sorted(p.stem for p in saved.glob("*.npz"))
    skipped = json.loads((saved / "SKIPPED.json").read_text())
    assert sorted([*written, *skipped]) == MODELS
    report = json.loads(_run_script(target, "--check", str(saved)).strip().splitlines()[-1])
    assert report["backend"] == target
    failed = {k: v["error"] for k, v in report["models"].items()
              if not v["ok"] and k not in BACKEND_RANDOM}
    assert not failed, f"saved on {keras.config.backend()}, loaded on {target}: {failed}"
    assert sorted(report["models"]) == written
