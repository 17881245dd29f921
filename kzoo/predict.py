"""Predict with a trained model: `python -m kzoo predict RUN_DIR INPUT...`.

The run folder's `model.keras` carries what prediction needs in its metadata
(`kzoo.models.base.ModelConfig.metadata`): the class names, the preprocessing
its inputs had, its tokenizer. So `predict` takes the inputs a person has:

- `.npy` arrays: one example (the model's input shape) or a batch;
- images (`.png`, `.jpg`, ...): resized and scaled as the training data was;
- text, for models with a tokenizer: each argument that is not a file is one
  text, and a `.txt` file holds one text per line. A translation model
  translates it, a language model continues it, a text classifier classifies it.

Classifiers give the top-k classes (named by the run's class names), other
models their raw outputs. Every failure is an `ExportError` with one sentence.

Example:

>>> import tempfile, numpy as np, kzoo
>>> from kzoo import predict
>>> model = kzoo.create_model("mlp", input_shape=(4,), num_classes=3, hidden_units=(8,))
>>> model.metadata = {"class_names": ["cat", "dog", "eel"]}
>>> folder = tempfile.mkdtemp()
>>> model.save(folder + "/model.keras")
>>> np.save(folder + "/x.npy", np.zeros(4, "float32"))
>>> result = predict.predict(predict.load_model(folder), [folder + "/x.npy"], k=1)
>>> result["top_k"][0][0][0] in ("cat", "dog", "eel")
True
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kzoo.export import (
    ExportError,
    first_line,
    load_model,  # noqa: F401  (the one loader, as kzoo.predict.load_model too)
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TEXT_SUFFIXES = (".txt",)
#: Images larger than this many pixels are refused (decompression bombs).
MAX_IMAGE_PIXELS = 64_000_000


def metadata(model: keras.Model) -> dict[str, Any]:
    """The model's metadata dict (empty for models that have none)."""
    return dict(getattr(model, "metadata", None) or {})


# === Reading inputs ===
def _tokenizer(model, key="tokenizer"):
    record = metadata(model).get(key)
    if not record:
        return None
    try:
        from kzoo import tokenizers
    except ImportError:  # pragma: no cover - kzoo.tokenizers ships with kzoo
        raise ExportError("Received a model with a tokenizer but kzoo.tokenizers is missing; "
                          "expected a complete kzoo installation, so reinstall kzoo.") from None
    try:
        return tokenizers.from_metadata(record)
    except (TypeError, ValueError, ImportError) as err:
        raise ExportError(f"Received a model whose tokenizer cannot be rebuilt "
                          f"({first_line(err)}); expected tokenizer metadata as "
                          "kzoo writes it.") from None


def split_inputs(model, inputs):
    """Sort the command line's inputs into files and texts (texts need a tokenizer)."""
    texts, files = [], []
    has_tokenizer = bool(metadata(model).get("tokenizer"))
    for item in map(str, inputs):
        p = Path(item)
        if p.is_dir():
            raise ExportError(f"Received input {item!r}, which is a folder; pass .npy, "
                              "image or .txt files.")
        if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES and has_tokenizer:
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise ExportError(f"Received input {item!r}, which cannot be read as UTF-8 "
                                  f"text ({first_line(err)}); pass a UTF-8 .txt file.") from None
            texts += [line for line in lines if line.strip()]
        elif p.is_file():
            files.append(p)
        elif has_tokenizer:
            texts.append(item)
        else:
            raise ExportError(f"Received input {item!r}, which is not a file; pass .npy or "
                              "image files (text only for models with a tokenizer).")
    if texts and files:
        raise ExportError("Received both text and files; expected one kind per call, so "
                          "predict the texts and the files separately.")
    return files, texts


def read_files(paths: Sequence[str | os.PathLike], model: keras.Model) -> np.ndarray:
    """Stack `.npy` arrays or images into one batch shaped for a single-input model."""
    if len(model.inputs) != 1:
        raise ExportError(
            f"Received files for a model with {len(model.inputs)} inputs; expected text "
            "(for a model with a tokenizer) or a single-input model, so call this one "
            "from Python.")
    spec = model.inputs[0]
    shape = tuple(spec.shape[1:])
    preprocessing = metadata(model).get("preprocessing") or {}
    batches = []
    for p in map(Path, paths):
        if p.suffix == ".npy":
            array = _read_npy(p)
            if array.ndim == len(shape):
                array = array[None]
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            array = preprocess_images([p], preprocessing, shape)
        else:
            raise ExportError(
                f"Received input {str(p)!r}; expected a .npy file or an image "
                f"({', '.join(IMAGE_SUFFIXES)}), or text for a model with a tokenizer.")
        if array.ndim != len(shape) + 1 or any(
            d is not None and d != a for d, a in zip(shape, array.shape[1:])
        ):
            raise ExportError(
                f"Received an array of shape {array.shape} from {p.name}; expected "
                f"{shape} or a batch (N, *{shape}) for this model.")
        if array.shape[0] == 0:
            raise ExportError(f"Received an empty batch from {p.name}; expected at least "
                              "one example, so save a non-empty array.")
        batches.append(array)
    return np.concatenate(batches).astype(str(spec.dtype))


