"""`preprocess_images`: turn images into the inputs a checkpoint expects.

A preprocessing spec is the dict a converted model carries in
`model.metadata["preprocessing"]` (and the weights table lists):

- `resize`: int (resize the shorter side to it, keeping the aspect ratio, as
  torchvision's `Resize(int)`), `[height, width]` (resize to exactly that), or
  None;
- `crop`: int or None. A centred square crop of that side after resizing;
- `interpolation`: `"bilinear"`, `"bicubic"` or `"nearest"`;
- `value_range`: `[low, high]` that 8-bit pixels are scaled to first
  (`[0, 1]` for torchvision and timm);
- `mean`, `std`: per-channel normalisation `(x - mean) / std` after scaling;
- `input_size`: `[height, width]` the model takes (for reference).

Resizing uses `keras.ops.image.resize` (with antialiasing, as PIL and
torchvision do when shrinking); files are read with PIL.
"""

from pathlib import Path

import numpy as np


def _read(item):
    if isinstance(item, (str, Path)):
        from PIL import Image

        try:
            with Image.open(item) as image:
                return np.asarray(image.convert("RGB"), dtype="float32")
        except (OSError, ValueError) as err:
            raise ValueError(
                f"Received image file {str(item)!r}, which PIL cannot read ({err}); pass a "
                "JPEG or PNG image."
            ) from None
    array = np.asarray(item)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3:
        raise ValueError(
            f"Received an image array of shape {array.shape}; expected (height, width, "
            "channels), channels last, so transpose or squeeze it."
        )
    return array.astype("float32")


def _resize(image, size, interpolation):
    import keras

    out = keras.ops.image.resize(image, size, interpolation=interpolation, antialias=True)
    return np.asarray(keras.ops.convert_to_numpy(out), dtype="float32")


def preprocess_image(image, spec):
    """One image (a path or an `(H, W, C)` array of 8-bit values) -> a model input.

    Args:
        image: str, path or array. The image.
        spec: dict. A preprocessing spec (see the module docstring).

    Returns:
        `np.ndarray` of shape `(height, width, channels)`, float32.
    """
    x = _read(image)
    interpolation = spec.get("interpolation") or "bilinear"
    resize = spec.get("resize")
    if isinstance(resize, int):
        h, w = x.shape[:2]
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(resize * long / short)
        size = (resize, new_long) if h <= w else (new_long, resize)
        if size != (h, w):
            x = _resize(x, size, interpolation)
    elif resize:
        if tuple(resize) != x.shape[:2]:
            x = _resize(x, tuple(int(s) for s in resize), interpolation)
    crop = spec.get("crop")
    if crop:
        h, w = x.shape[:2]
        if h < crop or w < crop:
            raise ValueError(
                f"Received an image of {h}x{w} for a {crop}x{crop} centre crop; expected "
                "sides of at least the crop, so give a larger image or a larger resize."
            )
        top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
        x = x[top:top + crop, left:left + crop]
    low, high = spec.get("value_range") or (0.0, 1.0)
    x = np.clip(x, 0, 255) / 255.0 * (high - low) + low
    if spec.get("mean") is not None:
        x = (x - np.asarray(spec["mean"], "float32")) / np.asarray(spec["std"], "float32")
    return x.astype("float32")


def preprocess_images(images, spec):
    """Images (paths or 8-bit arrays) -> a batch of model inputs, as `spec` says.

    Args:
        images: a path, an array, or a list of them; a 4-D array is a batch.
        spec: dict. A preprocessing spec, usually
            `model.metadata["preprocessing"]`.

    Returns:
        `np.ndarray` of shape `(batch, height, width, channels)`, float32.

    Example:

    >>> import numpy as np
    >>> from kzoo.weights.preprocessing import preprocess_images
    >>> spec = {"resize": 8, "crop": 6, "interpolation": "bilinear",
    ...         "value_range": [0, 1], "mean": [0.5] * 3, "std": [0.5] * 3}
    >>> batch = preprocess_images(np.full((10, 20, 3), 255, "uint8"), spec)
    >>> batch.shape, float(batch.max())
    ((1, 6, 6, 3), 1.0)
    """
    if not isinstance(spec, dict):
        raise TypeError(
            f"Received a preprocessing spec of type {type(spec).__name__}; expected a dict "
            "such as model.metadata['preprocessing']."
        )
    if isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        images = [images]
    return np.stack([preprocess_image(image, spec) for image in images])


def normalize_arrays(x, spec):
    """Arrays already scaled to `spec["value_range"]` -> the checkpoint's inputs.

    For datasets held as float arrays (kzoo's loaders give [0, 1] images):
    repeats a single channel to the three a checkpoint expects and applies
    `(x - mean) / std`; no resizing.

    Example:

    >>> import numpy as np
    >>> from kzoo.weights.preprocessing import normalize_arrays
    >>> normalize_arrays(np.ones((2, 4, 4, 1)), {"mean": [0.5] * 3, "std": [0.25] * 3}).shape
    (2, 4, 4, 3)
    """
    x = np.asarray(x, dtype="float32")
    channels = len(spec["mean"]) if spec.get("mean") is not None else x.shape[-1]
    if x.shape[-1] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=-1)
    if spec.get("mean") is not None:
        x = (x - np.asarray(spec["mean"], "float32")) / np.asarray(spec["std"], "float32")
    return x
