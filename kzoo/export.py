"""Export and inference: kzoo models leave the zoo and run elsewhere.

Exporting uses Keras' own `model.export` (ONNX, TensorFlow SavedModel); which
backend can write which format depends on what is installed:

| format           | tensorflow backend | jax backend            | torch backend   |
|------------------|--------------------|------------------------|-----------------|
| `onnx`           | needs `tf2onnx`    | needs `jax2onnx`       | torch (*)       |
| `tf_saved_model` | TensorFlow alone   | needs TensorFlow too   | needs torch_xla |
| `keras`          | always             | always                 | always          |

(*) Models whose graph torch's TorchScript exporter cannot trace (BERT, ViT,
CLIP) go through `torch.export`, which needs `onnxscript`. docs/deploy.md
lists which models export where.

This is the one module besides kzoo/backend/ allowed to import a backend
library: it runs exported artifacts with onnxruntime and TensorFlow.

Example:

>>> import tempfile, numpy as np, kzoo
>>> from kzoo import export
>>> model = kzoo.create_model("mlp", input_shape=(4,), num_classes=3, hidden_units=(8,))
>>> path = export.export_model(model, tempfile.mkdtemp() + "/mlp.keras", format="keras")
>>> export.load_model(path).output_shape
(None, 3)
"""

import importlib.util
import json
import re
import time
from pathlib import Path

import keras
import numpy as np

FORMATS = ("onnx", "tf_saved_model", "keras")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class ExportError(ValueError):
    """An export or prediction cannot be done; the message says why and what to do."""


# === Loading ===
def model_path(path):
    """The `.keras` file named by `path`: the file itself or a run folder's `model.keras`."""
    path = Path(path)
    if path.is_dir() and (path / "model.keras").is_file():
        return path / "model.keras"
    if path.is_file() and path.suffix == ".keras":
        return path
    raise ExportError(
        f"Received {str(path)!r}; expected a .keras model file or a run folder containing "
        "model.keras, so pass e.g. runs/mlp-jax or runs/mlp-jax/model.keras."
    )


def load_model(path):
    """Load a kzoo model file (or a run folder's model) with `safe_mode=True`.

    kzoo's classes are registered first, so no `custom_objects` are needed.

    Args:
        path: str or Path. A `.keras` file or a run folder with `model.keras`.
    """
    import kzoo

    kzoo.list_models()  # imports every family, registering their classes
    return keras.saving.load_model(model_path(path), safe_mode=True)


# === Exporting ===
def _missing(module):
    return importlib.util.find_spec(module) is None


def check_format(format, backend=None):
    """Raise `ExportError` (one sentence) unless `backend` can write `format` here."""
    backend = backend or keras.config.backend()
    if format not in FORMATS:
        raise ExportError(
            f"Received format={format!r}; expected one of {list(FORMATS)}."
        )
    needs = {
        ("onnx", "tensorflow"): ("tf2onnx", "pip install tf2onnx"),
        ("onnx", "jax"): ("jax2onnx", "pip install jax2onnx"),
        ("onnx", "torch"): ("onnx", "pip install onnx"),
        ("tf_saved_model", "jax"): ("tensorflow", "pip install tensorflow"),
        ("tf_saved_model", "torch"): ("torch_xla", "pip install torch_xla"),
    }
    if format != "keras" and backend not in ("tensorflow", "jax", "torch"):
        raise ExportError(
            f"Received format={format!r} on the {backend} backend, which Keras cannot export "
            "from; set KERAS_BACKEND to tensorflow, jax or torch."
        )
    need = needs.get((format, backend))
    if need and _missing(need[0]):
        alternative = {
            "onnx": "KERAS_BACKEND=torch can write ONNX with PyTorch alone",
            "tf_saved_model": "KERAS_BACKEND=tensorflow can write a SavedModel with "
                              "TensorFlow alone",
        }[format]
        raise ExportError(
            f"Received format={format!r} on the {backend} backend, which needs the "
            f"{need[0]} package ({need[1]}); install it, or export from a .keras file "
            f"where {alternative}."
        )


