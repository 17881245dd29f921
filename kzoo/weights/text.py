"""Converters for Hugging Face text checkpoints: BERT, GPT-2 and OpenAI's CLIP.

Each maps a `transformers` state dict (as `save_pretrained` writes it, with or
without the `bert.` / `transformer.` prefix of the task models) onto the kzoo
model and back, and turns `config.json` into kzoo arguments. The checkpoint's
tokenizer files, when present, become `model.metadata["tokenizer"]`
(`kzoo.tokenizers`), so the model takes strings.

Layout differences handled here: torch `Linear` weights are `(out, in)`
while GPT-2's `Conv1D` stores `(in, out)` and fuses q, k, v in one `c_attn`;
kzoo's attention keeps per-head kernels `(features, heads, head_dim)`.
"""

import warnings

import numpy as np

from kzoo.weights import ports
from kzoo.weights.core import Converter, Port, WeightsError, register_converter

# transformers' activation names -> kzoo's feed-forward activation names.
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_fast": "gelu_tanh", "quick_gelu": "quick_gelu", "relu": "relu"}
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "quick_gelu": "quick_gelu",
                   "relu": "relu"}


def _activation(config, key, where):
    name = config.get(key, "gelu")
    if name not in _ACTIVATIONS:
        raise WeightsError(
            f"Received a {where} config.json with {key}={name!r}; kzoo loads "
            f"{sorted(_ACTIVATIONS)}, so pick a checkpoint with one of those."
        )
    return _ACTIVATIONS[name]


def _hf_activation(name):
    if name not in _HF_ACTIVATIONS:
        raise WeightsError(
            f"Received a model with activation={name!r}; the transformers layout takes "
            f"{sorted(_HF_ACTIVATIONS)}, so export a model built with one of those."
        )
    return _HF_ACTIVATIONS[name]


def _prefix(state, prefix):
    """`prefix` if the state dict's keys carry it (task models), else ""."""
    if not state:  # export writes the task model's names
        return prefix
    return prefix if any(k.startswith(prefix) for k in state) else ""


def _count(state, pattern_prefix):
    """Number of numbered sub-modules `{pattern_prefix}{i}.` in the keys."""
    found = {k[len(pattern_prefix):].split(".")[0] for k in state if k.startswith(pattern_prefix)}
    return len([i for i in found if i.isdigit()])


def _sizes(state, *, words, positions, segments=None, layers, ff, ff_out_axis):
    """The sizes the shapes of a transformer's state dict fix (the keys it has)."""
    out = {}
    w = state.get(words)
    if w is not None:
        out.update(vocabulary_size=int(w.shape[0]), hidden_dim=int(w.shape[1]))
    for key, name in ((positions, "max_sequence_length"), (segments, "num_segments")):
        table = state.get(key) if key else None
        if table is not None:
            out[name] = int(table.shape[0])
    out["num_layers"] = _count(state, layers)
    f = state.get(ff)
    if f is not None:
        out["intermediate_dim"] = int(f.shape[ff_out_axis])
    return out


def _tokenizer_metadata(checkpoint):
    names = ("tokenizer.json", "vocab.txt", "vocab.json")
    found = [checkpoint.files[n] for n in names if n in checkpoint.files]
    if not found:
        return {}
    import os

    from kzoo import tokenizers

    try:
        return {"tokenizer": tokenizers.from_checkpoint(os.path.dirname(found[0])).to_metadata()}
    except ImportError:  # no `tokenizers` package: the weights still load
        return {}


# === Attention: torch Linear projections or GPT-2's fused Conv1D ===
def _split_heads(layer, transpose):
    """Load/save for one (d, d) projection into a `(d, heads, head_dim)` kernel."""
    heads = layer.num_heads

    def load(a):
        w = a[0].T if transpose else a[0]  # (in, out)
        return [w.reshape(w.shape[0], heads, -1)]

    def save(a):
        w = a[0].reshape(a[0].shape[0], -1)
        return [w.T if transpose else w]

    return load, save


def _bias_heads(layer):
    heads = layer.num_heads
    return (lambda a: [a[0].reshape(heads, -1)], lambda a: [a[0].reshape(-1)])


def _output_projection(layer, transpose):
    heads = layer.num_heads

    def load(a):
        w = a[0].T if transpose else a[0]  # (in = heads * head_dim, out)
        return [w.reshape(heads, -1, w.shape[1])]

    def save(a):
        w = a[0].reshape(-1, a[0].shape[-1])
        return [w.T if transpose else w]

    return load, save


