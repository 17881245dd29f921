"""`--dataset tfds:NAME`: a TensorFlow Datasets dataset, streamed in batches.

Nothing is loaded into memory as a whole: each split is a lazy, batched
stream that `model.fit` and `model.evaluate` read batch by batch.

- Data stored as ArrayRecord (what kzoo asks TFDS for when it prepares a
  dataset) is read through `tfds.data_source`, a random-access reader that
  needs no TensorFlow, and batched by a `keras.utils.PyDataset`: this works on
  every backend with only `tensorflow-datasets` installed (`kzoo[data]`).
- Data already prepared as TFRecord (TFDS's own default) is streamed through a
  `tf.data` pipeline, which needs TensorFlow installed; Keras feeds `tf.data`
  to every backend.

What each kind of dataset becomes, as for the `keras:` datasets:

| input feature        | x                                                | y            |
|----------------------|--------------------------------------------------|--------------|
| `Image`, fixed size  | (H, W, C) float32 in [0, 1]                      | class id, int32 |
| `Text`               | (sequence_length,) int32 word ids, 0 pads        | class id, int32 |
| `Tensor`             | its own shape, float32                           | class id, int32 |

Labels that are not a `ClassLabel` stay numbers (float32, a regression).
Text is lowercased and split into words and punctuation by a `tokenizers`
word-level tokenizer trained on the training split; ids follow Keras' text
datasets (0 pads, 1 starts a text, 2 is out of vocabulary, 3 is unused, words
from 4 on, most frequent first).

Splits: the dataset's own `test` split is the test set (its `validation` split
when it has no `test`); the validation set is its `validation` split when it
has both, otherwise the last 10% of `train` (TFDS shuffles examples when it
writes a dataset). The training stream is reshuffled every epoch (`seed`).
"""

import math
import os

import keras
import numpy as np

from kzoo.data import DataError, Dataset
from kzoo.vocabulary import renamed_arguments

PAD_ID, START_ID, OOV_ID = 0, 1, 2
SPECIAL_TOKENS = ["<pad>", "<start>", "<oov>", "<unused>"]
VALIDATION_FRACTION = 0.1
SMOKE_SIZES = (64, 32, 32)


