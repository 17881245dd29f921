"""Tokenizers that travel with a model: strings in, token ids out, and back.

Two kinds share one small interface, so a recipe or `predict` never needs to
know which one a model carries:

- `HuggingFaceTokenizer`: a published checkpoint's own tokenizer, read with
  the Hugging Face `tokenizers` library from `tokenizer.json`, or from
  `vocab.txt` (BERT WordPiece) or `vocab.json` + `merges.txt` (GPT-2 byte-level
  BPE) when the checkpoint has no `tokenizer.json`. Use `from_checkpoint`.
- `VocabularyTokenizer`: kzoo's own recipes' vocabularies, a list of tokens at
  the character level (`kzoo.data.text`, `kzoo.data.dates`) or the word level
  (`kzoo.data.captions`, `kzoo.data.translation`).

The interface:

- `tokenizer.encode(texts)` -> a list of id lists (one per text, unpadded);
  `add_special_tokens=False` leaves out start/end tokens ([CLS]/[SEP], ...).
- `tokenizer.decode(ids)` -> str (special tokens skipped).
- `tokenizer.vocab_size`, `tokenizer.pad_id` (None when there is none),
  `tokenizer.token_to_id(token)` (None when absent).
- `tokenizer.to_metadata()` -> a JSON-serialisable dict; store it as
  `model.metadata["tokenizer"]` (see `kzoo.models.base.ModelConfig`) and it
  is saved in the model's `.keras` config.
- `kzoo.tokenizers.from_metadata(model.metadata["tokenizer"])` rebuilds it.

Example:

>>> from kzoo import tokenizers
>>> tok = tokenizers.VocabularyTokenizer(["<pad>", "<unk>", "a", "b"], level="character",
...                                      pad_token="<pad>", unknown_token="<unk>")
>>> tok.encode(["abba", "ax"])
[[2, 3, 3, 2], [2, 1]]
>>> tokenizers.from_metadata(tok.to_metadata()).decode([2, 3, 0, 0])
'ab'
"""

import json
import os
import re

KINDS = ("huggingface", "vocabulary")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "vocab.txt", "vocab.json", "merges.txt")


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "Received a Hugging Face tokenizer but the `tokenizers` package is not "
            "installed; expected it for checkpoint tokenizers, so run `pip install tokenizers`."
        ) from None
    return tokenizers


def _as_texts(texts):
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError(
            f"Received texts {texts[:3]!r}...; expected a string or a list of strings, "
            "so convert the inputs with str() first."
        )
    return texts


def _as_id_list(ids):
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    ids = list(ids)
    if ids and isinstance(ids[0], (list, tuple)):
        raise ValueError(
            f"Received {len(ids)} id sequences; decode expects one sequence of ids, "
            "so call decode on each row."
        )
    return [int(i) for i in ids]


# === Hugging Face checkpoints ===
class HuggingFaceTokenizer:
    """A checkpoint's tokenizer, run by the Hugging Face `tokenizers` library.

    Args:
        tokenizer: a `tokenizers.Tokenizer`, or its JSON string
            (`Tokenizer.to_str()`, the content of a `tokenizer.json`).
        pad_token: str or None. The padding token, if the model has one.
            Defaults to the tokenizer's padding setting, else None.

    Example:

    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from kzoo.tokenizers import HuggingFaceTokenizer
    >>> inner = Tokenizer(models.WordLevel({"[UNK]": 0, "hi": 1, "there": 2}, "[UNK]"))
    >>> inner.pre_tokenizer = pre_tokenizers.Whitespace()
    >>> tok = HuggingFaceTokenizer(inner)
    >>> tok.encode(["hi there", "there you"])
    [[1, 2], [2, 0]]
    """

    kind = "huggingface"

    def __init__(self, tokenizer, pad_token=None):
        library = _import_tokenizers()
        if isinstance(tokenizer, str):
            tokenizer = library.Tokenizer.from_str(tokenizer)
        if not isinstance(tokenizer, library.Tokenizer):
            raise TypeError(
                f"Received tokenizer of type {type(tokenizer).__name__}; expected a "
                "tokenizers.Tokenizer or its JSON string, so load it with Tokenizer.from_file."
            )
        self.tokenizer = tokenizer
        if pad_token is None and tokenizer.padding:
            pad_token = tokenizer.padding.get("pad_token")
        if pad_token is not None and tokenizer.token_to_id(pad_token) is None:
            raise ValueError(
                f"Received pad_token={pad_token!r}, which is not in the vocabulary; expected "
                "one of its tokens, so pass the checkpoint's padding token or None."
            )
        self.pad_token = pad_token

    @property
    def vocab_size(self):
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self):
        return None if self.pad_token is None else self.tokenizer.token_to_id(self.pad_token)

    def token_to_id(self, token):
        return self.tokenizer.token_to_id(token)

    def encode(self, texts, add_special_tokens=True):
        """Token ids of each text, a list of int lists (not padded)."""
        encodings = self.tokenizer.encode_batch(
            _as_texts(texts), add_special_tokens=add_special_tokens
        )
        return [list(e.ids) for e in encodings]

    def decode(self, ids, skip_special_tokens=True):
        """The text of one sequence of ids."""
        return self.tokenizer.decode(_as_id_list(ids), skip_special_tokens=skip_special_tokens)

    def to_metadata(self):
        """A JSON-serialisable dict that `from_metadata` turns back into this tokenizer."""
        return {"kind": self.kind, "tokenizer_json": self.tokenizer.to_str(),
                "pad_token": self.pad_token}


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _special(config, name):
    """A special token from tokenizer_config.json / special_tokens_map.json."""
    value = config.get(name)
    if isinstance(value, dict):  # {"content": "<|endoftext|>", ...}
        value = value.get("content")
    return value


