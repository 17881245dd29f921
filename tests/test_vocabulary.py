"""One vocabulary of argument names: every builder follows the glossary of CONTRIBUTING.md.

The glossary is data (`kzoo.vocabulary.GLOSSARY`); CONTRIBUTING.md shows it
verbatim, and every registered builder's arguments (its signature, its
variant's fixed arguments and its tiny configuration) are checked against it.
Old names stay accepted for one release: they warn, and build the same model.
"""

import re
import warnings
from pathlib import Path

import keras
import pytest

import kzoo
from kzoo import vocabulary
from kzoo.registry import get_entry

ROOT = Path(__file__).resolve().parents[1]
MODELS = kzoo.list_models()


def _arguments(entry):
    """Every argument name a registered model is built with."""
    names = set(entry.defaults) | set(entry.tiny)
    for kwargs in (entry.tiny, entry.fixed):  # a tower's own arguments (CLIP's image tower)
        for key, value in kwargs.items():
            if key.endswith("_kwargs") and isinstance(value, dict):
                names |= set(value)
    return names


# === The glossary ===
@pytest.mark.parametrize("name", MODELS)
def test_builder_arguments_follow_the_glossary(name):
    entry = get_entry(name)
    found = vocabulary.off_glossary(sorted(_arguments(entry)))
    assert not found, f"{name} takes arguments off the glossary (CONTRIBUTING.md): {found}"


def test_tiny_configs_and_fixed_arguments_are_builder_arguments():
    for name in MODELS:
        entry = get_entry(name)
        unknown = (set(entry.tiny) | set(entry.fixed)) - set(entry.defaults)
        assert not unknown, f"{name}: {sorted(unknown)} are not arguments of its builder"


def test_the_glossary_recognises_invented_names():
    invented = ["image_shape", "n_heads", "embed_width", "seq_len", "vocab", "ffn_dim",
                "d_model", "max_len", "num_channels", "mlp_dim", "text_layers", "depth"]
    assert sorted(vocabulary.off_glossary(invented)) == sorted(invented)
    allowed = ["input_shape", "num_heads", "num_encoder_layers", "num_text_heads",
               "target_vocabulary_size", "source_sequence_length", "max_sequence_length",
               "text_hidden_dim", "attention_dropout", "embedding_dim", "aux_heads", "units"]
    assert vocabulary.off_glossary(allowed) == {}


def test_every_glossary_name_is_recognised_as_its_concept():
    names = [t.name for t in vocabulary.GLOSSARY]
    assert len(names) == len(set(names))
    for term in vocabulary.GLOSSARY:
        assert term in vocabulary.term_for(term.name), term.name
        for old in term.replaces:
            assert not term.allows(old), old


def test_contributing_shows_the_glossary():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    assert vocabulary.glossary_markdown() in text, (
        "CONTRIBUTING.md's glossary differs from kzoo.vocabulary.GLOSSARY; paste "
        "kzoo.vocabulary.glossary_markdown() into it"
    )


# === Old names, for one release ===
def _builders_with_renames():
    """One registered model per builder that renamed arguments, with its table."""
    seen, out = set(), []
    for name in MODELS:
        entry = get_entry(name)
        renames = vocabulary.renames_of(entry.builder)
        if renames and entry.builder not in seen:
            seen.add(entry.builder)
            out.append((name, renames))
    return out


RENAMED = _builders_with_renames()


def _with_old_names(renames, kwargs):
    kwargs, old = dict(kwargs), {}
    for key, new in renames.items():
        if isinstance(new, str):
            if new in kwargs:
                old[key] = kwargs.pop(new)
        elif new.name in kwargs:  # a square image shape, as (image_size, channels)
            size, _, channels = kwargs.pop(new.name)
            old.update(image_size=size, channels=channels)
    return {**kwargs, **old}, sorted(old)


def test_every_family_with_old_names_is_covered():
    families = {get_entry(name).builder.__name__ for name, _ in RENAMED}
    assert {"VisionTransformer", "GAN", "DCGAN", "VAE", "ConvVAE", "DDPM", "Transformer",
            "TransformerLM", "BERT", "CLIPDualEncoder", "RecurrentNetwork",
            "Seq2SeqAttention"} <= families


