"""The README's model table is the registry's (`python -m kzoo list --markdown`)."""

import contextlib
import io
from pathlib import Path

import kzoo
from kzoo import __main__ as cli

README = Path(__file__).resolve().parents[1] / "README.md"
REGENERATE = "KERAS_BACKEND=jax python -m kzoo list --markdown"
PARAMS = 3  # the parameters column: counted at default size, too slow to rebuild here


def _rows(text):
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    return rows


def test_readme_model_table_matches_the_registry_and_measured_results():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["list", "--markdown", "--no-params"]) == 0
    want = _rows(out.getvalue())
    text = README.read_text()
    section = text[text.index("### Models"):]
    got = _rows(section[:section.index("\n#", 1)])
    assert sorted(got) == kzoo.list_models(), f"regenerate the table with `{REGENERATE}`"
    for name, cells in want.items():
        expected = cells[:PARAMS] + cells[PARAMS + 1:]
        actual = got[name][:PARAMS] + got[name][PARAMS + 1:]
        assert actual == expected, f"{name}: regenerate the table with `{REGENERATE}`"
        assert got[name][PARAMS].replace(",", "").isdigit(), name


def test_readme_weights_table_is_the_weights_table():
    text = README.read_text()
    section = text[text.index("## Published weights"):]
    section = section[:section.index("\n## ", 1)]
    assert kzoo.weights.weights_table_markdown() in section, (
        "regenerate with print(kzoo.weights.weights_table_markdown())")