def sample_inputs(model, batch=1):
    """Ones shaped like the model's inputs, in their structure and dtypes.

    Variable axes get length 8. Ones rather than zeros, so that an integer
    input is a valid, non-padding token id (0 is padding in kzoo's language
    models, and an all-padding sequence leaves attention nothing to attend
    to); Keras' own torch exporter traces with ones too.

    Args:
        model: keras.Model. A functional model.
        batch: int. Batch size. Defaults to 1.

    Returns:
        An array, or a dict or list of arrays shaped like `model.input`.

    Example:

    >>> import kzoo
    >>> from kzoo.export import sample_inputs
    >>> model = kzoo.create_model("bert_tiny", vocab_size=10, num_layers=1)
    >>> {k: v.shape for k, v in sample_inputs(model, batch=2).items()}
    {'token_ids': (2, 8), 'segment_ids': (2, 8)}
    """

    def ones(spec):
        shape = (batch,) + tuple(8 if d is None else d for d in spec.shape[1:])
        return np.ones(shape, dtype=str(spec.dtype))

    # `model.input` keeps the constructor's structure (a dict for BERT and
    # CLIP): a flat list in another order is rejected by the model.
    return keras.tree.map_structure(ones, model.input)


def export_model(model, output, format="onnx", verbose=False):
    """Export a model (or a `.keras` file / run folder) as `format` at `output`.

    The batch axis stays dynamic: the artifact accepts any batch size.

    Args:
        model: keras.Model, or str/Path of a `.keras` file or run folder.
        output: str or Path. The file (`.onnx`, `.keras`) or folder
            (`tf_saved_model`) to write.
        format: str. `"onnx"`, `"tf_saved_model"` or `"keras"`. Defaults to
            `"onnx"`.
        verbose: bool. Let Keras print its export messages. Defaults to False.

    Returns:
        Path: `output`.

    Raises:
        ExportError: the format is unknown or this backend cannot write it
            here; the message names the backend or package that can.
    """
    check_format(format)
    if not isinstance(model, keras.Model):
        model = load_model(model)
    if keras.config.dtype_policy().name != "float32" and format == "onnx":
        raise ExportError(
            f"Received dtype policy {keras.config.dtype_policy().name!r}; ONNX export needs "
            "'float32', so call keras.config.set_dtype_policy('float32') before loading."
        )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if format == "keras":
        model.save(output)
        return output
    # Keras exports only models that have been called once.
    if not getattr(model, "inputs", None):
        raise ExportError(
            f"Received {model.name!r}, a model without functional inputs (a two-player or "
            "custom-step model); expected a functional model, so export the part you deploy, "
            "such as its generator or decoder."
        )
    model(sample_inputs(model), training=False)
    if format == "onnx" and keras.config.backend() == "torch":
        _export_onnx_from_torch(model, output, verbose)
    else:
        if format == "onnx" and keras.config.backend() == "tensorflow":
            _teach_tf2onnx_erfc()
        try:
            model.export(str(output), format=format, verbose=verbose)
        except Exception as err:
            # jax2tf gives each variable axis its own symbol and cannot prove, say, that
            # a symbolic sequence length fits a position table of max_length rows.
            if type(err).__name__ != "InconclusiveDimensionOperation":
                raise
            raise ExportError(
                f"Received {model.name!r}, whose variable-length axes jax2tf cannot export "
                f"symbolically ({_root_message(err)}); export its .keras file with "
                "KERAS_BACKEND=tensorflow, which writes the same model as a SavedModel."
            ) from err
        if format == "onnx" and keras.config.backend() == "tensorflow":
            _check_tf2onnx_converted_everything(model, output)
    return output