@pytest.mark.parametrize("name, renames", RENAMED, ids=[n for n, _ in RENAMED])
def test_old_names_warn_and_build_the_same_model(name, renames):
    tiny = get_entry(name).tiny
    old_kwargs, old_names = _with_old_names(renames, tiny)
    assert old_names, f"{name}'s tiny config uses none of the renamed arguments"
    keras.utils.set_random_seed(0)
    new = kzoo.create_model(name, **tiny)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras.utils.set_random_seed(0)
        old = kzoo.create_model(name, **old_kwargs)
    deprecations = [str(w.message) for w in caught if w.category is DeprecationWarning]
    for key in old_names:
        said = [m for m in deprecations if f"Argument {key} of {name}" in m]
        assert said, f"no DeprecationWarning names {key}: {deprecations}"
        target = renames[key] if isinstance(renames[key], str) else "input_shape"
        assert target in said[0] and said[0].count(". ") == 0, said[0]
    assert old.get_config() == new.get_config()
    assert old.count_params() == new.count_params()


def test_a_model_class_takes_old_names_too():
    from kzoo.models.vit import VisionTransformer

    with pytest.warns(DeprecationWarning, match="mlp_dim of VisionTransformer is renamed "
                                                "intermediate_dim"):
        model = VisionTransformer(image_shape=(8, 8, 3), patch_size=4, num_classes=2,
                                  hidden_dim=8, num_heads=2, num_layers=1, mlp_dim=16)
    assert model.model_config["input_shape"] == (8, 8, 3)
    assert model.model_config["intermediate_dim"] == 16


def test_an_image_tower_takes_old_names_inside_clip():
    entry = get_entry("clip_dual_encoder")
    tower = dict(entry.tiny["image_encoder_kwargs"])
    old_tower = {**{k: v for k, v in tower.items() if k not in ("input_shape", "intermediate_dim")},
                 "image_shape": tower["input_shape"], "mlp_dim": tower["intermediate_dim"]}
    new = kzoo.create_model("clip_dual_encoder", **entry.tiny)
    with pytest.warns(DeprecationWarning, match="image_shape"):
        old = kzoo.create_model("clip_dual_encoder",
                                **{**entry.tiny, "image_encoder_kwargs": old_tower})
    assert old.get_config() == new.get_config()


@pytest.mark.parametrize("name", ["vit_tiny", "dcgan", "clip_dual_encoder"])
def test_a_config_saved_with_old_names_loads_silently(name):
    """What a `.keras` file written before the renames holds (tests/golden/ has real ones)."""
    entry = get_entry(name)
    model = kzoo.create_model(name, **entry.tiny)
    config = model.get_config()
    renames = vocabulary.renames_of(entry.builder)
    old_config, old_names = _with_old_names(renames, config)
    tower = old_config.get("image_encoder_kwargs")
    if tower is not None:  # CLIP's image tower was saved with the ViT's old names too
        old_config["image_encoder_kwargs"], tower_names = _with_old_names(
            vocabulary.renames_of(get_entry(old_config["image_encoder"]).builder), tower)
        old_names += tower_names
    assert old_names
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = type(model).from_config(old_config)
    assert not [w for w in caught if w.category is DeprecationWarning]
    assert loaded.get_config() == config


def test_an_old_and_a_new_name_together_are_refused_in_one_sentence():
    with pytest.raises(ValueError) as err:
        kzoo.create_model("vit_tiny", image_shape=(8, 8, 3), input_shape=(8, 8, 3))
    message = str(err.value)
    assert re.fullmatch(r"Received both image_shape=\(8, 8, 3\) and input_shape=\(8, 8, 3\) "
                        r"for vit_tiny; image_shape is the old name of input_shape, so pass "
                        r"only input_shape\.", message), message


