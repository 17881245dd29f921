"""Converters for vision checkpoints: torchvision and timm CNNs, timm and HF ViTs."""

# Every `register_converter(Converter(...))` below is one explicit record, alike on purpose
# (as timm's `default_cfgs`): a family's converter reads whole in one place.

from kzoo.weights import ports
from kzoo.weights.core import Converter, register_converter
from kzoo.weights.table import imagenet_classes

#: torchvision's ImageNet evaluation transform (`ImageClassification`) defaults.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_preprocessing(crop=224, resize=256, interpolation="bilinear",
                           mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """A preprocessing spec: resize the shorter side, centre-crop, scale to [0, 1], normalise."""
    return {
        "input_size": [crop, crop],
        "resize": resize,
        "crop": crop,
        "interpolation": interpolation,
        "value_range": [0.0, 1.0],
        "mean": list(mean),
        "std": list(std),
        "data_format": "channels_last",
    }


def _image_metadata(num_classes, preprocessing):
    out = {"preprocessing": preprocessing}
    if num_classes == 1000:
        out["class_names"] = imagenet_classes()
    return out


def _head_classes(checkpoint, key):
    w = checkpoint.state.get(key)
    return {} if w is None else {"num_classes": int(w.shape[0])}


def _layer(model, name):
    return model.get_layer(name)


def _conv_bn(model, kzoo_name, conv_key, bn_key):
    return (ports.conv(_layer(model, f"{kzoo_name}_conv"), conv_key)
            + ports.batch_norm(_layer(model, f"{kzoo_name}_bn"), bn_key))


# === ResNet (torchvision; timm's ResNets use the same keys) ===
def _resnet_ports(model, checkpoint):
    config = model.model_config
    bottleneck = config["block"] == "bottleneck"
    out = _conv_bn(model, "stem", "conv1", "bn1")
    for i, blocks in enumerate(config["stage_blocks"], start=1):
        for j in range(1, blocks + 1):
            name, key = f"stage{i}_block{j}", f"layer{i}.{j - 1}"
            for n in range(1, 4 if bottleneck else 3):
                out += _conv_bn(model, f"{name}_{n}", f"{key}.conv{n}", f"{key}.bn{n}")
            if f"{name}_proj_conv" in [layer.name for layer in model.layers]:
                out += _conv_bn(model, f"{name}_proj", f"{key}.downsample.0", f"{key}.downsample.1")
    out += ports.dense(_layer(model, "head"), "fc", head=True)
    return out


register_converter(Converter(
    name="torchvision.resnet",
    layout="torchvision",
    aliases=("timm",),
    models=("resnet18", "resnet34", "resnet50"),
    describe="torchvision/timm ResNet",
    detect=lambda c: "layer1.0.conv1.weight" in c.state and "conv1.weight" in c.state,
    arguments=lambda c: {**_head_classes(c, "fc.weight"),
                         **({"width": int(c.state["conv1.weight"].shape[0])}
                            if "conv1.weight" in c.state else {})},
    ports=_resnet_ports,
    ignored=("*.num_batches_tracked",),
    extras=ports.batch_norm_counters,
    metadata=lambda c, m: _image_metadata(m.model_config["num_classes"], imagenet_preprocessing()),
))


def _flattened_dense(model, layer_name, key, pooled, *, head=False):
    """A Linear after torch's flatten of (C, H, W) features into kzoo's flatten of (H, W, C)."""
    layer = _layer(model, layer_name)
    channels = layer.kernel.shape[0] // (pooled[0] * pooled[1])
    return ports.dense(layer, key, head=head,
                       input_permutation=((channels, *pooled), (1, 2, 0)))


def _tv_metadata(c, m):
    return _image_metadata(m.model_config["num_classes"], imagenet_preprocessing())


def _tv_classifier_ports(model, names, keys, pooled):
    """torchvision's AlexNet/VGG classifier: a Linear on the flat features, another, the head."""
    return (_flattened_dense(model, names[0], f"classifier.{keys[0]}", pooled)
            + ports.dense(_layer(model, names[1]), f"classifier.{keys[1]}")
            + ports.dense(_layer(model, "head"), "classifier.6", head=True))


def _tv_classifier_arguments(c, hidden):
    """The head's classes and the hidden Linear's width (`classifier.{hidden}`), when there."""
    if f"classifier.{hidden}.weight" not in c.state:
        return {}
    return {**_head_classes(c, "classifier.6.weight"),
            "dense_units": int(c.state[f"classifier.{hidden}.weight"].shape[0])}


# === AlexNet (torchvision) ===
def _alexnet_ports(model, checkpoint):
    out = []
    for index, key in zip(range(1, 6), (0, 3, 6, 8, 10)):
        out += ports.conv(_layer(model, f"conv{index}"), f"features.{key}")
    return out + _tv_classifier_ports(model, ("fc6", "fc7"), (1, 4), (6, 6))