def _read_npy(p):
    try:
        array = np.load(p, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):
            raise ExportError(f"Received {p.name}, a .npy file of Python objects, which is "
                              "refused (loading it could run code); save a numeric array."
                              ) from None
        raise ExportError(f"Received {p.name}, which is not a readable .npy file "
                          f"({first_line(err)}); save it with numpy.save.") from None
    except (OSError, EOFError) as err:
        raise ExportError(f"Received {p.name}, which is not a readable .npy file "
                          f"({first_line(err)}); save it with numpy.save.") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ExportError(f"Received {p.name}, an array of {array.dtype} values; expected "
                          "numbers, so save a numeric array (text goes in as text).")
    return array


def preprocess_images(paths, spec, shape):
    """Images as the model's training inputs were: size, channels and scale from `spec`.

    `spec` is `model.metadata["preprocessing"]`. A spec with a mean and std
    (published weights) goes to `kzoo.weights.preprocessing.preprocess_images`; kzoo's
    own runs record the size, channels and value range their loader used.
    """
    if spec.get("mean") is not None:
        from kzoo.weights.preprocessing import preprocess_images as published

        try:
            return np.asarray(published([str(p) for p in paths], spec))
        except (ValueError, TypeError) as err:
            raise ExportError(str(err)) from None
    from PIL import Image

    if len(shape) != 3:
        raise ExportError(
            f"Received an image for a model whose inputs have shape {shape}; images need "
            "an (height, width, channels) input, so pass .npy arrays instead.")
    height, width, channels = shape
    if spec.get("size"):
        height, width = height or spec["size"][0], width or spec["size"][1]
    channels = channels or spec.get("channels") or 3
    low, high = spec.get("scale", (0.0, 1.0))
    out = []
    for p in paths:
        try:
            with Image.open(p) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ExportError(
                        f"Received image {p.name}, which has more pixels than predict reads "
                        f"({image.width}x{image.height}, at most {MAX_IMAGE_PIXELS:,}); "
                        "shrink it first.")
                image = image.convert("L" if channels == 1 else "RGB")
                if height and width:
                    image = image.resize((width, height), Image.BILINEAR)
                array = np.asarray(image, dtype="float32") / 255.0
        except ExportError:
            raise
        except Image.DecompressionBombError as err:
            raise ExportError(f"Received image {p.name}, which has more pixels than predict "
                              f"reads ({first_line(err).split(', could')[0]}); shrink it "
                              "first.") from None
        except Exception as err:  # PIL's errors for truncated or unknown images vary
            raise ExportError(f"Received image {p.name}, which cannot be read "
                              f"({first_line(err)}); pass a complete image file.") from None
        array = low + (high - low) * array
        out.append(array[..., None] if channels == 1 else array)
    return np.stack(out)


# === Classes ===
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

    >>> from kzoo.predict import top_k
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


