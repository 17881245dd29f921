"""What a hyperparameter search found: the ranked table, the best trial, the picture.

`write_report` writes, into a run folder, `trials.md` (the trials ranked by
the objective, and a sentence naming the runner flags the search set per
trial), `trials.json` (every trial: status, metrics, values, error),
`best_hyperparameters.json` (the best values, the `create_model` kwargs and
training settings they make, and the flags they set) and `search.png`
(`search_figure`: the objective per trial, and against the hyperparameter
that explains most of its variance, `importance`).
"""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from kzoo.training import plots
from kzoo.training.checkpoint import save_figure
from kzoo.training.search import FLAG_NAMES, flag_option, last_line
from kzoo.training.search_space import format_value


@dataclasses.dataclass
class TrialRow:
    """One trial of a finished search, for tables and plots."""

    trial_id: str
    status: str
    score: float
    metrics: dict
    values: dict
    message: str = ""


def trial_rows(tuner):
    """Every trial of `tuner`, in the order they started."""
    oracle = tuner.oracle
    order = list(getattr(oracle, "start_order", [])) or sorted(oracle.trials)
    rows = []
    for trial_id in order:
        trial = oracle.trials[trial_id]
        metrics = {}
        for name in trial.metrics.metrics:
            best = trial.metrics.get_best_value(name)
            if best is not None:
                metrics[name] = float(best)
        score = trial.score if trial.status == "COMPLETED" else None
        rows.append(TrialRow(
            trial_id=trial_id,
            status=trial.status,
            score=None if score is None or not math.isfinite(score) else float(score),
            metrics=metrics,
            values=dict(trial.hyperparameters.values),
            message=last_line(trial.message) if trial.status != "COMPLETED" else "",
        ))
    return rows


def ranked(rows, direction="min"):
    """Completed trials best first, then failed ones."""
    done = [r for r in rows if r.score is not None]
    done.sort(key=lambda r: r.score if direction == "min" else -r.score)
    return done + [r for r in rows if r.score is None]