def _linear_attention(layer, query, key, value, output):
    """A kzoo `MultiHeadAttention` from four torch `Linear` modules (BERT, CLIP)."""
    out = []
    for kernel, bias, prefix in ((layer.query_kernel, layer.query_bias, query),
                                 (layer.key_kernel, layer.key_bias, key),
                                 (layer.value_kernel, layer.value_bias, value)):
        out.append(Port([kernel], [f"{prefix}.weight"], *_split_heads(layer, True)))
        out.append(Port([bias], [f"{prefix}.bias"], *_bias_heads(layer)))
    out.append(Port([layer.output_kernel], [f"{output}.weight"],
                    *_output_projection(layer, True)))
    out.append(Port([layer.output_bias], [f"{output}.bias"]))
    return out


def _fused_conv1d_attention(layer, prefix):
    """A kzoo `MultiHeadAttention` from GPT-2's `c_attn` (in, 3 * out) and `c_proj`."""
    heads = layer.num_heads

    def load_kernel(a):
        return [w.reshape(w.shape[0], heads, -1) for w in np.split(a[0], 3, axis=1)]

    def save_kernel(a):
        return [np.concatenate([w.reshape(w.shape[0], -1) for w in a], axis=1)]

    def load_bias(a):
        return [b.reshape(heads, -1) for b in np.split(a[0], 3)]

    def save_bias(a):
        return [np.concatenate([b.reshape(-1) for b in a])]

    return [
        Port([layer.query_kernel, layer.key_kernel, layer.value_kernel],
             [f"{prefix}.c_attn.weight"], load_kernel, save_kernel),
        Port([layer.query_bias, layer.key_bias, layer.value_bias],
             [f"{prefix}.c_attn.bias"], load_bias, save_bias),
        Port([layer.output_kernel], [f"{prefix}.c_proj.weight"],
             *_output_projection(layer, False)),
        Port([layer.output_bias], [f"{prefix}.c_proj.bias"]),
    ]


def _conv1d(layer, prefix):
    """GPT-2's `Conv1D` stores `(in, out)`, Keras' layout: no transpose."""
    return [Port([layer.kernel], [f"{prefix}.weight"]), Port([layer.bias], [f"{prefix}.bias"])]


def _token_and_positions(layer, tokens, positions):
    return ports.copy(layer.embeddings, tokens) + ports.copy(layer.positions.embeddings, positions)


# === BERT ===
def _bert_arguments(checkpoint):
    state, config = checkpoint.state, checkpoint.config or {}
    p = _prefix(state, "bert.")
    out = _sizes(state, words=f"{p}embeddings.word_embeddings.weight",
                 positions=f"{p}embeddings.position_embeddings.weight",
                 segments=f"{p}embeddings.token_type_embeddings.weight",
                 layers=f"{p}encoder.layer.",
                 ff=f"{p}encoder.layer.0.intermediate.dense.weight", ff_out_axis=0)  # Linear
    # The kzoo name picks the head (bert_tiny_mlm, or head=...): a classifier
    # from a pre-training checkpoint is where fine-tuning starts.
    if "classifier.weight" in state:
        out["num_classes"] = int(state["classifier.weight"].shape[0])
    if config:
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise WeightsError(
                f"Received a BERT config.json with position_embedding_type="
                f"{config['position_embedding_type']!r}; kzoo's BERT has absolute positions, "
                "so pick a checkpoint with those."
            )
        if _activation(config, "hidden_act", "BERT") != "gelu":
            raise WeightsError(
                f"Received a BERT config.json with hidden_act={config['hidden_act']!r}; kzoo's "
                "BERT uses the exact GELU, so pick a checkpoint with hidden_act='gelu'."
            )
        out["num_heads"] = int(config.get("num_attention_heads", 12))
        out["layer_norm_epsilon"] = float(config.get("layer_norm_eps", 1e-12))
        out["dropout"] = float(config.get("hidden_dropout_prob", 0.1))
    return out