def _check_tf2onnx_converted_everything(model, output):
    """Raise `ExportError` if tf2onnx left TensorFlow ops in the ONNX graph.

    tf2onnx logs an op it cannot convert and writes the graph anyway, which
    onnxruntime refuses to load. The known case: Keras runs a grouped
    convolution (AlexNet's two towers) on CPU as an XLA-compiled function,
    which tf2onnx keeps as a `StatefulPartitionedCall` instead of inlining.
    """
    import onnx

    graph = onnx.load(str(output), load_external_data=False).graph
    left = sorted({node.op_type for node in graph.node
                   if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)})
    if left:
        Path(output).unlink()
        why = ("; an XLA-compiled function, as Keras runs grouped convolutions on CPU"
               if "StatefulPartitionedCall" in left else "")
        raise ExportError(
            f"Received {model.name!r}, whose TensorFlow graph has ops tf2onnx cannot convert "
            f"({', '.join(left)}{why}); export its .keras file with KERAS_BACKEND=torch, "
            "which writes the same model as ONNX."
        )


def _teach_tf2onnx_erfc():
    """Register a tf2onnx handler for TensorFlow's `Erfc` op: `erfc(x) = 1 - erf(x)`.

    TensorFlow writes exact GELU (BERT, ViT, CLIP, the Transformer LM) as
    `0.5 * x * erfc(-x / sqrt(2))`. tf2onnx (1.17) converts `Erf` but has no
    handler for `Erfc` at any opset and leaves the op in the graph, which
    onnxruntime then rejects; ONNX itself has `Erf` (opset 9) but no `Erfc`.
    Registering again replaces the handler, so calling this twice is harmless.
    """
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc", onnx_op="Erf")
    class Erfc:
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            # `node` is now Erf(x); its consumers read 1 - Erf(x) instead.
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0]))
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype))
            complement = ctx.insert_new_node_on_output(
                "Sub", node.output[0], name=utils.make_name(node.name),
                inputs=[one.output[0], node.output[0]],
            )
            ctx.copy_shape(node.output[0], complement.output[0])


def _export_onnx_from_torch(model, output, verbose):
    """Keras' own torch path first; `torch.export` where its TorchScript exporter fails.

    With a dynamic batch, Keras exports through torch's TorchScript ONNX
    exporter, which needs every `F.layer_norm` width as a constant (Keras'
    torch `layer_normalization` reads it from the traced shape). That width
    stops being a constant after a slice or broadcast sized at run time (a
    class token, a position embedding): ViT and CLIP fail there. Those go
    through `torch.export` (torch's dynamo exporter, which needs onnxscript)
    and keep shapes symbolic.
    """
    try:
        model.export(str(output), format="onnx", verbose=verbose)
        return
    except Exception as err:
        if not type(err).__module__.startswith("torch.onnx"):
            raise
        torchscript_error = err
    if _missing("onnxscript"):
        raise ExportError(
            f"Received {model.name!r}, which torch's TorchScript ONNX exporter (the one Keras "
            f"uses for a dynamic batch) cannot trace ({_root_message(torchscript_error)}); "
            "install onnxscript (pip install onnxscript) so kzoo can use torch.export instead."
        ) from torchscript_error
    try:
        _export_onnx_with_torch_export(model, output)
    except Exception as err:
        if not type(err).__module__.startswith(("torch", "keras")):
            raise
        raise ExportError(
            f"Received {model.name!r}, which neither torch's TorchScript ONNX exporter nor "
            f"torch.export can export with a dynamic batch ({_root_message(err)}); export its "
            ".keras file with KERAS_BACKEND=tensorflow and tf2onnx instead."
        ) from err