def from_checkpoint(source):
    """The tokenizer of a Hugging Face checkpoint folder, file or `hf://` id.

    Reads `tokenizer.json` when there is one; otherwise builds the tokenizer
    with the `tokenizers` library from `vocab.txt` (BERT WordPiece, lower-cased
    unless `tokenizer_config.json` says `do_lower_case: false`) or from
    `vocab.json` + `merges.txt` (GPT-2's byte-level BPE). The padding token
    comes from `tokenizer_config.json` / `special_tokens_map.json`.

    Args:
        source: str or path. A folder as `save_pretrained` writes it, a
            `tokenizer.json` file, or `hf://ORG/NAME[@REVISION]` (fetched
            through `huggingface_hub`'s cache; `HF_HUB_OFFLINE=1` is honoured).

    Returns:
        A `HuggingFaceTokenizer`.

    Example:

    >>> import tempfile, pathlib
    >>> from kzoo import tokenizers
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "vocab.txt").write_text("[PAD]\\n[UNK]\\n[CLS]\\n[SEP]\\nhello\\nworld\\n")
    >>> tok = tokenizers.from_checkpoint(folder)
    >>> tok.encode(["Hello world"])
    [[2, 4, 5, 3]]
    >>> tok.pad_id
    0
    """
    folder = _local_folder(source)
    if os.path.isfile(folder):
        if os.path.basename(folder) != "tokenizer.json" and not folder.endswith(".json"):
            raise ValueError(
                f"Received tokenizer file {str(source)!r}; expected a tokenizer.json or a "
                "checkpoint folder, so pass the folder that holds the tokenizer files."
            )
        return HuggingFaceTokenizer(_import_tokenizers().Tokenizer.from_file(folder))
    config = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            config.update(_read_json(path))
    present = {name for name in _TOKENIZER_FILES if os.path.exists(os.path.join(folder, name))}
    if not ({"tokenizer.json", "vocab.txt"} & present or {"vocab.json", "merges.txt"} <= present):
        raise ValueError(
            f"Received checkpoint {str(source)!r} without tokenizer files; expected "
            "tokenizer.json, vocab.txt, or vocab.json with merges.txt, so save the "
            "tokenizer beside the weights (tokenizer.save_pretrained(folder))."
        )
    library = _import_tokenizers()
    path = os.path.join(folder, "tokenizer.json")
    if os.path.exists(path):
        tokenizer = library.Tokenizer.from_file(path)
    elif os.path.exists(os.path.join(folder, "vocab.txt")):
        tokenizer = library.BertWordPieceTokenizer(
            os.path.join(folder, "vocab.txt"), lowercase=config.get("do_lower_case", True),
            unk_token=_special(config, "unk_token") or "[UNK]",
            cls_token=_special(config, "cls_token") or "[CLS]",
            sep_token=_special(config, "sep_token") or "[SEP]",
            pad_token=_special(config, "pad_token") or "[PAD]",
            mask_token=_special(config, "mask_token") or "[MASK]",
        )._tokenizer
        config.setdefault("pad_token", "[PAD]")
    else:
        tokenizer = library.ByteLevelBPETokenizer(
            os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
            add_prefix_space=bool(config.get("add_prefix_space", False)),
        )._tokenizer
    pad = _special(config, "pad_token")
    if pad is not None and tokenizer.token_to_id(pad) is None:
        pad = None
    return HuggingFaceTokenizer(tokenizer, pad_token=pad)