register_converter(Converter(
    name="torchvision.alexnet",
    layout="torchvision",
    models=("alexnet",),
    describe="torchvision AlexNet",
    detect=lambda c: "features.10.weight" in c.state and "classifier.6.weight" in c.state
    and "features.12.weight" not in c.state,
    arguments=lambda c: _tv_classifier_arguments(c, 4),
    ports=_alexnet_ports,
    metadata=_tv_metadata,
))


# === VGG (torchvision) ===
def _vgg_ports(model, checkpoint):
    config = model.model_config
    out, index = [], 0
    step = 3 if config["batch_norm"] else 2  # conv, (bn,) relu per convolution
    for i, convs in enumerate(config["stage_convs"], start=1):
        for j in range(1, convs + 1):
            out += ports.conv(_layer(model, f"block{i}_conv{j}_conv"), f"features.{index}")
            if config["batch_norm"]:
                out += ports.batch_norm(_layer(model, f"block{i}_conv{j}_bn"), f"features.{index + 1}")
            index += step
        index += 1  # the max-pool
    return out + _tv_classifier_ports(model, ("fc1", "fc2"), (0, 3), (7, 7))


register_converter(Converter(
    name="torchvision.vgg",
    layout="torchvision",
    models=("vgg16",),
    describe="torchvision VGG",
    detect=lambda c: "classifier.6.weight" in c.state and "features.0.weight" in c.state
    and "classifier.3.weight" in c.state,
    arguments=lambda c: _tv_classifier_arguments(c, 3),
    ports=_vgg_ports,
    ignored=("*.num_batches_tracked",),
    extras=ports.batch_norm_counters,
    metadata=_tv_metadata,
))


# === EfficientNet (torchvision) ===
def _efficientnet_ports(model, checkpoint):
    names = {layer.name for layer in model.layers}
    out = _conv_bn(model, "stem", "features.0.0", "features.0.1")
    stage = 1
    while any(n.startswith(f"block{stage}a_") for n in names):
        j = 0
        while any(n.startswith(f"block{stage}{chr(ord('a') + j)}_") for n in names):
            name, key = f"block{stage}{chr(ord('a') + j)}", f"features.{stage}.{j}.block"
            part = 0
            if f"{name}_expand_conv" in names:
                out += _conv_bn(model, f"{name}_expand", f"{key}.0.0", f"{key}.0.1")
                part = 1
            out += ports.depthwise_conv(_layer(model, f"{name}_dw_conv"), f"{key}.{part}.0")
            out += ports.batch_norm(_layer(model, f"{name}_dw_bn"), f"{key}.{part}.1")
            out += ports.conv(_layer(model, f"{name}_se_reduce"), f"{key}.{part + 1}.fc1")
            out += ports.conv(_layer(model, f"{name}_se_expand"), f"{key}.{part + 1}.fc2")
            out += _conv_bn(model, f"{name}_project", f"{key}.{part + 2}.0", f"{key}.{part + 2}.1")
            j += 1
        stage += 1
    out += _conv_bn(model, "top", f"features.{stage}.0", f"features.{stage}.1")
    out += ports.dense(_layer(model, "head"), "classifier.1", head=True)
    return out


register_converter(Converter(
    name="torchvision.efficientnet",
    layout="torchvision",
    models=("efficientnet_b[0-3]",),
    describe="torchvision EfficientNet",
    detect=lambda c: "features.1.0.block.0.0.weight" in c.state and "classifier.1.weight" in c.state,
    arguments=lambda c: _head_classes(c, "classifier.1.weight"),
    ports=_efficientnet_ports,
    ignored=("*.num_batches_tracked",),
    extras=ports.batch_norm_counters,
    metadata=_tv_metadata,
))


# === GoogLeNet (torchvision) ===
_INCEPTION_BRANCHES = (("1x1", "branch1"), ("3x3_reduce", "branch2.0"), ("3x3", "branch2.1"),
                       ("5x5_reduce", "branch3.0"), ("5x5", "branch3.1"), ("pool_proj", "branch4.1"))


def _basic(model, name, key):
    return _conv_bn(model, name, f"{key}.conv", f"{key}.bn")


def _googlenet_ports(model, checkpoint):
    from kzoo.models.classics import INCEPTION_MODULES

    out = _basic(model, "conv1", "conv1") + _basic(model, "conv2_reduce", "conv2")
    out += _basic(model, "conv2", "conv3")
    for module in INCEPTION_MODULES:
        for suffix, key in _INCEPTION_BRANCHES:
            out += _basic(model, f"inception_{module}_{suffix}", f"inception{module}.{key}")
    if model.model_config["aux_heads"]:
        for aux in ("aux1", "aux2"):
            out += _basic(model, f"{aux}_conv", f"{aux}.conv")
            out += _flattened_dense(model, f"{aux}_fc", f"{aux}.fc1", (4, 4))
            out += ports.dense(_layer(model, aux), f"{aux}.fc2", head=True)
    out += ports.dense(_layer(model, "head"), "fc", head=True)
    return out


