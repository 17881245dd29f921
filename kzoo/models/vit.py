"""Vision Transformer (Dosovitskiy et al., 2021): an image as a sequence of patches."""

from typing import Any

import keras

from kzoo import validation
from kzoo.layers import fast
from kzoo.layers.transformer import (
    ClassToken,
    PatchEmbedding,
    PositionEmbedding,
    SequencePooling,
    TransformerEncoderBlock,
)
from kzoo.models.base import ZooModel, head
from kzoo.registry import register_variant
from kzoo.training.search_space import FamilySpace
from kzoo.vocabulary import renamed_arguments

POOLINGS = ("token", "mean")


@keras.saving.register_keras_serializable(package="kzoo")
@renamed_arguments(image_shape="input_shape", mlp_dim="intermediate_dim")
class VisionTransformer(ZooModel):
    """Vision Transformer: patch embedding, class token, pre-norm encoder.

    The image is cut into `patch_size` x `patch_size` patches, each linearly
    embedded (a strided convolution); a learned class token is prepended, a
    learned position embedding added, and `num_layers` pre-norm encoder blocks
    (GELU feed-forward) follow. A final layer norm and a linear head on the
    class token (or the mean of all tokens) give the logits. `vit_base` at
    224x224, patch 16 and 1000 classes has 86,567,656 parameters, as
    published. Images are taken as they come: rescale them beforehand.

    Args:
        input_shape: tuple. `(height, width, channels)`; height and width
            must be divisible by `patch_size`. Defaults to `(224, 224, 3)`.
        patch_size: int. Side of a square patch. Defaults to 16.
        num_classes: int. Classes of the head (logits). Defaults to 1000.
        hidden_dim: int. Token width. Defaults to 768 (ViT-Base).
        num_heads: int. Attention heads; must divide `hidden_dim`. Defaults
            to 12.
        num_layers: int. Encoder blocks. Defaults to 12.
        intermediate_dim: int. Feed-forward width. Defaults to 3072.
        dropout: float. Dropout after embeddings and sublayers. Defaults to 0.
        attention_dropout: float. Dropout on attention weights. Defaults to 0.
        layer_norm_epsilon: float. Layer-norm epsilon. Defaults to 1e-6.
        pooling: str. `"token"` classifies the class token, `"mean"` the mean
            of all tokens. Defaults to `"token"`.
        activation: str. Feed-forward activation, by name (`"quick_gelu"`
            for OpenAI's CLIP). Defaults to `"gelu"`.
        pre_norm: bool. A layer norm on the embeddings before the first block
            (OpenAI's CLIP image tower). Defaults to False.
        patch_bias: bool. Whether the patch projection has a bias. Defaults to
            True.
        head_bias: bool. Whether the head has a bias (CLIP's image projection
            has none). Defaults to True.
        name: str. Model name. Defaults to `"vit"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model("vit_tiny", input_shape=(32, 32, 3),
    ...                           patch_size=8, num_classes=10, num_layers=2)
    >>> model.predict(np.zeros((2, 32, 32, 3)), verbose=0).shape
    (2, 10)
    """

    # Signature shaped like every image builder's on purpose: input_shape first, then its own.
    def __init__(
        self,
        input_shape=(224, 224, 3),
        patch_size=16,
        num_classes=1000,
        hidden_dim=768,
        num_heads=12,
        num_layers=12,
        intermediate_dim=3072,
        dropout=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=1e-6,
        pooling="token",
        activation="gelu",
        pre_norm=False,
        patch_bias=True,
        head_bias=True,
        name="vit",
        **kwargs,
    ):
        input_shape = validation.shape("input_shape", input_shape, ranks=(3,))
        patch_size = validation.positive_int("patch_size", patch_size)
        hidden_dim = validation.positive_int("hidden_dim", hidden_dim)
        num_heads = validation.positive_int("num_heads", num_heads)
        validation.heads_divide("hidden_dim", hidden_dim, "num_heads", num_heads, "768 with 12 heads")
        num_layers = validation.positive_int("num_layers", num_layers)
        validation.choice("pooling", pooling, POOLINGS)
        height, width = input_shape[:2]
        if height is None or width is None or height % patch_size or width % patch_size:
            raise ValueError(
                f"Received input_shape={input_shape} with patch_size={patch_size}; expected "
                "height and width divisible by patch_size, so resize or change patch_size."
            )
        num_patches = (height // patch_size) * (width // patch_size)

        # === Layers and functional graph ===
        images = keras.Input(input_shape, name="images")
        x = PatchEmbedding(
            patch_size, hidden_dim, use_bias=patch_bias, name="patch_embedding"
        )(images)
        x = ClassToken(name="class_token")(x)  # (B, 1 + patches, D)
        x = PositionEmbedding(num_patches + 1, name="position_embedding")(x)
        if pre_norm:
            x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="pre_norm")(x)
        x = fast.Dropout(dropout, name="embedding_dropout")(x)
        for i in range(num_layers):
            x = TransformerEncoderBlock(
                num_heads=num_heads, intermediate_dim=intermediate_dim, dropout=dropout,
                attention_dropout=attention_dropout, activation=activation, norm_first=True,
                layer_norm_epsilon=layer_norm_epsilon, name=f"encoder_block_{i}",
            )(x)
        x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="final_norm")(x)
        x = SequencePooling("first" if pooling == "token" else "mean", name="pool")(x)
        if head_bias:
            outputs = head(x, num_classes=num_classes)
        else:
            outputs = fast.Dense(
                validation.positive_int("num_classes", num_classes), use_bias=False,
                dtype="float32", name="head",
            )(x)
        super().__init__(images, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            input_shape=input_shape, patch_size=patch_size, num_classes=num_classes,
            hidden_dim=hidden_dim, num_heads=num_heads, num_layers=num_layers,
            intermediate_dim=intermediate_dim,
            dropout=dropout, attention_dropout=attention_dropout,
            layer_norm_epsilon=layer_norm_epsilon, pooling=pooling, activation=activation,
            pre_norm=bool(pre_norm), patch_bias=bool(patch_bias), head_bias=bool(head_bias),
        )


