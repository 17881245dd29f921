"""`--dataset tfds:NAME`: any TensorFlow Datasets dataset, as numpy arrays.

TensorFlow Datasets needs TensorFlow and the data cached locally or a network
connection to download it; kzoo's own default datasets need neither.
"""

import numpy as np

from kzoo.data import DataError, Dataset, smoke_slice, split


def load_tfds(name, *, seed=0, smoke=False, data_dir=None):
    """Load a supervised TFDS dataset (`as_supervised=True`) into a `Dataset`.

    Images are scaled to [0, 1] float32; the validation split is carved from
    the training split (15%) unless the dataset has its own.

    Args:
        name: str. The TFDS name, e.g. `"mnist"` or `"cifar10"`.
        seed: int. Seed of the validation carve-out. Defaults to 0.
        smoke: bool. Load only a few examples. Defaults to False.
        data_dir: str or None. TFDS data directory. Defaults to TFDS's own.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataError(
            f"Received --dataset tfds:{name}, but tensorflow-datasets is not "
            "installed; install it with pip install 'kzoo[data,tensorflow]' or use "
            "an offline dataset such as 'digits'."
        ) from err
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        splits = builder.info.splits
        train_split = "train[:64]" if smoke else "train"
        known = set(splits.keys()) if splits else set()
        test_name = "validation" if known and "test" not in known else "test"
        if known and test_name not in known:
            raise DataError(
                f"Received --dataset tfds:{name}, which has no 'test' or 'validation' "
                "split; use a dataset that has one."
            )
        test_split = f"{test_name}[:32]" if smoke else test_name
        train_ds, test_ds = tfds.load(
            name, split=[train_split, test_split], as_supervised=True, data_dir=data_dir
        )
        x_train, y_train = _to_arrays(tfds, train_ds)
        x_test, y_test = _to_arrays(tfds, test_ds)
        info = builder.info
    except DataError:
        raise
    except Exception as err:  # TFDS raises many kinds; one sentence is what a user needs.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"Could not load TFDS dataset {name!r} ({first[:200]}); make sure the name "
            "is right and the data is cached in the TFDS data directory or downloadable "
            "from this machine, or use an offline dataset such as 'digits'."
        ) from err

    x_train, x_test = _scale(x_train), _scale(x_test)
    (x_tr, y_tr), (x_va, y_va), _ = split(x_train, y_train, seed=seed, fractions=(0.85, 0.15, 0.0))
    label = info.features[info.supervised_keys[1]] if info.supervised_keys else None
    num_classes = getattr(label, "num_classes", None)
    names = list(getattr(label, "names", []) or []) or None
    data = Dataset(
        name=f"tfds:{name}",
        task="classification" if num_classes else "regression",
        x_train=x_tr, y_train=y_tr, x_val=x_va, y_val=y_va, x_test=x_test, y_test=y_test,
        input_shape=tuple(x_train.shape[1:]),
        num_classes=num_classes,
        class_names=names,
        source=f"TensorFlow Datasets '{name}' (cached or downloaded by TFDS)",
        info={"value_range": (0.0, 1.0)} if x_train.dtype == np.float32 else {},
    )
    return smoke_slice(data) if smoke else data


def _to_arrays(tfds, ds):
    # Batches of 1024 rather than batch_size=-1, which aborts TensorFlow on
    # generator-backed datasets (as under tfds.testing.mock_data).
    xs, ys = [], []
    for x, y in tfds.as_numpy(ds.batch(1024)):
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _scale(x):
    if x.dtype == np.uint8:
        return (x.astype("float32") / 255.0)
    return x
