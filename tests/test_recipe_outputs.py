"""Every recipe's `--smoke` output loads, and predicts, in a fresh process with `import kzoo` only.

The recipes run here (in this process, tiny flags); one fresh interpreter
then loads each run folder's `model.keras` and `best.keras` and runs
`kzoo.predict` on what that model takes: text for models with a tokenizer,
an image for image models, an array otherwise. Every figure the recipes
save is checked as it is written: it names its run and labels its axes.
"""

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import matplotlib.figure
import pytest
from test_pictures import assert_names_its_run, written_name

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "bert": [],
    "classics": [],
    "clip": ["--hidden-dim", "16", "--num-layers", "1", "--embedding-dim", "8"],
    "cnn": ["--widths", "4", "8", "--no-mlp-baseline"],
    "dcgan": ["--filters", "8", "--latent-dim", "8"],
    "diffusion": ["--filters", "8", "--timesteps", "20", "--ddim-steps", "2"],
    "gan": ["--hidden-units", "16", "--latent-dim", "8"],
    "lm": ["--num-layers", "1", "--hidden-dim", "32", "--intermediate-dim", "64", "--num-heads", "2",
           "--sequence-length", "32"],
    "mlp": ["--hidden-units", "8"],
    "resnet": [],
    "rnn": ["--units", "8"],
    "seq2seq": ["--units", "8", "--embedding-dim", "4"],
    "transfer": ["--width", "4", "--image-size", "12"],
    "transformer": ["--num-layers", "1", "--hidden-dim", "32", "--intermediate-dim", "64",
                    "--num-heads", "2"],
    "tune": ["--max-trials", "1", "--jit-compile", "false"],
    "vae": [],
    "vit": ["--num-layers", "1"],
}

PREDICT_EVERY_RUN = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    import kzoo
    from kzoo import export, predict

    def run(folder):
        model = predict.load_model(folder)
        if (folder / "best.keras").exists():
            predict.load_model(folder / "best.keras")
        if predict.metadata(model).get("tokenizer"):
            tok = predict._tokenizer(model)
            words = [t for t in getattr(tok, "vocabulary", [])
                     if t.strip() and not t.startswith(("<", "["))]
            text = ("" if tok.level == "character" else " ").join(words[:3])
            result, kind = predict.predict(model, [text]), "text"
        elif not getattr(model, "inputs", None):
            return "loaded (no functional inputs to predict on)"
        elif len(model.inputs) > 1:
            return "loaded (several array inputs: call it from Python)"
        elif len(model.inputs[0].shape) == 4:
            from PIL import Image
            Image.fromarray(np.zeros((10, 10, 3), "uint8")).save(folder / "in.png")
            result, kind = predict.predict(model, [str(folder / "in.png")]), "image"
        else:
            np.save(folder / "in.npy", export.sample_inputs(model))
            result, kind = predict.predict(model, [str(folder / "in.npy")]), "array"
        assert result["inputs"], result
        return kind + ": " + ",".join(sorted(result))

    report = {}
    for folder in map(Path, sys.argv[1:]):
        try:
            report[folder.name] = run(folder)
        except export.ExportError as err:  # a one-sentence refusal, reported
            report[folder.name] = f"refused: {err}"
    print(json.dumps(report))
    """
)


@pytest.mark.slow
@pytest.mark.once
def test_every_recipes_smoke_output_loads_and_predicts_in_a_fresh_process(tmp_path, monkeypatch):
    saved = []  # (recipe, file name, figure) of every figure a recipe writes
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        saved.append((recipe, written_name(path), fig))
        return real_savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    folders = []
    for recipe, flags in TINY.items():
        if os.environ.get("KZOO_REUSE_RUNS"):  # a developer's shortcut: runs made before
            folder = Path(os.environ["KZOO_REUSE_RUNS"]) / recipe
            if (folder / "run.json").exists():
                folders.append(str(folder))
                continue
        main = runpy.run_path(str(ROOT / "recipes" / f"{recipe}.py"))["main"]
        folder = tmp_path / recipe
        main(["--smoke", "--verbose", "0", "--output-dir", str(folder), *flags])
        assert json.loads((folder / "run.json").read_text())["status"] == "complete", recipe
        folders.append(str(folder))
    # The pictures: every recipe writes at least its learning curve, and each figure
    # is titled with its run (recipe, model, dataset, backend) and labels its axes.
    assert {r for r, _, _ in saved} >= set(TINY) - {"classics"}, sorted({r for r, _, _ in saved})
    for recipe, name, fig in saved:
        assert_names_its_run(fig, keras.config.backend(), what=f"{recipe}: {name}")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", PREDICT_EVERY_RUN, *folders], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report) == set(TINY)
    # Text in, text out, for the recipes that train on text.
    for recipe in ("lm", "transformer", "seq2seq"):
        assert report[recipe].startswith("text: ") and "texts" in report[recipe], report
    for recipe in ("mlp", "cnn", "resnet", "vit", "classics", "bert", "transfer", "tune"):
        assert "top_k" in report[recipe], report
    # Nothing else fails: every other run loads, and says why it takes no file.
    assert not [r for r in report.values() if r.startswith("refused") and "Python" not in r]