def _bert_ports(model, checkpoint):
    p = _prefix(checkpoint.state, "bert.")
    e = f"{p}embeddings"
    # Google's original checkpoints (bert-base-uncased) name LayerNorm's
    # parameters gamma and beta; transformers renames them when it loads.
    legacy = any(k.endswith("LayerNorm.gamma") for k in checkpoint.state)
    names = {"weight": "gamma", "bias": "beta"} if legacy else {}

    def layer_norm(layer, prefix):
        return ports.layer_norm(layer, prefix, **names)

    out = _token_and_positions(model.get_layer("token_embedding"), f"{e}.word_embeddings.weight",
                               f"{e}.position_embeddings.weight")
    out += ports.copy(model.get_layer("segment_embedding").embeddings,
                      f"{e}.token_type_embeddings.weight")
    out += layer_norm(model.get_layer("embedding_norm"), f"{e}.LayerNorm")
    for i in range(model.model_config["num_layers"]):
        block, key = model.get_layer(f"encoder_block_{i}"), f"{p}encoder.layer.{i}"
        a = f"{key}.attention"
        out += _linear_attention(block.self_attention, f"{a}.self.query", f"{a}.self.key",
                                f"{a}.self.value", f"{a}.output.dense")
        out += layer_norm(block.self_attention_norm, f"{a}.output.LayerNorm")
        out += ports.dense(block.ff_dense_1, f"{key}.intermediate.dense")
        out += ports.dense(block.ff_dense_2, f"{key}.output.dense")
        out += layer_norm(block.ff_norm, f"{key}.output.LayerNorm")
    if model.model_config["head"] == "classification":
        fresh = []
        for layer, key, head in (("pooler", f"{p}pooler.dense", False),
                                 ("head", "classifier", True)):
            if checkpoint.state and f"{key}.weight" not in checkpoint.state:
                out += _keep_initial(model.get_layer(layer))  # a pre-training checkpoint
                fresh.append("the pooler" if layer == "pooler" else "the classification head")
            else:
                out += ports.dense(model.get_layer(layer), key, head=head)
        if fresh:
            warnings.warn(
                f"{checkpoint.describe()} has no sequence-classification head: the encoder is "
                f"loaded and {' and '.join(fresh)} start from their initial values.",
                stacklevel=4,
            )
    else:
        t = "cls.predictions.transform"
        out += ports.dense(model.get_layer("mlm_transform"), f"{t}.dense")
        out += layer_norm(model.get_layer("mlm_norm"), f"{t}.LayerNorm")
        out += ports.copy(model.get_layer("mlm_bias").bias, "cls.predictions.bias")
    return out


def _keep_initial(layer):
    """Ports that set `layer`'s weights to their own initial values (nothing to load)."""
    weights = list(layer.weights)
    return [Port(weights, [], lambda arrays, w=weights: [np.asarray(v.numpy()) for v in w],
                 lambda arrays: [])]


def _bert_extras(model, state):
    """The tied MLM decoder, which `BertForMaskedLM.state_dict()` lists."""
    if "cls.predictions.bias" not in state:
        return {}
    return {"cls.predictions.decoder.weight": state["bert.embeddings.word_embeddings.weight"],
            "cls.predictions.decoder.bias": state["cls.predictions.bias"]}


def _bert_export_config(model):
    c = model.model_config
    classification = c["head"] == "classification"
    config = {
        "architectures": ["BertForSequenceClassification" if classification
                          else "BertForMaskedLM"],
        "model_type": "bert", "vocab_size": c["vocabulary_size"], "hidden_size": c["hidden_dim"],
        "num_hidden_layers": c["num_layers"], "num_attention_heads": c["num_heads"],
        "intermediate_size": c["intermediate_dim"], "hidden_act": "gelu",
        "hidden_dropout_prob": c["dropout"], "attention_probs_dropout_prob": c["dropout"],
        "max_position_embeddings": c["max_sequence_length"], "type_vocab_size": c["num_segments"],
        "layer_norm_eps": c["layer_norm_epsilon"], "pad_token_id": 0,
        "position_embedding_type": "absolute", "tie_word_embeddings": True,
    }
    if classification:
        n = c["num_classes"]
        names = model.metadata.get("class_names") or [f"LABEL_{i}" for i in range(n)]
        config["id2label"] = {str(i): str(name) for i, name in enumerate(names)}
        config["label2id"] = {str(name): i for i, name in enumerate(names)}
    return config


def _bert_metadata(checkpoint, model):
    out = _tokenizer_metadata(checkpoint)
    labels = (checkpoint.config or {}).get("id2label")
    if labels and model.model_config["head"] == "classification":
        names = [labels[str(i)] if str(i) in labels else labels.get(i)
                 for i in range(len(labels))]
        if len(names) == model.model_config["num_classes"]:
            out["class_names"] = names
    return out


def _is_bert(checkpoint):
    if checkpoint.config:
        return checkpoint.config.get("model_type") == "bert"
    state = checkpoint.state
    return any(k.endswith("embeddings.token_type_embeddings.weight") for k in state) and any(
        ".attention.self.query.weight" in k for k in state)


