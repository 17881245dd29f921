"""`--dataset tfds:NAME` streams batches from TFDS files that the tests write.

Tiny TFDS builders (real `Image`, `Text` and `ClassLabel` features) prepare
their datasets into a temporary data directory through TFDS's own writer, as
ArrayRecord (readable without TensorFlow) and, where TensorFlow is installed,
as TFRecord; kzoo then streams them through `tfds.data_source` or `tf.data`.
Nothing is downloaded. Where tensorflow-datasets is not installed, each test
checks the one sentence that says what to install instead.
"""

import builtins
import io
import json
import runpy
from pathlib import Path

import keras
import numpy as np
import pytest

import kzoo
import kzoo.data
from kzoo.data import DataError

try:
    import tensorflow_datasets as tfds
except ImportError:
    tfds = None

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST, CLASSES = 50, 12, 3
WORDS = ["alpha", "beta", "gamma", "delta", "eps"]


def _marked_image(label, i):
    # The first pixel holds the label, so a test can tell images and labels
    # stayed paired; the second holds the example's number, so a test can follow
    # each one; the last pixel is 255, so a test can see the scaling.
    image = np.random.default_rng(i).integers(0, 200, (8, 8, 3), dtype=np.uint8)
    image[0, 0, 0] = 50 * label
    image[0, 1, 0] = i
    image[-1, -1, -1] = 255
    return image


