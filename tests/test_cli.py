"""First use and bad inputs: one sentence, non-zero exit, nothing changed on disk.

A table of bad inputs to `python -m kzoo predict|export` and to every recipe
flag; `--help` of every recipe; `list` in seconds; the backend kzoo picks when
Keras' default is not installed.
"""

import hashlib
import json
import os
import runpy
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest

import kzoo
from kzoo import __main__ as cli
from kzoo.training import runner

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.py"))


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A run folder with an image classifier, and every kind of bad file beside it."""
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    run.mkdir()
    model = kzoo.create_model("mlp", input_shape=(8, 8, 1), num_classes=3, hidden_units=(4,))
    model.metadata = {"class_names": ["a", "b", "c"]}
    model.save(run / "model.keras")
    (run / "metrics.json").write_text("{}")
    good = (run / "model.keras").read_bytes()
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.keras").write_bytes(b"")
    (bad / "truncated.keras").write_bytes(good[: len(good) // 2])
    # Same size, one byte of the weights flipped: the archive's CRC no longer matches.
    with zipfile.ZipFile(run / "model.keras") as z:
        info = z.getinfo("model.weights.h5")
    data = bytearray(good)
    data[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    (bad / "crc.keras").write_bytes(bytes(data))
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs)).save(bad / "lambda.keras")
    np.save(bad / "strings.npy", np.array(["a", "b"]))
    np.save(bad / "empty.npy", np.zeros((0, 8, 8, 1), "float32"))
    np.save(bad / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), "uint8")).save(bad / "ok.png")
    png = (bad / "ok.png").read_bytes()
    (bad / "truncated.png").write_bytes(png[: len(png) // 2])
    (bad / "huge.png").write_bytes(_png_header_claiming(20000, 20000))  # PIL's own limit
    (bad / "big.png").write_bytes(_png_header_claiming(9000, 9000))  # kzoo's
    (bad / "labels_dir").mkdir()
    np.save(bad / "x.npy", np.zeros((8, 8, 1), "float32"))
    return root


def _png_header_claiming(width, height):
    """A PNG whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


BAD_CLI = [
    (["predict", "bad/empty.keras", "bad/x.npy"], "an empty file"),
    (["predict", "bad/truncated.keras", "bad/x.npy"], "not a readable .keras archive"),
    (["predict", "bad/crc.keras", "bad/x.npy"], "is damaged (CRC mismatch)"),
    (["predict", "bad/lambda.keras", "bad/x.npy"], "safe loading refuses to run"),
    (["export", "bad/truncated.keras", "--format", "keras", "--output", "bad/out.keras"],
     "not a readable .keras archive"),
    (["export", "bad/lambda.keras", "--format", "keras", "--output", "bad/out.keras"],
     "safe loading refuses to run"),
    (["predict", "run", "bad/strings.npy"], "an array of <U1 values"),
    (["predict", "run", "bad/empty.npy"], "an empty batch"),
    (["predict", "run", "bad/objects.npy"], "a .npy file of Python objects"),
    (["predict", "run", "bad/truncated.png"], "image truncated.png, which cannot be read"),
    (["predict", "run", "bad/huge.png"], "huge.png, which has more pixels than predict reads"),
    (["predict", "run", "bad/big.png"], "big.png, which has more pixels than predict reads"),
    (["predict", "run", "bad/x.npy", "--labels", "bad/missing.txt"], "which is missing"),
    (["predict", "run", "bad/x.npy", "--labels", "bad/labels_dir"], "which is a folder"),
    (["predict", "run", "bad/x.npy", "--output", "nowhere/p.json"], "does not exist"),
    (["predict", "run", "bad/x.npy", "--output", "run/model.keras"],
     "expected a .json or .npy file name"),
    (["predict", "run", "bad/x.npy", "--output", "run/metrics.json"], "exists already"),
    (["predict", "run", "bad/labels_dir"], "which is a folder"),
    (["predict", "run", "not-a-file.npy"], "which is not a file"),
]


@pytest.mark.parametrize("argv, message", BAD_CLI, ids=[" ".join(a[:2]) for a, _ in BAD_CLI])
def test_bad_cli_input_is_one_sentence_and_changes_nothing(workspace, monkeypatch, capsys,
                                                           argv, message):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    assert cli.main(argv) == 1
    assert message in one_line_error(capsys)
    assert snapshot(workspace) == before