def markdown_table(rows, objective, space_names, direction="min"):
    """The ranked trials as a Markdown table."""
    names = [n for n in space_names if any(n in r.values for r in rows)]
    if any("tuner/epochs" in r.values for r in rows):
        names.append("tuner/epochs")
    metric_names = [objective] + [m for m in ("val_accuracy", "val_loss") if m != objective]
    header = ["rank", "trial", "status"] + metric_names + [n.replace("tuner/", "") for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(ranked(rows, direction), 1):
        cells = [str(rank) if row.score is not None else "-", row.trial_id, row.status.lower()]
        cells += [_format_cell(row.metrics.get(m)) for m in metric_names]
        cells += [_format_cell(row.values.get(n)) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format_cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def importance(rows, space):
    """How much of the objective's variance each searched hyperparameter explains.

    Numeric ranges: the squared Spearman rank correlation with the objective.
    Choices: the correlation ratio eta^2 (between-group over total variance).
    Both lie in [0, 1]. Fixed hyperparameters and those with one observed
    value are left out.

    Returns:
        dict of name to importance, most important first.
    """
    done = [r for r in rows if r.score is not None]
    if len(done) < 3:
        return {}
    scores = np.array([r.score for r in done])
    if np.ptp(scores) == 0:
        return {}
    found = {}
    for name, param in space.items():
        if param.kind == "fixed" or not all(name in r.values for r in done):
            continue
        values = [r.values[name] for r in done]
        if len({repr(v) for v in values}) < 2:
            continue
        if param.kind in ("int", "float"):
            rho = np.corrcoef(_ranks(np.array(values, float)), _ranks(scores))[0, 1]
            found[name] = float(rho**2)
        else:
            groups = {}
            for v, s in zip(values, scores):
                groups.setdefault(repr(v), []).append(s)
            between = sum(len(g) * (np.mean(g) - scores.mean()) ** 2 for g in groups.values())
            found[name] = float(between / ((scores - scores.mean()) ** 2).sum())
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def _ranks(values):
    # Average ranks, so ties (ints, grids) are treated fairly.
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def _trial_axis(ax, rows):
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(-0.5, max(len(rows), 1) - 0.5)
    if len(rows) <= 20:  # every trial by the id trials.md gives it
        ax.set_xticks(range(len(rows)), [r.trial_id for r in rows])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("trial (in the order they started)")


def _value_axis(ax, name, param, share):
    from matplotlib.ticker import MaxNLocator

    if param.kind in ("int", "float"):
        low, high = float(param.low), float(param.high)
        if param.log:
            ax.set_xscale("log")
            ax.set_xlim(low / 1.25, high * 1.25)
        else:
            pad = 0.05 * (high - low) or 0.5
            ax.set_xlim(low - pad, high + pad)
        if param.kind == "int" and param.log and (param.step or 0) > 1:  # a grid of factors
            grid = [int(param.low)]
            while grid[-1] * param.step <= param.high and len(grid) < 12:
                grid.append(int(grid[-1] * param.step))
            ax.set_xticks(grid, [str(v) for v in grid])
            ax.minorticks_off()
        elif param.kind == "int":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    else:
        ax.set_xticks(range(len(param.values)), [format_value(v) for v in param.values])
        ax.set_xlim(-0.5, len(param.values) - 0.5)
    searched = "the range searched" if param.kind in ("int", "float") else "the choices searched"
    ax.set_xlabel(f"{name} ({searched})" + share)


def search_figure(rows, space, objective, direction="min", title=""):
    """The search as a Figure: the objective per trial, and against one hyperparameter.

    Left, every trial's objective in the order the trials started (ticks are
    the trial ids of `trials.md`), the best so far, and failed trials as red
    crosses at the foot of the axis. Right, the objective against the
    hyperparameter that explains most of its variance (`importance`; the
    first one searched when too few trials rank them), over the whole range
    searched. The title names the search and what it searched; one trial is
    drawn on a range its own size with its value written beside it.

    Args:
        rows: list of `TrialRow`, in start order (`trial_rows`).
        space: dict. Name to `Param`: the space searched.
        objective: str. The metric the search optimised, e.g. `"val_loss"`.
        direction: str. `"min"` or `"max"`: which way is better.
        title: str. First line of the title, naming the recipe, model,
            dataset and backend (see `kzoo.training.plots.run_title`).

    Returns:
        A `matplotlib.figure.Figure` with the trials' axes first.

    Example:

    >>> from kzoo.training.search_space import Range
    >>> rows = [TrialRow("0", "COMPLETED", 0.41, {}, {"dropout": 0.2})]
    >>> fig = search_figure(rows, {"dropout": Range(0.0, 0.5)}, "val_loss", title="demo")
    >>> [ax.get_xlabel() for ax in fig.axes]
    ['trial (in the order they started)', 'dropout (the range searched)']
    """
    plt = plots.pyplot()
    fig, (trials_ax, value_ax) = plt.subplots(1, 2, figsize=(11, 4.4))
    done = [(i, r) for i, r in enumerate(rows) if r.score is not None]
    failed = [i for i, r in enumerate(rows) if r.score is None]
    scores = np.array([r.score for _, r in done], "float64")
    limits = plots.padded_range(scores) if done else None
    low, high = limits if limits is not None else (0.0, 1.0)
    better = "lower" if direction == "min" else "higher"
    if done:
        xs = [i for i, _ in done]
        trials_ax.plot(xs, scores, "o", label="trial")
        best = np.minimum.accumulate(scores) if direction == "min" else \
            np.maximum.accumulate(scores)
        if len(done) > 1:
            trials_ax.step(xs, best, where="post", label="best so far")
        else:
            trials_ax.annotate(f"{scores[0]:.4g}", (xs[0], scores[0]), xytext=(6, 0),
                               textcoords="offset points", va="center")
    if failed:
        trials_ax.plot(failed, [low + 0.04 * (high - low)] * len(failed), "rx",
                       label="failed")
    trials_ax.set_ylim(low, high)
    _trial_axis(trials_ax, rows)
    trials_ax.set_ylabel(objective)
    trials_ax.set_title(f"{objective} of each trial ({better} is better)")
    trials_ax.grid(alpha=0.3)
    if done or failed:
        trials_ax.legend()

    ranking = importance(rows, space)
    name = next(iter(ranking), None)
    if name is None:  # too few trials to rank: show the first searched one
        name = next((n for n, p in space.items() if p.kind != "fixed"), None)
    if name is None:
        fig.delaxes(value_ax)
    else:
        points = [(r.values[name], r.score) for _, r in done if name in r.values]
        param = space[name]
        if param.kind in ("int", "float"):
            xs = [p[0] for p in points]
        else:
            where = {repr(v): k for k, v in enumerate(param.values)}
            xs = [where.get(repr(p[0]), 0) for p in points]
        value_ax.plot(xs, [p[1] for p in points], "o")
        share = f", explains {ranking[name]:.0%} of the variance" if name in ranking else ""
        _value_axis(value_ax, name, param, share)
        value_ax.set_ylim(low, high)
        value_ax.set_ylabel(objective)
        value_ax.set_title(f"{objective} against {name}")
        value_ax.grid(alpha=0.3)

    searched = [n for n, p in space.items() if p.kind != "fixed"]
    counts = (f"{len(rows)} trial{'s' * (len(rows) != 1)}: {len(done)} completed, "
              f"{len(failed)} failed")
    what = f"searched: {', '.join(searched)}" if searched else "every hyperparameter fixed"
    fig.suptitle(f"{title}\n{counts}; {what}" if title else f"{counts}; {what}")
    fig.tight_layout()
    return fig


def plot_search(rows, space, objective, path, direction="min", title=""):
    """Write `search_figure(rows, space, objective, direction, title)` as a PNG at `path`.

    Returns:
        The (closed) Figure that was saved.
    """
    plt = plots.pyplot()
    fig = search_figure(rows, space, objective, direction, title)
    save_figure(fig, path)
    plt.close(fig)
    return fig


def write_report(tuner, hypermodel, out_dir, objective="val_loss", title=""):
    """Write the ranked table, best hyperparameters JSON and the search PNG.

    Files in `out_dir`: `trials.md` (ranked Markdown table), `trials.json`
    (every trial: status, metrics, values, error), `best_hyperparameters.json`
    (the values, the `create_model` kwargs and training settings they map to,
    and the runner flags they set) and `search.png`. Both `trials.md` and
    the returned dict name the runner flags the search overrode.

    Args:
        tuner: the KerasTuner tuner that ran the search (`search.make_tuner`).
        hypermodel: its `kzoo.training.search.ZooHyperModel`.
        out_dir: str or Path. The run folder.
        objective: str. What the search optimised. Defaults to `"val_loss"`.
        title: str. First line of the picture's title: recipe, model,
            dataset and backend (`kzoo.training.plots.run_title`). Defaults to
            `"search over MODEL"`.

    Returns:
        dict with `table`, `completed`, `failed`, `best` (a `TrialRow` or
        None), `importance` and `overridden_flags` (flag to hyperparameter).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    direction = "min" if objective.endswith("loss") else "max"
    rows = trial_rows(tuner)
    space = hypermodel.space
    table = markdown_table(rows, objective, list(space), direction)
    overridden = hypermodel.overridden_flags()
    note = overridden_note(overridden)
    (out_dir / "trials.md").write_text(table + "\n" + (f"\n{note}\n" if note else ""))
    (out_dir / "trials.json").write_text(json.dumps(
        [dataclasses.asdict(r) for r in rows], indent=2, default=str) + "\n")
    ranking = importance(rows, space)
    plot_search(rows, space, objective, out_dir / "search.png", direction,
                title or f"search over {hypermodel.model_name}")
    order = ranked(rows, direction)
    best = order[0] if order and order[0].score is not None else None
    if best is not None:
        values = {k: v for k, v in best.values.items() if not k.startswith("tuner/")}
        model_kwargs, training = hypermodel.model_and_training_kwargs(values)
        record = {
            "model": hypermodel.model_name,
            "trial_id": best.trial_id,
            "objective": {objective: best.score},
            "metrics": best.metrics,
            "hyperparameters": values,
            "create_model_kwargs": {k: _jsonable(v) for k, v in model_kwargs.items()},
            "training": training,
            "flags": {flag_option(k): _jsonable(v) for k, v in training.items()
                      if flag_option(k) in overridden},
            "importance": ranking,
        }
        (out_dir / "best_hyperparameters.json").write_text(
            json.dumps(record, indent=2, default=str) + "\n")
    return {
        "table": table,
        "completed": sum(r.score is not None for r in rows),
        "failed": sum(r.score is None for r in rows),
        "best": best,
        "importance": ranking,
        "rows": rows,
        "overridden_flags": overridden,
    }


def overridden_note(overridden):
    """One sentence naming the runner flags a search set per trial (empty if none)."""
    if not overridden:
        return ""
    named = ", ".join(f"{flag} ({name})" if name in FLAG_NAMES else flag
                      for flag, name in overridden.items())
    return (f"The search set these runner flags per trial, overriding the command line: "
            f"{named}.")


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