def _root_message(err):
    """The first line of the innermost cause of `err`, without terminal colour codes."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Exception encountered when calling"):
        # Keras' wrapper: "Exception encountered when calling Layer.call()." then the cause.
        lines = [f"in {lines[0].split()[-1].rstrip('.')}: {lines[1]}"]
    first = lines[0].split(", scope:")[0] if lines else type(err).__name__
    return first[:160].rstrip(".")


def _export_onnx_with_torch_export(model, output):
    """ONNX through `torch.export` with the batch axis (and variable axes) dynamic."""
    import onnx
    import torch

    structure = model.input
    specs = keras.tree.flatten(structure)

    class FlatInputs(torch.nn.Module):
        """Takes the inputs as flat positional tensors, as an ONNX graph does."""

        def __init__(self, wrapped):
            super().__init__()
            self.wrapped = wrapped

        def forward(self, *flat):
            return self.wrapped(keras.tree.pack_sequence_as(structure, flat), training=False)

    # torch.export specialises axes of length 1, so trace at batch 2.
    example = tuple(torch.as_tensor(a) for a in keras.tree.flatten(sample_inputs(model, 2)))
    batch = torch.export.Dim("batch")
    dynamic = tuple(
        {axis: batch if axis == 0 else torch.export.Dim.AUTO
         for axis, size in enumerate(spec.shape) if size is None} or None
        for spec in specs
    )
    program = torch.onnx.export(
        FlatInputs(model).eval(), example, dynamo=True, dynamic_shapes=(dynamic,),
        input_names=[spec.name for spec in specs], verbose=False,
    )
    program.optimize()
    program.save(str(output))
    # When torch.export fails, torch.onnx retries with strategies that may drop the
    # dynamic shapes; an artifact with a fixed batch is not what was asked for.
    graph_inputs = onnx.load(str(output), load_external_data=False).graph.input
    fixed = [i.name for i, spec in zip(graph_inputs, specs)
             if spec.shape[0] is None and i.type.tensor_type.shape.dim[0].HasField("dim_value")]
    if fixed:
        Path(output).unlink()
        raise ExportError(
            f"Received {model.name!r}, which torch.export could trace only with a fixed batch "
            f"(inputs {fixed}); export its .keras file with KERAS_BACKEND=tensorflow and "
            "tf2onnx instead."
        )


def default_output(source, format):
    """Where `python -m kzoo export` writes by default: beside the model file."""
    path = model_path(source)
    folder = path.parent / "export"
    return folder / {"onnx": f"{path.stem}.onnx", "tf_saved_model": f"{path.stem}_saved_model",
                     "keras": f"{path.stem}.keras"}[format]


# === Running exported artifacts ===
def run_onnx(path, inputs):
    """Run an exported ONNX model with onnxruntime; return its outputs (list of arrays)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, _onnx_feed(session, inputs))


def _onnx_feed(session, inputs):
    names = [i.name for i in session.get_inputs()]
    if isinstance(inputs, dict) and set(names) <= set(inputs):
        return {n: inputs[n] for n in names}
    # Otherwise in Keras' flat order (a dict's keys sorted), the order the exporters use.
    return dict(zip(names, keras.tree.flatten(inputs)))


def run_saved_model(path, inputs):
    """Run an exported SavedModel's `serve` endpoint with TensorFlow; return a list of arrays."""
    import tensorflow as tf

    artifact = tf.saved_model.load(str(path))
    # Keras' serve endpoint takes the model's input structure as one argument.
    outputs = artifact.serve(list(inputs) if isinstance(inputs, tuple) else inputs)
    return [np.asarray(o) for o in tf.nest.flatten(outputs)]


# === Predicting ===
def read_inputs(paths, model):
    """Stack `.npy` arrays or image files into one batch shaped for `model`.

    A `.npy` file holds one example (the model's input shape) or a batch.
    Images are resized to the model's height and width, converted to its
    channels and scaled to [0, 1].
    """
    if len(model.inputs) != 1:
        raise ExportError(
            f"Received a model with {len(model.inputs)} inputs; predict reads files for "
            "single-input models, so call the model from Python for this one."
        )
    shape = tuple(model.inputs[0].shape[1:])
    batches = []
    for p in map(Path, paths):
        if not p.is_file():
            raise ExportError(f"Received input {str(p)!r}, which is not a file; pass .npy or image files.")
        if p.suffix == ".npy":
            array = np.load(p, allow_pickle=False)
            if array.ndim == len(shape):
                array = array[None]
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            array = _read_image(p, shape)[None]
        else:
            raise ExportError(
                f"Received input {str(p)!r}; expected a .npy file or an image "
                f"({', '.join(IMAGE_SUFFIXES)})."
            )
        if array.ndim != len(shape) + 1 or any(
            d is not None and d != a for d, a in zip(shape, array.shape[1:])
        ):
            raise ExportError(
                f"Received an array of shape {array.shape} from {p.name}; expected "
                f"{shape} or a batch (N, *{shape}) for this model."
            )
        batches.append(array)
    batch = np.concatenate(batches)
    return batch.astype(str(model.inputs[0].dtype))


