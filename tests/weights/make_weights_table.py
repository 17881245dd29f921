"""Write kzoo/weights/assets/weights_table.json from the installed reference metadata.

    python tests/weights/make_weights_table.py     # in the torch env (torchvision, timm, transformers)

Every published figure, URL, license and input spec comes from torchvision's
Weights enums (`meta["_metrics"]`, `transforms()`), timm's pretrained configs
or transformers' image-processor defaults, never typed in by hand.
"""

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from torch_imports import import_torchvision  # noqa: E402

OUT = Path(__file__).parents[2] / "kzoo" / "weights" / "assets" / "weights_table.json"
MEAN_STD_ROUND = 6


def _spec(crop, resize, interpolation, mean, std):
    return {
        "input_size": [crop, crop] if crop else None,
        "resize": resize,
        "crop": crop,
        "interpolation": interpolation,
        "value_range": [0.0, 1.0],
        "mean": [round(float(m), MEAN_STD_ROUND) for m in mean],
        "std": [round(float(s), MEAN_STD_ROUND) for s in std],
        "data_format": "channels_last",
    }


def torchvision_rows(tv, timm):
    from timm.models import get_pretrained_cfg

    m = tv.models
    # (kzoo model, preset, torchvision enum, timm mirror of the same file or None)
    cases = [
        ("resnet18", "imagenet", m.ResNet18_Weights.IMAGENET1K_V1, "resnet18.tv_in1k"),
        ("resnet18", "IMAGENET1K_V1", m.ResNet18_Weights.IMAGENET1K_V1, None),
        ("resnet34", "imagenet", m.ResNet34_Weights.IMAGENET1K_V1, "resnet34.tv_in1k"),
        ("resnet34", "IMAGENET1K_V1", m.ResNet34_Weights.IMAGENET1K_V1, None),
        ("resnet50", "imagenet", m.ResNet50_Weights.IMAGENET1K_V2, "resnet50.tv2_in1k"),
        ("resnet50", "IMAGENET1K_V1", m.ResNet50_Weights.IMAGENET1K_V1, None),
        ("resnet50", "IMAGENET1K_V2", m.ResNet50_Weights.IMAGENET1K_V2, None),
        ("vgg16", "imagenet", m.VGG16_Weights.IMAGENET1K_V1, None),
        ("alexnet", "imagenet", m.AlexNet_Weights.IMAGENET1K_V1, None),
        ("efficientnet_b0", "imagenet", m.EfficientNet_B0_Weights.IMAGENET1K_V1, None),
        ("efficientnet_b1", "imagenet", m.EfficientNet_B1_Weights.IMAGENET1K_V1, None),
        ("efficientnet_b2", "imagenet", m.EfficientNet_B2_Weights.IMAGENET1K_V1, None),
        ("efficientnet_b3", "imagenet", m.EfficientNet_B3_Weights.IMAGENET1K_V1, None),
        ("googlenet_torchvision", "imagenet", m.GoogLeNet_Weights.IMAGENET1K_V1, None),
    ]
    rows = []
    for model, preset, weights, mirror in cases:
        t = weights.transforms()
        crop, resize = t.crop_size[0], t.resize_size[0]
        interpolation = t.interpolation.value
        mean, std = t.mean, t.std
        if model.startswith("googlenet"):
            # torchvision's GoogLeNet weights run with transform_input=True, which turns
            # ImageNet-normalised inputs into (x - 0.5) / 0.5: the net expects that.
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        cfg = get_pretrained_cfg(mirror) if mirror else None
        rows.append({
            "model": model,
            "preset": preset,
            "source": f"hf://{cfg.hf_hub_id}" if cfg else weights.url,
            "library": "torchvision",
            "reference": f"{type(weights).__name__}.{weights.name}",
            "url": weights.url,
            "license": cfg.license if cfg else "not stated in torchvision's metadata",
            "metrics": {f"ImageNet-1K {k}": v for k, v in weights.meta["_metrics"]["ImageNet-1K"].items()},
            "preprocessing": _spec(crop, resize, interpolation, mean, std),
            "labels": "ImageNet-1k (1000)",
        })
    return rows


def timm_rows():
    from timm.models import get_pretrained_cfg

    cases = [
        ("resnet50", "a1_in1k", "resnet50.a1_in1k"),
        ("vit_tiny", "augreg", "vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
        ("vit_small", "augreg", "vit_small_patch16_224.augreg_in21k_ft_in1k"),
        ("vit_base", "augreg", "vit_base_patch16_224.augreg_in21k_ft_in1k"),
        ("vit_base", "imagenet", "vit_base_patch16_224.augreg2_in21k_ft_in1k"),
    ]
    rows = []
    for model, preset, name in cases:
        cfg = get_pretrained_cfg(name)
        crop = cfg.input_size[-1]
        rows.append({
            "model": model,
            "preset": preset,
            "source": f"hf://{cfg.hf_hub_id}",
            "library": "timm",
            "reference": name,
            "url": cfg.url or None,
            "license": cfg.license,
            "metrics": {},  # timm's installed metadata carries no accuracy
            "preprocessing": _spec(crop, math.floor(crop / cfg.crop_pct), cfg.interpolation,
                                   cfg.mean, cfg.std),
            "labels": "ImageNet-1k (1000)",
        })
    return rows


def transformers_rows():
    from transformers import ViTImageProcessor

    p = ViTImageProcessor()
    size = p.size["height"]
    spec = _spec(size, [p.size["height"], p.size["width"]], p.resample.name.lower(),
                 p.image_mean, p.image_std)
    spec["crop"] = None
    return [{
        "model": "vit_base",
        "preset": "google",
        "source": "hf://google/vit-base-patch16-224",
        "library": "transformers",
        "reference": "ViTForImageClassification",
        "url": None,
        "license": "apache-2.0",
        "metrics": {},
        "preprocessing": spec,
        "labels": "ImageNet-1k (1000, id2label of its config.json)",
    }]


def main():
    tv = import_torchvision()
    import timm

    rows = torchvision_rows(tv, timm) + timm_rows() + transformers_rows()
    OUT.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {len(rows)} rows -> {OUT}")


if __name__ == "__main__":
    main()