@renamed_arguments(vocab_size="vocabulary_size", max_length="sequence_length")
def load_tfds(name, *, seed=0, smoke=False, data_dir=None, batch_size=32, image_size=None,
              vocabulary_size=20000, sequence_length=256):
    """Stream a supervised TFDS dataset (its `supervised_keys`) as a `Dataset`.

    `x_train`, `x_val` and `x_test` are batched streams of `(x, y)` pairs
    (`y_*` are None); `sizes` counts examples, not batches. If the dataset is
    not prepared in `data_dir`, TFDS downloads and prepares it as ArrayRecord.

    Args:
        name: str. The TFDS name, e.g. `"mnist"` or `"cifar10"`.
        seed: int. Seed of the per-epoch shuffle of the training stream.
            Defaults to 0.
        smoke: bool. Stream only a few examples per split. Defaults to False.
        data_dir: str or None. TFDS data directory. Defaults to
            `$TFDS_DATA_DIR`, else TFDS's own (`~/tensorflow_datasets`).
        batch_size: int. Examples per batch. Defaults to 32.
        image_size: int or None. Images only: resize each batch to this square
            size (bilinear). Defaults to None, their own size.
        vocabulary_size: int. Text only: ids kept (the most frequent words).
            Defaults to 20000.
        sequence_length: int. Text only: tokens kept per text. Defaults to 256.

    Raises:
        DataError: tensorflow-datasets is missing, the data can't be read
            here, or the dataset is not one kzoo can feed to a model.

    Example:

    >>> import kzoo.data
    >>> try:
    ...     kzoo.data.load("tfds:no_such_dataset", smoke=True)
    ... except kzoo.data.DataError as err:  # one sentence, with or without TFDS installed
    ...     print("tfds:no_such_dataset" in str(err))
    True
    """
    for arg, value in (("batch_size", batch_size), ("vocabulary_size", vocabulary_size),
                       ("sequence_length", sequence_length), ("image_size", image_size or 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"Received {arg}={value!r}; expected a positive integer.")
    if vocabulary_size <= len(SPECIAL_TOKENS):
        raise DataError(f"Received vocabulary_size={vocabulary_size}; expected at least 5, as "
                        "ids 0-3 are reserved.")
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            f"Received --dataset tfds:{name}, but tensorflow-datasets is not installed; "
            "install it with pip install 'kzoo[data]' (TensorFlow itself is not needed), "
            "or use an offline dataset such as 'digits'."
        ) from None
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
            builder.download_and_prepare()
        info = builder.info
    except Exception as err:  # TFDS raises many kinds; one sentence is what a user needs.
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(
            f"Could not load --dataset tfds:{name} ({first[:200]}); make sure the name is "
            "right and the data is prepared in the TFDS data directory ($TFDS_DATA_DIR, "
            "else ~/tensorflow_datasets) or downloadable from this machine, or use an "
            "offline dataset such as 'digits'."
        ) from None

    x_key, y_key = _supervised_keys(name, info)
    x_feature, y_feature = info.features[x_key], info.features[y_key]
    kind = _kind(name, tfds, x_feature)
    reader = _reader(name, tfds, builder)
    splits = _split_ranges(name, reader, smoke)
    vocabulary = None
    if kind == "text":
        vocabulary = _train_tokenizer(reader, splits[0], x_key, vocabulary_size)
    if kind == "image":
        input_shape, extra = tuple(x_feature.shape), {"value_range": (0.0, 1.0)}
        if image_size:
            input_shape = (image_size, image_size, input_shape[-1])
    elif kind == "text":
        input_shape = (sequence_length,)
        extra = {"vocab_size": vocabulary_size, "vocabulary": vocabulary.tokens,
                 "pad_id": PAD_ID, "start_id": START_ID, "oov_id": OOV_ID}
    else:
        input_shape, extra = tuple(x_feature.shape), {}
    convert = _Convert(kind, x_key, y_key, y_feature, tfds, vocabulary, sequence_length,
                       input_shape)
    streams = tuple(
        reader.stream(split, start, stop, batch_size, convert,
                      shuffle_seed=seed if i == 0 else None)
        for i, (split, start, stop) in enumerate(splits)
    )
    num_classes = getattr(y_feature, "num_classes", None)
    names = list(getattr(y_feature, "names", []) or []) or None
    return Dataset(
        name=f"tfds:{name}",
        task="classification" if num_classes else "regression",
        x_train=streams[0], y_train=None, x_val=streams[1], y_val=None,
        x_test=streams[2], y_test=None,
        input_shape=input_shape,
        num_classes=num_classes,
        class_names=names,
        source=f"TensorFlow Datasets '{name}' (streamed from {reader.format}, "
               f"{builder.data_dir})",
        info={**extra, "sizes": tuple(stop - start for _, start, stop in splits),
              "streamed": True},
    )


def _supervised_keys(name, info):
    keys = info.supervised_keys
    if not keys or len(keys) < 2 or not all(isinstance(k, str) for k in keys[:2]):
        raise DataError(
            f"Received --dataset tfds:{name}, which has no single (input, label) pair of "
            f"supervised keys (it has {keys!r}); use a supervised dataset such as tfds:mnist."
        )
    return keys[0], keys[1]


def _kind(name, tfds, feature):
    if isinstance(feature, tfds.features.Image):
        if any(d is None for d in feature.shape):
            raise DataError(
                f"Received --dataset tfds:{name}, whose images vary in size {feature.shape}; "
                "kzoo streams fixed-size images only, so use a dataset such as tfds:cifar10."
            )
        return "image"
    if isinstance(feature, tfds.features.Text):
        return "text"
    if isinstance(feature, tfds.features.Tensor) and all(d is not None for d in feature.shape):
        return "array"
    raise DataError(
        f"Received --dataset tfds:{name}, whose input is a {type(feature).__name__} feature; "
        "kzoo streams fixed-size images, text and fixed-shape tensors, so use such a dataset."
    )