def test_an_unknown_name_still_fails_in_one_sentence():
    with pytest.raises(ValueError) as err:
        kzoo.create_model("vit_tiny", image_shap=(8, 8, 3))
    message = str(err.value)
    assert message.startswith("Received unknown argument image_shap=(8, 8, 3) for model "
                              "'vit_tiny'; allowed arguments are [")
    assert "'input_shape'" in message and "'image_shape'" not in message
    assert message.endswith("].") and "\n" not in message and message.count(". ") == 0


# === Layers ===
def _kzoo_layer_classes():
    objects = keras.saving.get_custom_objects()
    return {name.split(">", 1)[1]: cls for name, cls in sorted(objects.items())
            if name.startswith("kzoo>") and isinstance(cls, type)
            and issubclass(cls, keras.layers.Layer) and not issubclass(cls, keras.Model)}


LAYERS = _kzoo_layer_classes()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_arguments_follow_the_glossary(name):
    import inspect

    parameters = inspect.signature(LAYERS[name].__init__).parameters
    arguments = [p for p in parameters if p not in ("self", "args", "kwargs")]
    found = vocabulary.off_glossary(arguments)
    assert not found, f"layer {name} takes arguments off the glossary (CONTRIBUTING.md): {found}"


OLD_LAYER_ARGUMENTS = [
    ("PatchEmbedding", {"patch_size": 2, "embed_dim": 4}, {"embedding_dim": 4}),
    ("PositionEmbedding", {"max_length": 6}, {"max_sequence_length": 6}),
    ("TokenAndPositionEmbedding",
     {"vocab_size": 9, "embed_dim": 4, "position_encoding": "learned", "max_length": 6},
     {"vocabulary_size": 9, "embedding_dim": 4, "max_sequence_length": 6}),
]


@pytest.mark.parametrize("name, old, new", OLD_LAYER_ARGUMENTS,
                         ids=[n for n, _, _ in OLD_LAYER_ARGUMENTS])
def test_a_layer_takes_old_names_with_a_warning_and_loads_them_silently(name, old, new):
    cls = LAYERS[name]
    with pytest.warns(DeprecationWarning, match="renamed"):
        layer = cls(**old)
    config = layer.get_config()
    for key, value in new.items():
        assert config[key] == value
    assert not {"embed_dim", "vocab_size", "max_length"} & set(config), config
    saved = {k: v for k, v in config.items() if k not in new}
    saved.update({k: v for k, v in old.items() if k not in config})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = cls.from_config(saved)
    assert not [w for w in caught if w.category is DeprecationWarning]
    assert again.get_config() == config


def test_a_file_whose_layers_hold_old_names_loads_with_the_same_outputs(tmp_path):
    """A user's own model built from kzoo layers and saved before the layer renames.

    kzoo's models rebuild from their own config, but a functional model of
    kzoo layers is rebuilt layer by layer from config.json, which holds the
    old keys.
    """
    import json
    import zipfile

    import numpy as np

    from kzoo.layers.transformer import TokenAndPositionEmbedding

    ids = keras.Input((5,), dtype="int32")
    x = TokenAndPositionEmbedding(vocabulary_size=9, embedding_dim=4, position_encoding="learned",
                                  max_sequence_length=6)(ids)
    model = keras.Model(ids, keras.layers.Dense(3)(x))
    for weight in model.weights:  # no default initial value can hide a lost weight
        weight.assign(np.random.default_rng(1).normal(size=weight.shape))
    path = tmp_path / "new.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    text = entries["config.json"].decode()
    old = (text.replace('"vocabulary_size": ', '"vocab_size": ')
           .replace('"embedding_dim": ', '"embed_dim": ')
           .replace('"max_sequence_length": ', '"max_length": '))
    assert old != text and '"embed_dim"' in json.dumps(json.loads(old))
    entries["config.json"] = old.encode()
    old_path = tmp_path / "old.keras"
    with zipfile.ZipFile(old_path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = kzoo.load_model(old_path)
    assert not [w for w in caught if w.category is DeprecationWarning]
    x = np.random.default_rng(0).integers(0, 9, size=(2, 5)).astype("int32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(model(x)), atol=1e-5)