register_converter(Converter(
    name="transformers.bert", layout="transformers",
    models=("bert_base", "bert_tiny", "bert_tiny_mlm"),
    describe="Hugging Face BERT (BertForSequenceClassification or BertForMaskedLM)",
    detect=_is_bert, arguments=_bert_arguments, ports=_bert_ports,
    # The MLM decoder is tied to the word embeddings (listed again by .pth state
    # dicts); BertForPreTraining's pooler and next-sentence head have no place
    # in the masked-LM model; position_ids are buffers of older versions.
    # A classification model from a pre-training checkpoint drops its MLM head.
    ignored=("cls.predictions.*", "cls.seq_relationship.*", "bert.pooler.*",
             "*.position_ids", "*.token_type_ids"),
    extras=_bert_extras, metadata=_bert_metadata, export_config=_bert_export_config,
))


# === GPT-2 ===
def _gpt2_arguments(checkpoint):
    state, config = checkpoint.state, checkpoint.config or {}
    p = _prefix(state, "transformer.")
    out = {"activation": "gelu_tanh", "norm_first": True, "position_encoding": "learned",
           "tie_embeddings": True,
           **_sizes(state, words=f"{p}wte.weight", positions=f"{p}wpe.weight", layers=f"{p}h.",
                    ff=f"{p}h.0.mlp.c_fc.weight", ff_out_axis=1)}  # Conv1D: (in, out)
    if config:
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if config.get(flag):
                raise WeightsError(
                    f"Received a GPT-2 config.json with {flag}=True; kzoo's transformer_lm "
                    "scales attention by 1/sqrt(head_dim) only, so pick a checkpoint without it."
                )
        if config.get("scale_attn_weights", True) is False:
            raise WeightsError(
                "Received a GPT-2 config.json with scale_attn_weights=False; kzoo's "
                "transformer_lm scales attention by 1/sqrt(head_dim), so pick a checkpoint "
                "that does."
            )
        out["activation"] = _activation(config, "activation_function", "GPT-2")
        # Read as BERT's are on purpose: each family's config.json has its own names and defaults.
        out["num_heads"] = int(config.get("n_head", 12))
        out["layer_norm_epsilon"] = float(config.get("layer_norm_epsilon", 1e-5))
        out["dropout"] = float(config.get("resid_pdrop", 0.1))
    return out


def _gpt2_ports(model, checkpoint):
    p = _prefix(checkpoint.state, "transformer.")
    out = _token_and_positions(model.get_layer("token_embedding"), f"{p}wte.weight",
                               f"{p}wpe.weight")
    for i in range(model.model_config["num_layers"]):
        block, key = model.get_layer(f"decoder_block_{i}"), f"{p}h.{i}"
        out += ports.layer_norm(block.self_attention_norm, f"{key}.ln_1")
        out += _fused_conv1d_attention(block.self_attention, f"{key}.attn")
        out += ports.layer_norm(block.ff_norm, f"{key}.ln_2")
        out += _conv1d(block.ff_dense_1, f"{key}.mlp.c_fc")
        out += _conv1d(block.ff_dense_2, f"{key}.mlp.c_proj")
    out += ports.layer_norm(model.get_layer("final_norm"), f"{p}ln_f")
    return out


def _gpt2_extras(model, state):
    """GPT2LMHeadModel lists the tied `lm_head.weight` in its state dict."""
    return {"lm_head.weight": state["transformer.wte.weight"]}


def _gpt2_check(model):
    c = model.model_config
    if not (c["norm_first"] and c["tie_embeddings"] and c["position_encoding"] == "learned"):
        raise WeightsError(
            f"Received a transformer_lm with norm_first={c['norm_first']}, tie_embeddings="
            f"{c['tie_embeddings']}, position_encoding={c['position_encoding']!r}; the GPT-2 "
            "layout needs pre-norm, tied embeddings and learned positions, so build it so."
        )


def _gpt2_export_config(model):
    _gpt2_check(model)
    c = model.model_config
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": c["vocabulary_size"], "n_positions": c["max_sequence_length"],
        "n_embd": c["hidden_dim"],
        "n_layer": c["num_layers"], "n_head": c["num_heads"], "n_inner": c["intermediate_dim"],
        "activation_function": _hf_activation(c["activation"]),
        "resid_pdrop": c["dropout"], "embd_pdrop": c["dropout"], "attn_pdrop": c["dropout"],
        "layer_norm_epsilon": c["layer_norm_epsilon"], "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": c["vocabulary_size"] - 1, "eos_token_id": c["vocabulary_size"] - 1,
    }


