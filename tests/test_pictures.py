"""The pictures a run writes say what they show: titles, labelled axes, whole epochs.

Checked on the matplotlib figures the plotting functions return (the same
figures they save), and on the learning curve of a recipe's smoke run.
`assert_readable` is the check; a figure without a title or labels fails it.
"""

import csv
import json
import re
import runpy
from pathlib import Path

import keras
import numpy as np
import pytest
from spies import record_returns

from kzoo.training import plots, sample_grid

ROOT = Path(__file__).resolve().parents[1]


def assert_readable(fig, title):
    """`fig` carries `title` and every plot axes names both of its axes."""
    shown = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes]
    assert any(title in text for text in shown), (title, shown)
    for ax in fig.axes:
        if ax.get_xticks().size or ax.get_yticks().size:
            assert ax.get_xlabel() or ax.get_ylabel(), ax


def assert_names_its_run(fig, backend, what=""):
    """`fig` is titled with a run's recipe, model, dataset and `backend`, and is readable."""
    shown = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes]
    pattern = re.compile(rf"\S+ recipe: .+ \({backend} backend\)")
    titles = [text for text in shown if pattern.search(text)]
    assert titles, (what, shown)
    assert_readable(fig, pattern.search(titles[0]).group(0))


def whole_epoch_ticks(ax):
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    return ticks and all(float(t).is_integer() for t in ticks), ticks


def five_epochs():
    return {
        "loss": [1.2, 0.8, 0.6, 0.5, 0.45], "val_loss": [1.0, 0.75, 0.62, 0.58, 0.57],
        "accuracy": [0.6, 0.75, 0.82, 0.86, 0.88], "val_accuracy": [0.65, 0.77, 0.8, 0.83, 0.84],
        "learning_rate": [1e-3, 8e-4, 5e-4, 2e-4, 1e-4],
    }


# === Learning curve ===
def test_learning_curve_has_labelled_panels_whole_epochs_and_the_rate_beneath(tmp_path):
    fig = plots.plot_history(five_epochs(), tmp_path / "curve.png", title="mlp on digits")
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert fig.get_suptitle() == "mlp on digits"
    loss, accuracy, rate = fig.axes
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
    assert {ax.get_xlabel() for ax in fig.axes} == {"epoch"}
    for ax in fig.axes:
        ok, ticks = whole_epoch_ticks(ax)
        assert ok and set(ticks) <= {1, 2, 3, 4, 5}, ticks
    for ax in (loss, accuracy):
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation"]
    np.testing.assert_allclose(rate.lines[0].get_ydata(), five_epochs()["learning_rate"])
    # The rate panel sits under the curves.
    assert rate.get_position().y1 <= min(loss.get_position().y0, accuracy.get_position().y0)
    assert_readable(fig, "mlp on digits")


def test_one_epoch_is_drawn_as_labelled_bars_on_a_range_from_zero(tmp_path):
    history = {"loss": [0.41], "val_loss": [0.45], "accuracy": [0.87], "learning_rate": [1e-3]}
    fig = plots.plot_history(history, tmp_path / "curve.png", title="one epoch")
    loss, accuracy, rate = fig.axes
    for ax, values in ((loss, [0.41, 0.45]), (accuracy, [0.87]), (rate, [1e-3])):
        assert [p.get_height() for p in ax.patches] == pytest.approx(values)
        low, high = ax.get_ylim()
        # Not matplotlib's few percent around a lone dot: zero and the value both in view.
        assert low <= 0.0 and high >= max(values) and high - low >= max(values)
        assert whole_epoch_ticks(ax) == (True, [1])
        assert any(t.get_text() for t in ax.texts)  # the value written on its bar


def test_a_flat_curve_gets_a_range_its_own_size_not_a_sliver():
    fig = plots.learning_curve_figure({"loss": [0.5, 0.5, 0.5]})
    low, high = fig.axes[0].get_ylim()
    assert low < 0.5 < high and high - low >= 0.5


def test_a_figure_without_its_title_or_labels_fails_the_check():
    fig = plots.learning_curve_figure(five_epochs(), title="mlp on digits")
    with pytest.raises(AssertionError):
        assert_readable(fig, "cnn on digits")
    fig.suptitle("")
    for ax in fig.axes:
        ax.set_title("")
    with pytest.raises(AssertionError):
        assert_readable(fig, "mlp on digits")
    fig = plots.learning_curve_figure(five_epochs(), title="mlp on digits")
    fig.axes[0].set_xlabel("")
    fig.axes[0].set_ylabel("")
    with pytest.raises(AssertionError):
        assert_readable(fig, "mlp on digits")


