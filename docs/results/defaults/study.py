"""What users get: kzoo's small-problem models at their defaults, against simple baselines.

Each kzoo model is built with `kzoo.create_model(name, input_shape=...,
num_classes=...)` and nothing else (its defaults), compiled with plain
`keras.optimizers.Adam(1e-3)` and fitted for a fixed number of epochs; the
figure is its test accuracy (classification) or test MAE (regression) at the
end, averaged over seeds. Baselines on the same splits: the majority class,
scikit-learn's logistic regression (or ridge regression), the naive
forecasts, and plain Keras networks a practitioner would write by hand: the
MLP of Keras' MNIST example (512-512, dropout 0.2) and a two-layer 128-unit
GRU.

Datasets: kzoo's own `waveforms`, `digits` (the UCI digits scikit-learn
ships), `shapes` and `seasonal`, and Cylinder-Bell-Funnel (Saito, 1994), the
synthetic 1-D benchmark of the UCR archive, generated here from its
published definition. Nothing is downloaded.

A run writes `<label>.json` (every fit: dataset, model, seed, figure,
parameters, seconds, the model's config) and then regenerates `README.md`
from every `*.json` in `--out`, so the Markdown holds no hand-typed figure.

    KERAS_BACKEND=jax python docs/results/defaults/study.py --out docs/results/defaults/

`--label before` / `--label after` name the defaults being measured (run the
first with `PYTHONPATH` pointing at the older source); `--report` only
rewrites the Markdown.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Epochs per dataset, batch size, seeds: a fixed budget, the same for every model.
EPOCHS = {"waveforms": 20, "cbf": 20, "digits": 20, "shapes": 10, "seasonal": 8}
BATCH_SIZE = 64
LEARNING_RATE = 1e-3


# === Datasets ===


def cylinder_bell_funnel(seed, per_class, length=128):
    """Cylinder-Bell-Funnel (Saito, 1994), as in the UCR archive's CBF, z-normalised.

    With a ~ U{16..32}, b - a ~ U{32..96}, eta and eps(t) ~ N(0, 1):
    cylinder (6 + eta) 1[a, b](t) + eps(t); bell the same ramped up by
    (t - a) / (b - a); funnel ramped down by (b - t) / (b - a).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_class)
    t = np.arange(length)[None, :]
    a = rng.integers(16, 33, size=(len(labels), 1))
    b = a + rng.integers(32, 97, size=(len(labels), 1))
    eta = rng.normal(size=(len(labels), 1))
    inside = ((t >= a) & (t <= b)).astype("float64")
    ramp = np.where(labels[:, None] == 1, (t - a) / (b - a),
                    np.where(labels[:, None] == 2, (b - t) / (b - a), 1.0))
    x = (6 + eta) * inside * ramp + rng.normal(size=(len(labels), length))
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    order = rng.permutation(len(labels))
    return x[order, :, None].astype("float32"), labels[order].astype("int32")


