"""Every notebook is committed executed, so it reads on a code host without running.

Pure JSON, no kernel: fast in every tox env. `tox -e notebooks` executes the
notebooks; this checks that what is committed is the result of such a run:
every code cell ran, in order, in one session, without errors or warnings, and
the pictures are there. Re-execute a notebook after changing it, in the notebooks
env (`tox -e notebooks` builds it; nbmake writes the outputs back with --overwrite):

    KERAS_BACKEND=jax pytest -p no:cacheprovider --nbmake --overwrite notebooks/NAME.ipynb
"""

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("quickstart", "cnns", "rnns", "transformers", "generative", "tuning")
#: A notebook holds small PNGs; a bigger file means figures saved at a needless size.
MAX_BYTES = 300_000
#: Signs of a machine-specific path or of a failure left in a committed output.
FORBIDDEN = ("/tmp/", "Traceback (most recent call last)", "Warning:")


def _cells(name):
    notebook = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    return [c for c in notebook["cells"] if c["cell_type"] == "code"]


def _text(output):
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    else:
        text = output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def test_the_six_notebooks_exist():
    found = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == sorted(NAMES), f"notebooks/ holds {found}; this test lists {sorted(NAMES)}"


@pytest.mark.parametrize("name", NAMES)
def test_committed_with_outputs(name):
    cells = _cells(name)
    assert cells, f"{name}.ipynb has no code cells"
    counts = [c.get("execution_count") for c in cells]
    # One session, top to bottom: nbclient numbers the cells 1, 2, 3, ...
    assert counts == list(range(1, len(cells) + 1)), (
        f"{name}.ipynb: execution counts {counts}; expected every code cell executed once, "
        "in order, in one run (re-execute the whole notebook)")
    outputs = [o for c in cells for o in c.get("outputs", [])]
    errors = [o.get("ename") for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"{name}.ipynb has error outputs: {errors}"
    stderr = [_text(o)[:200] for o in outputs
              if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not stderr, f"{name}.ipynb has output on stderr (warnings, logs): {stderr}"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{name}.ipynb has no figure among its outputs"
    for output in outputs:
        text = _text(output)
        for bad in FORBIDDEN:
            assert bad not in text, f"{name}.ipynb has {bad!r} in an output: {text[:300]!r}"


@pytest.mark.parametrize("name", NAMES)
def test_file_stays_small(name):
    size = (NOTEBOOKS / f"{name}.ipynb").stat().st_size
    assert size < MAX_BYTES, (
        f"{name}.ipynb is {size:,} bytes; expected under {MAX_BYTES:,}, so draw its figures "
        "smaller (figsize, dpi)")


@pytest.mark.parametrize("name", NAMES)
def test_uses_the_api_not_recipe_scripts(name):
    # A notebook shows kzoo's API (create_model, fit, weights, predict); a recipe run
    # through runpy with its output silenced shows a learner nothing of it.
    code = "".join("".join(c["source"]) for c in _cells(name))
    assert "runpy" not in code, f"{name}.ipynb runs a recipe script; call kzoo's API instead"
    assert "kzoo.create_model(" in code, f"{name}.ipynb never calls kzoo.create_model"
