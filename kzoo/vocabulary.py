"""One vocabulary of argument names for every kzoo model.

`GLOSSARY` is the glossary of `CONTRIBUTING.md` as data: one name per concept,
chosen after Keras and KerasHub (`input_shape` as in `keras.applications`,
`vocabulary_size`, `sequence_length`, `hidden_dim`, `intermediate_dim`,
`num_layers`, `num_heads`). `CONTRIBUTING.md` shows `glossary_markdown()`
verbatim and `tests/test_vocabulary.py` checks every registered builder's
arguments against it, so the document, the test and the models cannot drift.

Names that an earlier release used stay accepted for one release: a builder
or model class decorated with `renamed_arguments` takes them with a
`DeprecationWarning`, and `ModelConfig.from_config` renames them silently, so
`.keras` files saved with the old names still load.
"""

import dataclasses
import functools
import inspect
import re
import warnings


@dataclasses.dataclass(frozen=True)
class Term:
    """One concept of the glossary and the one argument name for it.

    Attributes:
        concept: str. What the argument means.
        name: str. The argument name every family uses for it.
        qualified: str or None. How a model with several of them (two
            towers, a source and a target) names each, with `<role>` for the
            role, e.g. `"<role>_vocabulary_size"`. None: no qualified form.
        replaces: tuple of str. Names earlier releases used, still accepted
            for one release with a `DeprecationWarning`.
        looks_like: str. A regular expression matching argument names that
            are about this concept: such a name must be `name` or a
            `qualified` form, so a new model cannot invent its own.
    """

    concept: str
    name: str
    qualified: str | None
    replaces: tuple
    looks_like: str

    def allows(self, argument):
        """Whether `argument` is this term's name or one of its qualified forms."""
        if argument == self.name:
            return True
        if self.qualified is None:
            return False
        pattern = re.escape(self.qualified).replace(re.escape("<role>"), "[a-z]+")
        return re.fullmatch(pattern, argument) is not None


GLOSSARY = (
    # === Inputs and heads ===
    Term("shape of one input example, batch axis excluded (an image is "
         "`(height, width, channels)`)", "input_shape", None,
         ("image_shape", "image_size", "channels"),
         r".*shape|image_(size|height|width)|(num_)?channels"),
    Term("classes of a classification head", "num_classes", None, (),
         r".*classes|num_labels"),
    Term("outputs of a regression head", "num_outputs", None, (),
         r"(num_|n_)?outputs|output_(dim|size)"),
    # === Sequences ===
    Term("size of a token vocabulary", "vocabulary_size", "<role>_vocabulary_size",
         ("vocab_size", "source_vocab_size", "target_vocab_size"), r".*vocab.*"),
    Term("longest sequence a model takes (its position table)", "max_sequence_length",
         "<role>_max_sequence_length", ("max_length", "context_length"),
         r"max_.*len.*|context_len.*|.*positions"),
    Term("fixed length of the input sequences (None: any length)", "sequence_length",
         "<role>_sequence_length", ("source_length", "target_length"),
         r"(.*_)?(length|len|seq_len)"),
    # === Widths ===
    Term("width of every token vector of a Transformer (the model width)", "hidden_dim",
         "<role>_hidden_dim", ("d_model", "text_width"),
         r"d_model|(.*_)?(hidden_size|model_dim|hidden_dim)|.*_width"),
    Term("width of a Transformer block's feed-forward layer", "intermediate_dim",
         "<role>_intermediate_dim", ("mlp_dim",),
         r".*(mlp_dim|ff_dim|d_ff|ffn.*|intermediate.*|feed_?forward.*|mlp_ratio)"),
    Term("width of an embedding (tokens, or the joint space of a dual encoder)",
         "embedding_dim", "<role>_embedding_dim", ("embed_dim",),
         r".*embed(ding)?_(dim|size|width)|projection_dim"),
    Term("width of a generative model's latent code", "latent_dim", None, (),
         r".*latent.*|z_dim|noise_dim"),
    # === Depths and heads ===
    Term("blocks (layers) of a stack", "num_layers", "num_<role>_layers", ("text_layers",),
         r".*layers|n_layers?|depth|num_blocks"),
    Term("attention heads", "num_heads", "num_<role>_heads", ("text_heads",),
         r".*heads"),
    # === Regularisation ===
    Term("dropout rate", "dropout", "<role>_dropout", (),
         r".*dropout.*|.*drop_rate"),
)

