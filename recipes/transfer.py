"""Transfer learning: pre-train a ResNet on one dataset, fine-tune it on another.

Default data, both offline: pre-training on `shapes` (six kinds of shapes,
generated procedurally by kzoo) and fine-tuning on `digits` (the 8x8 digits
shipped in scikit-learn, upsampled to the same image size). After
pre-training, the head is replaced for the new classes and trained twice in
sequence: first on a frozen backbone (linear probing), then with the last
`--unfreeze-stages` stages unfrozen, at `--backbone-lr-mult` times the head's
learning rate (per-layer learning rates, on every backend). The run reports
both accuracies, and a model trained from scratch on the same digits for the
same number of fine-tuning epochs as a reference.

With `--weights SOURCE` the survey's example runs for real: the backbone is
a published checkpoint (`--model resnet50 --weights imagenet`, a
`.safetensors`/`.pth` file, a Hugging Face folder or `hf://` id; see
`kzoo.weights.list_weights()`) instead of the pre-training phase, the target
images get the checkpoint's normalisation (from `model.metadata`), and the
same two phases follow: frozen backbone, then the last stages unfrozen with
per-layer learning rates.

    KERAS_BACKEND=jax python recipes/transfer.py
    KERAS_BACKEND=jax python recipes/transfer.py --model resnet50 --weights imagenet --image-size 64
"""

import math

import keras

import kzoo
from kzoo import losses
from kzoo.data.augment import training_batches
from kzoo.training import runner, transfer


def cosine(lr, epochs, train_size, batch_size):
    steps = max(1, epochs * math.ceil(train_size / batch_size))
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps)


def main(argv=None):
    parser = runner.make_parser(
        __doc__, epochs=6, batch_size=64, lr=2e-3, schedule="cosine", dataset="shapes"
    )
    parser.add_argument("--target", default="digits", help="dataset to fine-tune on")
    parser.add_argument(
        "--model",
        choices=("resnet20_cifar", "resnet56_cifar", "resnet18", "resnet34", "resnet50"),
        default="resnet20_cifar", help="ResNet pre-trained on the source (or loaded with "
                                       "--weights) and fine-tuned")
    parser.add_argument("--width", type=runner.positive_int, default=8,
                        help="first-stage channels (without --weights)")
    parser.add_argument("--weights", default=None,
                        help="start from published weights instead of pre-training (kzoo.weights)")
    parser.add_argument("--image-size", type=runner.positive_int, default=24, help="square size of both datasets")
    parser.add_argument("--finetune-epochs", type=runner.positive_int, default=4, help="epochs of each phase")
    parser.add_argument("--finetune-lr", type=runner.positive_float, default=1e-2, help="peak learning rate of fine-tuning")
    parser.add_argument("--unfreeze-stages", type=runner.positive_int, default=2, help="last stages unfrozen for fine-tuning")
    parser.add_argument("--backbone-lr-mult", type=runner.positive_float, default=0.1, help="learning-rate multiplier of the unfrozen backbone stages")
    parser.add_argument(
        "--freeze-batch-norm",
        action="store_true",
        help="keep the unfrozen stages' batch norms frozen (by default they adapt their "
        "statistics to the target data, which differs from the source)",
    )
    args = parser.parse_args(argv)
    if args.schedule == "plateau":
        raise runner.RunError(
            "--schedule plateau cannot lower per-layer learning rates; use --schedule cosine."
        )
    run = runner.Run(args, recipe="transfer")
    finetune_epochs = 1 if run.smoke else args.finetune_epochs

    # === Data: two offline datasets of the same image size ===
    size = {"image_size": args.image_size}
    target = run.load_data(args.target, needs_arrays=True, **size)
    if args.weights:
        return finetune_pretrained(args, run, target, finetune_epochs)
    source = run.load_data(args.dataset, needs_arrays=True, **size)  # last: the runner's schedule follows it
    if tuple(source.input_shape) != tuple(target.input_shape):
        raise runner.RunError(
            f"--dataset {args.dataset} has images {source.input_shape} but --target "
            f"{args.target} has {target.input_shape}; pick datasets of the same shape."
        )

    def batches(data):
        return training_batches(data, "auto", args.batch_size, seed=args.seed)[0]

    def evaluate(model, data):
        return model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)["accuracy"]

    def compile_finetune(model, optimizer):
        model.compile(
            optimizer=optimizer,
            loss=losses.classification_loss(args.label_smoothing),
            metrics=["accuracy"],
            jit_compile=run.jit_compile,
        )

    # === 1. Pre-train on the source dataset ===
    model = kzoo.create_model(
        args.model,
        input_shape=source.input_shape,
        num_classes=source.num_classes,
        width=args.width,
    )
    run.compile(model)
    run.fit(model, batches(source), validation_data=(source.x_val, source.y_val),
            phase="pretrain")
    metrics = {"pretrain_test_accuracy": evaluate(model, source)}

    # === 2. New head on a frozen backbone (linear probing) ===
    model = model.reset_classifier(target.num_classes)
    transfer.freeze_backbone(model)
    n = len(target.x_train)
    lr = cosine(args.finetune_lr, finetune_epochs, n, args.batch_size)
    compile_finetune(model, run.make_optimizer(lr=lr))
    model.fit(batches(target), epochs=finetune_epochs, verbose=0)
    metrics["frozen_backbone_test_accuracy"] = evaluate(model, target)

    # === 3. Unfreeze the last stages, slower than the head ===
    trainable = transfer.unfreeze_last_stages(
        model, args.unfreeze_stages, train_batch_norm=not args.freeze_batch_norm
    )
    stages = transfer.stages(model)[len(transfer.stages(model)) - args.unfreeze_stages :]
    optimizer = transfer.layerwise_learning_rates(
        run.make_optimizer(lr=lr), model, {f"{s}_*": args.backbone_lr_mult for s in stages}
    )
    compile_finetune(model, optimizer)
    run.epochs = finetune_epochs  # the runner's fit trains for run.epochs
    run.fit(model, batches(target), validation_data=(target.x_val, target.y_val))
    metrics["finetuned_test_accuracy"] = evaluate(model, target)
    metrics["finetuned_layers"] = len(trainable)

    # === Reference: the same model trained from scratch on the target ===
    scratch = kzoo.create_model(
        args.model,
        input_shape=target.input_shape,
        num_classes=target.num_classes,
        width=args.width,
    )
    compile_finetune(
        scratch,
        run.make_optimizer(lr=cosine(args.finetune_lr, 2 * finetune_epochs, n, args.batch_size)),
    )
    scratch.fit(batches(target), epochs=2 * finetune_epochs, verbose=0)
    metrics["scratch_test_accuracy"] = evaluate(scratch, target)
    return run.finish(model, metrics)


