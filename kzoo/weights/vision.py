"""Converters for vision checkpoints: torchvision and timm CNNs, timm and HF ViTs."""

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
    arguments=lambda c: _head_classes(c, "fc.weight"),
    ports=_resnet_ports,
    ignored=("*.num_batches_tracked",),
    extras=ports.batch_norm_counters,
    metadata=lambda c, m: _image_metadata(m.model_config["num_classes"], imagenet_preprocessing()),
))
