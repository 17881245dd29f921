"""Decoder-only Transformer language model on Python's own documentation.

Trains `transformer_lm` (GPT-style: pre-norm causal blocks, learned positions,
tied embeddings) to predict the next character of the standard library's
docstrings, reports validation and test perplexity per character, and prints
samples (greedy, then top-k / top-p sampling with temperature, all with the
key/value cache) during and after training; samples go to `samples.txt` in
the run folder. Default data: the docstrings of the standard library that ships
with every Python installation (`kzoo/data/text.py`), read offline.

    KERAS_BACKEND=jax python recipes/lm.py
    KERAS_BACKEND=torch python recipes/lm.py --position-encoding sinusoidal

With `--weights SOURCE` (a GPT-2 checkpoint: a `save_pretrained` folder,
`hf://openai-community/gpt2`, ...) there is no training: the checkpoint and its
tokenizer are loaded with `kzoo.create_model("transformer_lm", weights=...)`
and `--prompt` is continued by `--sample-length` sampled tokens.

    KERAS_BACKEND=jax python recipes/lm.py --weights hf://openai-community/gpt2 \
        --prompt "The meaning of life is"
"""

import math

import keras

import kzoo
from kzoo.data.text import decode, encode
from kzoo.models.generation import generate, generate_text
from kzoo.training import runner

PROMPTS = ("Return the ", "This module provides ")


class PrintSamples(keras.callbacks.Callback):
    """Print a sampled continuation of each prompt every few epochs."""

    def __init__(self, length, every=1, seed=0):
        super().__init__()
        self.length, self.every, self.seed = length, every, seed

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        print(f"  samples after epoch {epoch + 1}:")
        for prompt in PROMPTS:
            text = sample(self.model, prompt, self.length, method="sample", temperature=0.8,
                          top_k=20, seed=self.seed)
            print(f"    {text!r}")


def sample(model, prompt, length, **options):
    """Continue `prompt` to `length` characters with `kzoo.models.generation`."""
    ids = generate(model, encode(prompt)[None], max_length=length, **options)[0]
    return decode(ids)


def continue_prompt(args):
    """`--weights SOURCE --prompt TEXT`: sample a continuation from a published checkpoint."""
    try:
        model = kzoo.create_model("transformer_lm", weights=args.weights)
        text = generate_text(model, args.prompt or PROMPTS[0],
                             max_new_tokens=args.sample_length, method="sample",
                             temperature=0.8, top_k=40, seed=args.seed)[0]
    except (ValueError, TypeError, ImportError) as err:
        raise runner.RunError(str(err)) from None
    print(text)
    return text


def main(argv=None):
    parser = runner.make_parser(
        __doc__, epochs=6, batch_size=32, lr=2e-3, dataset="python_docs",
        schedule="warmup_cosine", warmup_epochs=0.3, grad_clip=1.0,
    )
    parser.add_argument("--sequence-length", type=runner.positive_int, default=128, help="characters per training window")
    parser.add_argument("--max-train-chars", type=runner.non_negative_int, default=400_000,
                        help="training characters used (0: all, about 0.7 million)")
    parser.add_argument("--hidden-dim", type=runner.positive_int, default=128, help="token width")
    parser.add_argument("--num-heads", type=runner.positive_int, default=4, help="attention heads")
    parser.add_argument("--num-layers", type=runner.positive_int, default=3, help="decoder blocks")
    parser.add_argument("--intermediate-dim", type=runner.positive_int, default=512,
                        help="feed-forward width")
    parser.add_argument("--dropout", type=runner.fraction, default=0.1, help="dropout rate")
    parser.add_argument("--position-encoding", choices=("learned", "sinusoidal"),
                        default="learned", help="how positions are encoded")
    parser.add_argument("--sample-length", type=runner.positive_int, default=120,
                        help="characters (or, with --weights, tokens) generated per sample")
    parser.add_argument("--weights", default=None,
                        help="a GPT-2 checkpoint to sample from instead of training")
    parser.add_argument("--prompt", default=None, help="text the --weights model continues")
    for old, new in (("--d-model", "--hidden-dim"), ("--d-ff", "--intermediate-dim"),
                     ("--layers", "--num-layers")):
        runner.add_deprecated_alias(parser, old, new)
    args = parser.parse_args(argv)
    if args.weights:
        return continue_prompt(args)

    # === Data ===
    run = runner.Run(args, recipe="lm")
    data = run.load_data(sequence_length=args.sequence_length,
                         max_train_chars=args.max_train_chars or None)
    print(f"{data.source}; characters: {data.info['characters']}")

    # === Model ===
    length = 24 if run.smoke else args.sample_length
    model = kzoo.create_model(
        "transformer_lm", vocabulary_size=data.info["vocab_size"],
        max_sequence_length=max(args.sequence_length, length), hidden_dim=args.hidden_dim,
        num_heads=args.num_heads, num_layers=args.num_layers, intermediate_dim=args.intermediate_dim,
        dropout=args.dropout, position_encoding=args.position_encoding,
    )
    run.compile(model)  # next-character cross-entropy on logits, and accuracy

    # === Train ===
    run.fit(model, data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
            callbacks=[PrintSamples(length, every=1 if run.smoke else 2, seed=args.seed)])

    # === Evaluate: perplexity per character (exp of the mean cross-entropy) ===
    val = model.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)
    test = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
    metrics = {
        "val_perplexity": math.exp(val["loss"]),
        "test_perplexity": math.exp(test["loss"]),
        "test_char_accuracy": test["accuracy"],
        # A uniform guess over the vocabulary, for scale.
        "uniform_perplexity": float(data.info["vocab_size"]),
    }

    # === Look at the results: samples ===
    lines = []
    for prompt in PROMPTS:
        lines.append(f"greedy: {sample(model, prompt, length)!r}")
        for temperature, top_k, top_p in ((0.8, 20, None), (1.0, None, 0.9)):
            text = sample(model, prompt, length, method="sample", temperature=temperature,
                          top_k=top_k, top_p=top_p, seed=args.seed)
            lines.append(f"sample (T={temperature}, top_k={top_k}, top_p={top_p}): {text!r}")
    run.write_text("samples.txt", "\n".join(lines) + "\n")
    # `python -m kzoo predict RUN_DIR "some text"` continues it this far, greedily.
    run.metadata["generation"] = {"max_new_tokens": length, "method": "greedy"}
    print("\n".join(lines))
    return run.finish(model, metrics)


if __name__ == "__main__":
    main()
