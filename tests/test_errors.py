"""Clear errors: one sentence naming the value received and what is expected."""

import ast
import re
import runpy
from pathlib import Path

import numpy as np
import pytest

import kzoo

ROOT = Path(__file__).resolve().parents[1]
MODELS = kzoo.list_models()


def assert_one_sentence(err, pattern):
    message = str(err)
    assert re.search(pattern, message), message
    assert "\n" not in message.strip(), f"not one line: {message!r}"
    assert message.startswith("Received "), message
    assert message.rstrip().endswith((".", "?")), message


def needs(name):
    """Skip only when a whole family is absent from this checkout."""
    if name not in MODELS:
        pytest.skip(f"{name} is not registered in this checkout")


# === Model names and arguments ===
def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ValueError) as err:
        kzoo.create_model("resnet5")
    assert_one_sentence(err.value, r"^Received unknown model name 'resnet5'; the closest "
                                   r"registered names are \[.*'resnet50'.*\]\.$")


def test_unknown_model_name_without_close_names_points_to_list_models():
    with pytest.raises(ValueError) as err:
        kzoo.create_model("zzzzzz")
    assert_one_sentence(err.value, r"kzoo\.list_models\(\) lists the registered names\.$")


def test_model_name_of_the_wrong_type():
    with pytest.raises(TypeError) as err:
        kzoo.create_model(3)
    assert_one_sentence(err.value, r"^Received model name 3 of type int; expected a string")


def test_unknown_argument_lists_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        kzoo.create_model("mlp", hidden=3)
    assert_one_sentence(err.value, r"^Received unknown argument hidden=3 for model 'mlp'; "
                                   r"allowed arguments are \[.*'hidden_units'.*\]\.$")


# === Invalid configurations across families ===
CONFIGS = [
    ("mlp", {"hidden_units": (0,)}, r"Received hidden_units=\(0,\); expected a sequence of positive integers"),
    ("mlp", {"dropout": 1.5}, r"Received dropout=1\.5; expected a number in \[0, 1\)"),
    ("mlp", {"activation": "swishy"}, r"Received activation='swishy'; expected one of \["),
    ("transformer", {"activation": "swishy"},
     r"Received activation='swishy'; expected the name of a Keras activation or one of \["),
    ("transformer_lm", {"activation": 3},
     r"Received activation=3; expected the name of a Keras activation or one of \["),
    ("mlp", {"num_classes": 3, "num_outputs": 2}, r"expected exactly one of num_classes or num_outputs"),
    ("transformer_lm", {"hidden_dim": 10, "num_heads": 4},
     r"Received hidden_dim=10 and num_heads=4; expected hidden_dim divisible by num_heads"),
    ("transformer", {"hidden_dim": 10, "num_heads": 4},
     r"Received hidden_dim=10 and num_heads=4; expected hidden_dim divisible by num_heads"),
    ("vit_tiny", {"hidden_dim": 10, "num_heads": 4},
     r"Received hidden_dim=10 and num_heads=4; expected hidden_dim divisible by num_heads"),
    # Images smaller than (or not a multiple of) the patch size.
    ("vit_tiny", {"input_shape": (4, 4, 3), "patch_size": 8},
     r"Received input_shape=\(4, 4, 3\) with patch_size=8; expected height and width divisible by patch_size"),
]


@pytest.mark.parametrize("name, overrides, pattern", CONFIGS,
                         ids=[f"{c[0]}-{'-'.join(c[1])}" for c in CONFIGS])
def test_invalid_configuration_is_one_sentence(name, overrides, pattern):
    needs(name)
    from kzoo.registry import get_entry

    config = {**get_entry(name).tiny, **overrides}
    with pytest.raises(ValueError) as err:
        kzoo.create_model(name, **config)
    assert_one_sentence(err.value, pattern)


# === Inputs at call time ===
def test_wrong_feature_count_names_expected_and_found_shapes():
    model = kzoo.create_model("mlp", input_shape=(12,), num_classes=3, hidden_units=(4,))
    with pytest.raises(ValueError, match=r"expected shape=\(None, 12\), found shape=\(2, 5\)"):
        model(np.zeros((2, 5), "float32"))


def test_wrong_sequence_features_names_expected_and_found_shapes():
    needs("lstm_classifier")
    model = kzoo.create_model("lstm_classifier", input_shape=(4, 3), units=4, num_classes=3)
    with pytest.raises(ValueError, match=r"expected shape=\(None, 4, 3\), found shape=\(2, 4, 5\)"):
        model(np.zeros((2, 4, 5), "float32"))


def test_images_not_divisible_by_the_patch_size_at_call_time():
    needs("vit_tiny")
    from kzoo.layers.transformer import PatchEmbedding

    layer = PatchEmbedding(patch_size=4, embedding_dim=8)
    with pytest.raises(ValueError) as err:
        layer(np.zeros((1, 6, 6, 3), "float32"))
    assert_one_sentence(err.value, r"Received images of shape \(6, 6, 3\) with patch_size=4; "
                                   r"expected known height and width divisible by patch_size")


def test_sequence_longer_than_max_length_at_call_time():
    needs("transformer_lm")
    model = kzoo.create_model("transformer_lm", vocabulary_size=17, max_sequence_length=16, hidden_dim=8,
                              num_heads=2, num_layers=1)
    with pytest.raises(ValueError, match=r"Received sequences of length 40 with max_sequence_length=16"):
        model(np.zeros((2, 40), "int32"))


# === Recipe flags ===
def _mlp_recipe():
    return runpy.run_path(str(ROOT / "recipes" / "mlp.py"))["main"]


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "-3"], r"argument --batch-size: expected a positive integer, received '-3'"),
    (["--lr", "0"], r"argument --lr: expected a number > 0, received '0'"),
    (["--schedule", "warm"], r"argument --schedule: invalid choice: 'warm'"),
    (["--epochs", "ten"], r"argument --epochs: expected a positive integer, received 'ten'"),
    (["--hidden-units"], r"argument --hidden-units: expected at least one argument"),
])
def test_bad_recipe_flag_exits_2_naming_the_flag_and_value(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _mlp_recipe()(argv)
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(message, last), last


def test_unknown_dataset_flag_is_one_sentence_and_exit_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _mlp_recipe()(["--smoke", "--dataset", "nope", "--output-dir", str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Received unknown dataset 'nope'; use a registered offline dataset")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("recipe", ["classics", "gan", "dcgan", "vae", "diffusion", "transfer",
                                    "tune"])
def test_a_streamed_dataset_in_a_recipe_that_needs_arrays_is_one_sentence(recipe, tmp_path,
                                                                         capsys):
    """Refused before anything is loaded or written, whether or not TFDS is installed."""
    main = runpy.run_path(str(ROOT / "recipes" / f"{recipe}.py"))["main"]
    folder = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["--smoke", "--dataset", "tfds:mnist", "--output-dir", str(folder)])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(
        rf"error: --dataset tfds:mnist streams its examples in batches, and the \S*{recipe}\S* "
        r"recipe trains on arrays held in memory; use a keras: dataset \(such as keras:mnist\) "
        r"or one of kzoo's own datasets \(see --help\)\.", err), err
    assert not folder.exists()


# === No assert statements for validation ===
def test_no_assert_statements_in_kzoo():
    found = []
    for path in sorted((ROOT / "kzoo").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        found += [f"{path.relative_to(ROOT)}:{n.lineno}" for n in ast.walk(tree)
                  if isinstance(n, ast.Assert)]
    assert not found, f"assert statements (skipped under python -O) validate: {found}"