def test_predict_uses_the_runs_class_names_and_writes_new_files_only(workspace, monkeypatch,
                                                                     capsys):
    monkeypatch.chdir(workspace)
    assert cli.main(["predict", "run", "bad/x.npy", "bad/ok.png", "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.split(": ")[1][0] in "abc" for line in lines)
    out = workspace / "p.json"
    assert cli.main(["predict", "run", "bad/x.npy", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["top_k"][0][0][0] in ("a", "b", "c")
    out.unlink()


# === Recipe flags ===
BAD_FLAGS = [
    ("mlp", ["--hidden-units", "0"], "expected a positive integer, received '0'"),
    ("mlp", ["--dropout", "1.5"], r"expected a number in [0, 1), received '1.5'"),
    ("mlp", ["--seed", "-1"], "expected an integer from 0 to 4294967295, received '-1'"),
    ("mlp", ["--seed", "99999999999"], "received '99999999999'"),
    ("mlp", ["--lr", "nan"], "expected a number > 0, received 'nan'"),
    ("mlp", ["--patience", "-2"], "expected an integer >= 0"),
    ("cnn", ["--widths", "16", "0"], "expected a positive integer"),
    ("transformer", ["--hidden-dim", "-4"], "expected a positive integer"),
    ("vit", ["--patch-size", "0"], "expected a positive integer"),
    ("lm", ["--dropout", "1"], "expected a number in [0, 1)"),
    ("gan", ["--latent-dim", "0"], "expected a positive integer"),
    ("rnn", ["--units", "x"], "expected a positive integer, received 'x'"),
]


def recipe_main(name):
    return runpy.run_path(str(ROOT / "recipes" / f"{name}.py"))["main"]


@pytest.mark.parametrize("recipe, argv, message", BAD_FLAGS,
                         ids=[f"{r} {' '.join(a)}" for r, a, _ in BAD_FLAGS])
def test_bad_recipe_flag_exits_2_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys,
                                                                recipe, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        recipe_main(recipe)([*argv, "--smoke"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_output_dir_that_is_a_file_is_one_sentence(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        recipe_main("mlp")(["--smoke", "--output-dir", str(tmp_path / "f")])
    assert exc.value.code == 1
    assert "is a file, not a folder" in one_line_error(capsys)
    assert (tmp_path / "f").read_text() == "mine"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs file permissions that bind (not root)")
def test_unwritable_output_dir_is_one_sentence(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(SystemExit) as exc:
        recipe_main("mlp")(["--smoke", "--output-dir", str(locked / "run")])
    assert exc.value.code == 1
    assert "cannot be written" in one_line_error(capsys)


def test_a_failed_run_leaves_no_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        recipe_main("mlp")(["--smoke", "--dataset", "nope", "--output-dir", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("recipe", RECIPES)
def test_help_shows_every_flags_meaning_and_default(recipe, capsys):
    with pytest.raises(SystemExit) as exc:
        recipe_main(recipe)(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    # Every flag the recipe adds has help text, and the defaults are printed.
    assert "(default: 0)" in text.replace("\n", " ") or "(default:" in text
    parser = _parser_of(recipe)
    assert runner.help_missing(parser) == []


def _parser_of(recipe):
    """The recipe's parser, captured as its main() parses the arguments."""
    captured = {}
    original = runner.make_parser

    def capture(*args, **kwargs):
        captured["parser"] = original(*args, **kwargs)
        return captured["parser"]

    runner.make_parser = capture
    try:
        with pytest.raises(SystemExit):
            recipe_main(recipe)(["--help"])
    finally:
        runner.make_parser = original
    return captured["parser"]


# === list ===
def test_list_prints_the_table_with_parameters_in_seconds():
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    import time

    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "kzoo", "list"], env=env,
                          capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[3] for line in done.stdout.splitlines()[2:]}
    assert set(rows) == set(kzoo.list_models())
    assert rows["mlp"] == f"{kzoo.model_info('mlp')['params']:,}"
    # Building every default-size model takes minutes; reading the table, seconds.
    assert seconds < 60, seconds


@pytest.mark.parametrize("name", ["mlp", "lenet5", "gan", "lstm_classifier", "resnet20_cifar"])
def test_parameter_table_matches_built_models(name):
    assert cli._known_parameter_counts()[name] == kzoo.model_info(name)["params"]


@pytest.mark.slow
def test_parameter_table_matches_every_built_model():
    table = cli._known_parameter_counts()
    assert set(table) == set(kzoo.list_models())
    for name in kzoo.list_models():
        assert table[name] == cli.count_parameters(name), name


# === The backend when KERAS_BACKEND is unset ===
def test_without_keras_backend_kzoo_picks_an_installed_one_and_says_so(tmp_path):
    import importlib.util

    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(KERAS_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", "import kzoo, keras; print(keras.config.backend())"],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    installed = [b for b in ("tensorflow", "jax", "torch") if importlib.util.find_spec(b)]
    assert done.stdout.strip() == installed[0]
    noted = [line for line in done.stderr.splitlines() if line.startswith("kzoo:")]
    if installed[0] == "tensorflow":
        assert noted == []
    else:
        assert noted == [f"kzoo: KERAS_BACKEND is not set and TensorFlow (Keras' default) is "
                         f"not installed, so kzoo uses {installed[0]}; set KERAS_BACKEND to "
                         "choose."]
