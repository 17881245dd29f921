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
        task: str. `"classify"` (Adam + sparse cross-entropy on `targets`;
            sequence-to-sequence too) or a generative model's own step:
            `"gan"`, `"vae"`, `"ddpm"` (the model's compile() defaults).
        targets: callable or None. `targets(batch, rng)` -> integer labels;
            None means one class label per example.
        export: bool. Also time the exported model (ONNX, SavedModel).
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
    task: str = "classify"
    targets: Callable | None = None
    export: bool = False

    def make_targets(self, batch, rng):
        if self.targets is not None:
            return self.targets(batch, rng)
        return rng.integers(0, self.num_classes, size=batch).astype("int32")


def _images(shape):
    return lambda batch, rng: rng.random((batch, *shape), dtype=np.float32)


def _sequences(steps, features):
    return lambda batch, rng: rng.standard_normal((batch, steps, features), dtype=np.float32)


def _token_pair(length, vocab):
    def inputs(batch, rng):
        ids = rng.integers(1, vocab, size=(2, batch, length)).astype("int32")  # no padding
        return {"source_ids": ids[0], "target_ids": ids[1]}

    return inputs


# === Model FLOPs (for MFU) ===
# Counted analytically: 2 FLOPs per multiply-add of every matrix product
# (dense layers, attention projections, attention scores and weighted sums,
# patch projection, output logits); element-wise work (norms, softmax,
# activations, the optimizer) is left out. A training step is counted as
# 3 x the forward FLOPs (backward = 2 x forward), the usual convention.
def attention_layer_flops(tokens, keys, d, ff, cross_tokens=0):
    """Forward FLOPs of one post/pre-norm block for `tokens` query tokens.

    Self-attention: 4 projections 8 d^2 per token plus scores and weighted
    sum 4 * keys * d per token; feed-forward 4 d ff per token. A decoder
    block (`cross_tokens` > 0) adds cross-attention: Q and O projections
    4 d^2 per target token, K and V projections 4 d^2 per source token and
    4 * cross_tokens * d per target token for scores and weighted sum.
    """
    flops = tokens * (8 * d * d + 4 * keys * d + 4 * d * ff)
    if cross_tokens:
        flops += tokens * (4 * d * d + 4 * cross_tokens * d) + cross_tokens * 4 * d * d
    return flops


def transformer_train_flops(length, d, ff, enc_layers, dec_layers, vocab):
    def flops(batch):
        forward = (enc_layers * attention_layer_flops(length, length, d, ff)
                   + dec_layers * attention_layer_flops(length, length, d, ff, length)
                   + length * 2 * d * vocab)  # tied output projection
        return 3 * batch * forward

    return flops


def vit_train_flops(image, patch, channels, d, ff, layers, classes):
    def flops(batch):
        patches = (image // patch) ** 2
        tokens = patches + 1  # class token
        forward = (patches * 2 * patch * patch * channels * d  # patch projection
                   + layers * attention_layer_flops(tokens, tokens, d, ff)
                   + 2 * d * classes)
        return 3 * batch * forward

    return flops


class _NativeTorch:
    """`benchmarks.native_torch`, imported only when a native model is built,
    so that the harness runs (kzoo contenders only) where PyTorch is absent."""

    def __getattr__(self, name):
        from benchmarks import native_torch

        return getattr(native_torch, name)


nt = _NativeTorch()


# kzoo's argument names (CONTRIBUTING.md's glossary) for the natives' arguments.
_KZOO_NAMES = {"vocab_size": "vocabulary_size", "d_model": "hidden_dim", "mlp_dim": "intermediate_dim"}


def kzoo_kwargs(native):
    """The kzoo arguments of a native model's: renamed, `image_size`/`channels` as `input_shape`."""
    out = {_KZOO_NAMES.get(k, k): v for k, v in native.items() if k not in ("image_size", "channels")}
    if "image_size" in native:
        out["input_shape"] = (native["image_size"], native["image_size"], native["channels"])
    return out


def make_cases(tiny=False):
    """Every case at the size the issue names (or a tiny size for smoke tests)."""
    s = 8 if tiny else 1  # divide widths and batches for smoke runs
    b = (lambda n: max(2, n // 16)) if tiny else (lambda n: n)
    hidden = (512 // s, 512 // s)
    widths = tuple(w // s for w in (32, 64, 128))
    units = 128 // s
    steps = 10 if tiny else 100
    # Each case pins the architecture its native twin writes (kzoo's defaults may differ).
    # Transformer: d_model 128, 4 heads, 2 + 2 layers, length 64, vocabulary 1000.
    tr = dict(vocab_size=1000, d_model=128 // s, num_heads=4, num_encoder_layers=2,
              num_decoder_layers=2, intermediate_dim=512 // s)
    tr_len = 8 if tiny else 64
    vit = dict(input_shape=(32, 32, 3), patch_size=4, num_classes=10,
               num_layers=1 if tiny else 12) | (
        dict(hidden_dim=24, num_heads=3, intermediate_dim=96) if tiny else {})
    vit_d, vit_ff = (24, 96) if tiny else (192, 768)
    gan = dict(image_size=28, channels=1, latent_dim=64, filters=64 // s)
    vae = dict(image_size=28, channels=1, latent_dim=16, filters=32 // s, hidden_units=256 // s)
    ddpm = dict(image_size=16 if tiny else 32, channels=3, filters=32 // s if tiny else 32)
    return {
        c.name: c
        for c in [
            Case("mlp", "mlp", dict(input_shape=(784,), hidden_units=hidden, dropout=0.0,
                                    num_classes=10),
                 b(128), _images((784,)), 10, lambda: nt.MLP(784, hidden, 10), export=True),
            Case("simple_cnn", "simple_cnn",
                 dict(input_shape=(32, 32, 3), widths=widths, num_classes=10),
                 b(64), _images((32, 32, 3)), 10, lambda: nt.SimpleCNN(3, widths),
                 channels_first=True, export=True),
            Case("resnet20_cifar", "resnet20_cifar",
                 dict(input_shape=(32, 32, 3), num_classes=10) | ({"width": 4} if tiny else {}),
                 b(64), _images((32, 32, 3)), 10,
                 (lambda: nt.CifarResNet(widths=(4, 8, 16))) if tiny else (lambda: nt.CifarResNet()),
                 channels_first=True),
            Case("lstm_classifier", "lstm_classifier",
                 dict(input_shape=(steps, 16), units=units, num_layers=1, dropout=0.0, num_classes=10),
                 b(64), _sequences(steps, 16), 10,
                 lambda: nt.RecurrentClassifier("lstm", 16, units, 10)),
            Case("gru_classifier", "gru_classifier",
                 dict(input_shape=(steps, 16), units=units, num_layers=1, dropout=0.0, num_classes=10),
                 b(64), _sequences(steps, 16), 10,
                 lambda: nt.RecurrentClassifier("gru", 16, units, 10)),
            Case("transformer", "transformer", kzoo_kwargs(tr), b(32), _token_pair(tr_len, 1000), 1000,
                 lambda: nt.Seq2SeqTransformer(**tr),
                 train_flops=transformer_train_flops(tr_len, tr["d_model"],
                                                     tr["intermediate_dim"], 2, 2, 1000),
                 targets=lambda batch, rng: rng.integers(1, 1000, (batch, tr_len)).astype(
                     "int32")),
            Case("vit_tiny", "vit_tiny", vit, b(64), _images((32, 32, 3)), 10,
                 lambda: nt.ViT(num_layers=vit["num_layers"], hidden_dim=vit_d,
                                num_heads=3, mlp_dim=vit_ff),
                 channels_first=True, export=True,
                 train_flops=vit_train_flops(32, 4, 3, vit_d, vit_ff, vit["num_layers"], 10)),
            Case("dcgan", "dcgan", kzoo_kwargs(gan), b(64), _images((28, 28, 1)), 1,
                 lambda: nt.DCGAN(**gan), channels_first=True, task="gan"),
            Case("conv_vae", "conv_vae", kzoo_kwargs(vae), b(64), _images((28, 28, 1)), 1,
                 lambda: nt.ConvVAE(**vae), channels_first=True, task="vae"),
            Case("ddpm", "ddpm", kzoo_kwargs(ddpm), b(32), _images((ddpm["image_size"], ddpm["image_size"], 3)),
                 1, lambda: nt.DDPM(ddpm["image_size"], 3, filters=ddpm["filters"]),
                 channels_first=True, task="ddpm"),
        ]
    }
