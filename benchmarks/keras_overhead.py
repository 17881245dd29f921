"""Where a small model's inference step goes on torch: Keras' layers or the kernels.

    KERAS_BACKEND=torch python -m benchmarks.keras_overhead
    KERAS_BACKEND=torch python -m benchmarks.keras_overhead --case simple_cnn

Times one inference batch of a benchmark case two ways, or four for the
MLP, median of `--repeats` calls under `torch.no_grad()`:

1. `model.predict_on_batch(x)`, what the benchmark times;
2. `model(x, training=False)`, the functional model's call;
3. for the MLP (a plain chain of layers), each layer's `call` in turn,
   skipping Keras' `Layer.__call__`, and the same products and activations
   as raw `torch` ops.

The differences are Keras' per-call machinery (argument binding, tree
flattening, autocast and name scopes), which kzoo does not change.
"""

import argparse

import numpy as np

from benchmarks.cases import make_cases
from benchmarks.timing import median_ms
from benchmarks.worker import THREADS, KzooContender
from kzoo.backend import memory


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="mlp", choices=sorted(make_cases()))
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    import keras

    if keras.config.backend() != "torch":
        raise SystemExit(f"Received KERAS_BACKEND={keras.config.backend()!r}; this measures "
                         "the torch backend, so run it with KERAS_BACKEND=torch.")
    import torch

    torch.set_num_threads(THREADS)
    memory.retain_freed_memory()
    contender = KzooContender(make_cases()[args.case], "auto")
    model, x = contender.infer_model, contender.infer_x
    tensor = keras.ops.convert_to_tensor(x)
    layers = model.layers[1:]
    chain = args.case == "mlp"  # a plain chain of layers: Dense, Activation, ...
    rows = [("predict_on_batch", lambda: model.predict_on_batch(x))]
    with torch.no_grad():
        rows.append(("model(x)", lambda: model(tensor, training=False)))
        if chain:
            def calls():
                h = tensor
                for layer in layers:
                    h = layer.call(h) if not isinstance(layer, keras.layers.Dropout) else h
                return h

            rows.append(("each layer's call, no __call__", calls))
        if args.case == "mlp":
            dense = [layer for layer in layers if hasattr(layer, "kernel")]

            def raw():
                h = tensor
                for i, layer in enumerate(dense):
                    h = torch.addmm(layer.bias.value, h, layer.kernel.value)
                    if i < len(dense) - 1:
                        h = torch.relu(h)
                return h

            np.testing.assert_allclose(keras.ops.convert_to_numpy(raw()),
                                       keras.ops.convert_to_numpy(model(tensor)), rtol=1e-4,
                                       atol=1e-4)
            rows.append(("raw torch ops", raw))
        print(f"{args.case} on torch, batch {tensor.shape[0]}, {len(layers)} layers, "
              f"{THREADS} threads; median of {args.repeats} calls:", flush=True)
        for label, fn in rows:
            print(f"  {label:32s} {median_ms(fn, args.repeats, warmup=10):7.3f} ms", flush=True)


if __name__ == "__main__":
    main()