if tfds is not None:
    from PIL import Image as PILImage

    class KzooTinyImages(tfds.core.GeneratorBasedBuilder):
        """8x8 RGB images of 3 classes, written as PNG like TFDS's image datasets."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(8, 8, 3)),
                    "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
                }),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(N_TRAIN, 0),
                    "test": self._generate_examples(N_TEST, 100)}

        def _generate_examples(self, n, offset):
            for i in range(offset, offset + n):
                png = io.BytesIO()  # PNG bytes: TFDS encodes them without TensorFlow
                PILImage.fromarray(_marked_image(i % CLASSES, i)).save(png, format="PNG")
                png.seek(0)
                yield i, {"image": png, "label": i % CLASSES}

    # Shaped like KzooTinyImages on purpose: TFDS's builder API, written the way users write it.
    class KzooTinyTexts(tfds.core.GeneratorBasedBuilder):
        """Short texts whose first word names their class; 'alpha' is the most frequent."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["neg", "pos"]),
                }),
                supervised_keys=("text", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(30, 0),
                    "validation": self._generate_examples(6, 100),
                    "test": self._generate_examples(6, 200)}

        def _generate_examples(self, n, offset):
            for i in range(offset, offset + n):
                label = i % 2
                words = ["Good" if label else "Bad", "alpha", "alpha", WORDS[i % 5],
                         f"word{i}", "alpha", "end."]
                yield i, {"text": " ".join(words), "label": label}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A TFDS data directory holding the tiny datasets as ArrayRecord (None without TFDS)."""
    if tfds is None:
        return None
    folder = tmp_path_factory.mktemp("tfds")
    for cls in (KzooTinyImages, KzooTinyTexts):
        cls(data_dir=str(folder), file_format="array_record").download_and_prepare()
    return str(folder)


def _without_tfds_says_what_to_install(name="tfds:kzoo_tiny_images"):
    """Where TFDS is missing, a test checks the one sentence a user gets, and stops."""
    if tfds is not None:
        return False
    with pytest.raises(DataError) as err:
        kzoo.data.load(name)
    message = str(err.value)
    assert "tensorflow-datasets is not installed" in message
    assert "pip install 'kzoo[data]'" in message and "\n" not in message
    return True


def _batches(stream):
    return [stream[i] for i in range(len(stream))]


def test_images_stream_scaled_int_labelled_batches(data_dir):
    if _without_tfds_says_what_to_install():
        return
    data = kzoo.data.load("tfds:kzoo_tiny_images", data_dir=data_dir, batch_size=16)
    assert data.name == "tfds:kzoo_tiny_images" and data.task == "classification"
    assert data.input_shape == (8, 8, 3) and data.num_classes == CLASSES
    assert data.class_names == ["red", "green", "blue"]
    assert data.info["value_range"] == (0.0, 1.0)
    assert data.sizes == (45, 5, N_TEST)  # validation: the last 10% of train
    assert data.y_train is None and data.y_val is None and data.y_test is None
    assert isinstance(data.x_train, keras.utils.PyDataset)
    assert len(data.x_train) == 3 and data.x_train.num_examples == 45
    seen = 0
    for x, y in _batches(data.x_train) + _batches(data.x_val) + _batches(data.x_test):
        assert x.dtype == np.float32 and x.shape[1:] == (8, 8, 3) and len(x) <= 16
        assert y.dtype == np.int32 and y.shape == (len(x),)
        assert x.min() >= 0.0 and x.max() <= 1.0
        np.testing.assert_array_equal(x[:, -1, -1, -1], 1.0)  # 255 -> 1.0
        np.testing.assert_array_equal(np.round(x[:, 0, 0, 0] * 255 / 50).astype(int), y)
        seen += len(x)
    assert seen == N_TRAIN + N_TEST


def test_images_resize_per_batch_and_augment_from_the_stream(data_dir):
    if _without_tfds_says_what_to_install():
        return
    from kzoo.data.augment import AugmentedBatches, image_augmentation

    data = kzoo.data.load("tfds:kzoo_tiny_images", data_dir=data_dir, batch_size=16,
                          image_size=12)
    assert data.input_shape == (12, 12, 3)
    x, y = data.x_train[0]
    assert x.shape == (16, 12, 12, 3) and x.dtype == np.float32 and x.max() <= 1.0
    batches = AugmentedBatches(data.x_train, None, 16, image_augmentation("flip_translate", seed=0))
    assert len(batches) == len(data.x_train) == 3
    ax, ay = batches[0]
    assert ax.shape == x.shape and ax.dtype == np.float32
    np.testing.assert_array_equal(ay, y)  # labels as the stream gives them
    assert not np.array_equal(ax, x)  # flipped or shifted


def test_batches_are_read_lazily_one_at_a_time(data_dir, monkeypatch):
    if _without_tfds_says_what_to_install():
        return
    from tensorflow_datasets.core.data_sources import array_record

    reads = []
    real = array_record.ArrayRecordDataSource.__getitems__

    def counted(self, keys):
        reads.append(len(keys))
        return real(self, keys)

    monkeypatch.setattr(array_record.ArrayRecordDataSource, "__getitems__", counted)
    data = kzoo.data.load("tfds:kzoo_tiny_images", data_dir=data_dir, batch_size=16)
    assert reads == []  # loading reads no example
    x, _ = data.x_train[0]
    assert reads == [16] and len(x) == 16  # one batch reads one batch
    data.x_train[2]
    assert reads == [16, 13]  # the last, shorter batch (45 = 16 + 16 + 13)


def test_training_stream_is_reshuffled_each_epoch_and_seeded(data_dir):
    if _without_tfds_says_what_to_install():
        return

    def order(stream):
        return np.concatenate([np.round(x[:, 0, 1, 0] * 255) for x, _ in _batches(stream)])

    a = kzoo.data.load("tfds:kzoo_tiny_images", data_dir=data_dir, batch_size=16, seed=3)
    b = kzoo.data.load("tfds:kzoo_tiny_images", data_dir=data_dir, batch_size=16, seed=3)
    first = order(a.x_train)
    np.testing.assert_array_equal(first, order(b.x_train))
    a.x_train.on_epoch_end()
    second = order(a.x_train)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(np.sort(first), np.sort(second))  # same examples
    val = order(a.x_val)
    np.testing.assert_array_equal(val, order(b.x_val))
    a.x_val.on_epoch_end()
    np.testing.assert_array_equal(val, order(a.x_val))  # evaluation keeps its order
    assert not set(val.tolist()) & set(first.tolist())


def test_smoke_streams_a_few_examples(data_dir):
    if _without_tfds_says_what_to_install():
        return
    data = kzoo.data.load("tfds:kzoo_tiny_images", data_dir=data_dir, smoke=True,
                          batch_size=8)
    assert data.sizes == (45, 5, N_TEST)  # every split is under the smoke sizes here
    big = kzoo.data.load("tfds:kzoo_tiny_texts", data_dir=data_dir, smoke=True)
    assert big.sizes == (30, 6, 6)


def test_text_is_tokenised_into_padded_ids(data_dir):
    if _without_tfds_says_what_to_install("tfds:kzoo_tiny_texts"):
        return
    data = kzoo.data.load("tfds:kzoo_tiny_texts", data_dir=data_dir, batch_size=4,
                          vocabulary_size=12, sequence_length=10)
    assert data.sizes == (30, 6, 6)  # its own validation split
    assert data.input_shape == (10,) and data.num_classes == 2
    vocabulary = data.info["vocabulary"]
    assert vocabulary[:4] == ["<pad>", "<start>", "<oov>", "<unused>"]
    assert vocabulary[4] == "alpha" and len(vocabulary) == 12  # most frequent first
    assert {"good", "bad", "end", "."} <= set(vocabulary)  # lowercased, punctuation split
    x, y = data.x_train[0]
    assert x.dtype == np.int32 and x.shape == (4, 10) and y.dtype == np.int32
    np.testing.assert_array_equal(x[:, 0], 1)  # start id
    np.testing.assert_array_equal(x[:, 2:4], vocabulary.index("alpha"))
    np.testing.assert_array_equal(x[:, 9], 0)  # 8 tokens + start, padded to 10
    assert (x[:, 5] == 2).all()  # 'word<i>' is rarer than the 12 kept: out of vocabulary
    first_word = [vocabulary[i] for i in x[:, 1]]
    assert first_word == ["good" if label else "bad" for label in y]


def test_mlp_recipe_smoke_trains_on_a_tfds_stream(data_dir, tmp_path, monkeypatch):
    if _without_tfds_says_what_to_install():
        return
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    main = runpy.run_path(str(ROOT / "recipes" / "mlp.py"))["main"]
    metrics = main(["--smoke", "--verbose", "0", "--output-dir", str(tmp_path / "run"),
                    "--dataset", "tfds:kzoo_tiny_images", "--batch-size", "16",
                    "--hidden-units", "8"])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and np.isfinite(metrics["test_loss"])
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["dataset"] == "tfds:kzoo_tiny_images"
    assert "ArrayRecord" in record["dataset_source"]
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "val_loss" in history[0]  # one epoch, validated


def test_tfrecord_without_tensorflow_is_one_sentence(data_dir, monkeypatch):
    if _without_tfds_says_what_to_install():
        return
    from tensorflow_datasets.core import dataset_info, file_adapters

    monkeypatch.setattr(dataset_info.DatasetInfo, "available_file_formats",
                        lambda self: {file_adapters.FileFormat.TFRECORD})
    real_import = builtins.__import__

    def no_tensorflow(name, *args, **kwargs):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("no tensorflow")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorflow)
    with pytest.raises(DataError) as err:
        kzoo.data.load("tfds:kzoo_tiny_images", data_dir=data_dir)
    message = str(err.value)
    assert "only TensorFlow reads" in message and "install tensorflow-cpu" in message
    assert "TFDS_DATA_DIR" in message and "\n" not in message


def test_tfrecord_streams_through_tf_data(tmp_path):
    if _without_tfds_says_what_to_install():
        return
    tf = pytest.importorskip("tensorflow", reason="TFRecord needs TensorFlow; the "
                             "sentence without it is checked by the test above")
    KzooTinyImages(data_dir=str(tmp_path), file_format="tfrecord").download_and_prepare()
    data = kzoo.data.load("tfds:kzoo_tiny_images", data_dir=str(tmp_path), batch_size=16)
    assert isinstance(data.x_train, tf.data.Dataset) and data.sizes == (45, 5, N_TEST)
    assert len(data.x_train) == 3  # batches, known before the first epoch
    assert "TFRecord" in data.source
    total = 0
    for x, y in data.x_test.as_numpy_iterator():
        assert x.dtype == np.float32 and x.shape[1:] == (8, 8, 3) and y.dtype == np.int32
        np.testing.assert_array_equal(np.round(x[:, 0, 0, 0] * 255 / 50).astype(int), y)
        total += len(x)
    assert total == N_TEST
    model = kzoo.create_model("mlp", input_shape=data.input_shape,
                              num_classes=data.num_classes, hidden_units=(8,))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(data.x_train, validation_data=data.x_val, epochs=1, verbose=0)
    assert np.isfinite(history.history["val_loss"][0])


def test_registered_mnist_through_tfds_mock_data():
    if _without_tfds_says_what_to_install("tfds:mnist"):
        return
    with tfds.testing.mock_data(num_examples=40):
        data = kzoo.data.load("tfds:mnist", batch_size=8)
        x, y = data.x_train[0]
    assert data.input_shape == (28, 28, 1) and data.num_classes == 10
    assert data.class_names == [str(i) for i in range(10)]
    assert x.shape == (8, 28, 28, 1) and x.dtype == np.float32 and x.max() <= 1.0
    assert y.dtype == np.int32 and ((0 <= y) & (y < 10)).all()


@pytest.mark.parametrize("name, message", [
    ("tfds:no_such_dataset_xyz", "Could not load --dataset tfds:no_such_dataset_xyz"),
])
def test_unknown_tfds_name_is_one_sentence(name, message):
    if _without_tfds_says_what_to_install(name):
        return
    with pytest.raises(DataError) as err:
        kzoo.data.load(name)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_without_tfds_installed_the_sentence_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_tfds(name, *args, **kwargs):
        if name.startswith("tensorflow_datasets"):
            raise ImportError("no tfds")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tfds)
    with pytest.raises(DataError) as err:
        kzoo.data.load("tfds:mnist")
    message = str(err.value)
    assert message.startswith("Received --dataset tfds:mnist, but tensorflow-datasets is not "
                              "installed; install it with pip install 'kzoo[data]'")
    assert "\n" not in message
