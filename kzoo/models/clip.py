"""CLIP (Radford et al., 2021): images and texts embedded in one space.

An image tower (any kzoo image classifier, its head resized to the embedding
width: a ViT or a ResNet) and a text tower (kzoo Transformer encoder blocks)
each end in an L2-normalised embedding. Training pulls matching pairs
together with the symmetric contrastive loss at a learned temperature;
zero-shot classification compares an image with the embeddings of one prompt
per class ("a photo of the digit seven").
"""

import math

import keras
import numpy as np
from keras import ops

from kzoo import registry, validation, vocabulary
from kzoo.layers import fast
from kzoo.layers.transformer import (
    PaddingMask,
    SequencePooling,
    TokenAndPositionEmbedding,
    TransformerEncoderBlock,
)
from kzoo.models.base import ZooModel


def clip_loss(image_embeddings, text_embeddings, logit_scale):
    """Symmetric contrastive (InfoNCE) loss of a batch of matching pairs.

    Row `i` of both embeddings is a matching pair; every other row is a
    negative. The loss averages the cross-entropy of classifying each image
    among the texts and each text among the images.

    Args:
        image_embeddings: `(batch, dim)`, L2-normalised.
        text_embeddings: `(batch, dim)`, L2-normalised.
        logit_scale: scalar. The inverse temperature `exp(t)`.

    Example:

    >>> import numpy as np
    >>> from kzoo.models.clip import clip_loss
    >>> e = np.eye(3, dtype="float32")
    >>> float(clip_loss(e, e, 100.0)) < 1e-6  # perfectly matched pairs
    True
    """
    image_embeddings = ops.cast(image_embeddings, "float32")
    text_embeddings = ops.cast(text_embeddings, "float32")
    logits = logit_scale * ops.matmul(image_embeddings, ops.transpose(text_embeddings))  # (B, B)
    labels = ops.arange(ops.shape(logits)[0])
    per_image = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    per_text = keras.losses.sparse_categorical_crossentropy(
        labels, ops.transpose(logits), from_logits=True
    )
    return (ops.mean(per_image) + ops.mean(per_text)) / 2