register_converter(Converter(
    name="torchvision.googlenet",
    layout="torchvision",
    models=("googlenet_torchvision",),
    describe="torchvision GoogLeNet",
    detect=lambda c: "inception3a.branch1.conv.weight" in c.state,
    arguments=lambda c: {**_head_classes(c, "fc.weight"), "aux_heads": "aux1.fc2.weight" in c.state},
    ports=_googlenet_ports,
    ignored=("*.num_batches_tracked",),
    extras=ports.batch_norm_counters,
    metadata=lambda c, m: _image_metadata(
        m.model_config["num_classes"], imagenet_preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3)),
))


# === ViT (timm) ===
def _vit_block_ports(model, index, key, *, names):
    block = _layer(model, f"encoder_block_{index}")
    n = names
    out = ports.layer_norm(block.self_attention_norm, f"{key}.{n['norm1']}")
    out += n["attention"](block.self_attention, key)
    out += ports.layer_norm(block.ff_norm, f"{key}.{n['norm2']}")
    out += ports.dense(block.ff_dense_1, f"{key}.{n['fc1']}")
    out += ports.dense(block.ff_dense_2, f"{key}.{n['fc2']}")
    return out


_TIMM_VIT = {
    "norm1": "norm1", "norm2": "norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
    "attention": lambda layer, key: ports.fused_attention(layer, qkv=f"{key}.attn.qkv",
                                                          output=f"{key}.attn.proj"),
}


def _vit_embedding_ports(model, patch_key, cls_key, pos_key):
    patch = _layer(model, "patch_embedding").projection
    cls = _layer(model, "class_token").token
    pos = _layer(model, "position_embedding").embeddings
    return (ports.conv(patch, patch_key) + ports.copy(cls, cls_key, source_shape=(1, 1, cls.shape[-1]))
            + ports.copy(pos, pos_key, source_shape=(1, *pos.shape)))


def _vit_ports(model, embeddings, block, names, norm, head):
    """A ViT's ports: embeddings, every `block.format(i)`, the final norm, the head."""
    out = _vit_embedding_ports(model, *embeddings)
    for i in range(model.model_config["num_layers"]):
        out += _vit_block_ports(model, i, block.format(i), names=names)
    out += ports.layer_norm(_layer(model, "final_norm"), norm)
    out += ports.dense(_layer(model, "head"), head, head=True)
    return out


def _timm_vit_ports(model, checkpoint):
    return _vit_ports(model, ("patch_embed.proj", "cls_token", "pos_embed"), "blocks.{}",
                      _TIMM_VIT, "norm", "head")


def _timm_vit_arguments(c):
    s = c.state
    if "patch_embed.proj.weight" not in s:
        return {}
    hidden, _, patch, _ = s["patch_embed.proj.weight"].shape
    layers = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    grid = int(round((s["pos_embed"].shape[1] - 1) ** 0.5))
    heads = (c.config or {}).get("num_heads") or {192: 3, 384: 6, 768: 12, 1024: 16}.get(int(hidden))
    args = {"hidden_dim": int(hidden), "patch_size": int(patch), "num_layers": layers,
            "intermediate_dim": int(s["blocks.0.mlp.fc1.weight"].shape[0]),
            "input_shape": (grid * int(patch), grid * int(patch), 3),
            **_head_classes(c, "head.weight")}
    if heads:
        args["num_heads"] = heads
    return args


def _timm_metadata(c, m):
    pre = (c.config or {}).get("pretrained_cfg") or {}
    size = m.model_config["input_shape"][0]
    spec = imagenet_preprocessing(
        crop=size, resize=int(size / pre.get("crop_pct", 0.9)),
        interpolation=pre.get("interpolation", "bicubic"),
        mean=pre.get("mean", (0.5,) * 3), std=pre.get("std", (0.5,) * 3))
    out = _image_metadata(m.model_config["num_classes"], spec)
    names = (c.config or {}).get("label_names")
    if names and len(names) == m.model_config["num_classes"]:
        out["class_names"] = list(names)
    return out


register_converter(Converter(
    name="timm.vit",
    layout="timm",
    models=("vit_tiny", "vit_small", "vit_base"),
    describe="timm ViT",
    detect=lambda c: "blocks.0.attn.qkv.weight" in c.state and "cls_token" in c.state,
    arguments=_timm_vit_arguments,
    ports=_timm_vit_ports,
    metadata=_timm_metadata,
))


