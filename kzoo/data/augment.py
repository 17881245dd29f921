"""Image augmentation with Keras preprocessing layers, on every backend.

`image_augmentation` builds a small `keras.Sequential` of random layers;
`AugmentedBatches` feeds augmented, reshuffled batches to `model.fit` as a
`keras.utils.PyDataset`, so the model itself (and its saved file) stays the
plain classifier. Augmentation runs eagerly on each batch, outside the
compiled train step, so it works the same with JAX, PyTorch and TensorFlow.
"""

import math

import keras
import numpy as np

AUGMENTATIONS = ("none", "translate", "flip_translate", "flip_translate_rotate", "pad_crop_flip")


def image_augmentation(kind, *, translate=0.1, rotate=0.1, padding=4, input_shape=None, seed=0):
    """Return a `keras.Sequential` of random preprocessing layers, or None.

    Args:
        kind: str. One of `AUGMENTATIONS`: `"none"`, `"translate"` (shift by
            up to `translate` of the size; right for digits, where flips
            change the class), `"flip_translate"` (also horizontal flips, as
            for CIFAR-10) or `"flip_translate_rotate"` (also rotations, for
            data whose classes are rotation invariant, such as `shapes`), or
            `"pad_crop_flip"` (zero-pad by `padding` pixels, crop a random
            window of the original size, flip half: He et al. 2016's CIFAR-10
            augmentation, section 4.2; needs `input_shape`).
        translate: float. Largest shift as a fraction of height and width.
            Defaults to 0.1.
        rotate: float. Largest rotation as a fraction of a full turn.
            Defaults to 0.1.
        padding: int. Pixels of zeros added on each side before the crop
            (`"pad_crop_flip"`). Defaults to 4, as for 32x32 CIFAR images.
        input_shape: tuple or None. `(height, width, channels)` of one image;
            the crop's size (`"pad_crop_flip"`). Defaults to None.
        seed: int. Seed of the random layers. Defaults to 0.

    Example:

    >>> import numpy as np
    >>> from kzoo.data.augment import image_augmentation
    >>> augment = image_augmentation("flip_translate")
    >>> tuple(augment(np.zeros((2, 8, 8, 1)), training=True).shape)
    (2, 8, 8, 1)
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"Received augmentation {kind!r}; expected one of {list(AUGMENTATIONS)}.")
    if kind == "none":
        return None
    if kind == "pad_crop_flip":
        if input_shape is None or len(input_shape) != 3:
            raise ValueError(
                f"Received input_shape={input_shape!r} for augmentation 'pad_crop_flip'; "
                "expected (height, width, channels), the size the crop restores, such as "
                "input_shape=(32, 32, 3).")
        # Shifting by up to `padding` whole pixels with zeros shifted in draws the
        # same pictures as padding with zeros and cropping. RandomTranslation draws
        # a shift per image, as He et al. crop; Keras' RandomCrop draws one window
        # for the whole batch.
        height, width = int(input_shape[0]), int(input_shape[1])
        return keras.Sequential([
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(
                padding / height, padding / width, fill_mode="constant", fill_value=0.0,
                interpolation="nearest", seed=seed + 1),
        ], name="augment_pad_crop_flip")
    layers = []
    if "flip" in kind:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    layers.append(
        keras.layers.RandomTranslation(translate, translate, fill_mode="nearest", seed=seed + 1)
    )
    if "rotate" in kind:
        layers.append(keras.layers.RandomRotation(rotate, fill_mode="nearest", seed=seed + 2))
    return keras.Sequential(layers, name=f"augment_{kind}")


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled mini-batches of `(augment(x), y)` for `model.fit`, reshuffled each epoch.

    Args:
        x: array. Images `(N, height, width, channels)`; or a batched stream
            of `(images, labels)` (`tfds:NAME`'s `x_train`, with `y` None),
            which keeps its own batches and shuffling.
        y: array or None. Labels `(N,)`; None for a stream.
        batch_size: int. Examples per batch (of arrays).
        augment: callable or None. Applied with `training=True` to each batch
            of images (e.g. from `image_augmentation`); None feeds them as
            they are.
        seed: int. Seed of the shuffling. Defaults to 0.

    Example:

    >>> import numpy as np
    >>> from kzoo.data.augment import AugmentedBatches, image_augmentation
    >>> batches = AugmentedBatches(np.zeros((10, 8, 8, 1)), np.zeros(10), 4,
    ...                            image_augmentation("translate"))
    >>> len(batches), batches[2][0].shape
    (3, (2, 8, 8, 1))
    """

    def __init__(self, x, y, batch_size, augment=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.augment = augment
        self._stream = x if y is None and isinstance(x, keras.utils.PyDataset) else None
        self._rng = np.random.default_rng(seed)
        self._order = None if self._stream is not None else self._rng.permutation(len(x))

    def __len__(self):
        if self._stream is not None:
            return len(self._stream)
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        if self._stream is not None:
            images, labels = self._stream[index]
        else:
            rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
            images, labels = self.x[rows], self.y[rows]
        if self.augment is not None:
            images = keras.ops.convert_to_numpy(self.augment(images, training=True))
        return np.asarray(images).astype("float32"), labels

    def on_epoch_end(self):
        if self._stream is not None:
            self._stream.on_epoch_end()
        else:
            self._order = self._rng.permutation(len(self.x))


def default_augmentation(dataset_name, input_shape):
    """The augmentation that fits a dataset: never flips digits, nothing for signals.

    Args:
        dataset_name: str. The dataset's name (`"digits"`, `"shapes"`,
            `"tfds:cifar10"`, ...).
        input_shape: tuple. Shape of one example.

    Example:

    >>> from kzoo.data.augment import default_augmentation
    >>> default_augmentation("digits", (8, 8, 1)), default_augmentation("shapes", (24, 24, 1))
    ('translate', 'flip_translate_rotate')
    >>> default_augmentation("keras:cifar10", (32, 32, 3))
    'pad_crop_flip'
    """
    if len(input_shape) != 3:
        return "none"  # 1-D signals and flat features: no image augmentation
    name = dataset_name.lower()
    if "digit" in name or "mnist" in name or "svhn" in name:
        return "translate"  # a flipped digit is another digit (or none)
    if name == "shapes":
        return "flip_translate_rotate"
    if "cifar" in name:
        return "pad_crop_flip"  # as ResNet was trained on CIFAR-10 (He et al. 2016)
    return "flip_translate"


def training_batches(data, augment, batch_size, seed=0):
    """The training batches of a recipe's `--augment` choice, and the augmentation it names.

    The image recipes (cnn, resnet, vit) share this: `"auto"` picks
    `default_augmentation` for the dataset, and the batches reshuffle and
    augment every epoch (`AugmentedBatches`).

    Args:
        data: `kzoo.data.Dataset`. Its training split is batched.
        augment: str. `"auto"` or one of `AUGMENTATIONS`.
        batch_size: int. Examples per batch.
        seed: int. Seed of the augmentation and of the batch order. Defaults to 0.

    Returns:
        `(batches, kind)`: the `AugmentedBatches` and the augmentation used.

    Example:

    >>> import kzoo.data
    >>> from kzoo.data.augment import training_batches
    >>> data = kzoo.data.load("digits", smoke=True)
    >>> batches, kind = training_batches(data, "auto", batch_size=32)
    >>> kind, batches[0][0].shape
    ('translate', (32, 8, 8, 1))
    """
    kind = default_augmentation(data.name, data.input_shape) if augment == "auto" else augment
    layers = image_augmentation(kind, input_shape=data.input_shape, seed=seed)
    return AugmentedBatches(data.x_train, data.y_train, batch_size, layers, seed=seed), kind