def _gpt2_ports_checked(model, checkpoint):
    _gpt2_check(model)
    return _gpt2_ports(model, checkpoint)


def _is_gpt2(checkpoint):
    if checkpoint.config:
        return checkpoint.config.get("model_type") == "gpt2"
    return any(k.endswith("h.0.attn.c_attn.weight") for k in checkpoint.state)


register_converter(Converter(
    name="transformers.gpt2", layout="transformers", models=("transformer_lm",),
    describe="Hugging Face GPT-2 (GPT2LMHeadModel)",
    detect=_is_gpt2, arguments=_gpt2_arguments, ports=_gpt2_ports_checked,
    # lm_head is tied to wte; attn.bias / attn.masked_bias are the causal-mask
    # buffers older versions saved.
    ignored=("lm_head.weight", "*.attn.bias", "*.attn.masked_bias"),
    extras=_gpt2_extras, metadata=lambda checkpoint, model: _tokenizer_metadata(checkpoint),
    export_config=_gpt2_export_config,
))


# === OpenAI's CLIP ===
def _clip_arguments(checkpoint):
    from kzoo.models.clip import OPENAI_TEXT, OPENAI_VISION

    config = checkpoint.config
    if not config:
        raise WeightsError(
            f"Received {checkpoint.describe()}, CLIP weights without a config.json; the tower "
            "sizes come from it, so pass the save_pretrained folder or hf:// id."
        )
    text, vision = config.get("text_config", {}), config.get("vision_config", {})
    for part, where in ((text, "text"), (vision, "vision")):
        width, ff = part.get("hidden_size"), part.get("intermediate_size")
        if where == "text" and width and ff and ff != 4 * width:
            raise WeightsError(
                f"Received a CLIP text tower of width {width} with intermediate_size={ff}; "
                "kzoo's text blocks are 4 times as wide, so pick a checkpoint with "
                f"intermediate_size={4 * width}."
            )
    vocab = int(text.get("vocab_size", 49408))
    end = int(text.get("eos_token_id", vocab - 1))
    if end == 2:  # legacy configs: transformers pools at argmax(ids), the largest id
        end = vocab - 1
    epsilon = float(text.get("layer_norm_eps", 1e-5))
    size = int(vision.get("image_size", 224))
    return {
        "image_encoder": "vit_base",
        "image_encoder_kwargs": {
            **OPENAI_VISION,
            "input_shape": (size, size, int(vision.get("num_channels", 3))),
            "patch_size": int(vision.get("patch_size", 32)),
            "hidden_dim": int(vision.get("hidden_size", 768)),
            "num_heads": int(vision.get("num_attention_heads", 12)),
            "num_layers": int(vision.get("num_hidden_layers", 12)),
            "intermediate_dim": int(vision.get("intermediate_size", 3072)),
            "activation": _activation(vision, "hidden_act", "CLIP vision"),
            "layer_norm_epsilon": float(vision.get("layer_norm_eps", 1e-5)),
        },
        **OPENAI_TEXT,
        "vocabulary_size": vocab,
        "max_sequence_length": int(text.get("max_position_embeddings", 77)),
        "text_hidden_dim": int(text.get("hidden_size", 512)),
        "num_text_heads": int(text.get("num_attention_heads", 8)),
        "num_text_layers": int(text.get("num_hidden_layers", 12)),
        "embedding_dim": int(config.get("projection_dim", 512)),
        "text_activation": _activation(text, "hidden_act", "CLIP text"),
        "end_id": end,
        "text_layer_norm_epsilon": epsilon,
        "text_norm_epsilon": epsilon,
    }


def _clip_block(block, key):
    a = f"{key}.self_attn"
    return (_linear_attention(block.self_attention, f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj",
                             f"{a}.out_proj")
            + ports.layer_norm(block.self_attention_norm, f"{key}.layer_norm1")
            + ports.dense(block.ff_dense_1, f"{key}.mlp.fc1")
            + ports.dense(block.ff_dense_2, f"{key}.mlp.fc2")
            + ports.layer_norm(block.ff_norm, f"{key}.layer_norm2"))


