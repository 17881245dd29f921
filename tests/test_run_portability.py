"""What a run writes loads anywhere: a fresh process with `import kzoo` only, another backend's env.

Keras names a compiled model's loss and optimizer in the file. On the torch
backend `keras.optimizers.SGD()` is Keras' torch class, whose module path names
torch, and a loss class defined outside `import kzoo` is not found in a fresh
process; both made recipe runs unloadable elsewhere.

The cross-environment test trains with another interpreter and loads here,
the other named by two environment variables (tox sets them in the jax env,
which runs after the torch env and has no torch):

    KZOO_OTHER_PYTHON=/path/to/.tox/torch/bin/python KZOO_OTHER_BACKEND=torch
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from kzoo.training import runner

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = ("sgd", "rmsprop", "nadam", "lion", "adam", "adamw")

# Loads every .keras file named on the command line with `import kzoo` alone,
# with the libraries named in KZOO_BLOCK made unimportable first.
LOADER = textwrap.dedent(
    """
    import os, sys
    blocked = set(filter(None, os.environ.get("KZOO_BLOCK", "").split(",")))

    class Block:  # `import torch` raises ModuleNotFoundError, as where it is not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, Block())
    import keras
    import kzoo
    for path in sys.argv[1:]:
        model = keras.saving.load_model(path, safe_mode=True)
        print(path, type(model.optimizer).__name__ if model.optimizer else None,
              type(model.loss).__name__ if getattr(model, "loss", None) else None)
    """
)


def _env(**extra):
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            **extra}


def _saved_compiled(tmp_path, optimizer):
    args = runner.make_parser("").parse_args(
        ["--optimizer", optimizer, "--label-smoothing", "0.1", "--output-dir",
         str(tmp_path / optimizer)])
    run = runner.Run(args, recipe="portability")
    import kzoo

    model = kzoo.create_model("mlp", input_shape=(4,), num_classes=3, hidden_units=(4,))
    run.compile(model)
    model.fit(np.ones((4, 4), "float32"), np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    path = tmp_path / f"{optimizer}.keras"
    model.save(path)
    return path


def _compile_config(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))["compile_config"]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_optimizer_and_loss_are_saved_under_backend_neutral_names(tmp_path, optimizer):
    config = _compile_config(_saved_compiled(tmp_path, optimizer))
    saved = config["optimizer"]
    assert "backend" not in saved.get("module", ""), saved
    assert saved["registered_name"].startswith("kzoo>"), saved
    assert config["loss"]["registered_name"] == "kzoo>SparseCategoricalCrossentropyWithSmoothing"


def test_a_fresh_process_loads_them_with_import_kzoo_only(tmp_path):
    paths = [str(_saved_compiled(tmp_path, name)) for name in OPTIMIZERS]
    done = subprocess.run([sys.executable, "-c", LOADER, *paths], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("SparseCategoricalCrossentropyWithSmoothing") == len(OPTIMIZERS)


OTHER_PYTHON = os.environ.get("KZOO_OTHER_PYTHON")
OTHER_BACKEND = os.environ.get("KZOO_OTHER_BACKEND")


# Trains the MLP recipe once per optimizer, in the interpreter it runs in.
TRAINER = textwrap.dedent(
    """
    import runpy, sys
    recipe = runpy.run_path(sys.argv[1])["main"]
    for optimizer, folder in zip(sys.argv[2::2], sys.argv[3::2]):
        recipe(["--smoke", "--optimizer", optimizer, "--label-smoothing", "0.1",
                "--hidden-units", "8", "--output-dir", folder, "--verbose", "0"])
    """
)


@pytest.mark.skipif(not (OTHER_PYTHON and OTHER_BACKEND and os.path.exists(OTHER_PYTHON)),
                    reason="set KZOO_OTHER_PYTHON and KZOO_OTHER_BACKEND to another backend's "
                           "environment (tox sets them to the torch env in the jax env)")
def test_trained_in_another_backends_environment_loads_here(tmp_path):
    """Trained in the other env (torch, under tox), loaded here (jax, which has no torch)."""
    pairs = []
    for optimizer in OPTIMIZERS:
        pairs += [optimizer, str(tmp_path / optimizer)]
    other = _env(KERAS_BACKEND=OTHER_BACKEND)
    other.pop("XLA_FLAGS", None)
    trained = subprocess.run([OTHER_PYTHON, "-c", TRAINER, str(ROOT / "recipes" / "mlp.py"),
                              *pairs], env=other, capture_output=True, text=True, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    paths = []
    for optimizer in OPTIMIZERS:
        paths += [str(tmp_path / optimizer / "model.keras"), str(tmp_path / optimizer / "best.keras")]
    here = keras.config.backend()
    block = "" if here == OTHER_BACKEND else {"torch": "torch", "jax": "jax,jaxlib",
                                              "tensorflow": "tensorflow"}[OTHER_BACKEND]
    env = _env(KERAS_BACKEND=here, KZOO_BLOCK=block)
    done = subprocess.run([sys.executable, "-c", LOADER, *paths], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.strip().splitlines()) == len(paths)
    # And predict works here, with nothing but this env's backend.
    np.save(tmp_path / "x.npy", np.zeros((8, 8, 1), "float32"))
    shown = subprocess.run([sys.executable, "-m", "kzoo", "predict", str(tmp_path / "sgd"),
                            str(tmp_path / "x.npy"), "--top-k", "1"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert shown.stdout.startswith(str(tmp_path / "x.npy"))


def test_import_kzoo_imports_every_module_that_registers_a_class():
    """A class registered in a module `import kzoo` skips cannot be found when a file names it."""
    registering = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "kzoo").rglob("*.py")
        if "register_keras_serializable" in p.read_text(encoding="utf-8")
        and p.name != "__main__.py"
    )
    code = ("import sys, json, kzoo; print(json.dumps(sorted(m for m in sys.modules "
            "if m.startswith('kzoo'))))")
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert [m for m in registering if m not in imported] == []
