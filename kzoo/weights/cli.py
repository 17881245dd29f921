"""`python -m kzoo convert` and `predict --weights`: published weights from the shell.

    python -m kzoo convert --model resnet50 --weights imagenet --output resnet50.keras
    python -m kzoo convert --model resnet18 --weights r18.pth --output r18.keras --input-shape 64,64,3
    python -m kzoo convert --model resnet50.keras --to torchvision resnet50.safetensors
    python -m kzoo predict --model resnet50 --weights imagenet photo.jpg
"""

import sys
from pathlib import Path


def _shape(text):
    import argparse

    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 224,224,3, received {text!r}") from None


def register(subparsers):
    """Add the `convert` subcommand to `python -m kzoo`'s subparsers."""
    p = subparsers.add_parser(
        "convert", help="convert published weights to .keras, or kzoo weights back to torch layouts")
    p.add_argument("--model", required=True,
                   help="a registered model name (with --weights) or a .keras file / run folder")
    p.add_argument("--weights", default=None,
                   help="a .safetensors/.pth file, a Hugging Face folder, hf://ORG/NAME or a preset")
    p.add_argument("--input-shape", type=_shape, default=None,
                   help="the model's input shape, e.g. 224,224,3 (default: the checkpoint's or model's)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of a new head (the checkpoint's head is then re-initialised)")
    p.add_argument("--output", default=None, help="the .keras file to write")
    p.add_argument("--to", default=None, metavar="LAYOUT", choices=("torchvision", "timm", "transformers"),
                   help="write the weights for torchvision, timm or transformers instead")
    p.add_argument("destination", nargs="?", default=None,
                   help="with --to: the .safetensors file (a folder for transformers)")
    p.set_defaults(func=convert_command)


def _error(message):
    print(f"error: {message}", file=sys.stderr)
    return 1


def _kwargs(args):
    kwargs = {}
    if args.input_shape:
        kwargs["input_shape"] = args.input_shape
    if args.num_classes:
        kwargs["num_classes"] = args.num_classes
    return kwargs


def load_source_model(model, weights, kwargs):
    """A registered name with weights, or a saved kzoo model (`.keras` file or run folder)."""
    import kzoo
    from kzoo import export
    from kzoo.registry import _REGISTRY

    kzoo.list_models()
    if model in _REGISTRY:
        if weights is None:
            raise ValueError(
                f"Received --model {model} without --weights; a registered model needs "
                "--weights SOURCE (a file, a folder, hf://ORG/NAME or a preset)."
            )
        entry = kzoo.registry.get_entry(model)
        if "input_shape" in kwargs and "input_shape" not in entry.defaults:
            kwargs.pop("input_shape")  # a text model: its length comes from the checkpoint
        return kzoo.create_model(model, weights=weights, **kwargs)
    if not Path(model).exists():
        raise ValueError(
            f"Received --model {model}, which is neither a registered model nor a file; pass a "
            "name from `python -m kzoo list` or a .keras file."
        )
    return export.load_model(model)


def convert_command(args):
    import warnings

    if (args.output is None) == (args.to is None):
        return _error("pass either --output model.keras or --to LAYOUT DESTINATION")
    if args.to and not args.destination:
        return _error(f"--to {args.to} needs a destination, e.g. --to {args.to} out.safetensors")
    if args.output and not args.output.endswith(".keras"):
        return _error(f"--output {args.output} must end in .keras")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = load_source_model(args.model, args.weights, _kwargs(args))
        for w in caught:
            if issubclass(w.category, UserWarning) and "re-initialised" in str(w.message):
                print(f"note: {w.message}", file=sys.stderr)
        if args.to:
            path = __import__("kzoo").weights.export(model, args.destination, layout=args.to)
            print(f"wrote {model.name} weights for {args.to} -> {path}")
        else:
            model.save(args.output)
            print(f"converted {args.weights} into {model.name} -> {args.output}")
    except (ValueError, TypeError) as err:
        return _error(str(err))
    return 0


def predict_command(args, files):
    """`predict --model NAME --weights SOURCE FILES`: top-k class names with probabilities."""
    from kzoo.predict import top_k
    from kzoo.weights.preprocessing import preprocess_images

    if not args.zoo_model or not args.weights:
        return _error("predict with published weights needs both --model NAME and --weights SOURCE")
    if not files:
        return _error("predict needs at least one image file")
    try:
        model = load_source_model(args.zoo_model, args.weights, {})
        spec = model.metadata.get("preprocessing")
        if not spec:
            return _error(f"{model.name} carries no preprocessing; convert it with --weights first")
        batch = preprocess_images(list(files), spec)
        logits = model.predict(batch, verbose=0)
        rows = top_k(logits, k=args.top_k, labels=model.metadata.get("class_names"))
    except (ValueError, TypeError) as err:
        return _error(str(err))
    for name, row in zip(files, rows):
        print(f"{name}: " + ", ".join(f"{label} ({p:.4f})" for label, p in row))
    return 0