def load_datasets(names):
    """`{name: dict}` with train/test arrays, task and the inputs each model kind takes."""
    import numpy as np

    import kzoo.data

    out = {}
    for name in names:
        if name == "waveforms":
            d = kzoo.data.load("waveforms", seed=0)
            out[name] = dict(task="classification", x=(d.x_train, d.x_test),
                             y=(d.y_train, d.y_test), num_classes=d.num_classes,
                             source=f"kzoo.data.load('waveforms'): {d.source}",
                             views={"sequence": (d.x_train, d.x_test)})
        elif name == "cbf":
            xtr, ytr = cylinder_bell_funnel(seed=0, per_class=100)
            xte, yte = cylinder_bell_funnel(seed=1, per_class=100)
            out[name] = dict(task="classification", x=(xtr, xte), y=(ytr, yte), num_classes=3,
                             source="Cylinder-Bell-Funnel (Saito, 1994; UCR 'CBF'), generated "
                                    "here from its definition, length 128",
                             views={"sequence": (xtr, xte)})
        elif name == "digits":
            d = kzoo.data.load("digits", seed=0)
            big = kzoo.data.load("digits", seed=0, image_size=32)
            assert (big.y_train == d.y_train).all() and (big.y_test == d.y_test).all()
            rows = tuple(x.reshape(len(x), 8, 8) for x in (d.x_train, d.x_test))
            out[name] = dict(task="classification", x=(d.x_train, d.x_test),
                             y=(d.y_train, d.y_test), num_classes=10,
                             source="kzoo.data.load('digits'): the UCI optical digits "
                                    "scikit-learn ships (8x8; rows as 8 steps for RNNs)",
                             views={"sequence": rows, "image32": (big.x_train, big.x_test)})
        elif name == "shapes":
            d = kzoo.data.load("shapes", seed=0, samples_per_class=300)
            out[name] = dict(task="classification", x=(d.x_train, d.x_test),
                             y=(d.y_train, d.y_test), num_classes=d.num_classes,
                             source="kzoo.data.load('shapes', samples_per_class=300): "
                                    f"{d.source}", views={})
        elif name == "seasonal":
            d = kzoo.data.load("seasonal", seed=0, num_series=4)
            out[name] = dict(task="regression", x=(d.x_train, d.x_test),
                             y=(d.y_train, d.y_test), num_outputs=1,
                             source=f"kzoo.data.load('seasonal', num_series=4): {d.source}",
                             views={"sequence": (d.x_train, d.x_test)},
                             naive=d.info["baselines"])
        else:
            raise SystemExit(f"unknown dataset {name!r}")
        ds = out[name]
        ds["sizes"] = [len(ds["y"][0]), len(ds["y"][1])]
        ds["metric"] = "accuracy" if ds["task"] == "classification" else "mae"
        if ds["task"] == "classification":
            ds["classes_seen"] = int(len(np.unique(ds["y"][0])))
    return out


# Which kzoo models run on which dataset, and on which view of its inputs.
KZOO_MODELS = {
    "waveforms": [("mlp", "x"), ("simple_cnn", "x"), ("gru_classifier", "sequence"),
                  ("lstm_classifier", "sequence")],
    "cbf": [("mlp", "x"), ("simple_cnn", "x"), ("gru_classifier", "sequence"),
            ("lstm_classifier", "sequence")],
    "digits": [("mlp", "x"), ("simple_cnn", "x"), ("lenet5", "image32"),
               ("gru_classifier", "sequence"), ("lstm_classifier", "sequence")],
    "shapes": [("mlp", "x"), ("simple_cnn", "x")],
    "seasonal": [("mlp", "x"), ("gru_regressor", "sequence"), ("lstm_regressor", "sequence")],
}
BASELINES = {
    "waveforms": ["majority", "logistic_regression", "keras_mlp", "keras_gru_2x128"],
    "cbf": ["majority", "logistic_regression", "keras_mlp", "keras_gru_2x128"],
    "digits": ["majority", "logistic_regression", "keras_mlp", "keras_gru_2x128"],
    "shapes": ["majority", "logistic_regression", "keras_mlp"],
    "seasonal": ["last_value", "seasonal_naive", "ridge_regression", "keras_mlp"],
}
BASELINE_NOTES = {
    "majority": "the most frequent training class",
    "logistic_regression": "scikit-learn LogisticRegression on standardised flat inputs",
    "ridge_regression": "scikit-learn Ridge(alpha=1) on the window",
    "last_value": "the window's last value (kzoo's naive forecast)",
    "seasonal_naive": "the value one season earlier (kzoo's naive forecast)",
    "keras_mlp": "Dense(512, relu)-Dropout(0.2)-Dense(512, relu)-Dropout(0.2), Keras' MNIST "
                 "MLP example",
    "keras_gru_2x128": "keras.layers.GRU(128, return_sequences=True), GRU(128), Dense",
}


# === Fitting ===


def compile_and_fit(model, ds, xtr, xte, epochs, seed):
    import keras
    import numpy as np

    if ds["task"] == "classification":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        loss = "mse"
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=loss)
    start = time.perf_counter()
    model.fit(xtr, ds["y"][0], epochs=epochs, batch_size=BATCH_SIZE, shuffle=True, verbose=0)
    seconds = time.perf_counter() - start
    pred = np.asarray(model.predict(xte, batch_size=256, verbose=0))
    return score(ds, pred), seconds


