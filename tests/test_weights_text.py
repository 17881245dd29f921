"""Hugging Face BERT, GPT-2 and CLIP checkpoints into kzoo, and back (kzoo.weights).

The references are tiny `transformers` models with every parameter
re-randomised (`tests/weights/refs_text.py`), saved with `save_pretrained`.
With transformers installed (the torch env) they are made here; elsewhere
they are read from `KZOO_REFERENCE_CHECKPOINTS` (made by the torch env), so
every backend loads the same files through the public API only.
"""

import os
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import kzoo
from kzoo import tokenizers

sys.path.insert(0, str(Path(__file__).resolve().parent / "weights"))
import refs_text  # noqa: E402

RTOL = ATOL = 1e-4


def _have_transformers():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    if _have_transformers():
        out = tmp_path_factory.mktemp("text_refs")
        return lambda name: refs_text.make_case(name, out)
    root = os.environ.get("KZOO_REFERENCE_CHECKPOINTS")
    if not root:
        if os.environ.get("CI") == "true":
            pytest.fail("KZOO_REFERENCE_CHECKPOINTS is not set; run "
                        "tests/weights/make_references.py in the torch env first.")
        pytest.skip("no transformers here and KZOO_REFERENCE_CHECKPOINTS is not set")

    def find(name):
        folder = Path(root) / f"text_{name}"
        if not folder.is_dir():
            pytest.fail(f"{folder} is missing; regenerate the reference checkpoints.")
        return folder

    return find


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def _far(got, expected):
    assert not np.allclose(got, expected, rtol=1e-3, atol=1e-3)


def _wrong_copy(folder, tmp_path, change):
    """The folder with one tensor changed by `change(state)`: the mapping must notice."""
    wrong = tmp_path / f"wrong_{folder.name}"
    shutil.copytree(folder, wrong)
    state = load_file(str(wrong / "model.safetensors"))
    change(state)
    save_file({k: np.ascontiguousarray(v).reshape(v.shape) for k, v in state.items()},
              str(wrong / "model.safetensors"), metadata={"format": "pt"})
    return wrong


# === BERT ===
def _bert_outputs(model, ref):
    x = {"token_ids": ref["token_ids"], "segment_ids": ref["segment_ids"]}
    return _np(model(x, training=False))


def test_bert_classification_folder_and_pth_load_exactly(refs, tmp_path):
    folder = refs("bert_classification")
    ref = np.load(folder / "reference.npz")
    model = kzoo.create_model("bert_tiny", weights=str(folder))
    config = model.model_config
    assert (config["hidden_dim"], config["num_layers"], config["num_heads"]) == (16, 2, 4)
    assert model.metadata["class_names"] == ["neg", "neutral", "pos"]
    assert tokenizers.from_metadata(model.metadata["tokenizer"]).pad_id == 0
    _close(_bert_outputs(model, ref), ref["logits"])
    if _have_transformers():  # a bare .pth state dict needs torch; its sizes come from shapes
        pth = kzoo.create_model("bert_tiny", weights=str(folder.parent / f"{folder.name}.pth"),
                                num_heads=4)
        _close(_bert_outputs(pth, ref), ref["logits"])

    def swap_query_key(state):
        q = "bert.encoder.layer.0.attention.self.query.weight"
        k = q.replace("query", "key")
        state[q], state[k] = state[k], state[q]

    wrong = kzoo.create_model("bert_tiny", weights=str(_wrong_copy(folder, tmp_path,
                                                                   swap_query_key)))
    _far(_bert_outputs(wrong, ref), ref["logits"])