def _local_folder(source):
    source = os.fspath(source)
    if source.startswith("hf://"):
        from huggingface_hub import snapshot_download

        repo, _, revision = source[len("hf://"):].partition("@")
        return snapshot_download(repo, revision=revision or None,
                                 allow_patterns=list(_TOKENIZER_FILES))
    if not os.path.exists(source):
        raise ValueError(
            f"Received tokenizer source {source!r}, which does not exist; expected a "
            "checkpoint folder, a tokenizer.json or hf://ORG/NAME, so check the path."
        )
    return source


# === kzoo's own vocabularies ===
SPLITS = ("whitespace", "words_and_punctuation")
# `kzoo.data.translation.tokenize`'s rule: words, and each punctuation mark alone.
_WORDS_AND_PUNCTUATION = re.compile(r"[^\W_]+|[^\w\s]|_")
#: Marks written against the word before them ("four, five.") and joiners written
#: against both neighbours ("quatre-vingt", "l'homme").
_NO_SPACE_BEFORE = frozenset(",.;:!?)]}%")
_JOINERS = frozenset("-'’/")
_NO_SPACE_AFTER = frozenset("([{") | _JOINERS


def join_words_and_punctuation(tokens):
    """The text of word and punctuation tokens, spaced as written.

    The inverse of the `"words_and_punctuation"` split for ordinary prose:
    `tokens` split again gives `tokens` back.

    Example:

    >>> from kzoo.tokenizers import join_words_and_punctuation
    >>> join_words_and_punctuation(["quatre", "-", "vingt", "-", "deux", ",", "l", "'", "an"])
    "quatre-vingt-deux, l'an"
    """
    text = ""
    previous = None
    for token in tokens:
        if previous is not None and token not in _NO_SPACE_BEFORE and token not in _JOINERS \
                and previous not in _NO_SPACE_AFTER:
            text += " "
        text += token
        previous = token
    return text