def score(ds, pred):
    import numpy as np

    y = ds["y"][1]
    if ds["task"] == "classification":
        labels = pred if pred.ndim == 1 else pred.argmax(-1)
        return float((labels == y).mean())
    return float(np.abs(pred.reshape(-1) - y.reshape(-1)).mean())


def view(ds, key):
    return ds["x"] if key == "x" else ds["views"][key]


def run_kzoo(name, ds, key, epochs, seed):
    import keras

    import kzoo

    xtr, xte = view(ds, key)
    head = ({"num_classes": ds["num_classes"]} if ds["task"] == "classification"
            else {"num_classes": None, "num_outputs": ds["num_outputs"]})
    keras.utils.set_random_seed(seed)
    model = kzoo.create_model(name, input_shape=tuple(xtr.shape[1:]), **head)
    config = {k: v for k, v in model.get_config().items()
              if k not in ("name", "trainable", "input_shape", "num_classes", "num_outputs")}
    row = dict(params=int(model.count_params()), config=json.loads(json.dumps(config)))
    if epochs:
        row["value"], seconds = compile_and_fit(model, ds, xtr, xte, epochs, seed)
        row["seconds"] = round(seconds, 1)
    else:
        row.update(value=None, seconds=0.0)
    keras.backend.clear_session()
    return row


def keras_baseline(name, ds, epochs, seed):
    import keras

    task = ds["task"]
    units = ds["num_classes"] if task == "classification" else ds["num_outputs"]
    if name == "keras_mlp":
        xtr, xte = ds["x"]
        layers = [keras.layers.Flatten(), keras.layers.Dense(512, activation="relu"),
                  keras.layers.Dropout(0.2), keras.layers.Dense(512, activation="relu"),
                  keras.layers.Dropout(0.2)]
    else:
        xtr, xte = ds["views"]["sequence"]
        cell = keras.layers.GRU if "gru" in name else keras.layers.LSTM
        layers = [cell(128, return_sequences=True), cell(128)]
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(xtr.shape[1:]), *layers, keras.layers.Dense(units)])
    value, seconds = compile_and_fit(model, ds, xtr, xte, epochs, seed)
    row = dict(params=int(model.count_params()), seconds=round(seconds, 1), value=value)
    keras.backend.clear_session()
    return row


def classic_baseline(name, ds, seed):
    import numpy as np

    xtr, xte = (x.reshape(len(x), -1) for x in ds["x"])
    ytr = ds["y"][0]
    start = time.perf_counter()
    if name == "majority":
        pred = np.full(len(xte), np.bincount(ytr).argmax())
    elif name in ("last_value", "seasonal_naive"):
        return dict(value=ds["naive"][name]["mae"], seconds=0.0)
    else:
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if name == "logistic_regression":
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        else:
            model = Ridge(alpha=1.0)
        pred = model.fit(xtr, ytr.ravel() if name == "ridge_regression" else ytr).predict(xte)
    return dict(value=score(ds, np.asarray(pred)), seconds=round(time.perf_counter() - start, 1))