def test_a_gan_curve_shows_both_players_losses_by_name():
    fig = plots.learning_curve_figure({"loss": [3.0, 2.5], "d_loss": [1.0, 1.1],
                                       "g_loss": [2.0, 1.4], "real_score": [0.1, 0.2]})
    assert [ax.get_ylabel() for ax in fig.axes] == ["discriminator loss", "generator loss"]


def test_a_history_without_losses_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match="expected at least one loss"):
        plots.learning_curve_figure({"learning_rate": [1e-3]})


def test_run_title_names_recipe_model_dataset_and_backend():
    assert plots.run_title("cnn", "simple_cnn", "digits", "torch") == (
        "cnn recipe: simple_cnn on digits (torch backend)")


# === Attention maps ===
def test_attention_map_has_a_colour_bar_token_ticks_and_labels(tmp_path):
    weights = np.random.default_rng(0).dirichlet(np.ones(4), size=3)
    fig = plots.plot_attention(weights, tmp_path / "attention.png", title="decoder attention",
                               key_tokens=["a", "b", "c", "d"], query_tokens=["x", "y", "z"])
    assert (tmp_path / "attention.png").stat().st_size > 0
    heat, bar = fig.axes
    assert heat.get_title() == "decoder attention"
    assert (heat.get_xlabel(), heat.get_ylabel()) == ("key position", "query position")
    assert [t.get_text() for t in heat.get_xticklabels()] == ["a", "b", "c", "d"]
    assert [t.get_text() for t in heat.get_yticklabels()] == ["x", "y", "z"]
    assert bar.get_ylabel().startswith("attention weight")
    assert heat.images[0].get_clim() == pytest.approx((0.0, max(weights.max(), 0.5)))
    # Evenly spread attention sits mid-scale, not at the top of it.
    even = plots.attention_figure(np.full((3, 4), 0.25)).axes[0].images[0]
    assert even.get_clim() == pytest.approx((0.0, 0.5))
    assert_readable(fig, "decoder attention")


def test_seq2seq_recipe_attention_map_names_characters_and_the_run(tmp_path, monkeypatch):
    plot = runpy.run_path(str(ROOT / "recipes" / "seq2seq.py"))["plot_attention"]
    captured = record_returns(monkeypatch, plots, "plot_attention")
    plot("may 1", "05-01", np.full((7, 5), 0.2), tmp_path / "attention.png",
         title="seq2seq recipe: seq2seq_attention on dates (jax backend)")
    heat = captured[0].axes[0]
    assert [t.get_text() for t in heat.get_xticklabels()] == ["m", "a", "y", "␣", "1"]
    assert [t.get_text() for t in heat.get_yticklabels()] == list("05-01") + ["<end>"]
    assert heat.get_xlabel() == "source character (key)"
    assert_readable(captured[0], "seq2seq recipe: seq2seq_attention on dates")


# === Sample grids ===
def test_sample_grid_has_its_title_and_caption_and_no_plot_ticks(tmp_path):
    images = np.random.default_rng(0).uniform(size=(6, 8, 8, 1))
    fig = sample_grid.save_image_grid(images, tmp_path / "grid.png", title="vae samples")
    (ax,) = fig.axes
    assert ax.get_title() == "vae samples" and ax.get_xlabel() == "6 images"
    assert not ax.get_xticks().size and not ax.get_yticks().size
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as png:
        # Every image pixel drawn zoom x zoom (4 for 8-pixel images): the grid is there whole.
        assert png.width >= 3 * 9 * 4 and png.height >= 2 * 9 * 4


def test_sample_grid_callback_titles_each_grid_with_its_epoch(tmp_path, monkeypatch):
    captured = record_returns(monkeypatch, sample_grid, "save_image_grid")
    import kzoo

    vae = kzoo.create_model("vae", input_shape=(8, 8, 1), latent_dim=2, hidden_units=(8,))
    vae.compile()
    grids = sample_grid.SampleGrid(tmp_path, n=4, every=1, title="vae recipe: vae on digits")
    vae.fit(np.random.default_rng(0).uniform(size=(8, 8, 8, 1)), epochs=2, verbose=0,
            callbacks=[grids])
    titles = [fig.axes[0].get_title() for fig in captured]
    assert titles == ["vae recipe: vae on digits\nafter epoch 1 of 2",
                      "vae recipe: vae on digits\nafter epoch 2 of 2"]
    assert all("seed 0" in fig.axes[0].get_xlabel() for fig in captured)