#: Builder arguments that look like a glossary concept but are not one, and why.
NOT_TERMS = {
    "aux_heads": "GoogLeNet's auxiliary classifiers, not attention heads",
    "noise_shape": "keras.layers.Dropout's own argument, kept so kzoo's Dropout is a drop-in",
    "output_size": "the pooled grid of torch.nn.AdaptiveAvgPool2d, whose name the layer keeps",
}


def term_for(argument):
    """The glossary terms whose concept `argument` looks like (an empty list: none).

    Example:

    >>> from kzoo import vocabulary
    >>> [t.name for t in vocabulary.term_for("n_heads")]
    ['num_heads']
    """
    if argument in NOT_TERMS:
        return []
    return [t for t in GLOSSARY if re.fullmatch(t.looks_like, argument)]


def off_glossary(arguments):
    """`{argument: reason}` for every argument name the glossary does not allow.

    Args:
        arguments: iterable of str. Argument names, e.g. a builder's.

    Example:

    >>> from kzoo import vocabulary
    >>> vocabulary.off_glossary(["input_shape", "num_text_heads", "d_model"])
    {'d_model': "an old name; the glossary's is 'hidden_dim'"}
    """
    old = {name: term for term in GLOSSARY for name in term.replaces}
    found = {}
    for argument in arguments:
        if argument in old:
            found[argument] = f"an old name; the glossary's is {old[argument].name!r}"
            continue
        terms = term_for(argument)
        if terms and not any(t.allows(argument) for t in terms):
            names = " or ".join(repr(t.name) for t in terms)
            found[argument] = f"looks like {names} but is not named after the glossary"
    return found


def glossary_markdown():
    """The glossary as the Markdown table `CONTRIBUTING.md` shows.

    Example:

    >>> from kzoo import vocabulary
    >>> print(vocabulary.glossary_markdown().splitlines()[2])  # doctest: +ELLIPSIS
    | shape of one input example, ... | `input_shape` |  | `image_shape`, `image_size`, `channels` |
    """
    rows = ["| concept | name | qualified form | replaces (until the next release) |",
            "| --- | --- | --- | --- |"]
    for t in GLOSSARY:
        qualified = f"`{t.qualified}`" if t.qualified else ""
        replaces = ", ".join(f"`{n}`" for n in t.replaces)
        rows.append(f"| {t.concept} | `{t.name}` | {qualified} | {replaces} |")
    return "\n".join(rows)


# === Old names, accepted for one release ===
@dataclasses.dataclass(frozen=True)
class SquareImage:
    """The old `image_size` and `channels`: together `input_shape=(size, size, channels)`.

    Attributes:
        size: int. The old default of `image_size`.
        channels: int. The old default of `channels`.
    """

    size: int
    channels: int

    name = "input_shape"
    parts = ("image_size", "channels")

    def combine(self, image_size=None, channels=None):
        size = self.size if image_size is None else image_size
        channels = self.channels if channels is None else channels
        return (size, size, channels)