@keras.saving.register_keras_serializable(package="kzoo")
class LogitScale(keras.layers.Layer):
    """The learned inverse temperature `exp(t)`, broadcast to `(batch, 1)`.

    `t` starts at `log(1 / 0.07)` and the scale is capped at 100, as in CLIP.
    The layer takes any `(batch, ...)` tensor only for its batch size, so
    that the scale travels with the model's outputs.

    Args:
        initial_temperature: float. Starting temperature. Defaults to 0.07.
        max_scale: float. Cap of the scale. Defaults to 100.
        **kwargs: base `keras.layers.Layer` arguments.

    Example:

    >>> import keras, numpy as np
    >>> from kzoo.models.clip import LogitScale
    >>> scale = LogitScale()(np.zeros((2, 4), "float32"))
    >>> np.round(keras.ops.convert_to_numpy(scale), 2)
    array([[14.29],
           [14.29]], dtype=float32)
    """

    def __init__(self, initial_temperature=0.07, max_scale=100.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_temperature = float(initial_temperature)
        self.max_scale = float(max_scale)

    def build(self, input_shape):
        self.log_scale = self.add_weight(
            name="log_scale", shape=(),
            initializer=keras.initializers.Constant(math.log(1 / self.initial_temperature)),
        )

    def scale(self):
        """The current scale `min(exp(t), max_scale)`, a float32 scalar tensor."""
        return ops.exp(ops.minimum(ops.cast(self.log_scale, "float32"), math.log(self.max_scale)))

    def call(self, inputs):
        return ops.ones((ops.shape(inputs)[0], 1), "float32") * self.scale()

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {
            **super().get_config(),
            "initial_temperature": self.initial_temperature,
            "max_scale": self.max_scale,
        }


@keras.saving.register_keras_serializable(package="kzoo")
class EndTokenPooling(keras.layers.Layer):
    """Takes each sequence's vector at its first `end_id` token (OpenAI CLIP's pooling).

    A sequence without the end token gives its first position.

    Args:
        end_id: int. The end-of-text token id.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, length, features)`.
        token_ids: int `(batch, length)`, the ids the sequence came from.

    Example:

    >>> import numpy as np
    >>> from kzoo.models.clip import EndTokenPooling
    >>> x = np.arange(12, dtype="float32").reshape(2, 3, 2)
    >>> ids = np.array([[5, 9, 9], [9, 4, 4]])
    >>> np.asarray(EndTokenPooling(9)(x, ids)).tolist()
    [[2.0, 3.0], [6.0, 7.0]]
    """

    def __init__(self, end_id, **kwargs):
        super().__init__(**kwargs)
        self.end_id = validation.non_negative_int("end_id", end_id)

    def call(self, inputs, token_ids):
        is_end = ops.cast(ops.equal(ops.cast(token_ids, "int32"), self.end_id), "int32")
        positions = ops.argmax(is_end, axis=1)  # the first end token (ties: first index)
        # A one-hot weighted sum picks the same vector exactly (x * 1 + 0s) and, unlike a
        # gather with a reshaped index, torch.export traces it with a dynamic batch.
        select = ops.one_hot(positions, ops.shape(inputs)[1], dtype=inputs.dtype)  # (B, T)
        return ops.einsum("bt,btd->bd", select, inputs)

    def compute_output_shape(self, inputs_shape, token_ids_shape):
        return (inputs_shape[0], inputs_shape[-1])

    def get_config(self):
        return {**super().get_config(), "end_id": self.end_id}


TEXT_POOLINGS = ("first", "end_token")


@keras.saving.register_keras_serializable(package="kzoo")
@vocabulary.renamed_arguments(
    vocab_size="vocabulary_size", context_length="max_sequence_length",
    text_width="text_hidden_dim", text_heads="num_text_heads", text_layers="num_text_layers",
    embed_dim="embedding_dim",
)
class CLIPDualEncoder(ZooModel):
    """CLIP-style dual encoder trained with the symmetric contrastive loss.

    Inputs are a dict: `"images"` (the image tower's input shape) and
    `"token_ids"` (int `(batch, max_sequence_length)`, `[CLS]` first, 0 is
    padding). Outputs are a dict: `"image_embeddings"` and
    `"text_embeddings"` (L2-normalised, `(batch, embedding_dim)`) and
    `"logit_scale"` (`(batch, 1)`, the learned inverse temperature).

    The image tower is the registered kzoo classifier `image_encoder`, built
    with `image_encoder_kwargs` and `num_classes=embedding_dim`: its head is the
    image projection (a ViT projects its class token, a ResNet its pooled
    features). The text tower embeds tokens and learned positions, runs
    `num_text_layers` pre-norm Transformer encoder blocks, normalises, and
    projects the first token without bias.

    `compile()` needs no loss: the model trains with `clip_loss` on the
    batch (so use batches of several pairs). `zero_shot_logits` and
    `encode_images` / `encode_texts` serve inference.

    Args:
        image_encoder: str. A registered kzoo image classifier, e.g.
            `"vit_tiny"` or `"resnet18"`. Defaults to `"vit_tiny"`.
        image_encoder_kwargs: dict or None. Arguments of the image tower,
            including its `input_shape`. None means `{"input_shape": (32,
            32, 3), "patch_size": 4, "num_layers": 4}`. Defaults to None.
        vocabulary_size: int. Number of token ids. Defaults to 49408 (CLIP's).
        max_sequence_length: int. Tokens per text. Defaults to 77.
        text_hidden_dim: int. Width of the text tower. Defaults to 256.
        num_text_heads: int. Attention heads of the text tower. Defaults to 4.
        num_text_layers: int. Encoder blocks of the text tower. Defaults to 4.
        embedding_dim: int. Width of the shared embedding space. Defaults to
            256.
        dropout: float. Dropout inside the text tower. Defaults to 0.
        text_activation: str. Feed-forward activation of the text blocks, by
            name (`"quick_gelu"` for OpenAI's weights). Defaults to `"gelu"`.
        text_causal: bool. Causal self-attention in the text tower (OpenAI's
            CLIP) instead of bidirectional. Defaults to False.
        text_pooling: str. `"first"` projects the first token (`[CLS]`);
            `"end_token"` the first `end_id` token (OpenAI's CLIP, whose
            causal tower has read the whole text there). Defaults to
            `"first"`.
        end_id: int or None. The end-of-text id, for `text_pooling=
            "end_token"`. Defaults to None.
        pad_id: int or None. The padding id, masked out of text attention;
            None masks nothing (OpenAI's vocabulary has no padding id: its
            causal tower never lets padding after the end token reach it).
            Defaults to 0.
        text_layer_norm_epsilon: float. Layer-norm epsilon of the text
            blocks. Defaults to 1e-5.
        text_norm_epsilon: float. Epsilon of the text tower's final layer
            norm. Defaults to 1e-5 (files saved before this option existed
            used Keras' default 1e-3 there, and still load that way).
        name: str. Model name. Defaults to `"clip_dual_encoder"`.

    Example:

    >>> import numpy as np, kzoo
    >>> model = kzoo.create_model(
    ...     "clip_dual_encoder", vocabulary_size=20, max_sequence_length=6, text_hidden_dim=16,
    ...     num_text_heads=2, num_text_layers=1, embedding_dim=8,
    ...     image_encoder_kwargs={"input_shape": (8, 8, 1), "patch_size": 4,
    ...                           "hidden_dim": 16, "num_heads": 2, "num_layers": 1,
    ...                           "intermediate_dim": 32})
    >>> images = np.random.rand(4, 8, 8, 1).astype("float32")
    >>> prompts = np.array([[1, 5, 6, 0, 0, 0], [1, 5, 7, 0, 0, 0]])
    >>> model.zero_shot_logits(images, prompts).shape
    (4, 2)
    """

    # Argument list parallel to the other transformers' on purpose: one keyword per config key.
    def __init__(
        self,
        image_encoder="vit_tiny",
        image_encoder_kwargs=None,
        vocabulary_size=49408,
        max_sequence_length=77,
        text_hidden_dim=256,
        num_text_heads=4,
        num_text_layers=4,
        embedding_dim=256,
        dropout=0.0,
        text_activation="gelu",
        text_causal=False,
        text_pooling="first",
        end_id=None,
        pad_id=0,
        text_layer_norm_epsilon=1e-5,
        text_norm_epsilon=1e-5,
        name="clip_dual_encoder",
        **kwargs,
    ):
        if image_encoder_kwargs is None:
            image_encoder_kwargs = {"input_shape": (32, 32, 3), "patch_size": 4, "num_layers": 4}
        if not isinstance(image_encoder_kwargs, dict):
            raise TypeError(
                f"Received image_encoder_kwargs={image_encoder_kwargs!r}; expected a dict of "
                "the image tower's arguments, such as {'input_shape': (32, 32, 3)}."
            )
        entry = registry.get_entry(image_encoder)
        image_encoder_kwargs = vocabulary.rename_arguments(
            image_encoder, vocabulary.renames_of(entry.builder), image_encoder_kwargs
        )
        if entry.task != "classification" or "num_classes" in image_encoder_kwargs:
            raise ValueError(
                f"Received image_encoder={image_encoder!r} with kwargs "
                f"{sorted(image_encoder_kwargs)}; expected a kzoo image classifier without "
                "num_classes (embedding_dim sets its head), such as 'vit_tiny' or 'resnet18'."
            )
        vocabulary_size = validation.positive_int("vocabulary_size", vocabulary_size)
        max_sequence_length = validation.positive_int("max_sequence_length", max_sequence_length)
        text_hidden_dim = validation.positive_int("text_hidden_dim", text_hidden_dim)
        num_text_heads = validation.positive_int("num_text_heads", num_text_heads)
        validation.heads_divide("text_hidden_dim", text_hidden_dim, "num_text_heads", num_text_heads,
                           "256 with 4 heads")
        num_text_layers = validation.positive_int("num_text_layers", num_text_layers)
        embedding_dim = validation.positive_int("embedding_dim", embedding_dim)
        dropout = validation.fraction("dropout", dropout)
        validation.choice("text_pooling", text_pooling, TEXT_POOLINGS)
        if text_pooling == "end_token" and end_id is None:
            raise ValueError(
                "Received text_pooling='end_token' with end_id=None; pooling at the end "
                "token needs its id, so pass end_id (49407 in OpenAI's vocabulary)."
            )
        if end_id is not None:
            end_id = validation.non_negative_int("end_id", end_id)
        if pad_id is not None:
            pad_id = validation.non_negative_int("pad_id", pad_id)
        text_causal = bool(text_causal)

        # === Layers and functional graph ===
        registry.check_kwargs(entry, image_encoder_kwargs)
        image_tower = entry.builder(
            **{**entry.fixed, **image_encoder_kwargs, "num_classes": embedding_dim,
               "name": "image_encoder"}
        )
        images = keras.Input(image_tower.input_shape[1:], name="images")
        token_ids = keras.Input((max_sequence_length,), dtype="int32", name="token_ids")

        image_features = image_tower(images)  # (B, E): the tower's head projects
        image_embeddings = keras.layers.UnitNormalization(name="image_embedding")(image_features)

        padding_mask = (
            None if pad_id is None else PaddingMask(pad_id, name="padding_mask")(token_ids)
        )
        x = TokenAndPositionEmbedding(
            vocabulary_size, text_hidden_dim, position_encoding="learned",
            max_sequence_length=max_sequence_length, scale_embeddings=False, name="token_embedding",
        )(token_ids)  # (B, T, W)
        for i in range(num_text_layers):
            x = TransformerEncoderBlock(
                num_text_heads, 4 * text_hidden_dim, dropout=dropout, activation=text_activation,
                norm_first=True, layer_norm_epsilon=text_layer_norm_epsilon,
                name=f"text_block_{i}",
            )(x, padding_mask=padding_mask, use_causal_mask=text_causal)
        x = keras.layers.LayerNormalization(epsilon=text_norm_epsilon, name="text_norm")(x)
        if text_pooling == "first":
            x = SequencePooling("first", name="text_pool")(x)  # (B, W): the [CLS] token
        else:
            x = EndTokenPooling(end_id, name="text_pool")(x, token_ids)  # (B, W)
        x = fast.Dense(embedding_dim, use_bias=False, name="text_projection")(x)
        text_embeddings = keras.layers.UnitNormalization(name="text_embedding")(x)

        logit_scale = LogitScale(name="logit_scale")(image_embeddings)
        outputs = {
            "image_embeddings": image_embeddings,
            "text_embeddings": text_embeddings,
            "logit_scale": logit_scale,
        }
        inputs = {"images": images, "token_ids": token_ids}
        super().__init__(inputs, outputs, name=name, **kwargs)

        # === Config ===
        self._set_config(
            image_encoder=image_encoder, image_encoder_kwargs=dict(image_encoder_kwargs),
            vocabulary_size=vocabulary_size, max_sequence_length=max_sequence_length,
            text_hidden_dim=text_hidden_dim, num_text_heads=num_text_heads,
            num_text_layers=num_text_layers, embedding_dim=embedding_dim, dropout=dropout,
            text_activation=text_activation, text_causal=text_causal, text_pooling=text_pooling,
            end_id=end_id, pad_id=pad_id, text_layer_norm_epsilon=float(text_layer_norm_epsilon),
            text_norm_epsilon=float(text_norm_epsilon),
        )

    @classmethod
    def from_config(cls, config):
        # Before text_norm_epsilon existed, the final text norm had Keras'
        # default epsilon; keep those files computing what they computed.
        config = {"text_norm_epsilon": 1e-3, **config}
        # The image tower's arguments of a file saved before a rename load silently,
        # as the top-level ones do (kzoo.vocabulary).
        tower = config.get("image_encoder_kwargs")
        if isinstance(tower, dict):
            builder = registry.get_entry(config.get("image_encoder", "vit_tiny")).builder
            config["image_encoder_kwargs"] = vocabulary.rename_arguments(
                cls.__name__, vocabulary.renames_of(builder), tower, warn=False
            )
        return super().from_config(config)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The symmetric contrastive loss of the batch (targets are ignored)."""
        scale = y_pred["logit_scale"][0, 0]
        loss = clip_loss(y_pred["image_embeddings"], y_pred["text_embeddings"], scale)
        if self.losses:
            loss = loss + ops.sum(ops.stack([ops.cast(v, "float32") for v in self.losses]))
        return loss

    # === Inference ===
    def encode_images(self, images, batch_size=256):
        """L2-normalised image embeddings, `(n, embedding_dim)` as NumPy."""
        encoder = keras.Model(self.input["images"], self.get_layer("image_embedding").output)
        return np.asarray(encoder.predict(images, batch_size=batch_size, verbose=0))

    def encode_texts(self, token_ids, batch_size=256):
        """L2-normalised text embeddings, `(n, embedding_dim)` as NumPy."""
        encoder = keras.Model(self.input["token_ids"], self.get_layer("text_embedding").output)
        return np.asarray(encoder.predict(token_ids, batch_size=batch_size, verbose=0))

    def zero_shot_logits(self, images, prompt_token_ids):
        """Scaled cosine similarities of images to class prompts, `(n, classes)`.

        `argmax` over the last axis is the zero-shot prediction.

        Args:
            images: array of images, the image tower's input shape.
            prompt_token_ids: int array `(classes, max_sequence_length)`, one
                prompt per class.
        """
        scale = float(ops.convert_to_numpy(self.get_layer("logit_scale").scale()))
        return scale * self.encode_images(images) @ self.encode_texts(prompt_token_ids).T


def clip_inputs(batch_size, rng, *, max_sequence_length=8, vocabulary_size=50):
    """Random images and token ids (`[CLS]` first, then padding), for tests."""
    token_ids = rng.integers(5, vocabulary_size, size=(batch_size, max_sequence_length))
    token_ids = token_ids.astype("int32")
    token_ids[:, 0] = 1
    token_ids[:, -2:] = 0
    images = rng.random((batch_size, 8, 8, 1)).astype("float32")
    return {"images": images, "token_ids": token_ids}


def openai_clip_inputs(batch_size, rng, *, max_sequence_length=8, vocabulary_size=50):
    """Random images and token ids ending in the end token (the last id), for tests."""
    token_ids = rng.integers(0, vocabulary_size - 1, size=(batch_size, max_sequence_length))
    token_ids = token_ids.astype("int32")
    for row, end in enumerate(rng.integers(2, max_sequence_length, size=batch_size)):
        token_ids[row, end:] = vocabulary_size - 1  # the end token, then padding with it
    images = rng.random((batch_size, 8, 8, 3)).astype("float32")
    return {"images": images, "token_ids": token_ids}


# OpenAI's CLIP, laid out so that its published weights load (see
# kzoo.weights): a pre-norm image tower with quick_gelu and no patch or
# projection biases, and a causal text tower pooled at the end token.
OPENAI_VISION = {"pre_norm": True, "patch_bias": False, "head_bias": False,
                 "activation": "quick_gelu", "layer_norm_epsilon": 1e-5}
OPENAI_TEXT = {"text_activation": "quick_gelu", "text_causal": True,
               "text_pooling": "end_token", "pad_id": None}

# === Registered models ===
registry.register_variant(
    "clip_vit_base_patch32", CLIPDualEncoder,
    summary="OpenAI's CLIP ViT-B/32 (openai/clip-vit-base-patch32): 151M parameters.",
    family="multimodal", task="self_supervised", recipe="recipes/clip.py",
    tiny={
        "image_encoder_kwargs": {"input_shape": (8, 8, 3), "patch_size": 4, "hidden_dim": 8,
                                 "num_heads": 2, "num_layers": 1, "intermediate_dim": 16,
                                 **OPENAI_VISION},
        "vocabulary_size": 50, "end_id": 49, "max_sequence_length": 8, "text_hidden_dim": 8,
        "num_text_heads": 2, "num_text_layers": 1, "embedding_dim": 8,
    },
    tiny_inputs=openai_clip_inputs,
    image_encoder="vit_base",
    image_encoder_kwargs={"input_shape": (224, 224, 3), "patch_size": 32, **OPENAI_VISION},
    vocabulary_size=49408, max_sequence_length=77, text_hidden_dim=512, num_text_heads=8,
    num_text_layers=12, embedding_dim=512, end_id=49407, **OPENAI_TEXT,
    name="clip_vit_base_patch32",
)
registry.register_variant(
    "clip_dual_encoder", CLIPDualEncoder,
    summary="CLIP-style dual encoder: a kzoo image tower and a Transformer text tower.",
    family="multimodal", task="self_supervised", recipe="recipes/clip.py",
    tiny={
        "image_encoder": "vit_tiny",
        "image_encoder_kwargs": {"input_shape": (8, 8, 1), "patch_size": 4, "hidden_dim": 8,
                                 "num_heads": 2, "num_layers": 1, "intermediate_dim": 16},
        "vocabulary_size": 50, "max_sequence_length": 8, "text_hidden_dim": 8, "num_text_heads": 2,
        "num_text_layers": 1, "embedding_dim": 8,
    },
    tiny_inputs=clip_inputs,
    name="clip_dual_encoder",
)