# === ViT (Hugging Face transformers, ViTForImageClassification) ===
_HF_VIT = {
    "norm1": "layernorm_before", "norm2": "layernorm_after",
    "fc1": "intermediate.dense", "fc2": "output.dense",
    "attention": lambda layer, key: ports.attention(
        layer, query=f"{key}.attention.attention.query", key=f"{key}.attention.attention.key",
        value=f"{key}.attention.attention.value", output=f"{key}.attention.output.dense"),
}


def _hf_vit_ports(model, checkpoint):
    embeddings = ("vit.embeddings.patch_embeddings.projection", "vit.embeddings.cls_token",
                  "vit.embeddings.position_embeddings")
    return _vit_ports(model, embeddings, "vit.encoder.layer.{}", _HF_VIT, "vit.layernorm",
                      "classifier")


def _hf_vit_arguments(c):
    config = c.config or {}
    s = c.state
    if not config and "vit.embeddings.cls_token" in s:  # a bare state dict: sizes from shapes
        hidden, _, patch, _ = s["vit.embeddings.patch_embeddings.projection.weight"].shape
        grid = int(round((s["vit.embeddings.position_embeddings"].shape[1] - 1) ** 0.5))
        config = {
            "image_size": grid * int(patch), "patch_size": int(patch), "hidden_size": int(hidden),
            "num_hidden_layers": len({k.split(".")[3] for k in s if k.startswith("vit.encoder.layer.")}),
            "intermediate_size": int(s["vit.encoder.layer.0.intermediate.dense.weight"].shape[0]),
        }
    size = config.get("image_size", 224)
    args = {
        "input_shape": (size, size, config.get("num_channels", 3)),
        "patch_size": config.get("patch_size", 16),
        "hidden_dim": config.get("hidden_size", 768),
        **({"num_heads": config["num_attention_heads"]} if "num_attention_heads" in config else {}),
        "num_layers": config.get("num_hidden_layers", 12),
        "intermediate_dim": config.get("intermediate_size", 3072),
        "layer_norm_epsilon": config.get("layer_norm_eps", 1e-12),
    }
    if "classifier.weight" in c.state:
        args["num_classes"] = int(c.state["classifier.weight"].shape[0])
    return args


def _hf_vit_metadata(c, m):
    p = c.preprocessor or {}
    size = p.get("size", {}).get("height", m.model_config["input_shape"][0]) if isinstance(
        p.get("size"), dict) else p.get("size", m.model_config["input_shape"][0])
    spec = imagenet_preprocessing(crop=None, resize=[size, size],
                                  interpolation={2: "bilinear", 3: "bicubic"}.get(
                                      p.get("resample", 2), "bilinear"),
                                  mean=p.get("image_mean", (0.5,) * 3),
                                  std=p.get("image_std", (0.5,) * 3))
    spec["input_size"] = [size, size]
    out = {"preprocessing": spec}
    id2label = (c.config or {}).get("id2label")
    if id2label and len(id2label) == m.model_config["num_classes"]:
        out["class_names"] = [id2label[str(i)] if str(i) in id2label else id2label[i]
                              for i in range(len(id2label))]
    elif m.model_config["num_classes"] == 1000:
        out["class_names"] = imagenet_classes()
    return out


def _hf_vit_config(model):
    c = model.model_config
    return {
        "architectures": ["ViTForImageClassification"],
        "model_type": "vit",
        "image_size": c["input_shape"][0],
        "num_channels": c["input_shape"][2],
        "patch_size": c["patch_size"],
        "hidden_size": c["hidden_dim"],
        "num_attention_heads": c["num_heads"],
        "num_hidden_layers": c["num_layers"],
        "intermediate_size": c["intermediate_dim"],
        "hidden_act": "gelu",
        "layer_norm_eps": c["layer_norm_epsilon"],
        "qkv_bias": True,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "id2label": {str(i): name for i, name in enumerate(
            model.metadata.get("class_names") or [f"LABEL_{i}" for i in range(c["num_classes"])])},
        "label2id": {name: i for i, name in enumerate(
            model.metadata.get("class_names") or [f"LABEL_{i}" for i in range(c["num_classes"])])},
    }


register_converter(Converter(
    name="transformers.vit",
    layout="transformers",
    models=("vit_tiny", "vit_small", "vit_base"),
    describe="transformers ViTForImageClassification",
    detect=lambda c: (c.config or {}).get("model_type") == "vit"
    or "vit.embeddings.cls_token" in c.state,
    arguments=_hf_vit_arguments,
    ports=_hf_vit_ports,
    metadata=_hf_vit_metadata,
    export_config=_hf_vit_config,
))
