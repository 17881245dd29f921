"""`--dataset keras:NAME`: the datasets of `keras.datasets`, ready for kzoo's models.

Keras fetches each dataset once from its published location and caches it under
`~/.keras/datasets` (or `$KERAS_HOME/datasets`); it needs no TensorFlow, so this
works on every backend. Offline, a dataset loads when its files are in that cache.

What each becomes:

| name            | x                                   | y                         |
|-----------------|-------------------------------------|---------------------------|
| `mnist`         | (28, 28, 1) float32 in [0, 1]        | 10 digits                 |
| `fashion_mnist` | (28, 28, 1) float32 in [0, 1]        | 10 clothing classes       |
| `cifar10`       | (32, 32, 3) float32 in [0, 1]        | 10 object classes         |
| `cifar100`      | (32, 32, 3) float32 in [0, 1]        | 100 fine classes          |
| `imdb`          | (sequence_length,) int32 word ids, 0 pads | negative / positive       |
| `reuters`       | (sequence_length,) int32 word ids, 0 pads | 46 topics                 |

The validation split is carved from the training split (10%, stratified by
class, `seed`); the test split is the published one. Text keeps Keras' ids
(1 starts a text, 2 is out of vocabulary, 3 is unused, words from 4 on,
most frequent first), keeps the `vocabulary_size` most frequent words, pads with 0 at the end and
cuts texts after `sequence_length` tokens; `info["vocabulary"]` maps ids back to
words (Keras' word index), so kzoo's masked embeddings skip the padding.
"""

import functools

import numpy as np

from kzoo.data import DataError, Dataset, register_dataset, smoke_slice, split
from kzoo.vocabulary import renamed_arguments

SOURCE = "keras.datasets '{name}' (fetched once by Keras, cached under ~/.keras/datasets)"

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
# The fine labels of CIFAR-100, in label order (the `fine_label_names` of its meta file).
CIFAR100_CLASSES = """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
""".split()

IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
TEXT_DATASETS = ("imdb", "reuters")
NAMES = IMAGE_DATASETS + TEXT_DATASETS

# Keras' reserved ids in its text datasets.
PAD_ID, START_ID, OOV_ID, INDEX_FROM = 0, 1, 2, 3


@renamed_arguments(vocab_size="vocabulary_size", max_length="sequence_length")
def load_keras_dataset(name, *, seed=0, smoke=False, vocabulary_size=20000,
                       sequence_length=256):
    """Load `keras.datasets.<name>` into a `Dataset` (see the module docstring).

    Args:
        name: str. One of `mnist`, `fashion_mnist`, `cifar10`, `cifar100`,
            `imdb`, `reuters`.
        seed: int. Seed of the validation carve-out. Defaults to 0.
        smoke: bool. Return a tiny slice. Defaults to False.
        vocabulary_size: int. Text only: ids kept (the most frequent words; rarer
            words become the out-of-vocabulary id 2). Defaults to 20000.
        sequence_length: int. Text only: tokens kept per text. Defaults to 256.

    Raises:
        DataError: unknown name, or the data is neither cached nor downloadable.
    """
    if name not in NAMES:
        raise DataError(
            f"Received --dataset keras:{name}; expected one of "
            f"{', '.join('keras:' + n for n in NAMES)}."
        )
    for arg, value in (("vocabulary_size", vocabulary_size),
                       ("sequence_length", sequence_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 4:
            raise DataError(f"Received {arg}={value!r}; expected an integer of at least 4.")
    import keras

    module = getattr(keras.datasets, name)
    try:
        if name in TEXT_DATASETS:
            (x_train, y_train), (x_test, y_test) = module.load_data(
                num_words=vocabulary_size, start_char=START_ID, oov_char=OOV_ID,
                index_from=INDEX_FROM
            )
            word_index = module.get_word_index()
        else:
            (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as err:  # Keras raises a bare Exception for a failed fetch.
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(
            f"Could not load keras:{name} ({first[:200]}); Keras fetches it once and "
            "caches it under ~/.keras/datasets, so run once where the network is "
            "reachable or copy the cached files there."
        ) from None
    y_train = np.asarray(y_train).reshape(-1).astype("int32")
    y_test = np.asarray(y_test).reshape(-1).astype("int32")
    if name in TEXT_DATASETS:
        x_train, x_test = _pad(x_train, sequence_length), _pad(x_test, sequence_length)
        vocabulary = _vocabulary(word_index, vocabulary_size)
        num_classes = 2 if name == "imdb" else 46
        class_names = (
            ["negative", "positive"] if name == "imdb"
            else list(keras.datasets.reuters.get_label_names())
        )
        info = {
            "vocab_size": vocabulary_size,
            "vocabulary": vocabulary,
            "pad_id": PAD_ID,
            "start_id": START_ID,
            "oov_id": OOV_ID,
        }
    else:
        x_train, x_test = _images(x_train), _images(x_test)
        class_names = {
            "mnist": [str(i) for i in range(10)],
            "fashion_mnist": FASHION_MNIST_CLASSES,
            "cifar10": CIFAR10_CLASSES,
            "cifar100": CIFAR100_CLASSES,
        }[name]
        num_classes = len(class_names)
        info = {"value_range": (0.0, 1.0)}
    (x_tr, y_tr), (x_va, y_va), _ = split(x_train, y_train, seed=seed, fractions=(0.9, 0.1, 0.0))
    data = Dataset(
        name=f"keras:{name}",
        task="classification",
        x_train=x_tr, y_train=y_tr, x_val=x_va, y_val=y_va, x_test=x_test, y_test=y_test,
        input_shape=tuple(x_train.shape[1:]),
        num_classes=num_classes,
        class_names=class_names,
        source=SOURCE.format(name=name),
        info=info,
    )
    return smoke_slice(data) if smoke else data


def _images(x):
    """uint8 (N, H, W[, C]) -> float32 (N, H, W, C) in [0, 1]."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    return (x.astype("float32") / 255.0)


def _pad(sequences, max_length):
    import keras

    return keras.utils.pad_sequences(
        list(sequences), maxlen=max_length, dtype="int32", padding="post",
        truncating="post", value=PAD_ID,
    )


def _vocabulary(word_index, vocab_size):
    """The word of every id below `vocab_size` (Keras' ids: word rank + 3, ranks from 1)."""
    words = ["<pad>", "<start>", "<oov>", "<unused>"] + [""] * (vocab_size - INDEX_FROM - 1)
    for word, rank in word_index.items():
        i = rank + INDEX_FROM
        if i < vocab_size:
            words[i] = word
    return words


# Registered names for the runner's `--dataset`, through `kzoo.data.load("keras:NAME")`.
for _name in NAMES:
    register_dataset(f"keras:{_name}", source=SOURCE.format(name=_name))(
        functools.partial(load_keras_dataset, _name)
    )
