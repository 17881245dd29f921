"""`--dataset keras:NAME` on files laid out in Keras' cache exactly as Keras publishes them.

The tests write each dataset's files in its published format (npz members, idx
gzip files, the CIFAR tarballs of pickled batches, the word-index JSON) into a
temporary Keras home, then load them through `kzoo.data.load` and so through
`keras.datasets`' own readers. Only the SHA-256 check of Keras' cache is passed
over (these files are not the real data), and any attempt to download fails
the test, so the tests run offline and prove nothing was fetched.
"""

import gzip
import io
import json
import pickle
import tarfile

import numpy as np
import pytest

import kzoo.data
from kzoo.data import keras_datasets

N_TRAIN, N_TEST = 60, 20


def _label_pattern(n, classes, seed):
    return np.random.default_rng(seed).permutation(np.arange(n) % classes).astype("uint8")


def _images_marked(labels, shape):
    # Every image holds its label in its first pixel, so a test can tell whether
    # images and labels stayed paired through loading, splitting and scaling.
    x = np.zeros((len(labels), *shape), "uint8")
    x.reshape(len(labels), -1)[:, 0] = labels * 2
    x.reshape(len(labels), -1)[:, -1] = 255
    return x


def _tar(path, members):
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def _idx(array, magic):
    header = np.array([magic, *array.shape], ">i4").tobytes()
    return gzip.compress(header + array.tobytes(), compresslevel=1)


def _texts(n, rng, vocab):
    return np.array([[int(w) for w in rng.integers(1, vocab, rng.integers(3, 40))] for _ in range(n)],
                    dtype=object)


@pytest.fixture(scope="module")
def keras_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("keras_home")
    datasets = home / "datasets"
    datasets.mkdir()
    rng = np.random.default_rng(0)
    # mnist.npz
    ytr, yte = _label_pattern(N_TRAIN, 10, 1), _label_pattern(N_TEST, 10, 2)
    np.savez(datasets / "mnist.npz", x_train=_images_marked(ytr, (28, 28)), y_train=ytr,
             x_test=_images_marked(yte, (28, 28)), y_test=yte)
    # fashion-mnist: four idx files, gzipped
    fashion = datasets / "fashion-mnist"
    fashion.mkdir()
    for prefix, y in (("train", ytr), ("t10k", yte)):
        (fashion / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(y, 2049))
        (fashion / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            _idx(_images_marked(y, (28, 28)), 2051))
    # cifar-10: five training batches of exactly 10,000 and a test batch, pickled
    def batch(labels, key="labels", extra=None):
        images = _images_marked(labels, (3, 32, 32)).reshape(len(labels), -1)
        d = {b"data": images, key.encode(): [int(v) for v in labels], **(extra or {})}
        return pickle.dumps(d, protocol=4)

    train10 = [_label_pattern(10000, 10, 10 + i) for i in range(5)]
    members = {f"cifar-10-batches-py/data_batch_{i + 1}": batch(y) for i, y in enumerate(train10)}
    members["cifar-10-batches-py/test_batch"] = batch(_label_pattern(N_TEST, 10, 3))
    _tar(datasets / "cifar-10-batches-py-target_archive", members)
    # cifar-100: one training and one test file with fine and coarse labels
    y100, y100t = _label_pattern(2000, 100, 4), _label_pattern(N_TEST, 100, 5)
    _tar(datasets / "cifar-100-python-target_archive", {
        "cifar-100-python/train": batch(y100, "fine_labels", {b"coarse_labels": [0] * 2000}),
        "cifar-100-python/test": batch(y100t, "fine_labels", {b"coarse_labels": [0] * N_TEST}),
    })
    # imdb.npz (ragged object arrays of word ranks) and its word index
    np.savez(datasets / "imdb.npz", x_train=_texts(N_TRAIN, rng, 60), y_train=ytr % 2,
             x_test=_texts(N_TEST, rng, 60), y_test=yte % 2)
    words = {f"word{r}": r for r in range(1, 60)}
    (datasets / "imdb_word_index.json").write_text(json.dumps(words))
    # reuters.npz: one pool of texts, Keras splits 80/20
    np.savez(datasets / "reuters.npz", x=_texts(100, rng, 60),
             y=_label_pattern(100, 46, 6).astype("int64"))
    (datasets / "reuters_word_index.json").write_text(json.dumps(words))
    return home


@pytest.fixture
def offline_cache(keras_home, monkeypatch):
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def no_download(*args, **kwargs):
        raise AssertionError(f"keras tried to download {args[0]}")

    monkeypatch.setattr(config, "keras_home", lambda: str(keras_home))
    monkeypatch.setattr(file_utils, "validate_file", lambda *a, **k: True)
    monkeypatch.setattr(file_utils, "urlretrieve", no_download)
    return keras_home