# === The tuner's default space (recipes/tune.py) ===
def _searched_kwargs(values, entry):
    # The MLP's width as a multiple of the model width, as in the ViT papers.
    return {"intermediate_dim": values["hidden_dim"] * values.pop("mlp_ratio")}


SEARCH_SPACE = FamilySpace(
    # Small models for small images: patches of 2 or 4 pixels tile 8x8 digits.
    {"patch_size": "2|4", "hidden_dim": "32|64|128", "num_heads": "2|4", "num_layers": "1..4",
     "mlp_ratio": "2|4", "dropout": "0.0..0.3:step=0.1"},
    to_kwargs=_searched_kwargs,
)


# === Registered variants (the widths and depths of the ViT and DeiT papers) ===
_TINY = {"input_shape": (8, 8, 3), "patch_size": 4, "num_classes": 3, "hidden_dim": 8,
         "num_heads": 2, "num_layers": 1, "intermediate_dim": 16}
_COMMON: dict[str, Any] = dict(family="vit", task="classification", tiny=_TINY, recipe="recipes/vit.py",
               search_space=SEARCH_SPACE)

register_variant(
    "vit_tiny", VisionTransformer, summary="ViT-Ti/16: width 192, 3 heads, 12 layers (5.7M).",
    name="vit_tiny", hidden_dim=192, num_heads=3, intermediate_dim=768, **_COMMON,
)
register_variant(
    "vit_small", VisionTransformer, summary="ViT-S/16: width 384, 6 heads, 12 layers (22M).",
    name="vit_small", hidden_dim=384, num_heads=6, intermediate_dim=1536, **_COMMON,
)
register_variant(
    "vit_base", VisionTransformer, summary="ViT-B/16: width 768, 12 heads, 12 layers (86.6M).",
    name="vit_base", hidden_dim=768, num_heads=12, intermediate_dim=3072, **_COMMON,
)
