"""`python -m kzoo`: list the models (and, later, export and predict).

    python -m kzoo list               # every model with its parameter count
    python -m kzoo list 'resnet*'     # shell-style wildcard
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
        params = kzoo.model_info(name)["params"] if not args.no_params else None
        rows.append((name, entry.family, entry.task, params, entry.summary))
        import keras

        keras.backend.clear_session()
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kzoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list registered models with parameter counts")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard")
    p.add_argument("--no-params", action="store_true",
                   help="skip building each model to count its parameters")
    p.set_defaults(func=_list)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