@pytest.mark.parametrize("name, shape, classes", [
    ("mnist", (28, 28, 1), 10),
    ("fashion_mnist", (28, 28, 1), 10),
    ("cifar10", (32, 32, 3), 10),
    ("cifar100", (32, 32, 3), 100),
])
def test_image_datasets_scale_and_keep_labels_paired(offline_cache, name, shape, classes):
    data = kzoo.data.load(f"keras:{name}", seed=1)
    assert data.name == f"keras:{name}" and data.task == "classification"
    assert data.input_shape == shape and data.num_classes == classes
    assert len(data.class_names) == classes
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val),
                 (data.x_test, data.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1:] == shape and len(x) == len(y) > 0
        assert x.min() == 0.0 and x.max() == 1.0
        # The first pixel (of the first channel, in CIFAR's channels-first files)
        # still holds each image's label.
        np.testing.assert_allclose(x[:, 0, 0, 0] * 255.0, 2 * y, atol=1e-3)
    total = len(data.x_train) + len(data.x_val)
    assert len(data.x_val) == pytest.approx(0.1 * total, abs=classes)


def test_cifar_class_names_are_the_published_ones():
    assert len(keras_datasets.CIFAR100_CLASSES) == len(set(keras_datasets.CIFAR100_CLASSES)) == 100
    assert keras_datasets.CIFAR100_CLASSES[:3] == ["apple", "aquarium_fish", "baby"]
    assert keras_datasets.CIFAR100_CLASSES[-1] == "worm"


@pytest.mark.parametrize("name, classes", [("imdb", 2), ("reuters", 46)])
def test_text_datasets_are_padded_ids_with_a_vocabulary(offline_cache, name, classes):
    data = kzoo.data.load(f"keras:{name}", vocabulary_size=30, sequence_length=16)
    assert data.input_shape == (16,) and data.num_classes == classes
    assert len(data.class_names) == classes
    x = np.concatenate([data.x_train, data.x_val, data.x_test])
    assert x.dtype == np.int32 and x.shape[1] == 16
    assert (x[:, 0] == keras_datasets.START_ID).all()
    assert x.max() < 30 and (x == keras_datasets.OOV_ID).any()  # rarer words became OOV
    # Padding is at the end only: once a row has a 0, the rest of it is 0.
    padded = x == 0
    assert (np.cumsum(~padded[:, ::-1], axis=1)[:, ::-1][padded] == 0).all()
    vocabulary = data.info["vocabulary"]
    assert len(vocabulary) == 30 and vocabulary[:3] == ["<pad>", "<start>", "<oov>"]
    # Keras' ids are the word's frequency rank (from 1) plus 3.
    assert vocabulary[4] == "word1" and vocabulary[29] == "word26"
    # The tokenizer a run folder records for predict reads the ids back as words.
    from kzoo import tokenizers
    from kzoo.training import runner

    tokenizer = tokenizers.from_metadata(runner.dataset_tokenizer(data)["tokenizer"])
    row = [int(i) for i in data.x_train[0] if i > keras_datasets.START_ID]
    assert tokenizer.decode(row).split() == [vocabulary[i] for i in row]


def test_the_old_argument_names_warn_and_load_the_same_data(offline_cache):
    new = kzoo.data.load("keras:imdb", vocabulary_size=30, sequence_length=16)
    with pytest.warns(DeprecationWarning, match="vocab_size of load_keras_dataset is renamed "
                                                "vocabulary_size"):
        old = kzoo.data.load("keras:imdb", vocab_size=30, max_length=16)
    np.testing.assert_array_equal(old.x_train, new.x_train)
    assert old.input_shape == new.input_shape == (16,)


def test_smoke_slices_and_a_recipe_model_trains_on_it(offline_cache):
    import kzoo

    data = kzoo.data.load("keras:mnist", smoke=True)
    assert data.sizes[0] <= 64
    model = kzoo.create_model("mlp", input_shape=data.input_shape, num_classes=data.num_classes,
                              hidden_units=(8,))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, epochs=1, verbose=0)


def test_a_missing_cache_offline_is_one_sentence(tmp_path, monkeypatch):
    from keras.src.backend import config
    from keras.src.utils import file_utils

    def offline(url, *args, **kwargs):
        import urllib.error

        raise urllib.error.URLError("no network")

    monkeypatch.setattr(config, "keras_home", lambda: str(tmp_path))
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    with pytest.raises(kzoo.data.DataError) as err:
        kzoo.data.load("keras:mnist")
    message = str(err.value)
    assert "keras:mnist" in message and "~/.keras/datasets" in message
    assert "\n" not in message


def test_unknown_keras_dataset_names_the_choices():
    with pytest.raises(kzoo.data.DataError, match="keras:cifar10"):
        keras_datasets.load_keras_dataset("svhn")
