"""The UCI optical-recognition digits, as shipped inside scikit-learn.

1,797 greyscale images of handwritten digits, 8x8 pixels, 10 classes. Real
data, available offline wherever scikit-learn is installed.
"""

import numpy as np

from kzoo.data import DataError, Dataset, register_dataset, smoke_slice, split

SOURCE = "real data shipped inside scikit-learn (UCI optical digits, 1,797 8x8 images)"


def _digit_arrays():
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise DataError(
            "The 'digits' dataset ships with scikit-learn, which is not installed; "
            "install it with pip install scikit-learn."
        ) from err
    bunch = load_digits()
    images = (bunch.images / 16.0).astype("float32")[..., None]  # (N, 8, 8, 1) in [0, 1]
    return images, bunch.target.astype("int32")


@register_dataset("digits", source=SOURCE)
def digits(seed=0, smoke=False, image_size=8):
    """Handwritten digits, 8x8x1 in [0, 1], split 70/15/15 by class.

    Args:
        seed: int. Seed of the split. Defaults to 0.
        smoke: bool. Return a tiny slice. Defaults to False.
        image_size: int. Resize the images to this square size (bilinear),
            for models that need larger inputs. Defaults to 8.
    """
    x, y = _digit_arrays()
    if image_size != 8:
        x = resize_images(x, image_size)
    (xtr, ytr), (xva, yva), (xte, yte) = split(x, y, seed=seed)
    data = Dataset(
        name="digits",
        task="classification",
        x_train=xtr, y_train=ytr, x_val=xva, y_val=yva, x_test=xte, y_test=yte,
        input_shape=x.shape[1:],
        num_classes=10,
        class_names=[str(i) for i in range(10)],
        source=SOURCE,
        info={"value_range": (0.0, 1.0)},
    )
    return smoke_slice(data) if smoke else data


def resize_images(images, size):
    """Resize a batch of NHWC images to `size`x`size` with bilinear sampling."""
    n, h, w, c = images.shape
    ys = np.linspace(0, h - 1, size)
    xs = np.linspace(0, w - 1, size)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0)[None, :, None, None]
    wx = (xs - x0)[None, None, :, None]
    top = images[:, y0][:, :, x0] * (1 - wx) + images[:, y0][:, :, x1] * wx
    bottom = images[:, y1][:, :, x0] * (1 - wx) + images[:, y1][:, :, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype("float32")
