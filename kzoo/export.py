"""Export: kzoo models leave the zoo and run elsewhere.

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
library: it exports through torch and runs exported artifacts with onnxruntime
and TensorFlow (`exported_runner`). Predicting from files is `kzoo.predict`;
timing an export against its Keras model is `kzoo.benchmark`.

Example:

>>> import tempfile, numpy as np, kzoo
>>> from kzoo import export
>>> model = kzoo.create_model("mlp", input_shape=(4,), num_classes=3, hidden_units=(8,))
>>> path = export.export_model(model, tempfile.mkdtemp() + "/mlp.keras", format="keras")
>>> export.load_model(path).output_shape
(None, 3)
"""

import importlib.util
import os
import re
import zipfile
from pathlib import Path

import keras
import numpy as np

FORMATS = ("onnx", "tf_saved_model", "keras")


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


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a `.keras` file or a run folder's model with `safe_mode=True`; one sentence on failure.

    kzoo's one loader: `kzoo.load_model`, `kzoo.predict.load_model` and the
    CLI all call it. kzoo's classes are registered on `import kzoo`, so no
    `custom_objects` are needed. An empty, truncated or damaged file, or one
    holding a `Lambda` layer, raises `ExportError` in one sentence.

    Args:
        path: str or Path. A `.keras` file or a run folder with `model.keras`.
    """
    import kzoo  # noqa: F401  (registers every class a kzoo file names)

    file = model_path(path)
    if file.stat().st_size == 0:
        raise ExportError(f"Received {str(file)!r}, an empty file; expected a saved .keras "
                          "model, so train or export the model again.")
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        raise ExportError(f"Received {str(file)!r}, which is not a readable .keras archive "
                          f"({first_line(err)}); expected a complete file, so copy or save it "
                          "again (a killed save leaves a truncated file).") from None
    if bad is not None:
        raise ExportError(f"Received {str(file)!r}, whose entry {bad!r} is damaged (CRC "
                          "mismatch); expected a complete file, so copy or save it again.")
    try:
        return keras.saving.load_model(file, safe_mode=True)
    except Exception as err:  # Keras raises many types for a bad file; say which in one line
        text = first_line(err)
        if "Lambda" in text or "safe_mode" in text:
            raise ExportError(f"Received {str(file)!r}, which holds code (a Lambda layer or "
                              "function) that safe loading refuses to run; expected a kzoo "
                              "model, so rebuild it without Lambda layers.") from None
        raise ExportError(f"Received {str(file)!r}, which Keras cannot load "
                          f"({type(err).__name__}: {text}); expected a .keras file kzoo "
                          "wrote, so check the file or save it again.") from None


def first_line(err: BaseException) -> str:
    """The first non-empty line of an error message, without its final period."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:200].rstrip(".")


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
    >>> model = kzoo.create_model("bert_tiny", vocabulary_size=10, num_layers=1)
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
def exported_runner(path, format):
    """Load an exported artifact once; return a function that runs it on inputs.

    The function takes inputs structured as the model's (an array, a tuple or
    a dict of arrays) and returns what the runtime returns: a list of arrays
    for ONNX, the serve endpoint's tensors for a SavedModel.

    Args:
        path: str or Path. The exported file or folder.
        format: str. `"onnx"` (run with onnxruntime on the CPU) or
            `"tf_saved_model"` (run with TensorFlow).
    """
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda inputs: session.run(None, _onnx_feed(session, inputs))
    if format == "tf_saved_model":
        import tensorflow as tf

        artifact = tf.saved_model.load(str(path))
        # Keras' serve endpoint takes the model's input structure as one argument.
        return lambda inputs: artifact.serve(list(inputs) if isinstance(inputs, tuple) else inputs)
    raise ExportError(f"Received format={format!r}; expected 'onnx' or 'tf_saved_model'.")


def _onnx_feed(session, inputs):
    names = [i.name for i in session.get_inputs()]
    if isinstance(inputs, dict) and set(names) <= set(inputs):
        return {n: inputs[n] for n in names}
    # Otherwise in Keras' flat order (a dict's keys sorted), the order the exporters use.
    return dict(zip(names, keras.tree.flatten(inputs)))


def run_onnx(path, inputs):
    """Run an exported ONNX model with onnxruntime; return its outputs (list of arrays)."""
    return exported_runner(path, "onnx")(inputs)


def run_saved_model(path, inputs):
    """Run an exported SavedModel's `serve` endpoint with TensorFlow; return a list of arrays."""
    import tensorflow as tf

    outputs = exported_runner(path, "tf_saved_model")(inputs)
    return [np.asarray(o) for o in tf.nest.flatten(outputs)]
