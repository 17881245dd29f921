"""Train a ResNet (resnet20_cifar by default) on images with augmentation.

Default data: `shapes`, six kinds of shapes at random positions, sizes and
rotations, generated procedurally by kzoo (no download). `--dataset digits`
uses the 8x8 digits shipped in scikit-learn (`--image-size 32` upsamples
them), and `--dataset tfds:cifar10` trains the CIFAR layout on CIFAR-10
where TFDS data is available. Augmentation uses Keras preprocessing layers
(`--augment auto` picks what fits the data); the learning rate follows a
cosine schedule by default (`--schedule plateau` halves it on plateaus), with
`--label-smoothing` and `--weight-decay` available.

    KERAS_BACKEND=jax python recipes/resnet.py
"""

import kzoo
from kzoo.data.augment import AUGMENTATIONS, training_batches
from kzoo.training import runner

MODELS = ("resnet20_cifar", "resnet56_cifar", "resnet18", "resnet34", "resnet50")


def main(argv=None):
    parser = runner.make_parser(
        __doc__,
        epochs=8,
        batch_size=64,
        lr=2e-3,
        schedule="cosine",
        weight_decay=1e-4,
        label_smoothing=0.1,
        dataset="shapes",
    )
    parser.add_argument("--model", choices=MODELS, default="resnet20_cifar", help="ResNet variant")
    parser.add_argument(
        "--width", type=runner.positive_int, default=8, help="first-stage channels (16 in the paper; 8 for CPU)"
    )
    parser.add_argument("--zero-init-residual", action="store_true", help="start each residual branch at zero (last batch-norm scale 0)")
    parser.add_argument("--dropout", type=runner.fraction, default=0.0, help="dropout rate before the head")
    parser.add_argument("--augment", choices=("auto",) + AUGMENTATIONS, default="auto", help="training augmentation (auto: by dataset)")
    parser.add_argument(
        "--image-size", type=runner.positive_int, default=None, help="image size for shapes and digits"
    )
    args = parser.parse_args(argv)

    # === Data ===
    run = runner.Run(args, recipe="resnet")
    resizable = args.dataset in ("shapes", "digits")
    if args.image_size is not None and not resizable:
        raise runner.RunError(
            f"--image-size applies to the shapes and digits datasets, not {args.dataset!r}; "
            "drop the flag."
        )
    data = run.load_data(**({"image_size": args.image_size} if args.image_size else {}))
    train, kind = training_batches(data, args.augment, args.batch_size, seed=args.seed)

    # === Model ===
    model = kzoo.create_model(
        args.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        zero_init_residual=args.zero_init_residual,
        dropout=args.dropout,
        width=args.width,
    )
    run.compile(model)

    # === Train and evaluate ===
    run.fit(model, train, validation_data=(data.x_val, data.y_val))
    results = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
    return run.finish(
        model,
        {
            "test_accuracy": results["accuracy"],
            "test_loss": results["loss"],
            "model": args.model,
            "augmentation": kind,
            "params": model.count_params(),
        },
    )


if __name__ == "__main__":
    main()
