"""The README's model table is the registry's and docs/results/measured.json's
(`python docs/results/gather.py --readme`), and the figures come from run folders."""

import importlib.util
import json
from pathlib import Path

import pytest

import kzoo

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REGENERATE = "KERAS_BACKEND=jax python docs/results/gather.py --readme"
PARAMS = 3  # the parameters column: counted at default size, too slow to rebuild here


def _gather():
    spec = importlib.util.spec_from_file_location("gather", ROOT / "docs/results/gather.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text):
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    return rows


def test_readme_model_table_matches_the_registry_and_measured_results():
    gather = _gather()
    want = _rows(gather.model_table(gather.load(), with_params=False))
    text = README.read_text()
    section = text[text.index("### Models"):]
    got = _rows(section[:section.index("\n#", 1)])
    assert sorted(got) == kzoo.list_models(), f"regenerate the table with `{REGENERATE}`"
    for name, cells in want.items():
        expected = cells[:PARAMS] + cells[PARAMS + 1:]
        actual = got[name][:PARAMS] + got[name][PARAMS + 1:]
        assert actual == expected, f"{name}: regenerate the table with `{REGENERATE}`"
        assert got[name][PARAMS].replace(",", "").isdigit(), name


def test_the_package_holds_no_results():
    """Figures live in docs/results/, never in kzoo/ (issue 22)."""
    import kzoo as package

    assert not (Path(package.__file__).parent / "measured.py").exists()
    assert "mlp" in _gather().load()


def _run_folder(tmp_path, name, recipe, metrics, smoke=False, **args):
    folder = tmp_path / name
    folder.mkdir()
    record = {"recipe": recipe, "backend": "torch", "smoke": smoke, "metrics": metrics,
              "args": args}
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


def test_gather_reads_each_models_figure_from_its_default_run(tmp_path):
    gather = _gather()
    measured = json.loads(json.dumps(gather.load()))  # a copy; the file is not written
    # Recipe names as the recipes record them (recipes/rnn.py: "rnn-<task>").
    classify = _run_folder(tmp_path, "rnn", "rnn-classify", {"test_accuracy": 0.5},
                           task="classify")
    forecast = _run_folder(tmp_path, "fc", "rnn-forecast", {"test_mae": 0.25,
                                                            "test_accuracy": 0.9}, task="forecast")
    smoke = _run_folder(tmp_path, "s", "mlp", {"test_accuracy": 0.1}, smoke=True)
    other = _run_folder(tmp_path, "alex", "classics-alexnet", {"test_accuracy": 0.2},
                        model="alexnet")
    mlps = _run_folder(tmp_path, "mlps", "mlps", {"test_accuracy": 0.3})  # not "mlp"
    (tmp_path / "unfinished").mkdir()
    lines = gather.gather([classify, forecast, smoke, other, mlps, tmp_path / "unfinished"],
                          measured)
    assert measured["lstm_classifier"]["values"]["torch"] == 0.5
    assert measured["lstm_regressor"]["values"]["torch"] == 0.25  # the flag picks the model
    assert measured["mlp"]["values"]["torch"] != 0.1  # a smoke run never counts
    assert measured["lenet5"]["values"]["torch"] != 0.2  # another model of the recipe
    assert measured["mlp"]["values"]["torch"] != 0.3
    assert [("skipped" in line) for line in lines] == [False, False, True, True, True, True]
    assert "0.500 torch" in gather.describe(measured["lstm_classifier"])


def test_gather_check_fails_on_a_stale_table(tmp_path, monkeypatch):
    gather = _gather()
    text = README.read_text()
    table = gather.current_table(text)
    with pytest.raises(ValueError):
        gather.current_table("no table here")
    assert gather.replace_table(text, table) == text
    monkeypatch.setattr(gather, "README", tmp_path / "README.md")
    monkeypatch.setattr(gather, "model_table", lambda measured: table)
    (tmp_path / "README.md").write_text(text.replace("| `mlp` |", "| `mlp` | stale |", 1))
    assert gather.main(["--check"]) == 1
    (tmp_path / "README.md").write_text(text)
    assert gather.main(["--check"]) == 0
    assert gather.main(["--readme"]) == 0 and (tmp_path / "README.md").read_text() == text


def test_readme_weights_table_is_the_weights_table():
    text = README.read_text()
    section = text[text.index("## Published weights"):]
    section = section[:section.index("\n## ", 1)]
    assert kzoo.weights.weights_table_markdown() in section, (
        "regenerate with print(kzoo.weights.weights_table_markdown())")