# === Provenance ===


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def provenance(args):
    import keras

    import kzoo

    source = Path(kzoo.__file__).resolve().parents[1]
    commit = args.commit
    if commit is None:
        try:
            commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "kzoo"],
                                   capture_output=True, text=True).stdout.strip()
            commit += " (with uncommitted changes)" if dirty else ""
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    backend = keras.config.backend()
    versions = {"python": platform.python_version(), "keras": keras.__version__}
    try:
        versions[backend] = __import__(backend).__version__
    except ImportError:
        pass
    try:
        import sklearn

        versions["scikit-learn"] = sklearn.__version__
    except ImportError:
        pass
    return {
        "label": args.label,
        "command": " ".join(
            [f"KERAS_BACKEND={backend}"]
            + ([f"XLA_FLAGS='{os.environ['XLA_FLAGS']}'"] if "XLA_FLAGS" in os.environ else [])
            + ["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_name()} ({platform.machine()}), {len(os.sched_getaffinity(0))} of "
                   f"{os.cpu_count()} CPU cores usable by the run, {platform.system()}",
        "backend": backend,
        "versions": versions,
        "kzoo_source": str(source),
        "kzoo_commit": commit,
        "settings": {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "optimizer": "Adam(1e-3)",
                     "seeds": args.seeds, "epochs_scale": args.epochs_scale},
    }


# === Markdown ===


def _fmt(values, metric):
    import numpy as np

    if not values:
        return "-"
    digits = 3
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _config_text(config):
    keep = ("hidden_units", "dropout", "batch_norm", "units", "num_layers", "pooling",
            "widths", "convs_per_stage")
    parts = []
    for k in keep:
        if k in config:
            v = config[k]
            v = tuple(v) if isinstance(v, list) else v
            parts.append(f"{k}={v}")
    return ", ".join(parts) or "(published architecture)"


def write_report(out):
    runs = [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]
    order = {"before": 0, "after": 1}
    runs.sort(key=lambda r: (order.get(r["label"], 2), r["label"]))
    labels = list(dict.fromkeys(
        r["label"] for r in runs if any(x["kind"] == "kzoo" for x in r["results"])))
    datasets, baselines, kzoo_rows, configs = {}, {}, {}, {}
    latest = {}  # a fit measured twice (a run resumed in parts) counts once: the later one
    for run in runs:
        for row in run["results"]:
            latest[(run["label"], row["dataset"], row["model"], row["seed"])] = (run, row)
    for run, row in latest.values():
        datasets.setdefault(row["dataset"], run["datasets"][row["dataset"]])
        key = (row["dataset"], row["model"])
        if row["kind"] == "baseline":
            baselines.setdefault(key, []).append(row)
            continue
        configs.setdefault(key, {})[run["label"]] = (row["config"], row["params"])
        if row["kind"] == "kzoo":
            kzoo_rows.setdefault(key, {}).setdefault(run["label"], []).append(row)

    def cell(key, label):
        by_label = kzoo_rows.get(key, {})
        metric = datasets[key[0]]["metric"]
        if label in by_label:
            return _fmt([r["value"] for r in by_label[label]], metric)
        mine = configs.get(key, {}).get(label)
        for other, rows in by_label.items():
            if mine is not None and configs[key].get(other) == mine:
                return f"{_fmt([r['value'] for r in rows], metric)} (same defaults as {other})"
        return "-"

    lines = ["# Defaults: what `kzoo.create_model(name)` learns, against simple baselines", "",
             "Generated by `docs/results/defaults/study.py` from the JSON files beside this "
             "page; do not edit by hand. Each kzoo model is built with its defaults (only the "
             "input shape and the number of classes or outputs given), compiled with "
             "`keras.optimizers.Adam(1e-3)` and fitted for the fixed number of epochs below "
             f"(batch size {BATCH_SIZE}, no early stopping); the figure is the test accuracy "
             "(higher is better) or the test MAE in standardised units (lower is better) "
             "after the last epoch, as the mean over seeds (min-max in brackets).", "",
             "## Runs", ""]
    for run in runs:
        scale = run["settings"].get("epochs_scale", 1)
        lines += [f"- **{run['label']}**: kzoo {run['kzoo_commit']}, {run['date']}, "
                  f"{run['machine']}, {run['backend']} backend ("
                  + ", ".join(f"{k} {v}" for k, v in run["versions"].items())
                  + f"); seeds {run['settings']['seeds']}"
                  + (f", epochs x{scale}" if scale != 1 else "")
                  + f"; {run.get('total_seconds', 0) / 60:.1f} min in all.",
                  f"  `{run['command']}`"]
    lines += ["", "## Default configurations", "",
              "| model | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    models = sorted({m for _, m in configs})
    for model in models:
        found = {}
        for (_, m), by_label in configs.items():
            if m == model:
                for lb, (config, _) in by_label.items():
                    found.setdefault(lb, config)
        cells = [_config_text(found[lb]) if lb in found else "-" for lb in labels]
        lines.append(f"| `{model}` | " + " | ".join(cells) + " |")
    for name, ds in datasets.items():
        metric = ds["metric"]
        better = "higher is better" if metric == "accuracy" else "lower is better"
        lines += ["", f"## {name}: test {metric} ({better})", "",
                  f"{ds['source']}; {ds['sizes'][0]} train / {ds['sizes'][1]} test examples, "
                  f"{ds['epochs']} epochs.", "",
                  "| kzoo model, defaults | " + " | ".join(labels) + " | parameters |",
                  "|---|" + "---|" * (len(labels) + 1)]
        for key in sorted(k for k in configs if k[0] == name):
            params = []
            for lb in labels:
                p = configs[key].get(lb, (None, None))[1]
                if p is not None and f"{p:,}" not in params:
                    params.append(f"{p:,}")
            lines.append(f"| `{key[1]}` | " + " | ".join(cell(key, lb) for lb in labels)
                         + " | " + " -> ".join(params) + " |")
        lines += ["", f"| baseline | {metric} | parameters |", "|---|---|---|"]
        for key in sorted(k for k in baselines if k[0] == name):
            rows = baselines[key]
            params = f"{rows[0]['params']:,}" if "params" in rows[0] else "-"
            lines.append(f"| `{key[1]}` | {_fmt([r['value'] for r in rows], metric)} "
                         f"| {params} |")
    lines += ["", "## Baselines", ""]
    lines += [f"- `{k}`: {v}" for k, v in BASELINE_NOTES.items()]
    lines.append("")
    (out / "README.md").write_text("\n".join(lines))
    print(f"wrote {out / 'README.md'}")


# === Main ===


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--label", default="current",
                        help="name of the defaults measured (before, after, ...)")
    parser.add_argument("--datasets", nargs="+", default=list(EPOCHS))
    parser.add_argument("--models", nargs="+", default=None,
                        help="only these kzoo models (default: every one of the study)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--no-models", action="store_true")
    parser.add_argument("--commit", default=None, help="the kzoo commit measured, if not a checkout")
    parser.add_argument("--part", default="",
                        help="suffix of the JSON file, to measure one label in several runs")
    parser.add_argument("--report", action="store_true", help="only rewrite README.md")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        return write_report(out)

    record = provenance(args)
    data = load_datasets(args.datasets)
    record["datasets"] = {}
    record["results"] = []
    path = out / f"{args.label}{args.part}.json"
    started = time.perf_counter()

    def save():
        record["total_seconds"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(record, indent=1) + "\n")

    for name, ds in data.items():
        epochs = max(1, round(EPOCHS[name] * args.epochs_scale))
        record["datasets"][name] = {k: ds[k] for k in ("task", "source", "sizes", "metric")}
        record["datasets"][name]["epochs"] = epochs
        jobs = []
        if not args.no_models:
            jobs += [("kzoo" if args.models is None or m in args.models else "config", m, key)
                     for m, key in KZOO_MODELS[name]]
        if not args.no_baselines:
            jobs += [("baseline", b, None) for b in BASELINES[name]]
        for kind, model, key in jobs:
            seeds = args.seeds if (kind == "kzoo" or model.startswith("keras")) else [0]
            for seed in seeds:
                if kind == "config":  # not trained: its defaults, to show they are unchanged
                    row = run_kzoo(model, ds, key, epochs=0, seed=seed)
                elif kind == "kzoo":
                    row = run_kzoo(model, ds, key, epochs, seed)
                elif model.startswith("keras"):
                    row = keras_baseline(model, ds, epochs, seed)
                else:
                    row = classic_baseline(model, ds, seed)
                row.update(dataset=name, model=model, kind=kind, seed=seed, metric=ds["metric"])
                record["results"].append(row)
                print(f"{args.label} {name} {model} seed {seed}: {ds['metric']} "
                      f"{row['value']} ({row['seconds']} s)", flush=True)
                save()
    save()
    write_report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