class VocabularyTokenizer:
    """A fixed list of tokens, at the character or the word level.

    The id of a token is its index in `vocabulary`. This is the kind kzoo's
    own recipes use (`kzoo.data.text.VOCABULARY` is character level,
    `kzoo.data.captions.VOCAB` word level), stored in the model's metadata the
    same way as a checkpoint's tokenizer.

    Args:
        vocabulary: list of str (or a str of characters at the character
            level). Each token once.
        level: str. `"character"` or `"word"`. Defaults to `"word"`.
        split: str. How words are found: `"whitespace"` or
            `"words_and_punctuation"` (each punctuation mark its own token,
            as in `kzoo.data.translation`). Ignored at the character level.
            Defaults to `"whitespace"`.
        lowercase: bool. Lower-case texts before looking tokens up. Defaults
            to False.
        unknown_token: str or None. Token for anything not in the vocabulary;
            None makes an unknown token an error. Defaults to None.
        pad_token, start_token, end_token: str or None. Padding, and the
            tokens `encode` puts first and last (`[CLS]`, `<start>`, ...).
            `decode` skips them and stops at the end token. Default to None.

    Example:

    >>> from kzoo.data.captions import VOCAB
    >>> from kzoo.tokenizers import VocabularyTokenizer
    >>> tok = VocabularyTokenizer(VOCAB, pad_token="[PAD]", start_token="[CLS]",
    ...                           unknown_token="[UNK]")
    >>> ids = tok.encode(["a handwritten seven"])
    >>> [VOCAB[i] for i in ids[0]]
    ['[CLS]', 'a', 'handwritten', 'seven']
    >>> tok.decode(ids[0])
    'a handwritten seven'
    """

    kind = "vocabulary"
    LEVELS = ("character", "word")

    def __init__(self, vocabulary, level="word", split="whitespace", lowercase=False,
                 unknown_token=None, pad_token=None, start_token=None, end_token=None):
        if level not in self.LEVELS:
            raise ValueError(
                f"Received level={level!r}; expected one of {self.LEVELS}, so pass "
                "level='character' or level='word'."
            )
        if split not in SPLITS:
            raise ValueError(
                f"Received split={split!r}; expected one of {SPLITS}, so pass one of them."
            )
        tokens = list(vocabulary)
        if not tokens or not all(isinstance(t, str) for t in tokens):
            raise TypeError(
                f"Received vocabulary {tokens[:5]!r}; expected a non-empty list of strings, "
                "so pass the recipe's token list."
            )
        if len(set(tokens)) != len(tokens):
            duplicate = next(t for t in tokens if tokens.count(t) > 1)
            raise ValueError(
                f"Received a vocabulary with {duplicate!r} twice; expected each token once, "
                "so remove the duplicate."
            )
        self.vocabulary, self.level, self.split = tokens, level, split
        self.lowercase = bool(lowercase)
        self._index = {t: i for i, t in enumerate(tokens)}
        self.special = {}
        for role, token in (("unknown", unknown_token), ("pad", pad_token),
                            ("start", start_token), ("end", end_token)):
            if token is not None and token not in self._index:
                raise ValueError(
                    f"Received {role}_token={token!r}, which is not in the vocabulary; "
                    "expected one of its tokens, so add it to the vocabulary or pass None."
                )
            self.special[role] = token

    @property
    def vocab_size(self):
        return len(self.vocabulary)

    def _special_id(self, role):
        token = self.special[role]
        return None if token is None else self._index[token]

    @property
    def pad_id(self):
        return self._special_id("pad")

    def token_to_id(self, token):
        return self._index.get(token)

    def _pieces(self, text):
        if self.lowercase:
            text = text.lower()
        if self.level == "character":
            return list(text)
        if self.split == "whitespace":
            return text.split()
        return _WORDS_AND_PUNCTUATION.findall(text)

    def encode(self, texts, add_special_tokens=True):
        """Token ids of each text, a list of int lists (not padded)."""
        unknown = self._special_id("unknown")
        result = []
        for text in _as_texts(texts):
            ids = []
            for piece in self._pieces(text):
                i = self._index.get(piece, unknown)
                if i is None:
                    raise ValueError(
                        f"Received text with {piece!r}, which is not in the vocabulary; "
                        "expected known tokens only, so build the tokenizer with an "
                        "unknown_token."
                    )
                ids.append(i)
            if add_special_tokens:
                start, end = self._special_id("start"), self._special_id("end")
                ids = ([start] if start is not None else []) + ids + (
                    [end] if end is not None else []
                )
            result.append(ids)
        return result

    def decode(self, ids, skip_special_tokens=True):
        """The text of one sequence of ids (stops at the end token)."""
        skip = {self._special_id(r) for r in ("pad", "start")} - {None}
        end = self._special_id("end")
        pieces = []
        for i in _as_id_list(ids):
            if not 0 <= i < len(self.vocabulary):
                raise ValueError(
                    f"Received token id {i}; expected ids in [0, {len(self.vocabulary)}), "
                    "so decode ids produced by a model with this vocabulary."
                )
            if skip_special_tokens and i == end:
                break
            if skip_special_tokens and i in skip:
                continue
            pieces.append(self.vocabulary[i])
        if self.level == "character":
            return "".join(pieces)
        if self.split == "words_and_punctuation":
            return join_words_and_punctuation(pieces)
        return " ".join(pieces)

    def to_metadata(self):
        """A JSON-serialisable dict that `from_metadata` turns back into this tokenizer."""
        return {
            "kind": self.kind, "vocabulary": list(self.vocabulary), "level": self.level,
            "split": self.split, "lowercase": self.lowercase,
            **{f"{role}_token": token for role, token in self.special.items()},
        }


def from_metadata(metadata):
    """Rebuild a tokenizer from `tokenizer.to_metadata()` (`model.metadata["tokenizer"]`).

    Args:
        metadata: dict, as `to_metadata()` returns it.

    Returns:
        A `HuggingFaceTokenizer` or a `VocabularyTokenizer`.

    Example:

    >>> from kzoo import tokenizers
    >>> tok = tokenizers.VocabularyTokenizer("\\nab", level="character")
    >>> tokenizers.from_metadata(tok.to_metadata()).encode("ba")
    [[2, 1]]
    """
    if not isinstance(metadata, dict) or metadata.get("kind") not in KINDS:
        kind = metadata.get("kind") if isinstance(metadata, dict) else type(metadata).__name__
        raise ValueError(
            f"Received tokenizer metadata of kind {kind!r}; expected a dict with kind in "
            f"{KINDS}, as tokenizer.to_metadata() writes it."
        )
    options = {k: v for k, v in metadata.items() if k != "kind"}
    if metadata["kind"] == "huggingface":
        return HuggingFaceTokenizer(options["tokenizer_json"], pad_token=options.get("pad_token"))
    return VocabularyTokenizer(**options)
