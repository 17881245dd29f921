"""`python -m kzoo`: list the models, export trained ones, predict with them.

    python -m kzoo list               # every model with its parameter count
    python -m kzoo list 'resnet*'     # shell-style wildcard
    python -m kzoo export runs/mlp-torch --format onnx
    python -m kzoo export runs/mlp-tensorflow/model.keras --format tf_saved_model
    python -m kzoo predict runs/mlp-jax digit.npy photo.png --top-k 3
"""

import argparse
import sys


def _list(args):
    import kzoo
    from kzoo.registry import get_entry

    names = kzoo.list_models(args.pattern)
    if not names:
        print(f"error: no registered model matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        entry = get_entry(name)
        params = None
        if not args.no_params:
            import keras

            params = kzoo.model_info(name)["params"]
            keras.backend.clear_session()  # free each default-size model before the next
        rows.append((name, entry.family, entry.task, params, entry.summary, entry.recipe))
    if args.markdown:
        from kzoo import measured

        print("| model | family | task | parameters (defaults) | recipe | measured (default run) "
              "| description |")
        print("| --- | --- | --- | ---: | --- | --- | --- |")
        for name, family, task, params, summary, recipe in rows:
            recipe = f"`{recipe}`" if recipe else "-"
            result = measured.describe(name) or "-"
            print(f"| `{name}` | {family} | {task} | {_cell(params)} | {recipe} | {result} "
                  f"| {summary} |")
        return 0
    header = ("model", "family", "task", "parameters", "description")
    widths = [max(len(header[i]), *(len(_cell(r[i])) for r in rows)) for i in range(4)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[4]
    print(line)
    print("-" * len(line))
    for row in rows:
        cells = [_cell(c).ljust(w) if i != 3 else _cell(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells) + "  " + row[4])
    return 0


def _cell(value):
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _export(args):
    from kzoo import export

    try:
        output = args.output or export.default_output(args.model, args.format)
        export.export_model(args.model, output, format=args.format)
    except export.ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"exported {args.model} as {args.format} -> {output}")
    return 0


def _predict(args):
    from pathlib import Path

    if args.weights or args.zoo_model:  # a registered model with published weights
        from kzoo.weights import cli

        return cli.predict_command(args, [args.model, *args.inputs] if args.model else args.inputs)
    if not args.inputs:
        print("error: predict needs a model and at least one input file", file=sys.stderr)
        return 1

    from kzoo import export
    from kzoo.backend import memory

    memory.retain_freed_memory()

    try:
        labels = None
        if args.labels:
            labels = [line.strip() for line in Path(args.labels).read_text().splitlines()
                      if line.strip()]
        model = export.load_model(args.model)
        result = export.predict_files(model, args.inputs, k=args.top_k, labels=labels)
    except export.ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.output:
        import numpy as np

        if args.output.endswith(".npy"):
            np.save(args.output, np.asarray(
                result.get("outputs", [[p for _, p in row] for row in result.get("top_k", [])])))
        else:
            Path(args.output).write_text(export.to_json(result) + "\n")
        print(f"wrote predictions for {len(args.inputs)} input file(s) -> {args.output}")
    elif "top_k" in result:
        for name, row in zip(result["inputs"], result["top_k"]):
            print(f"{name}: " + ", ".join(f"{label} ({p:.4f})" for label, p in row))
    else:
        print(export.to_json(result))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kzoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list registered models with parameter counts")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard")
    p.add_argument("--no-params", action="store_true",
                   help="skip building each model to count its parameters")
    p.add_argument("--markdown", action="store_true",
                   help="print a Markdown table (the README's model table)")
    p.set_defaults(func=_list)

    p = sub.add_parser("export", help="export a trained model (ONNX, TF SavedModel, .keras)")
    p.add_argument("model", help="a run folder (its model.keras) or a .keras file")
    p.add_argument("--format", choices=("onnx", "tf_saved_model", "keras"), default="onnx")
    p.add_argument("--output", default=None,
                   help="file or folder to write (default: <run>/export/model.<format>)")
    p.set_defaults(func=_export)

    p = sub.add_parser("predict", help="run a saved model on .npy or image files")
    p.add_argument("model", nargs="?", help="a run folder (its model.keras) or a .keras file")
    p.add_argument("inputs", nargs="*", help=".npy arrays (one example or a batch) or images")
    p.add_argument("--model", dest="zoo_model", default=None,
                   help="a registered model name, with --weights")
    p.add_argument("--weights", default=None, help="published weights for --model (kzoo.weights)")
    p.add_argument("--top-k", type=_positive_int, default=5, help="classes shown per example (classifiers)")
    p.add_argument("--labels", default=None, help="a text file with one class name per line")
    p.add_argument("--output", default=None,
                   help="write predictions to a .json or .npy file instead of printing")
    p.set_defaults(func=_predict)
    from kzoo.weights import cli as weights_cli

    weights_cli.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
