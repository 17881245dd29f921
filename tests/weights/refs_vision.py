"""Vision reference cases for make_references.py: torchvision, timm, transformers ViT.

Imports torch only inside the builders, so the tests can list the cases
anywhere.
"""

import numpy as np
from make_references import Case, transpose_last_square_kernel


def _tv():
    from torch_imports import import_torchvision

    return import_torchvision()


def _images(size, batch=2):
    return lambda rng: rng.normal(size=(batch, 3, *size)).astype("float32")


def _timm(name, **kwargs):
    def build():
        _tv()
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)

    return build


def _timm_folder(module, folder):
    _tv()
    from timm.models._hub import save_for_hf

    save_for_hf(module, str(folder), safe_serialization=True)


def _swap_query_key(key):
    def wrong(state):
        w = state[key].clone()
        third = w.shape[0] // 3
        state[key] = w[list(range(third, 2 * third)) + list(range(third)) + list(range(2 * third, 3 * third))]
        return state

    return wrong


def _small_vgg():
    tv = _tv()
    import torch

    widths = [8, 8, "M", 8, 8, "M", 8, 8, 8, "M", 16, 16, 16, "M", 16, 16, 16, "M"]
    # vgg16's 2-2-3-3-3 convolutions, narrow; the same modules, so the same keys.
    model = tv.models.vgg.VGG(tv.models.vgg.make_layers(widths), num_classes=5)
    model.classifier = torch.nn.Sequential(
        torch.nn.Linear(16 * 7 * 7, 12), torch.nn.ReLU(True), torch.nn.Dropout(),
        torch.nn.Linear(12, 12), torch.nn.ReLU(True), torch.nn.Dropout(), torch.nn.Linear(12, 5))
    return model


def _small_alexnet():
    tv = _tv()
    import torch

    model = tv.models.AlexNet(num_classes=4)
    convs = [(3, 8, 11, 4, 2), (8, 12, 5, 1, 2), (12, 16, 3, 1, 1), (16, 12, 3, 1, 1),
             (12, 8, 3, 1, 1)]
    for index, (cin, cout, k, s, p) in zip((0, 3, 6, 8, 10), convs):
        model.features[index] = torch.nn.Conv2d(cin, cout, k, s, p)
    model.classifier[1] = torch.nn.Linear(8 * 36, 10)
    model.classifier[4] = torch.nn.Linear(10, 10)
    model.classifier[6] = torch.nn.Linear(10, 4)
    return model


def _hf_vit():
    _tv()  # transformers' ViT imports torchvision
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=96, num_labels=6,
                       id2label={i: f"class_{i}" for i in range(6)},
                       label2id={f"class_{i}": i for i in range(6)})
    return ViTForImageClassification(config)


def _hf_forward(module, x):
    import torch

    with torch.no_grad():
        return module(pixel_values=torch.from_numpy(x)).logits.numpy()


def _hf_folder(module, folder):
    module.save_pretrained(folder)


def _hf_vit_wrong(state):
    key = "vit.encoder.layer.0.attention.attention.query.weight"
    other = "vit.encoder.layer.0.attention.attention.key.weight"
    state[key], state[other] = state[other], state[key]
    return state


def _googlenet(aux):
    def build():
        tv = _tv()
        return tv.models.googlenet(num_classes=7, aux_logits=aux, init_weights=False,
                                   transform_input=False)

    return build


def _resnet(name, **kw):
    return lambda: getattr(_tv().models, name)(**kw)


def _efficientnet(name):
    return lambda: getattr(_tv().models, name)(num_classes=6)


