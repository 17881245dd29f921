"""How fast an exported model runs beside the Keras model it came from.

`benchmark` times batch-1 latency and the throughput of a larger batch, for
the Keras model (`predict_on_batch`) and for its exported artifact run with
onnxruntime or TensorFlow (`kzoo.export.exported_runner`), on the same inputs
(`kzoo.export.sample_inputs`). The figures it measures belong in results
files (docs/results/reliability.md), not in code.
"""

import time

import keras
import numpy as np

from kzoo.export import exported_runner, sample_inputs


def benchmark(model, exported, format, batch_size=32, repeats=20):
    """Time the Keras model and its exported artifact on the same inputs, one after the other.

    Each side gets one untimed warm-up call, then `repeats` timed calls on one
    example (latency) and on `batch_size` examples (throughput). The harness
    `python -m benchmarks` (its export cases, on by default) calls this and
    writes what it measures to `benchmarks/results/`.

    Args:
        model: keras.Model. The model that was exported.
        exported: str or Path. The exported artifact.
        format: str. `"onnx"` or `"tf_saved_model"`.
        batch_size: int. Batch size of the throughput measurement. Defaults to 32.
        repeats: int. Timed calls per measurement (after one warm-up). Defaults to 20.

    Returns:
        dict: `{"keras": {...}, format: {...}}`, each with `latency_ms` and
        `throughput`.

    Raises:
        kzoo.export.ExportError: `format` is neither `"onnx"` nor
            `"tf_saved_model"`.
    """
    run_exported = exported_runner(exported, format)

    def run_keras(x):
        # Keras' own inference path: compiled where the backend compiles, no autograd.
        return model.predict_on_batch(x)

    results = {}
    for label, fn in (("keras", run_keras), (format, run_exported)):
        results[label] = {
            "latency_ms": round(1000 * _seconds_per_call(fn, sample_inputs(model, 1), repeats), 3),
            "throughput": round(batch_size / _seconds_per_call(
                fn, sample_inputs(model, batch_size), repeats), 1),
        }
    return results


def _seconds_per_call(fn, x, repeats):
    fn(x)  # warm-up: tracing, compilation, allocation
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(x)
    keras.tree.map_structure(np.asarray, out)  # waits for asynchronous runtimes
    return (time.perf_counter() - start) / repeats
