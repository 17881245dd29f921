"""Train the multilayer perceptron on handwritten digits.

Default data: scikit-learn's copy of the UCI optical digits (1,797 real 8x8
images, shipped inside the scikit-learn package, so it runs offline). Any
`--dataset` works, including `tfds:mnist` where TFDS data is available.

    KERAS_BACKEND=jax python recipes/mlp.py
"""

import kzoo
from kzoo.training import runner


def main(argv=None):
    parser = runner.make_parser(__doc__, epochs=40, batch_size=64, lr=1e-3, dataset="digits")
    parser.add_argument("--hidden-units", type=runner.positive_int, nargs="+", default=[256, 128], help="width of each hidden layer")
    parser.add_argument("--dropout", type=runner.fraction, default=0.2, help="dropout rate after each hidden layer")
    parser.add_argument("--batch-norm", action="store_true", help="batch normalisation after each hidden layer")
    args = parser.parse_args(argv)

    run = runner.Run(args, recipe="mlp")
    data = run.load_data()
    model = kzoo.create_model(
        "mlp",
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        hidden_units=tuple(args.hidden_units),
        dropout=args.dropout,
        batch_norm=args.batch_norm,
    )
    run.compile(model)
    run.fit(model, data.x_train, data.y_train, validation_data=(data.x_val, data.y_val))
    results = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
    return run.finish(
        model, {"test_accuracy": results["accuracy"], "test_loss": results["loss"]}
    )


if __name__ == "__main__":
    main()