CASES = {
    # torchvision ResNets at odd, non-square sizes (explicit stride-2 padding).
    "tv_resnet18": Case(
        model="resnet18", build=_resnet("resnet18", num_classes=10), inputs=_images((45, 37)),
        kwargs={"input_shape": (45, 37, 3)}, formats=("safetensors", "pth"), keras_file=True,
    ),
    "tv_resnet34": Case(
        model="resnet34", build=_resnet("resnet34", num_classes=10), inputs=_images((33, 40), 1),
        kwargs={"input_shape": (33, 40, 3)},
    ),
    "tv_resnet50": Case(
        model="resnet50", build=_resnet("resnet50", num_classes=10), inputs=_images((35, 32), 1),
        kwargs={"input_shape": (35, 32, 3)},
    ),
    # timm's ResNets share torchvision's keys; resnet18 also as timm's hub folder.
    "timm_resnet18": Case(
        model="resnet18", build=_timm("resnet18", num_classes=10), inputs=_images((32, 32)),
        kwargs={"input_shape": (32, 32, 3)}, formats=("safetensors", "folder"),
        save_folder=_timm_folder, layout="timm",
    ),
    "timm_resnet50": Case(
        model="resnet50", build=_timm("resnet50", num_classes=10), inputs=_images((32, 32), 1),
        kwargs={"input_shape": (32, 32, 3)}, layout="timm",
    ),
    "tv_vgg16": Case(
        model="vgg16", build=_small_vgg, inputs=_images((40, 36), 1),
        kwargs={"input_shape": (40, 36, 3), "filters": (8, 8, 8, 16, 16)},
    ),
    "tv_alexnet": Case(
        model="alexnet", build=_small_alexnet, inputs=_images((67, 70), 2),
        kwargs={"input_shape": (67, 70, 3), "filters": (8, 12, 16, 12, 8)},
    ),
    "tv_efficientnet_b0": Case(
        model="efficientnet_b0", build=_efficientnet("efficientnet_b0"), inputs=_images((33, 35), 1),
        kwargs={"input_shape": (33, 35, 3)}, wrong=transpose_last_square_kernel,
    ),
    "tv_efficientnet_b1": Case(
        model="efficientnet_b1", build=_efficientnet("efficientnet_b1"), inputs=_images((32, 32), 1),
        kwargs={"input_shape": (32, 32, 3)}, wrong=transpose_last_square_kernel, slow=True,
    ),
    "tv_efficientnet_b2": Case(
        model="efficientnet_b2", build=_efficientnet("efficientnet_b2"), inputs=_images((32, 32), 1),
        kwargs={"input_shape": (32, 32, 3)}, wrong=transpose_last_square_kernel, slow=True,
    ),
    "tv_efficientnet_b3": Case(
        model="efficientnet_b3", build=_efficientnet("efficientnet_b3"), inputs=_images((32, 32), 1),
        kwargs={"input_shape": (32, 32, 3)},
        # Randomised B3 is ill-conditioned: torch's own float32 output is 2e-3 from float64.
        tolerance=1e-2,
    ),
    # 200x200 reaches 25x25 maps, where 'same' pools differ from torch's ceil mode.
    "tv_googlenet": Case(
        model="googlenet_torchvision", build=_googlenet(False), inputs=_images((200, 200), 1),
        kwargs={"input_shape": (200, 200, 3)}, keras_file=True,
    ),
    "tv_googlenet_aux": Case(
        model="googlenet_torchvision", build=_googlenet(True), inputs=_images((67, 61), 1),
        kwargs={"input_shape": (67, 61, 3)},
        forward=lambda m, x: np.concatenate([o.detach().numpy() for o in _train_outputs(m, x)], 1),
    ),
    "timm_vit_tiny": Case(
        model="vit_tiny", build=_timm("vit_tiny_patch16_224", img_size=64, num_classes=10),
        inputs=_images((64, 64), 2), kwargs={}, layout="timm", keras_file=True,
        wrong=_swap_query_key("blocks.0.attn.qkv.weight"),
    ),
    "timm_vit_small": Case(
        model="vit_small", build=_timm("vit_small_patch16_224", img_size=32, depth=2, num_classes=10),
        inputs=_images((32, 32), 1), kwargs={"num_heads": 6}, layout="timm",
        wrong=_swap_query_key("blocks.1.attn.qkv.weight"), save_folder=_timm_folder,
        formats=("folder",),
    ),
    "timm_vit_base": Case(
        model="vit_base", build=_timm("vit_base_patch16_224", img_size=32, depth=1, num_classes=10),
        inputs=_images((32, 32), 1), kwargs={"num_heads": 12}, layout="timm",
        wrong=_swap_query_key("blocks.0.attn.qkv.weight"),
    ),
    "hf_vit": Case(
        model="vit_base", build=_hf_vit, inputs=_images((32, 32), 2), forward=_hf_forward,
        kwargs={"num_heads": 4}, formats=("folder", "safetensors"), save_folder=_hf_folder,
        layout="transformers", wrong=_hf_vit_wrong, state_from_folder=True, keras_file=True,
    ),
}


def _train_outputs(module, x):
    """GoogLeNet's main and auxiliary logits (torchvision returns aux only in training)."""
    import torch

    module.aux1.eval(), module.aux2.eval()
    module.training = True  # the flag that makes forward return the aux logits
    try:
        with torch.no_grad():
            out = module(torch.from_numpy(x))
    finally:
        module.training = False
    return [out.logits, out.aux_logits1, out.aux_logits2]  # kzoo's output order