def test_bert_masked_lm_loads_with_its_tied_decoder(refs, tmp_path):
    folder = refs("bert_masked_lm")
    ref = np.load(folder / "reference.npz")
    model = kzoo.create_model("bert_tiny_mlm", weights=str(folder))
    real = ref["token_ids"] != 0  # outputs at padded positions are not meaningful
    _close(_bert_outputs(model, ref)[real], ref["logits"][real])

    def transpose_ff(state):  # square (32 -> 16 -> ...) is not square: transpose a square one
        key = "bert.encoder.layer.1.attention.output.dense.weight"
        state[key] = state[key].T

    wrong = kzoo.create_model("bert_tiny_mlm", weights=str(_wrong_copy(folder, tmp_path,
                                                                       transpose_ff)))
    _far(_bert_outputs(wrong, ref)[real], ref["logits"][real])

    def as_google_pretraining(state):  # bert-base-uncased's names and its two extra heads
        for key in [k for k in state if "LayerNorm." in k]:
            state[key.replace(".weight", ".gamma").replace(".bias", ".beta")] = state.pop(key)
        state["bert.pooler.dense.weight"] = np.ones((16, 16), "float32")
        state["bert.pooler.dense.bias"] = np.ones(16, "float32")
        state["cls.seq_relationship.weight"] = np.ones((2, 16), "float32")
        state["cls.seq_relationship.bias"] = np.ones(2, "float32")

    google = _wrong_copy(folder, tmp_path / "google", as_google_pretraining)
    model = kzoo.create_model("bert_tiny_mlm", weights=str(google))
    _close(_bert_outputs(model, ref)[real], ref["logits"][real])
    # Fine-tuning starts there: a classifier keeps the encoder and says the head is new.
    with pytest.warns(UserWarning, match="the pooler and the classification head start") as got:
        classifier = kzoo.create_model("bert_tiny", weights=str(folder), num_classes=4)
    assert len([w for w in got if w.category is UserWarning]) == 1  # one line, said once
    for name in ("token_embedding", "encoder_block_1"):
        for a, b in zip(classifier.get_layer(name).get_weights(),
                        model.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_bert_folder_into_a_vit_says_so_in_one_sentence(refs):
    folder = refs("bert_classification")
    with pytest.raises(ValueError, match="BERT") as info:
        kzoo.create_model("vit_tiny", weights=str(folder))
    assert "\n" not in str(info.value)


# === GPT-2 ===
def test_gpt2_loads_exactly_with_its_tokenizer(refs, tmp_path):
    folder = refs("gpt2")
    ref = np.load(folder / "reference.npz")
    model = kzoo.create_model("transformer_lm", weights=str(folder))
    assert model.model_config["activation"] == "gelu_tanh"
    _close(_np(model(ref["token_ids"], training=False)), ref["logits"])
    tok = tokenizers.from_metadata(model.metadata["tokenizer"])
    assert tok.encode(["the lazy fox"]) == tokenizers.from_checkpoint(folder).encode(
        ["the lazy fox"])
    # Saved and reloaded, the activation is still GPT-2's.
    path = tmp_path / "gpt2.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    _close(_np(again(ref["token_ids"], training=False)), ref["logits"])

    def transpose_projection(state):  # Conv1D stores (in, out): a transpose keeps the shape
        key = "transformer.h.0.attn.c_proj.weight"
        state[key] = state[key].T

    wrong = kzoo.create_model("transformer_lm", weights=str(_wrong_copy(folder, tmp_path,
                                                                        transpose_projection)))
    _far(_np(wrong(ref["token_ids"], training=False)), ref["logits"])
    # The exact GELU is close to GPT-2's tanh approximation, but not to round-off.
    exact = kzoo.create_model("transformer_lm", weights=str(folder), activation="gelu")
    error = np.abs(_np(model(ref["token_ids"], training=False)) - ref["logits"]).max()
    assert np.abs(_np(exact(ref["token_ids"], training=False)) - ref["logits"]).max() > 10 * error


def test_gpt2_from_a_local_hub_cache_offline(refs, tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    folder = refs("gpt2")
    # The tiny reference stands in for the weights table's GPT-2 in the cache.
    (row,) = kzoo.weights.list_weights("transformer_lm")
    hub_id = row["source"][len("hf://"):]
    commit = "1" * 40
    repo = tmp_path / "hub" / f"models--{hub_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = np.load(folder / "reference.npz")
    for weights in (f"hf://{hub_id}", row["preset"]):
        model = kzoo.create_model("transformer_lm", weights=weights)
        _close(_np(model(ref["token_ids"], training=False)), ref["logits"])
        assert model.metadata["source"]["hub_id"] == hub_id
        assert "tokenizer" in model.metadata
    assert model.metadata["source"]["license"] == row["license"]


# === CLIP ===
def _clip_outputs(model, ref):
    out = model({"images": ref["images"], "token_ids": ref["token_ids"]}, training=False)
    return _np(out["image_embeddings"]), _np(out["text_embeddings"])


def test_openai_clip_loads_exactly(refs, tmp_path):
    folder = refs("clip")
    ref = np.load(folder / "reference.npz")
    model = kzoo.create_model("clip_vit_base_patch32", weights=str(folder))
    image, text = _clip_outputs(model, ref)
    _close(image, ref["image_embeddings"])
    _close(text, ref["text_embeddings"])
    scale = float(_np(model.get_layer("logit_scale").scale()))
    assert scale == pytest.approx(np.exp(2.0), rel=1e-5)

    def swap_query_key(state):
        q = "text_model.encoder.layers.1.self_attn.q_proj.weight"
        k = q.replace("q_proj", "k_proj")
        state[q], state[k] = state[k], state[q]

    wrong = kzoo.create_model("clip_vit_base_patch32",
                              weights=str(_wrong_copy(folder, tmp_path, swap_query_key)))
    _far(_clip_outputs(wrong, ref)[1], ref["text_embeddings"])


# === Export: kzoo -> transformers, strict ===
def _transformers_model(cls_name, folder):
    torch, transformers = refs_text._transformers()
    config = transformers.AutoConfig.from_pretrained(folder)
    model = getattr(transformers, cls_name)(config).eval()
    state = {k: torch.from_numpy(v) for k, v in load_file(str(folder / "model.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    return torch, model


def _random_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign((rng.normal(size=w.shape) * 0.3).astype("float32"))


@pytest.mark.torch_only
@pytest.mark.parametrize("name, cls_name", [
    ("bert_tiny", "BertForSequenceClassification"), ("bert_tiny_mlm", "BertForMaskedLM"),
])
def test_bert_export_loads_strictly_in_transformers(name, cls_name, tmp_path):
    pytest.importorskip("transformers")
    model = kzoo.create_model(name, vocabulary_size=40, max_sequence_length=12, hidden_dim=16, num_heads=4,
                              intermediate_dim=32, num_classes=3, dropout=0.0)
    _random_weights(model)
    folder = kzoo.weights.export(model, tmp_path / "bert", layout="transformers")
    torch, reference = _transformers_model(cls_name, folder)
    ids, segments = refs_text.bert_inputs(40, np.random.default_rng(0))
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(ids),
                             token_type_ids=torch.from_numpy(segments),
                             attention_mask=torch.from_numpy((ids != 0).astype("int64"))).logits
    got = _np(model({"token_ids": ids.astype("int32"), "segment_ids": segments.astype("int32")},
                    training=False))
    real = ids != 0
    expected = expected.numpy()
    if name.endswith("mlm"):
        got, expected = got[real], expected[real]
    _close(got, expected)


@pytest.mark.torch_only
def test_gpt2_export_loads_strictly_in_transformers(tmp_path):
    pytest.importorskip("transformers")
    model = kzoo.create_model("transformer_lm", vocabulary_size=50, max_sequence_length=12, hidden_dim=16,
                              num_heads=4, num_layers=2, intermediate_dim=48,
                              activation="gelu_tanh", dropout=0.0)
    _random_weights(model, 1)
    folder = kzoo.weights.export(model, tmp_path / "gpt2", layout="transformers")
    torch, reference = _transformers_model("GPT2LMHeadModel", folder)
    ids = np.random.default_rng(0).integers(0, 50, size=(2, 7))
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(ids)).logits.numpy()
    _close(_np(model(ids.astype("int32"), training=False)), expected)


@pytest.mark.torch_only
def test_clip_export_loads_strictly_in_transformers(tmp_path):
    pytest.importorskip("transformers")
    model = kzoo.create_model("clip_vit_base_patch32", **kzoo.registry.get_entry(
        "clip_vit_base_patch32").tiny)
    _random_weights(model, 2)
    folder = kzoo.weights.export(model, tmp_path / "clip", layout="transformers")
    torch, reference = _transformers_model("CLIPModel", folder)
    ids, images = refs_text.clip_inputs(np.random.default_rng(0), 50, 49, 8)
    with torch.no_grad():
        out = reference(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(images))
    got = model({"images": images.transpose(0, 2, 3, 1), "token_ids": ids.astype("int32")},
                training=False)
    _close(_np(got["image_embeddings"]), out.image_embeds.numpy())
    _close(_np(got["text_embeddings"]), out.text_embeds.numpy())


def test_lm_recipe_samples_text_from_a_gpt2_checkpoint(refs, capsys):
    from recipe_runs import load_recipe

    from kzoo.models.generation import generate_text

    folder = refs("gpt2")
    text = load_recipe("lm").main(["--weights", str(folder), "--prompt", "the lazy",
                                   "--sample-length", "4", "--seed", "3"])
    assert text.startswith("the lazy") and text in capsys.readouterr().out
    model = kzoo.create_model("transformer_lm", weights=str(folder))
    same = generate_text(model, "the lazy", max_new_tokens=4, method="sample", temperature=0.8,
                         top_k=40, seed=3)
    assert same == [text]
