"""Real English text available offline: the docstrings of Python's standard library.

Every Python installation ships the source of its standard library, and its
docstrings are about a megabyte of real, carefully written English (with some
code). `python_docs` reads them with `ast` (nothing is imported or executed)
from the top-level modules of the running interpreter's library, so the exact
text depends slightly on the Python version (the source string records it).

Text is modelled character by character: id 0 stands for any character outside
printable ASCII, id 1 is a newline, ids 2-96 are the printable ASCII
characters. Splits are by module, so validation text comes from modules the
model never saw.
"""

import ast
import sys
import sysconfig
from pathlib import Path

import numpy as np

from kzoo.data import DataError, Dataset, register_dataset, smoke_slice

SOURCE = (
    "shipped with Python: docstrings of the standard library's top-level modules of "
    f"Python {sys.version_info.major}.{sys.version_info.minor}, read with ast"
)
UNKNOWN = 0
VOCABULARY = "\x00\n" + "".join(chr(c) for c in range(32, 127))  # id 0: unknown


def stdlib_docstrings(root=None):
    """`(module_name, [docstrings])` for each top-level `.py` module, sorted."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    modules = []
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        docs = [
            doc
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and (doc := ast.get_docstring(node))
        ]
        if docs:
            modules.append((path.stem, docs))
    return modules


def encode(text):
    """Character ids of `text` (characters outside the vocabulary become 0)."""
    index = {c: i for i, c in enumerate(VOCABULARY)}
    index.pop("\x00")
    return np.array([index.get(c, UNKNOWN) for c in text], "int32")


def decode(ids):
    """The text of character ids (unknown characters shown as "?")."""
    return "".join("?" if i == UNKNOWN else VOCABULARY[i] for i in np.asarray(ids).tolist())


def _windows(ids, length):
    """Non-overlapping windows: inputs `ids[i:i+length]`, targets shifted by one."""
    count = (len(ids) - 1) // length
    x = ids[: count * length].reshape(count, length)
    y = ids[1 : count * length + 1].reshape(count, length)
    return x, y


@register_dataset("python_docs", source=SOURCE)
def python_docs(seed=0, smoke=False, sequence_length=128, max_train_chars=None):
    """Character-level language modelling on the standard library's docstrings.

    `x` are windows of `sequence_length` character ids and `y` the same
    windows shifted by one character (next-character targets). Every tenth
    module (sorted by name, starting with the first) goes to validation and
    every tenth starting with the sixth to test; the rest is training text.
    Training windows are shuffled with `seed`.

    Args:
        seed: int. Seed of the shuffle. Defaults to 0.
        smoke: bool. Return a tiny slice. Defaults to False.
        sequence_length: int. Characters per example. Defaults to 128.
        max_train_chars: int or None. Keep only this many training
            characters (None keeps all, about 0.7 million). Defaults to None.

    Example:

    >>> from kzoo.data.text import decode, encode
    >>> decode(encode("Return the sum.\\n"))
    'Return the sum.\\n'
    """
    modules = stdlib_docstrings()
    if len(modules) < 20:
        raise DataError(
            f"Found docstrings in only {len(modules)} standard-library modules under "
            f"{sysconfig.get_paths()['stdlib']}; expected a full Python installation, "
            "so run with a Python that ships its standard library sources."
        )
    splits = {"train": [], "val": [], "test": []}
    for i, (_, docs) in enumerate(modules):
        split = "val" if i % 10 == 0 else "test" if i % 10 == 5 else "train"
        splits[split].append("\n\n".join(docs))
    texts = {k: "\n\n\n".join(v) for k, v in splits.items()}
    if max_train_chars:
        texts["train"] = texts["train"][:max_train_chars]
    arrays = {k: _windows(encode(t), sequence_length) for k, t in texts.items()}
    order = np.random.default_rng(seed).permutation(len(arrays["train"][0]))
    x_train, y_train = arrays["train"][0][order], arrays["train"][1][order]
    data = Dataset(
        name="python_docs", task="sequence",
        x_train=x_train, y_train=y_train,
        x_val=arrays["val"][0], y_val=arrays["val"][1],
        x_test=arrays["test"][0], y_test=arrays["test"][1],
        input_shape=(sequence_length,), source=SOURCE,
        info={
            "vocabulary": VOCABULARY, "vocab_size": len(VOCABULARY),
            "sequence_length": sequence_length,
            "characters": {k: len(t) for k, t in texts.items()},
            "modules": {k: len(v) for k, v in splits.items()},
        },
    )
    return smoke_slice(data) if smoke else data