def _clip_ports(model, checkpoint):
    c = model.model_config
    vision = model.get_layer("image_encoder")
    vc = vision.model_config
    if not (vc.get("pre_norm") and not vc.get("head_bias") and not vc.get("patch_bias")
            and c["text_causal"] and c["text_pooling"] == "end_token"):
        raise WeightsError(
            f"Received a kzoo CLIP model {model.name!r} without OpenAI's layout (pre-norm image "
            "tower without patch or projection biases, causal text pooled at the end token); "
            "create clip_vit_base_patch32, which has it."
        )
    v, t = "vision_model", "text_model"
    out = ports.conv(vision.get_layer("patch_embedding").projection,
                     f"{v}.embeddings.patch_embedding")
    token = vision.get_layer("class_token").token
    out += ports.copy(token, f"{v}.embeddings.class_embedding", source_shape=(token.shape[-1],))
    out += ports.copy(vision.get_layer("position_embedding").embeddings,
                      f"{v}.embeddings.position_embedding.weight")
    out += ports.layer_norm(vision.get_layer("pre_norm"), f"{v}.pre_layrnorm")
    for i in range(vc["num_layers"]):
        out += _clip_block(vision.get_layer(f"encoder_block_{i}"), f"{v}.encoder.layers.{i}")
    out += ports.layer_norm(vision.get_layer("final_norm"), f"{v}.post_layernorm")
    out += ports.dense(vision.get_layer("head"), "visual_projection")
    out += _token_and_positions(model.get_layer("token_embedding"),
                                f"{t}.embeddings.token_embedding.weight",
                                f"{t}.embeddings.position_embedding.weight")
    for i in range(c["num_text_layers"]):
        out += _clip_block(model.get_layer(f"text_block_{i}"), f"{t}.encoder.layers.{i}")
    out += ports.layer_norm(model.get_layer("text_norm"), f"{t}.final_layer_norm")
    out += ports.dense(model.get_layer("text_projection"), "text_projection")
    out += ports.copy(model.get_layer("logit_scale").log_scale, "logit_scale")
    return out


def _clip_export_config(model):
    c = model.model_config
    vc = model.get_layer("image_encoder").model_config
    return {
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": c["embedding_dim"],
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "model_type": "clip_text_model", "vocab_size": c["vocabulary_size"],
            "hidden_size": c["text_hidden_dim"], "intermediate_size": 4 * c["text_hidden_dim"],
            "num_hidden_layers": c["num_text_layers"], "num_attention_heads": c["num_text_heads"],
            "max_position_embeddings": c["max_sequence_length"],
            "hidden_act": _hf_activation(c["text_activation"]),
            "layer_norm_eps": c["text_layer_norm_epsilon"], "projection_dim": c["embedding_dim"],
            "eos_token_id": c["end_id"], "bos_token_id": max(c["end_id"] - 1, 0),
            "pad_token_id": c["end_id"],
        },
        "vision_config": {
            "model_type": "clip_vision_model", "image_size": vc["input_shape"][0],
            "num_channels": vc["input_shape"][2], "patch_size": vc["patch_size"],
            "hidden_size": vc["hidden_dim"], "intermediate_size": vc["intermediate_dim"],
            "num_hidden_layers": vc["num_layers"], "num_attention_heads": vc["num_heads"],
            "hidden_act": _hf_activation(vc["activation"]),
            "layer_norm_eps": vc["layer_norm_epsilon"], "projection_dim": c["embedding_dim"],
        },
    }


def _clip_metadata(checkpoint, model):
    out = _tokenizer_metadata(checkpoint)
    pre = checkpoint.preprocessor
    if pre:
        size = pre.get("crop_size", pre.get("size", 224))
        if isinstance(size, dict):
            size = size.get("height", size.get("shortest_edge", 224))
        resize = pre.get("size", size)
        if isinstance(resize, dict):
            resize = resize.get("shortest_edge", size)
        out["preprocessing"] = {
            "input_size": [int(size), int(size)], "resize": int(resize), "crop": int(size),
            "interpolation": "bicubic", "value_range": [0.0, 1.0],
            "mean": list(pre.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
            "std": list(pre.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
            "data_format": "channels_last",
        }
    return out


register_converter(Converter(
    name="transformers.clip", layout="transformers", models=("clip_vit_base_patch32",),
    describe="Hugging Face CLIP (CLIPModel)",
    detect=lambda c: (c.config or {}).get("model_type") == "clip" or (
        "text_model.embeddings.token_embedding.weight" in c.state),
    arguments=_clip_arguments, ports=_clip_ports,
    ignored=("*.position_ids",), metadata=_clip_metadata, export_config=_clip_export_config,
))