def _split_ranges(name, reader, smoke):
    """[(split, start, stop)] for train, validation and test, in examples."""
    known = set(reader.split_names)
    if "train" not in known:
        raise DataError(
            f"Received --dataset tfds:{name}, which has no 'train' split (it has "
            f"{sorted(known)}); use a dataset with one."
        )
    n_train = reader.num_examples("train")
    if "test" in known and "validation" in known:
        ranges = [("train", 0, n_train), ("validation", 0, reader.num_examples("validation"))]
        test = "test"
    elif "test" in known or "validation" in known:
        test = "test" if "test" in known else "validation"
        cut = n_train - max(1, int(round(VALIDATION_FRACTION * n_train)))
        ranges = [("train", 0, cut), ("train", cut, n_train)]
    else:
        raise DataError(
            f"Received --dataset tfds:{name}, which has no 'test' or 'validation' split "
            f"(it has {sorted(known)}); use a dataset that has one."
        )
    ranges.append((test, 0, reader.num_examples(test)))
    if smoke:
        ranges = [(s, a, min(b, a + n)) for (s, a, b), n in zip(ranges, SMOKE_SIZES)]
    for split, start, stop in ranges:
        if stop <= start:
            raise DataError(
                f"Received --dataset tfds:{name}, whose {split!r} split is too small to "
                "carve train, validation and test from; use a larger dataset."
            )
    return ranges


# === Readers: ArrayRecord through tfds.data_source, TFRecord through tf.data ===

def _reader(name, tfds, builder):
    formats = {f.value for f in builder.info.available_file_formats()} or {
        builder.info.file_format.value}
    if "array_record" in formats:
        return _DataSourceReader(builder)
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise DataError(
            f"Received --dataset tfds:{name}, prepared in {builder.data_dir} as "
            f"{'/'.join(sorted(formats))}, which only TensorFlow reads; install "
            "tensorflow-cpu, or set TFDS_DATA_DIR to an empty folder so that kzoo prepares "
            "it there as ArrayRecord, which every backend reads."
        ) from None
    return _TFDataReader(tfds, builder)


class _DataSourceReader:
    format = "ArrayRecord"

    def __init__(self, builder):
        self.builder = builder
        self.split_names = list(builder.info.splits.keys()) or ["train", "test"]
        self._sources = {}

    def source(self, split):
        if split not in self._sources:
            self._sources[split] = self.builder.as_data_source(split=split)
        return self._sources[split]

    def num_examples(self, split):
        return len(self.source(split))

    def examples(self, split, start, stop, batch=256):
        source = self.source(split)
        for i in range(start, stop, batch):
            yield from _take(source, range(i, min(stop, i + batch)))

    def stream(self, split, start, stop, batch_size, convert, shuffle_seed=None):
        return TfdsBatches(self.source(split), np.arange(start, stop), batch_size, convert,
                           shuffle_seed=shuffle_seed)


class _TFDataReader:
    format = "TFRecord via tf.data"

    def __init__(self, tfds, builder):
        self.tfds = tfds
        self.builder = builder
        self.split_names = list(builder.info.splits.keys())

    def num_examples(self, split):
        return self.builder.info.splits[split].num_examples

    def _dataset(self, split, start, stop):
        return self.builder.as_dataset(split=f"{split}[{start}:{stop}]", shuffle_files=False)

    def examples(self, split, start, stop):
        return self.tfds.as_numpy(self._dataset(split, start, stop))

    def stream(self, split, start, stop, batch_size, convert, shuffle_seed=None):
        import tensorflow as tf

        ds = self._dataset(split, start, stop)
        if shuffle_seed is not None:
            ds = ds.shuffle(min(stop - start, 10_000), seed=shuffle_seed,
                            reshuffle_each_iteration=True)
        x_spec, y_spec = convert.specs()

        def batches():  # the same numpy conversion as the ArrayRecord path
            for batch in self.tfds.as_numpy(ds.batch(batch_size)):
                yield convert.batch(batch)

        stream = tf.data.Dataset.from_generator(batches, output_signature=(
            tf.TensorSpec((None, *x_spec[0]), x_spec[1]),
            tf.TensorSpec((None,), y_spec),
        ))
        # A known length lets Keras size its progress bar and epochs from the first one.
        stream = stream.apply(tf.data.experimental.assert_cardinality(
            math.ceil((stop - start) / batch_size)))
        return stream.prefetch(2)