def finetune_pretrained(args, run, target, finetune_epochs):
    """`--weights`: a published backbone, frozen, then its last stages unfrozen."""
    from kzoo.data.augment import AugmentedBatches
    from kzoo.weights.preprocessing import normalize_arrays

    if args.model not in ("resnet18", "resnet34", "resnet50"):
        raise runner.RunError(
            f"--weights loads torchvision/timm ResNets; --model {args.model} has none, so pass "
            "--model resnet18, resnet34 or resnet50."
        )
    height, width = target.input_shape[:2]
    try:
        model = kzoo.create_model(args.model, weights=args.weights,
                                  input_shape=(height, width, 3), num_classes=target.num_classes)
    except ValueError as err:
        raise runner.RunError(str(err)) from None
    spec = model.metadata["preprocessing"]  # the checkpoint's normalisation
    x_train, x_val, x_test = (normalize_arrays(x, spec)
                              for x in (target.x_train, target.x_val, target.x_test))
    train = AugmentedBatches(x_train, target.y_train, args.batch_size, None, args.seed)

    def compile_finetune(optimizer):
        model.compile(optimizer=optimizer, loss=losses.classification_loss(args.label_smoothing),
                      metrics=["accuracy"], jit_compile=run.jit_compile)

    def evaluate():
        return model.evaluate(x_test, target.y_test, verbose=0, return_dict=True)["accuracy"]

    # === 1. The published backbone frozen, a new head (linear probing) ===
    transfer.freeze_backbone(model)
    n = len(x_train)
    lr = cosine(args.finetune_lr, finetune_epochs, n, args.batch_size)
    compile_finetune(run.make_optimizer(lr=lr))
    model.fit(train, epochs=finetune_epochs, verbose=0)
    metrics = {"frozen_backbone_test_accuracy": evaluate()}

    # === 2. The last stages unfrozen, slower than the head ===
    trainable = transfer.unfreeze_last_stages(
        model, args.unfreeze_stages, train_batch_norm=not args.freeze_batch_norm)
    stages = transfer.stages(model)[len(transfer.stages(model)) - args.unfreeze_stages:]
    optimizer = transfer.layerwise_learning_rates(
        run.make_optimizer(lr=lr), model, {f"{s}_*": args.backbone_lr_mult for s in stages})
    compile_finetune(optimizer)
    run.epochs = finetune_epochs
    run.fit(model, train, validation_data=(x_val, target.y_val))
    metrics["finetuned_test_accuracy"] = evaluate()
    metrics["finetuned_layers"] = len(trainable)
    return run.finish(model, metrics)


if __name__ == "__main__":
    main()
