"""Measured results as data: gather them from run folders, write the README's model table.

`docs/results/measured.json` holds each model's default-run figure per
backend, with the recipe command and the `metrics.json` entry it is read
from. The package holds no results; this script is the one place that
writes them:

    python docs/results/gather.py runs/mlp-jax runs/rnn-torch   # update measured.json
    python docs/results/gather.py --readme                      # rewrite the README's model table
    python docs/results/gather.py --check                       # exit 1 if the README's table is stale

A run folder counts only when it is complete (`metrics.json` written) and not
a `--smoke` run; it updates the model whose recipe command it ran (the
recipe, plus every flag the command names, e.g. `recipes/rnn.py --task
forecast` for `lstm_regressor`).
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEASURED = Path(__file__).with_name("measured.json")
README = ROOT / "README.md"
BACKEND_SHORT = {"jax": "jax", "torch": "torch", "tensorflow": "tf"}
HEADER = ("| model | family | task | parameters (defaults) | recipe | measured (default run) "
          "| description |\n| --- | --- | --- | ---: | --- | --- | --- |\n")


def load(path=MEASURED):
    """The `models` entries of measured.json: {model: {metric, key, data, command, values}}."""
    return json.loads(Path(path).read_text())["models"]


def describe(entry):
    """One table cell, e.g. `'test accuracy 0.985 jax, 0.993 torch (digits)'`."""
    values = entry["values"]
    figures = ", ".join(f"{values[b]:.3f} {BACKEND_SHORT[b]}" for b in BACKEND_SHORT
                        if b in values)
    return f"{entry['metric']} {figures} ({entry['data']})"


def _command_flags(command):
    """('rnn', {'task': 'forecast'}) for 'recipes/rnn.py --task forecast'."""
    words = shlex.split(command)
    flags, i = {}, 1
    while i < len(words):
        name = words[i].lstrip("-").replace("-", "_")
        has_value = i + 1 < len(words) and not words[i + 1].startswith("--")
        flags[name] = words[i + 1] if has_value else True
        i += 2 if has_value else 1
    return Path(words[0]).stem, flags


def model_of_run(record, measured):
    """The measured model a run folder's `metrics.json` record is the default run of, or None."""
    args = record.get("args", {})
    best, best_flags = None, -1
    for name, entry in measured.items():
        recipe, flags = _command_flags(entry["command"])
        ran = str(record.get("recipe"))  # "mlp", or with its variant: "rnn-forecast"
        if ran != recipe and not ran.startswith(f"{recipe}-"):
            continue
        if args.get("model") not in (None, name):
            continue
        if all(str(args.get(k)) == str(v) for k, v in flags.items()) and len(flags) > best_flags:
            best, best_flags = name, len(flags)
    return best


def gather(folders, measured):
    """Update `measured` from run folders; return one line per folder of what it did."""
    lines = []
    for folder in map(Path, folders):
        path = folder / "metrics.json"
        if not path.is_file():
            lines.append(f"{folder}: skipped (no metrics.json: the run is not complete)")
            continue
        record = json.loads(path.read_text())
        if record.get("smoke"):
            lines.append(f"{folder}: skipped (a --smoke run)")
            continue
        name = model_of_run(record, measured)
        if name is None:
            lines.append(f"{folder}: skipped (recipe {record.get('recipe')!r} with these flags "
                         "is no model's default run in measured.json)")
            continue
        entry = measured[name]
        value = record.get("metrics", {}).get(entry["key"])
        if not isinstance(value, (int, float)):
            lines.append(f"{folder}: skipped (metrics.json has no number {entry['key']!r})")
            continue
        entry["values"][record["backend"]] = round(float(value), 4)
        lines.append(f"{folder}: {name} {entry['key']} = {value:.4f} on {record['backend']}")
    return lines


def model_table(measured, with_params=True):
    """The README's model table (Markdown), from the registry and `measured`."""
    import kzoo
    from kzoo import __main__ as cli
    from kzoo.registry import get_entry

    known = cli._known_parameter_counts() if with_params else {}
    rows = [HEADER]
    for name in kzoo.list_models():
        entry = get_entry(name)
        params = known.get(name) if with_params else None
        if with_params and params is None:
            params = cli.count_parameters(name)
        recipe = f"`{entry.recipe}`" if entry.recipe else "-"
        result = describe(measured[name]) if name in measured else "-"
        rows.append(f"| `{name}` | {entry.family} | {entry.task} | {cli._cell(params)} "
                    f"| {recipe} | {result} | {entry.summary} |\n")
    return "".join(rows)


def _table_span(text):
    """Where the model table (header and rows) is in `text`; ValueError without one."""
    start = text.index(HEADER)
    end = start + len(HEADER)
    while text.startswith("| `", end):
        end = text.index("\n", end) + 1
    return start, end


def current_table(text):
    """The model table as it is in `text` (the README)."""
    start, end = _table_span(text)
    return text[start:end]


def replace_table(text, table):
    """`text` (the README) with its model table replaced by `table`."""
    start, end = _table_span(text)
    return text[:start] + table + text[end:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders to read figures from")
    parser.add_argument("--readme", action="store_true", help="rewrite the README's model table")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the README's model table is not the generated one")
    args = parser.parse_args(argv)
    document = json.loads(MEASURED.read_text())
    if args.runs:
        for line in gather(args.runs, document["models"]):
            print(line)
        MEASURED.write_text(json.dumps(document, indent=2) + "\n")
    if args.readme or args.check:
        text = README.read_text()
        updated = replace_table(text, model_table(document["models"]))
        if args.check:
            if updated != text:
                print("README.md: the model table is stale; run python docs/results/gather.py "
                      "--readme", file=sys.stderr)
                return 1
            return 0
        README.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
