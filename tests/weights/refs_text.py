"""Reference text checkpoints built with `transformers` (torch env only).

`make(outdir)` writes, for each case, a `save_pretrained` folder of a tiny
random-initialised model with every parameter re-randomised, the inputs and
the reference outputs (`reference.npz`), and for BERT also a bare `.pth`
state dict. The jax and tensorflow tests read these through
`KZOO_REFERENCE_CHECKPOINTS`; the torch tests make them on the fly.

    python tests/weights/refs_text.py OUTDIR

`make_references.py` calls `write_references(OUTDIR)` after its own cases:
text models take dicts of token ids and give several outputs, so their cases
are not `make_references.Case`s (`CASES` stays empty) and
`tests/test_weights_text.py` checks them.
"""

import sys
from pathlib import Path

import numpy as np

TEXT_CASES = ("bert_classification", "bert_masked_lm", "gpt2", "clip")
CASES = {}  # make_references.Case cases: none (see the module docstring)
TEXTS = ["the quick brown fox", "jumps over the lazy dog", "a lazy fox sleeps"]


def _transformers():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_imports import import_torchvision

    import_torchvision()  # transformers imports torchvision when it is installed
    import torch
    import transformers

    return torch, transformers


def randomise(torch, module, seed):
    """Every parameter and buffer drawn anew (default values hide mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            value = torch.randn(tensor.shape, generator=generator) * 0.3
            if name.endswith(".weight") and tensor.ndim == 1:  # a LayerNorm's scale
                value = 1.0 + value
            tensor.copy_(value)


def bert_inputs(vocab_size, rng):
    ids = rng.integers(5, vocab_size, size=(3, 9)).astype("int64")
    ids[:, 0] = 2  # [CLS]
    ids[1, 6:] = 0  # padding: id 0, as in BERT's vocabularies
    ids[2, 4:] = 0
    segments = np.zeros_like(ids)
    segments[:, 5:] = 1
    segments[ids == 0] = 0
    return ids, segments


def _bert(torch, transformers, folder, head, seed):
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=32, max_position_embeddings=12, type_vocab_size=2,
        hidden_act="gelu", num_labels=3, layer_norm_eps=1e-12,
        id2label={0: "neg", 1: "neutral", 2: "pos"}, label2id={"neg": 0, "neutral": 1, "pos": 2},
    )
    cls = (transformers.BertForSequenceClassification if head == "classification"
           else transformers.BertForMaskedLM)
    model = cls(config).eval()
    randomise(torch, model, seed)
    if head == "masked_lm":
        model.tie_weights()
    model.save_pretrained(folder)
    ids, segments = bert_inputs(config.vocab_size, np.random.default_rng(seed))
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments),
                       attention_mask=torch.from_numpy((ids != 0).astype("int64"))).logits
    np.savez(folder / "reference.npz", token_ids=ids.astype("int32"),
             segment_ids=segments.astype("int32"), logits=logits.numpy())
    if head == "classification":
        torch.save(model.state_dict(), folder.parent / f"{folder.name}.pth")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")


def _byte_level_tokenizer(folder, vocab_size):
    import tokenizers

    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS * 10, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.save(str(folder / "tokenizer.json"))
    return bpe


def _gpt2(torch, transformers, folder, seed):
    config = transformers.GPT2Config(
        vocab_size=280, n_positions=16, n_embd=16, n_layer=2, n_head=4,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    randomise(torch, model, seed)
    model.tie_weights()
    model.save_pretrained(folder)
    bpe = _byte_level_tokenizer(folder, 280)
    ids = np.array([bpe.encode(t).ids[:6] + [0] * (6 - len(bpe.encode(t).ids[:6]))
                    for t in TEXTS], "int64")
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids)).logits
    np.savez(folder / "reference.npz", token_ids=ids.astype("int32"), logits=logits.numpy())


def clip_inputs(rng, vocab_size, end_id, length):
    ids = rng.integers(0, vocab_size - 2, size=(3, length)).astype("int64")
    for row, end in enumerate((3, length - 1, 5)):
        ids[row, end] = end_id
        ids[row, end + 1:] = end_id  # padded with the end token, as OpenAI's tokenizer does
    images = rng.normal(size=(3, 3, 8, 8)).astype("float32")  # NCHW, as torch takes them
    return ids, images


def _clip(torch, transformers, folder, seed):
    end_id = 29
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=30, hidden_size=16, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=10,
                         eos_token_id=end_id, bos_token_id=28, pad_token_id=end_id),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=4, image_size=8, patch_size=4),
        projection_dim=8,
    )
    model = transformers.CLIPModel(config).eval()
    randomise(torch, model, seed)
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    model.save_pretrained(folder)
    ids, images = clip_inputs(np.random.default_rng(seed), 30, end_id, 10)
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(images))
    np.savez(folder / "reference.npz", token_ids=ids.astype("int32"),
             images=images.transpose(0, 2, 3, 1), image_embeddings=out.image_embeds.numpy(),
             text_embeddings=out.text_embeds.numpy())


def make_case(name, outdir):
    """Write reference case `name` under `outdir`; return its folder."""
    torch, transformers = _transformers()
    folder = Path(outdir) / f"text_{name}"
    folder.mkdir(parents=True, exist_ok=True)
    seed = TEXT_CASES.index(name) + 10
    if name.startswith("bert"):
        _bert(torch, transformers, folder, name.split("_", 1)[1], seed)
    elif name == "gpt2":
        _gpt2(torch, transformers, folder, seed)
    else:
        _clip(torch, transformers, folder, seed)
    return folder


def write_references(outdir):
    """Write every text reference case under `outdir` (called by make_references.py)."""
    return [make_case(name, outdir) for name in TEXT_CASES]


if __name__ == "__main__":
    for path in write_references(sys.argv[1]):
        print(path)
