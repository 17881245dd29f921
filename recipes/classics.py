"""Classic CNNs. Train LeNet-5, AlexNet, VGG-16, GoogLeNet or EfficientNet (`--model`) on images.

Default data: `digits`, scikit-learn's copy of the UCI optical digits (1,797
real 8x8 images shipped inside the scikit-learn package, so it runs offline),
upsampled to the smallest size the architecture takes (32x32 for LeNet-5,
VGG-16, GoogLeNet and EfficientNet, 64x64 for AlexNet; `--image-size`
overrides). The published widths are used unless `--width` (GoogLeNet,
EfficientNet channel multiplier) or `--dense-units` (AlexNet, VGG-16) shrink
them; `--aux-heads` trains GoogLeNet with its two auxiliary classifiers
(loss weight 0.3 each, as in the paper).

    KERAS_BACKEND=jax python recipes/classics.py --model lenet5
"""

import numpy as np

import kzoo
from kzoo import losses
from kzoo.data.digits import resize_images
from kzoo.training import runner

MODELS = (
    "lenet5", "alexnet", "alexnet_two_tower", "vgg16", "googlenet", "googlenet_bn",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
)
# The smallest input each architecture accepts (AlexNet: 63, rounded up).
MIN_SIZE = {"lenet5": 32, "alexnet": 64, "alexnet_two_tower": 64}


def main(argv=None):
    parser = runner.make_parser(__doc__, epochs=20, batch_size=64, lr=1e-3, dataset="digits")
    parser.add_argument("--model", choices=MODELS, default="lenet5", help="classic architecture")
    parser.add_argument("--image-size", type=runner.positive_int, default=None,
                        help="square input size (default: the model's smallest)")
    parser.add_argument("--width", type=runner.positive_float, default=None,
                        help="channel multiplier (GoogLeNet width, EfficientNet width_coefficient)")
    parser.add_argument("--dense-units", type=runner.positive_int, default=None,
                        help="hidden dense units of AlexNet and VGG-16 (published: 4096)")
    parser.add_argument("--aux-heads", action="store_true",
                        help="GoogLeNet: train with the two auxiliary classifiers")
    args = parser.parse_args(argv)

    # === Data: upsampled to the architecture's input size ===
    run = runner.Run(args, recipe=f"classics-{args.model}")
    data = run.load_data(needs_arrays=True)
    size = args.image_size or MIN_SIZE.get(args.model, 32)
    if len(data.input_shape) != 3:
        raise runner.RunError(
            f"--dataset {args.dataset} has examples of shape {data.input_shape}; the classic "
            "CNNs need (height, width, channels) images, so pick an image dataset."
        )
    x_train, x_val, x_test = (
        resize_images(x, size) if x.shape[1:3] != (size, size) else x
        for x in (data.x_train, data.x_val, data.x_test)
    )

    # === Model ===
    options = {}
    if args.width is not None:
        if args.model.startswith("googlenet"):
            options["width"] = args.width
        elif args.model.startswith("efficientnet"):
            options["width_coefficient"] = args.width
        else:
            raise runner.RunError(f"--width applies to GoogLeNet and EfficientNet, not {args.model}.")
    if args.dense_units is not None:
        if not args.model.startswith(("alexnet", "vgg")):
            raise runner.RunError(f"--dense-units applies to AlexNet and VGG-16, not {args.model}.")
        options["dense_units"] = args.dense_units
    if args.aux_heads:
        if not args.model.startswith("googlenet"):
            raise runner.RunError(f"--aux-heads applies to GoogLeNet, not {args.model}.")
        options["aux_heads"] = True
    model = kzoo.create_model(
        args.model, input_shape=(size, size, x_train.shape[-1]), num_classes=data.num_classes,
        **options,
    )
    if args.aux_heads:
        loss = losses.classification_loss(args.label_smoothing)
        run.compile(model, loss=[loss] * 3, metrics=[["accuracy"], [], []],
                    loss_weights=[1.0, 0.3, 0.3])
    else:
        run.compile(model)

    def targets(y):  # one copy of the labels per head
        return (y, y, y) if args.aux_heads else y

    # === Train and evaluate ===
    run.fit(model, x_train, targets(data.y_train),
            validation_data=(x_val, targets(data.y_val)))
    logits = model.predict(x_test, batch_size=256, verbose=0)
    if args.aux_heads:
        logits = logits[0]  # the auxiliary heads serve training only
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == data.y_test))
    return run.finish(model, {
        "test_accuracy": accuracy,
        "image_size": size,
        "params": int(model.count_params()),
    })


if __name__ == "__main__":
    main()