def _read_image(path, shape):
    from PIL import Image

    if len(shape) != 3:
        raise ExportError(
            f"Received image {path.name} for a model whose inputs have shape {shape}; "
            "images need an (height, width, channels) input, so pass .npy arrays instead."
        )
    height, width, channels = shape
    image = Image.open(path).convert("L" if channels == 1 else "RGB")
    if height and width:
        image = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype="float32") / 255.0
    return array[..., None] if channels == 1 else array


def is_classifier(model):
    """True for a kzoo classifier: (batch, classes) logits from a `num_classes` head."""
    if len(model.output_shape) != 2:
        return False
    config = getattr(model, "model_config", None)
    if config is not None and "num_classes" in config:
        return config["num_classes"] is not None
    return getattr(model, "classifier_name", None) in {layer.name for layer in model.layers}


def top_k(logits, k=5, labels=None):
    """Per example, the `k` most probable classes as `(label, probability)` pairs.

    Example:

    >>> from kzoo.export import top_k
    >>> top_k([[0.0, 2.0, 1.0]], k=2, labels=["cat", "dog", "eel"])
    [[('dog', 0.6652), ('eel', 0.2447)]]
    """
    logits = np.asarray(logits, dtype="float64")
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    k = min(k, probs.shape[-1])
    rows = []
    for p in probs:
        order = np.argsort(-p, kind="stable")[:k]
        rows.append([(labels[i] if labels else int(i), round(float(p[i]), 4)) for i in order])
    return rows


def predict_files(model, paths, k=5, labels=None):
    """Run `model` on files; classifiers give top-k, others their raw outputs.

    Returns:
        dict: `{"inputs": [...], "top_k": [...]}` for classifiers, else
        `{"inputs": [...], "outputs": array}`.
    """
    batch = read_inputs(paths, model)
    outputs = keras.ops.convert_to_numpy(model.predict(batch, verbose=0))
    names = [str(p) for p in paths]
    if labels is not None and is_classifier(model) and len(labels) != outputs.shape[-1]:
        raise ExportError(
            f"Received {len(labels)} labels; expected one per class ({outputs.shape[-1]}), "
            "one label per line."
        )
    if is_classifier(model):
        return {"inputs": names, "top_k": top_k(outputs, k, labels)}
    return {"inputs": names, "outputs": outputs}


# === Speed ===
def benchmark(model, exported, format, batch_size=32, repeats=20):
    """Latency (batch 1, ms) and throughput (examples/s) of the Keras model and its export.

    Args:
        model: keras.Model. The model that was exported.
        exported: str or Path. The exported artifact.
        format: str. `"onnx"` or `"tf_saved_model"`.
        batch_size: int. Batch size of the throughput measurement. Defaults to 32.
        repeats: int. Timed calls per measurement (after one warm-up). Defaults to 20.

    Returns:
        dict: `{"keras": {...}, format: {...}}`, each with `latency_ms` and
        `throughput`.
    """
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])

        def run_exported(x):
            return session.run(None, _onnx_feed(session, x))
    elif format == "tf_saved_model":
        import tensorflow as tf

        artifact = tf.saved_model.load(str(exported))

        def run_exported(x):
            return artifact.serve(x)
    else:
        raise ExportError(f"Received format={format!r}; expected 'onnx' or 'tf_saved_model'.")

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


def to_json(result):
    """`predict_files` output as JSON text (arrays become lists)."""
    return json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v
                       for k, v in result.items()}, indent=1)
