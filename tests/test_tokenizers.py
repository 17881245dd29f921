"""Tokenizers: checkpoint files read with the `tokenizers` library, kzoo's vocabularies,
and both kinds through a model's metadata."""

import json

import keras
import numpy as np
import pytest

import kzoo
from kzoo import tokenizers

CORPUS = ["the quick brown fox jumps over the lazy dog", "a lazy fox sleeps",
          "Hello world, hello tokenizers!", "dogs and foxes are friends"] * 5


def byte_level_bpe(folder):
    """A tiny GPT-2-style byte-level BPE, trained here, saved as vocab.json + merges.txt."""
    library = pytest.importorskip("tokenizers")
    bpe = library.ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1,
                            special_tokens=["<|endoftext|>"])
    bpe.save_model(str(folder))
    return bpe


def word_piece_vocab(folder):
    words = sorted({w.strip(",!").lower() for t in CORPUS for w in t.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", "!", *words, "##s", "##es"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return vocab


def test_tokenizer_json_round_trips_through_metadata(tmp_path):
    bpe = byte_level_bpe(tmp_path)
    bpe.save(str(tmp_path / "tokenizer.json"))
    tok = tokenizers.from_checkpoint(tmp_path)
    ids = tok.encode(["the lazy fox", "Hello dogs"])
    assert ids == [bpe.encode("the lazy fox").ids, bpe.encode("Hello dogs").ids]
    assert tok.decode(ids[0]) == "the lazy fox"
    metadata = tok.to_metadata()
    json.dumps(metadata)  # JSON holds it
    again = tokenizers.from_metadata(metadata)
    assert again.encode(["the lazy fox"]) == [ids[0]]
    assert again.vocab_size == tok.vocab_size == bpe.get_vocab_size()


def test_vocab_and_merges_match_transformers_gpt2_tokenizer(tmp_path):
    byte_level_bpe(tmp_path)
    transformers = pytest.importorskip("transformers")
    reference = transformers.GPT2Tokenizer(str(tmp_path / "vocab.json"),
                                           str(tmp_path / "merges.txt"))
    tok = tokenizers.from_checkpoint(tmp_path)
    for text in ("the quick brown foxes", " Hello, lazy world!", "unseen wörds"):
        assert tok.encode([text]) == [reference.encode(text)], text
        assert tok.decode(reference.encode(text)) == text


def test_vocab_txt_matches_transformers_bert_tokenizer(tmp_path):
    pytest.importorskip("tokenizers")
    word_piece_vocab(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    tok = tokenizers.from_checkpoint(tmp_path)
    assert tok.pad_id == 0
    text = "The lazy DOGS, foxes and zebras!"
    ids = tok.encode([text])[0]
    assert ids[0] == tok.token_to_id("[CLS]") and ids[-1] == tok.token_to_id("[SEP]")
    assert tok.token_to_id("[UNK]") in ids  # "zebras" is unknown
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)
    assert ids == reference.encode(text)
    assert tok.encode([text], add_special_tokens=False)[0] == ids[1:-1]


def test_hf_id_reads_a_local_hub_cache_offline(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    (tmp_path / "src").mkdir()
    byte_level_bpe(tmp_path / "src")
    # Lay out a hub cache by hand: models--org--name/snapshots/<commit>/ and refs/main.
    commit = "0" * 40
    repo = tmp_path / "cache" / "models--kzoo-test--tiny-bpe"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        (snapshot / name).write_bytes((tmp_path / "src" / name).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    tok = tokenizers.from_checkpoint("hf://kzoo-test/tiny-bpe")
    local = tokenizers.from_checkpoint(tmp_path / "src")
    assert tok.encode(["the lazy fox"]) == local.encode(["the lazy fox"])


def test_checkpoint_without_tokenizer_files_says_so(tmp_path):
    with pytest.raises(ValueError, match="without tokenizer files"):
        tokenizers.from_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        tokenizers.from_checkpoint(tmp_path / "missing")


def test_vocabulary_tokenizer_matches_kzoo_data_encoders():
    from kzoo.data import captions, dates, text, translation

    chars = tokenizers.VocabularyTokenizer(text.VOCABULARY, level="character",
                                           unknown_token="\x00")
    sample = "Return the value\n(é)"
    assert chars.encode([sample])[0] == text.encode(sample).tolist()
    words = tokenizers.VocabularyTokenizer(captions.VOCAB, pad_token="[PAD]",
                                           start_token="[CLS]", unknown_token="[UNK]")
    caption = "a bold handwritten zebra"
    expected = captions.tokenize([caption], 8)[0]
    assert words.encode([caption])[0] == expected[expected != captions.PAD].tolist()
    vocabulary = translation.build_vocabulary()
    french = tokenizers.VocabularyTokenizer(
        vocabulary, split="words_and_punctuation", pad_token="<pad>", start_token="<start>",
        end_token="<end>",
    )
    phrase = "quatre-vingt-onze mille"
    expected = translation.encode([phrase], vocabulary, 12, add_start=True, add_end=True)[0]
    assert french.encode([phrase])[0] == expected[expected != translation.PAD].tolist()
    source = tokenizers.VocabularyTokenizer(["<pad>", *dates.SOURCE_CHARS], level="character",
                                            pad_token="<pad>")
    assert source.encode(["3rd of Mar 2021"])[0] == dates.encode_source(
        ["3rd of Mar 2021"]).tolist()[0]
    assert source.decode(source.encode(["3 mar 21"])[0] + [0, 0]) == "3 mar 21"


def test_a_word_tokenizer_writes_text_back_as_the_dataset_wrote_it():
    """`kzoo.predict` decodes with it: "quatre-vingt-onze", never "quatre - vingt - onze"."""
    from kzoo.data import translation

    vocabulary = translation.build_vocabulary()
    words = tokenizers.VocabularyTokenizer(
        vocabulary, split="words_and_punctuation", pad_token="<pad>", start_token="<start>",
        end_token="<end>",
    )
    for n in [*range(0, 1000, 7), 1000, 2000, 80000, 200000, 91000, 71]:
        for phrase in (translation.english(n), translation.french(n)):
            ids = words.encode([phrase])[0]
            assert words.decode(ids) == phrase
            row = translation.encode([phrase], vocabulary, 16, add_start=True, add_end=True)[0]
            assert translation.decode(row, vocabulary) == phrase
    prose = "Hello, world: it's (mostly) fine - isn't it? 50% off."
    pieces = tokenizers._WORDS_AND_PUNCTUATION.findall(prose)
    again = tokenizers.join_words_and_punctuation(pieces)
    assert tokenizers._WORDS_AND_PUNCTUATION.findall(again) == pieces
    assert again == "Hello, world: it's (mostly) fine-isn't it? 50% off."


def test_vocabulary_tokenizer_rejects_bad_input():
    with pytest.raises(ValueError, match="twice"):
        tokenizers.VocabularyTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizers.VocabularyTokenizer(["a"], pad_token="<pad>")
    with pytest.raises(ValueError, match="unknown_token"):
        tokenizers.VocabularyTokenizer(["a", "b"]).encode(["a c"])
    with pytest.raises(ValueError, match="kind"):
        tokenizers.from_metadata({"kind": "sentencepiece"})


def test_model_metadata_carries_the_tokenizer_through_a_keras_file(tmp_path):
    tok = tokenizers.VocabularyTokenizer("\nabcdefgh ", level="character")
    model = kzoo.create_model("transformer_lm", vocabulary_size=tok.vocab_size, max_sequence_length=8,
                              hidden_dim=8, num_heads=2, num_layers=1, intermediate_dim=16)
    model.metadata = {"tokenizer": tok.to_metadata()}
    path = tmp_path / "lm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    again = tokenizers.from_metadata(loaded.metadata["tokenizer"])
    ids = np.array(again.encode(["bad cafe"]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(ids)),
                               keras.ops.convert_to_numpy(model(ids)), atol=1e-6)
    assert again.decode(ids[0]) == "bad cafe"
