"""Keras' Adam against kzoo's Adam on the current backend: the update alone, then
a whole training step of a benchmark case (see benchmarks/README.md).

    KERAS_BACKEND=torch python benchmarks/optimizer_step.py
    KERAS_BACKEND=torch python benchmarks/optimizer_step.py --case mlp --rounds 7

Part 1 times `optimizer.apply` on the weights of the case's model (gradients
fixed). Part 2 compiles the case's model twice, once with each optimizer, and
alternates blocks of `--steps` `train_on_batch` calls between the two, so that
drift of the machine hits both alike; it prints the median ms per step of
each and the blocks' values.
"""

import argparse
import os
import statistics
import time

import keras
import numpy as np

import kzoo
from benchmarks.cases import make_cases
from benchmarks.timing import median_ms
from kzoo.optimizers import Adam


def set_threads():
    threads = os.cpu_count() or 1
    if keras.config.backend() == "torch":
        import torch

        torch.set_num_threads(threads)


def time_update(optimizer, variables, grads, repeats=200):
    optimizer.build(variables)
    return median_ms(lambda: optimizer.apply(grads, variables), repeats, warmup=10) / 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="mlp", choices=sorted(make_cases()))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50, help="train steps per block")
    args = parser.parse_args(argv)
    set_threads()
    case = make_cases()[args.case]
    if case.task != "classify":
        parser.error(f"--case {args.case} trains with its own optimizers; pick a classifier")
    rng = np.random.default_rng(0)
    x, y = case.inputs(case.batch, rng), case.make_targets(case.batch, rng)

    optimizers = {"keras Adam": keras.optimizers.Adam, "kzoo Adam": Adam}
    model = kzoo.create_model(case.model, **case.kwargs)
    n = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"{keras.config.backend()}, {args.case}: {n:,} weights")
    grads = [keras.ops.convert_to_tensor(rng.standard_normal(w.shape).astype("float32"))
             for w in model.trainable_weights]
    for name, cls in optimizers.items():
        variables = [keras.Variable(keras.ops.convert_to_numpy(w)) for w in
                     model.trainable_weights]
        ms = time_update(cls(1e-3), variables, grads) * 1e3
        print(f"  update only, {name}: {ms:.3f} ms")

    models = {}
    for name, cls in optimizers.items():
        keras.utils.set_random_seed(0)
        m = kzoo.create_model(case.model, **case.kwargs)
        m.compile(optimizer=cls(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        for _ in range(10):
            m.train_on_batch(x, y)
        models[name] = m
    blocks = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, m in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                m.train_on_batch(x, y)
            blocks[name].append((time.perf_counter() - start) / args.steps * 1e3)
    for name, values in blocks.items():
        print(f"  train step, {name}: median {statistics.median(values):.2f} ms "
              f"(blocks: {' '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