def renamed_arguments(**renames):
    """Accept old argument names of a model class or builder for one release.

    `renames` maps each old name to its new one (a `SquareImage` for the old
    `image_size` and `channels` pair). Calling the class with an old name
    gives a `DeprecationWarning` and the same model as the new name;
    `create_model`, `ModelConfig.from_config` and `kzoo.registry.check_kwargs`
    read the table from the `renamed_arguments` attribute.

    Example:

    >>> import warnings, kzoo
    >>> from kzoo.models.vit import VisionTransformer
    >>> VisionTransformer.renamed_arguments["mlp_dim"]
    'intermediate_dim'
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     model = kzoo.create_model("vit_tiny", image_shape=(8, 8, 3), patch_size=4,
    ...                               num_layers=1)
    >>> model.model_config["input_shape"]
    (8, 8, 3)
    >>> print(*[w.message for w in caught if w.category is DeprecationWarning])
    Argument image_shape of vit_tiny is renamed input_shape and the old name goes in the
    next release, so pass input_shape=(8, 8, 3) instead.
    """

    def decorator(builder):
        is_class = inspect.isclass(builder)
        function = builder.__init__ if is_class else builder
        table = {**getattr(builder, "renamed_arguments", {}), **renames}
        owner = builder.__name__

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            return function(*args, **rename_arguments(owner, table, kwargs))

        # Keras reads constructor signatures (auto-config); show it the real one.
        wrapper.__signature__ = inspect.signature(function)
        if is_class:
            builder.__init__ = wrapper
            builder.renamed_arguments = table
            if hasattr(builder, "from_config"):
                builder.from_config = _silent_from_config(builder)
            return builder
        wrapper.renamed_arguments = table
        return wrapper

    return decorator


def _silent_from_config(cls_):
    """`cls_.from_config`, renaming old names first without a warning.

    A saved file, not the user's code, holds the old names, so a `.keras`
    file written before a rename loads silently (layers as well as models).
    """
    own = cls_.__dict__.get("from_config")

    def from_config(cls, config):
        config = rename_arguments(cls.__name__, renames_of(cls), config, warn=False)
        if own is not None:
            return own.__func__(cls, config)
        return super(cls_, cls).from_config(config)

    return classmethod(from_config)


def renames_of(builder):
    """The old-to-new name table of a builder (empty if it renamed nothing).

    Example:

    >>> import kzoo
    >>> from kzoo import vocabulary
    >>> vocabulary.renames_of(kzoo.registry.get_entry("bert_tiny").builder)
    {'vocab_size': 'vocabulary_size', 'max_length': 'max_sequence_length'}
    """
    return dict(getattr(builder, "renamed_arguments", {}))


def rename_arguments(owner, renames, kwargs, *, warn=True):
    """Return `kwargs` with every old name in `renames` replaced by its new one.

    Args:
        owner: str. The model the arguments are for, named in messages.
        renames: dict. Old name to new name (or a `SquareImage`).
        kwargs: dict. The arguments as given.
        warn: bool. Give a `DeprecationWarning` per old name (`from_config`
            renames saved files silently). Defaults to True.

    Raises:
        ValueError: an old name and its new one were both given.
    """
    old = [k for k in kwargs if k in renames]
    if not old:
        return dict(kwargs)
    kwargs = dict(kwargs)
    merged = {}
    for key in old:
        new = renames[key]
        target = new if isinstance(new, str) else new.name
        if target in kwargs:
            raise ValueError(
                f"Received both {key}={kwargs[key]!r} and {target}={kwargs[target]!r} for "
                f"{owner}; {key} is the old name of {target}, so pass only {target}."
            )
        value = kwargs.pop(key)
        if isinstance(new, str):
            kwargs[target] = value
            message = (f"Argument {key} of {owner} is renamed {target} and the old name "
                       f"goes in the next release, so pass {target}={value!r} instead.")
        else:
            merged.setdefault(new, {})[key] = value
            message = (f"Argument {key} of {owner} is replaced by input_shape=(image_size, "
                       "image_size, channels) and goes in the next release, so pass "
                       "input_shape instead.")
        if warn:
            warnings.warn(message, DeprecationWarning, stacklevel=3)
    for new, parts in merged.items():
        kwargs[new.name] = new.combine(**parts)
    return kwargs
