"""Train the VGG-style simple_cnn on images (or 1-D signals), against an MLP baseline.

Default data: `shapes`, six kinds of shapes at random positions, sizes and
rotations, generated procedurally by kzoo (no download). Position varies, so
convolutions (weights shared across positions) clearly beat an MLP trained on
the same batches; the run reports both. `--dataset digits` uses the 8x8 digits
shipped in scikit-learn, `--dataset tfds:cifar10` any TFDS image dataset
where TFDS data is available, and 1-D datasets such as `waveforms` build a
1-D CNN. Augmentation uses Keras preprocessing layers (`--augment auto`
picks what fits the data: no flips for digits).

    KERAS_BACKEND=jax python recipes/cnn.py
"""

import kzoo
from kzoo import losses
from kzoo.data.augment import AUGMENTATIONS, training_batches
from kzoo.training import runner


def main(argv=None):
    parser = runner.make_parser(
        __doc__, epochs=10, batch_size=64, lr=2e-3, schedule="cosine", dataset="shapes"
    )
    parser.add_argument("--widths", type=runner.positive_int, nargs="+", default=[16, 32, 64], help="channels of each stage")
    parser.add_argument("--convs-per-stage", type=runner.positive_int, default=2, help="convolutions in each stage")
    parser.add_argument("--dropout", type=runner.fraction, default=0.3, help="dropout rate before the head")
    parser.add_argument("--augment", choices=("auto",) + AUGMENTATIONS, default="auto", help="training augmentation (auto: by dataset)")
    parser.add_argument(
        "--no-mlp-baseline", action="store_true", help="skip the MLP trained for comparison"
    )
    args = parser.parse_args(argv)

    # === Data ===
    run = runner.Run(args, recipe="cnn")
    data = run.load_data()
    train, kind = training_batches(data, args.augment, args.batch_size, seed=args.seed)

    # === Model ===
    # Spelled out like mlp.py's call on purpose: a recipe names every argument it sets.
    model = kzoo.create_model(
        "simple_cnn",
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        widths=tuple(args.widths),
        convs_per_stage=args.convs_per_stage,
        dropout=args.dropout,
    )
    run.compile(model)

    # === Train and evaluate ===
    run.fit(model, train, validation_data=(data.x_val, data.y_val))
    results = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
    metrics = {
        "test_accuracy": results["accuracy"],
        "test_loss": results["loss"],
        "augmentation": kind,
        "params": model.count_params(),
    }

    # === Baseline: an MLP with as many epochs, on the same augmented batches ===
    if not args.no_mlp_baseline:
        mlp = kzoo.create_model(
            "mlp",
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            hidden_units=(256, 128),
            dropout=args.dropout,
        )
        mlp.compile(
            optimizer=run.make_optimizer(),
            loss=losses.classification_loss(args.label_smoothing),
            metrics=["accuracy"],
        )
        mlp.fit(train, epochs=run.epochs, verbose=0)
        baseline = mlp.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
        metrics["mlp_test_accuracy"] = baseline["accuracy"]
        metrics["mlp_params"] = mlp.count_params()
    return run.finish(model, metrics)


if __name__ == "__main__":
    main()
