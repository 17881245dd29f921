"""Figures measured by the default run of each model's recipe, per backend.

The README's model table shows them (`python -m kzoo list --markdown`). Each
figure was measured on the project's 2-core CPU machine with the command
recorded beside it; the per-family pages in docs/results/ give wall times and
details. A model absent from `MEASURED` has no default recipe run of its own
(it is a larger or alternative configuration of a measured one).

Example:

>>> from kzoo import measured
>>> measured.describe("mlp")
'test accuracy 0.985 jax, 0.993 torch, 0.993 tf (digits)'
>>> measured.describe("vgg16") is None
True
"""

BACKEND_SHORT = {"jax": "jax", "torch": "torch", "tensorflow": "tf"}

# model: (metric, data, {backend: value}, command run with KERAS_BACKEND=<backend>)
MEASURED = {
    "mlp": ("test accuracy", "digits",
            {"jax": 0.985, "torch": 0.993, "tensorflow": 0.993}, "recipes/mlp.py"),
    "simple_cnn": ("test accuracy", "shapes",
                   {"jax": 0.974, "torch": 0.986, "tensorflow": 0.982}, "recipes/cnn.py"),
    "resnet20_cifar": ("test accuracy", "shapes, width 8",
                       {"jax": 0.943, "torch": 0.951, "tensorflow": 0.970}, "recipes/resnet.py"),
    "lenet5": ("test accuracy", "digits at 32x32",
               {"jax": 0.967, "torch": 0.959, "tensorflow": 0.978}, "recipes/classics.py"),
    "clip_dual_encoder": ("zero-shot test accuracy", "digit_captions",
                          {"jax": 0.933, "torch": 0.922, "tensorflow": 0.959},
                          "recipes/clip.py"),
    "bert_tiny": ("test accuracy", "digit_sentences, 500 labelled, after MLM pre-training",
                  {"jax": 1.0, "torch": 1.0, "tensorflow": 1.0}, "recipes/bert.py"),
    "lstm_classifier": ("test accuracy", "waveforms",
                        {"jax": 0.758, "torch": 0.753, "tensorflow": 0.729}, "recipes/rnn.py"),
    "lstm_regressor": ("test MAE", "seasonal",
                       {"jax": 0.317, "torch": 0.321, "tensorflow": 0.316},
                       "recipes/rnn.py --task forecast"),
    "seq2seq_attention": ("test exact match", "dates",
                          {"jax": 1.0, "torch": 1.0, "tensorflow": 1.0}, "recipes/seq2seq.py"),
    "transformer": ("test exact match", "numbers_en_fr",
                    {"jax": 0.993, "torch": 0.992, "tensorflow": 0.999}, "recipes/transformer.py"),
    "transformer_lm": ("test perplexity per character", "python_docs, uniform 97",
                       {"jax": 12.52, "torch": 13.36, "tensorflow": 12.56}, "recipes/lm.py"),
    "vit_tiny": ("test accuracy", "shapes, patch 4, width 64",
                 {"jax": 0.647, "torch": 0.620, "tensorflow": 0.648}, "recipes/vit.py"),
    "gan": ("judge confidence", "digits",
           {"jax": 0.857, "torch": 0.870, "tensorflow": 0.870}, "recipes/gan.py"),
    "dcgan": ("judge confidence", "digits",
             {"jax": 0.838, "torch": 0.833, "tensorflow": 0.825}, "recipes/dcgan.py"),
    "conv_vae": ("judge confidence", "digits",
                {"jax": 0.881, "torch": 0.873, "tensorflow": 0.868}, "recipes/vae.py"),
    "ddpm": ("judge confidence", "digits",
            {"jax": 0.821, "torch": 0.839, "tensorflow": 0.824}, "recipes/diffusion.py"),
}


def describe(name):
    """One line for the model table, e.g. `'test accuracy 0.985 jax, ... (digits)'`, or None.

    Args:
        name: str. A registered model name.
    """
    if name not in MEASURED:
        return None
    metric, data, values, _ = MEASURED[name]
    figures = ", ".join(f"{values[b]:.3f} {BACKEND_SHORT[b]}" for b in BACKEND_SHORT if b in values)
    return f"{metric} {figures} ({data})"


def command(name):
    """The command that reproduces `name`'s figures (`KERAS_BACKEND=<backend> python ...`)."""
    return f"KERAS_BACKEND=<backend> python {MEASURED[name][3]}"