# === A recipe's learning curve ===
def test_mlp_smoke_run_writes_a_titled_learning_curve_with_the_recorded_rate(
        tmp_path, monkeypatch):
    captured = []
    real = plots.plot_history

    def capture(history, path, title=""):
        captured.append((Path(path), real(history, path, title=title)))
        return captured[-1][1]

    monkeypatch.setattr(plots, "plot_history", capture)
    main = runpy.run_path(str(ROOT / "recipes" / "mlp.py"))["main"]
    main(["--smoke", "--hidden-units", "8", "--lr", "0.002", "--output-dir", str(tmp_path),
          "--verbose", "0"])
    record = json.loads((tmp_path / "metrics.json").read_text())
    [(path, fig)] = captured
    assert path == tmp_path / "learning_curve.png" and path.stat().st_size > 0
    title = plots.run_title("mlp", "mlp", record["dataset"], keras.config.backend())
    assert fig.get_suptitle() == title
    assert_readable(fig, title)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
    for ax in fig.axes:
        assert whole_epoch_ticks(ax) == (True, [1])
        assert ax.get_ylim()[1] - ax.get_ylim()[0] > 0.5 * max(p.get_height() for p in ax.patches)
    # The rate the run recorded is the one drawn, and history.csv keeps it too.
    with open(tmp_path / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    drawn = fig.axes[-1].patches[0].get_height()
    assert float(rows[-1]["learning_rate"]) == pytest.approx(drawn)
    assert drawn == pytest.approx(0.002)


def test_rnn_recipe_forecast_plot_names_the_run_and_its_axes(tmp_path):
    plot = runpy.run_path(str(ROOT / "recipes" / "rnn.py"))["plot_forecast"]
    fig = plot(np.zeros(30), np.ones(30), tmp_path / "forecast.png",
               title="rnn-forecast recipe: lstm_regressor on sine (jax backend)")
    assert (tmp_path / "forecast.png").stat().st_size > 0
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("test step", "standardised value")
    assert "first 30 test steps" in ax.get_title()
    assert_readable(fig, "rnn-forecast recipe: lstm_regressor on sine")


# === The toolkit's reports: learning-rate range test and debugging ===
def written_name(path):
    """The file a figure is saved as: kzoo writes `.tmp-PID-NAME`, then renames it NAME."""
    return re.sub(r"^\.tmp-\d+-", "", Path(path).name)


def capture_saved_figures(monkeypatch):
    """Record (file name, figure) of every figure saved from now on."""
    import matplotlib.figure

    saved, real = [], matplotlib.figure.Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        saved.append((written_name(path), fig))
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return saved


def test_lr_finder_and_debugging_plots_name_the_run_and_label_their_axes(tmp_path, monkeypatch):
    saved = capture_saved_figures(monkeypatch)
    main = runpy.run_path(str(ROOT / "recipes" / "mlp.py"))["main"]
    with pytest.raises(SystemExit) as done:
        main(["--smoke", "--hidden-units", "8", "--find-lr", "--verbose", "0",
              "--output-dir", str(tmp_path / "find-lr")])
    assert done.value.code in (0, None)
    main(["--smoke", "--hidden-units", "8", "--debug-gradients", "--debug-activations",
          "--debug-weights", "--verbose", "0", "--output-dir", str(tmp_path / "debug")])
    figures = dict(saved)
    assert {"lr_finder.png", "gradients.png", "activations.png", "weights.png",
            "learning_curve.png"} <= set(figures), sorted(figures)
    for name, fig in saved:
        assert_names_its_run(fig, keras.config.backend(), what=name)
    (sweep,) = figures["lr_finder.png"].axes
    assert sweep.get_xscale() == "log" and sweep.get_xlabel() == "learning rate"
    assert "learning-rate range test over 10 steps" in sweep.get_title()
    (norms,) = figures["gradients.png"].axes
    assert norms.get_xlabel() == "layer" and "epoch 1" in [
        t.get_text() for t in norms.get_legend().get_texts()]
    std, fractions = figures["activations.png"].axes
    assert "after epoch 1" in std.get_title() and fractions.get_xlabel() == "layer"
    (weights,) = figures["weights.png"].axes
    assert (weights.get_xlabel(), weights.get_ylabel()) == ("variable", "weight value")


def test_a_report_plot_without_the_run_in_its_title_fails_the_check(tmp_path):
    from kzoo.training import debugging

    rows = [{"variable": "dense/kernel", "mean": 0.0, "std": 1.0, "min": -2.0, "max": 2.0}]
    fig = debugging.plot_weight_stats(rows, tmp_path / "w.png")
    with pytest.raises(AssertionError):
        assert_names_its_run(fig, keras.config.backend())
    titled = debugging.plot_weight_stats(rows, tmp_path / "w.png", title=plots.run_title(
        "mlp", "mlp", "digits", keras.config.backend()), epoch=3)
    assert_names_its_run(titled, keras.config.backend())
    assert titled.axes[0].get_title().endswith("weights after epoch 3")