def _take(source, indices):
    indices = [int(i) for i in indices]
    if hasattr(source, "__getitems__"):
        try:  # one batched read (ArrayRecord)
            return source.__getitems__(indices)
        except TypeError:  # sources without batched reads (tfds.testing.mock_data's)
            pass
    return [source[i] for i in indices]


def _stack(examples):
    """A list of example dicts -> a dict of batched arrays."""
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


class TfdsBatches(keras.utils.PyDataset):
    """Batches of `(x, y)` read lazily from a TFDS random-access data source.

    Args:
        source: a `tfds.data_source` split (any sequence of example dicts).
        indices: array of int. The examples of `source` to stream.
        batch_size: int. Examples per batch.
        convert: callable. Turns a dict of batched arrays into `(x, y)`.
        shuffle_seed: int or None. Reshuffle `indices` every epoch
            (seeded, so a run is reproducible) or keep their order.

    Attributes:
        num_examples: int. Examples per epoch (`len()` counts batches).
    """

    def __init__(self, source, indices, batch_size, convert, shuffle_seed=None):
        super().__init__()
        self.source = source
        self.indices = np.asarray(indices)
        self.batch_size = batch_size
        self.convert = convert
        self.shuffle_seed = shuffle_seed
        self.num_examples = len(self.indices)
        self._epoch = 0
        self._order = self._shuffled()

    def _shuffled(self):
        if self.shuffle_seed is None:
            return self.indices
        return np.random.default_rng([self.shuffle_seed, self._epoch]).permutation(
            self.indices)

    def __len__(self):
        return math.ceil(self.num_examples / self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        chosen = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.convert.batch(_stack(_take(self.source, chosen)))

    def on_epoch_end(self):
        self._epoch += 1
        self._order = self._shuffled()


# === Preprocessing per kind of dataset ===

class _Vocabulary:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        size = tokenizer.get_vocab_size()
        self.tokens = [tokenizer.id_to_token(i) for i in range(size)]


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _train_tokenizer(reader, train_range, x_key, vocab_size):
    """A word-level tokenizer trained on the training range (one streaming pass)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS[OOV_ID]))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                        show_progress=False)
    split, start, stop = train_range
    texts = (_text(e[x_key]) for e in reader.examples(split, start, stop))
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return _Vocabulary(tokenizer)


class _Convert:
    """One batch of raw TFDS features -> `(x, y)` arrays, per kind of dataset."""

    def __init__(self, kind, x_key, y_key, y_feature, tfds, vocabulary, max_length, x_shape):
        self.kind, self.x_key, self.y_key = kind, x_key, y_key
        self.classes = isinstance(y_feature, tfds.features.ClassLabel)
        self.vocabulary, self.max_length = vocabulary, max_length
        self.x_shape = tuple(x_shape)

    def batch(self, batch):
        x, y = batch[self.x_key], np.asarray(batch[self.y_key])
        y = y.astype("int32") if self.classes else y.astype("float32")
        if self.kind == "image":
            x = np.asarray(x)
            x = x.astype("float32") / 255.0 if x.dtype == np.uint8 else x.astype("float32")
            if x.shape[1:] != self.x_shape:
                x = keras.ops.convert_to_numpy(keras.ops.image.resize(
                    x, self.x_shape[:2], interpolation="bilinear"))
        elif self.kind == "text":
            x = self._ids([_text(t) for t in np.asarray(x, dtype=object).reshape(-1)])
        else:
            x = np.asarray(x, dtype="float32")
        return x, y

    def _ids(self, texts):
        out = np.full((len(texts), self.max_length), PAD_ID, dtype="int32")
        for row, encoding in enumerate(self.vocabulary.tokenizer.encode_batch(texts)):
            ids = [START_ID, *encoding.ids][: self.max_length]
            out[row, : len(ids)] = ids
        return out

    def specs(self):
        x_dtype = "int32" if self.kind == "text" else "float32"
        return (self.x_shape, x_dtype), ("int32" if self.classes else "float32")