# === Predicting ===
def predict(model: keras.Model, inputs: Sequence[str], k: int = 5,
            labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Run `model` on files or texts; return a JSON-ready dict.

    Args:
        model: keras.Model. A loaded model (see `load_model`).
        inputs: list of str. Files (.npy, images, .txt) and texts.
        k: int. Classes per example for classifiers. Defaults to 5.
        labels: list of str or None. Class names, overriding the model's own.

    Returns:
        dict: `{"inputs", "top_k"}` for classifiers, `{"inputs", "texts"}`
        for text generation, else `{"inputs", "outputs"}`.
    """
    files, texts = split_inputs(model, inputs)
    if texts:
        return predict_texts(model, texts, k=k, labels=labels)
    batch = read_files(files, model)
    outputs = model.predict(batch, verbose=0)
    if isinstance(outputs, dict) or isinstance(outputs, (list, tuple)):
        outputs = keras.tree.flatten(outputs)[0]
    outputs = keras.ops.convert_to_numpy(outputs)
    return _classify_or_raw(model, [str(p) for p in files], outputs, k, labels)


def _classify_or_raw(model, names, outputs, k, labels):
    labels = labels or metadata(model).get("class_names")
    if is_classifier(model):
        if labels is not None and len(labels) != outputs.shape[-1]:
            raise ExportError(
                f"Received {len(labels)} labels; expected one per class ({outputs.shape[-1]}), "
                "one label per line.")
        return {"inputs": names, "top_k": top_k(outputs, k, labels)}
    return {"inputs": names, "outputs": outputs}


def predict_texts(model: keras.Model, texts: Sequence[str], k: int = 5,
                  labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Translate, continue or classify `texts` with the model's tokenizer."""
    from kzoo.models.generation import generate

    tokenizer = _tokenizer(model)
    info = metadata(model).get("generation") or {}
    # A source sentence goes in as trained: without start and end tokens.
    two_inputs = len(keras.tree.flatten(model.input)) == 2
    translates = two_inputs and (hasattr(model, "init_decoding") or hasattr(model, "generate"))
    try:
        ids = tokenizer.encode(texts, add_special_tokens=not translates)
    except (TypeError, ValueError) as err:
        raise ExportError(f"Received text the model's tokenizer cannot encode "
                          f"({first_line(err)}); use the characters or words it was "
                          "trained on.") from None
    pad = tokenizer.pad_id or 0
    if translates and not hasattr(model, "init_decoding"):  # the RNN seq2seq decodes itself
        target = _tokenizer(model, "target_tokenizer") or tokenizer
        decoded = model.generate(_pad(ids, pad, _length(keras.tree.flatten(model.input)[0])))
        tokens = decoded[0] if isinstance(decoded, tuple) else decoded
        return {"inputs": texts, "texts": [target.decode(row) for row in np.asarray(tokens)]}
    if translates:  # the Transformer encoder-decoder
        target = _tokenizer(model, "target_tokenizer") or tokenizer
        source = _pad(ids, pad, _length(model.inputs[0]))
        start, end = _special_ids(target, info)
        tokens = generate(model, source, max_length=int(info.get("max_length", 64)),
                          method=info.get("method", "greedy"), start_id=start, end_id=end,
                          pad_id=pad)
        return {"inputs": texts, "texts": [target.decode(row) for row in np.asarray(tokens)]}
    if hasattr(model, "init_decoding"):  # a language model continues each text
        out = []
        for row in ids:
            prompt = np.asarray([row], "int32")
            length = prompt.shape[1] + int(info.get("max_new_tokens", 100))
            limit = getattr(model, "model_config", {}).get("max_sequence_length")
            length = min(length, limit) if limit else length
            if length <= prompt.shape[1]:
                raise ExportError(
                    f"Received a text of {prompt.shape[1]} tokens; this model continues texts "
                    f"shorter than {limit} tokens, so shorten it.")
            tokens = generate(model, prompt, max_length=length,
                              method=info.get("method", "greedy"),
                              seed=info.get("seed"), temperature=info.get("temperature", 1.0))
            out.append(tokenizer.decode(np.asarray(tokens)[0]))
        return {"inputs": texts, "texts": out}
    # A text classifier (or encoder): token ids, padded to the model's length.
    structure = model.input
    specs = keras.tree.flatten(structure)
    if any("int" not in str(spec.dtype) for spec in specs):
        raise ExportError(
            f"Received text for {model.name!r}, which takes other inputs beside token ids "
            "(images and text together); call it from Python with every input.")
    feed: Any
    if isinstance(structure, dict):
        names = [n for n in structure if "token" in n] or list(structure)[:1]
        batch = _pad(ids, pad, _length(structure[names[0]]))
        feed = {n: batch if n == names[0] else np.zeros_like(batch) for n in structure}
    else:
        batch = _pad(ids, pad, _length(specs[0]))
        feed = batch if len(specs) == 1 else [batch] + [np.zeros_like(batch) for _ in specs[1:]]
    outputs = model.predict(feed, verbose=0)
    if isinstance(outputs, dict) or isinstance(outputs, (list, tuple)):
        outputs = keras.tree.flatten(outputs)[0]
    return _classify_or_raw(model, texts, keras.ops.convert_to_numpy(outputs), k, labels)


def _special_ids(tokenizer, info):
    start = info.get("start_id")
    end = info.get("end_id")
    if start is None and hasattr(tokenizer, "special"):
        token = tokenizer.special.get("start")
        start = None if token is None else tokenizer.token_to_id(token)
    if end is None and hasattr(tokenizer, "special"):
        token = tokenizer.special.get("end")
        end = None if token is None else tokenizer.token_to_id(token)
    return start, end


def _length(spec):
    return spec.shape[1] if len(spec.shape) > 1 else None


def _pad(rows, pad, length=None):
    longest = max(1, *(len(r) for r in rows)) if rows else 1
    length = length or longest
    out = np.full((len(rows), length), pad, "int32")
    for i, row in enumerate(rows):
        row = row[:length]
        out[i, : len(row)] = row
    return out


def to_json(result: Mapping[str, Any]) -> str:
    """`predict` output as JSON text (arrays become lists)."""
    return json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v
                       for k, v in result.items()}, indent=1)
