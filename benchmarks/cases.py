"""The benchmark cases: one kzoo model and its native PyTorch twin each."""

import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
    """One architecture at one size, for kzoo and for native PyTorch.

    Attributes:
        name: str. The case name.
        model: str. The registered kzoo model.
        kwargs: dict. `create_model` arguments.
        batch: int. Examples per step.
        inputs: callable. `inputs(batch, rng)` -> channels-last numpy input.
        num_classes: int. Classes of the classification head.
        native: callable. Returns the `torch.nn.Module` twin.
        channels_first: bool. The native twin takes NCHW images.
        train_flops: callable or None. Model FLOPs of one training step.
    """

    name: str
    model: str
    kwargs: dict
    batch: int
    inputs: Callable
    num_classes: int
    native: Callable
    channels_first: bool = False
    train_flops: Callable | None = None


def _images(shape):
    return lambda batch, rng: rng.random((batch, *shape), dtype=np.float32)


def _sequences(steps, features):
    return lambda batch, rng: rng.standard_normal((batch, steps, features), dtype=np.float32)


class _NativeTorch:
    """`benchmarks.native_torch`, imported only when a native model is built,
    so that the harness runs (kzoo contenders only) where PyTorch is absent."""

    def __getattr__(self, name):
        from benchmarks import native_torch

        return getattr(native_torch, name)


nt = _NativeTorch()


def make_cases(tiny=False):
    """Every case at the size the issue names (or a tiny size for smoke tests)."""
    s = 8 if tiny else 1  # divide widths and batches for smoke runs
    b = (lambda n: max(2, n // 16)) if tiny else (lambda n: n)
    hidden = (512 // s, 512 // s)
    widths = tuple(w // s for w in (32, 64, 128))
    units = 128 // s
    steps = 10 if tiny else 100
    return {
        c.name: c
        for c in [
            Case("mlp", "mlp", dict(input_shape=(784,), hidden_units=hidden, num_classes=10),
                 b(128), _images((784,)), 10, lambda: nt.MLP(784, hidden, 10)),
            Case("simple_cnn", "simple_cnn",
                 dict(input_shape=(32, 32, 3), widths=widths, num_classes=10),
                 b(64), _images((32, 32, 3)), 10, lambda: nt.SimpleCNN(3, widths),
                 channels_first=True),
            Case("resnet20_cifar", "resnet20_cifar",
                 dict(input_shape=(32, 32, 3), num_classes=10) | ({"width": 4} if tiny else {}),
                 b(64), _images((32, 32, 3)), 10,
                 (lambda: nt.CifarResNet(widths=(4, 8, 16))) if tiny else (lambda: nt.CifarResNet()),
                 channels_first=True),
            Case("lstm_classifier", "lstm_classifier",
                 dict(input_shape=(steps, 16), units=units, num_classes=10),
                 b(64), _sequences(steps, 16), 10,
                 lambda: nt.RecurrentClassifier("lstm", 16, units, 10)),
            Case("gru_classifier", "gru_classifier",
                 dict(input_shape=(steps, 16), units=units, num_classes=10),
                 b(64), _sequences(steps, 16), 10,
                 lambda: nt.RecurrentClassifier("gru", 16, units, 10)),
        ]
    }
