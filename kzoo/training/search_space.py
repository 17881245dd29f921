"""Search spaces: a small syntax for hyperparameters, and the spaces families declare.

A search space is a dict of named hyperparameters (`Param`). A model family
declares its default space beside its registration, as a `FamilySpace` passed
to `kzoo.register_model(..., search_space=...)`; a family that declares none
gets `GENERIC_SPACE` (its `dropout`, when the builder takes one). Every search
adds `TRAINING_SPACE`: learning rate on a log scale, decoupled weight decay,
optimizer and batch size. `kzoo.training.search.search_space` puts them
together for one registered model.

Narrow or widen a space with overrides, on the command line or in a file, in
one small syntax (the same one a `FamilySpace` may be written in):

    learning_rate=1e-4..1e-2:log     a float range sampled on a log scale
    width=32..512:log:step=2         an int range (32, 64, ..., 512)
    dropout=0.0..0.5:step=0.1        a float range on a grid
    optimizer=adam|sgd               a choice
    depth=2                          a fixed value (removes it from the search)

A spec file is either JSON (`{"depth": "1..4", "optimizer": ["adam", "sgd"],
"dropout": 0.1}`: strings in the syntax above, lists for choices, scalars for
fixed values) or YAML-ish lines `name: spec` with `#` comments.

This module imports neither KerasTuner nor the runner, so model modules can
declare their spaces with it.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Callable
from pathlib import Path

#: The optimizers the default space chooses from (any of the runner's can be searched).
OPTIMIZERS = ("adam", "sgd", "rmsprop")


# === Hyperparameter specs ===
@dataclasses.dataclass(frozen=True)
class Param:
    """One hyperparameter of a search space.

    Attributes:
        kind: str. `"int"`, `"float"`, `"choice"` or `"fixed"`.
        low, high: numbers. Bounds of an int or float range (inclusive).
        log: bool. Sample the range on a log scale.
        step: number or None. Grid step of a range (a factor when `log`).
        values: tuple. The options of a choice.
        value: the value of a fixed hyperparameter.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    values: tuple = ()
    value: object = None

    def declare(self, hp, name):
        """Declare this hyperparameter on a `keras_tuner.HyperParameters`."""
        sampling = "log" if self.log else "linear"
        if self.kind == "int":
            return hp.Int(name, int(self.low), int(self.high), step=self.step, sampling=sampling)
        if self.kind == "float":
            return hp.Float(name, float(self.low), float(self.high), step=self.step,
                            sampling=sampling)
        if self.kind == "choice" and set(self.values) == {False, True} and all(
            isinstance(v, bool) for v in self.values
        ):
            # KerasTuner's Choice would store booleans as the ints 0 and 1.
            return hp.Boolean(name)
        if self.kind == "choice":
            return hp.Choice(name, list(self.values))
        return hp.Fixed(name, self.value)

    def describe(self):
        """The spec in override syntax, e.g. `1e-4..1e-2:log`."""
        if self.kind in ("int", "float"):
            text = f"{self.low:g}..{self.high:g}"
            text += ":log" if self.log else ""
            return text + (f":step={self.step:g}" if self.step else "")
        if self.kind == "choice":
            return "|".join(format_value(v) for v in self.values)
        return format_value(self.value)


def Range(low, high, *, log=False, step=None):
    """An int range when both bounds are ints, else a float range."""
    ints = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (low, high))
    return Param("int" if ints else "float", low=low, high=high, log=log, step=step)


def Choice(*values):
    """A choice among `values`."""
    return Param("choice", values=tuple(values))


def parse_param(name, spec):
    """Parse one override into a `Param`.

    Args:
        name: str. The hyperparameter's name (for error messages).
        spec: str, list, dict, scalar or `Param`. `"LOW..HIGH[:log][:step=S]"`,
            `"A|B|C"`, a plain value, a list (a choice), a dict with `min`,
            `max` and optional `log`, `step` (a range) or `values`, or a
            `Param` (returned as it is).

    Example:

    >>> from kzoo.training.search_space import parse_param
    >>> parse_param("lr", "1e-4..1e-2:log").describe()
    '0.0001..0.01:log'
    >>> parse_param("width", "32..256:log:step=2").kind
    'int'
    >>> parse_param("optimizer", "adam|sgd").values
    ('adam', 'sgd')
    >>> parse_param("depth", 2).value
    2
    """
    if isinstance(spec, Param):
        return spec
    if isinstance(spec, dict):
        if "values" in spec:
            return _checked_choice(name, tuple(spec["values"]))
        if not {"min", "max"} <= set(spec):
            raise ValueError(
                f"Received {name}={spec!r}; expected a dict with 'min' and 'max' (and "
                "optional 'log', 'step') or with 'values', such as {'min': 1, 'max': 4}."
            )
        return _checked_range(name, spec["min"], spec["max"], bool(spec.get("log")),
                              spec.get("step"))
    if isinstance(spec, (list, tuple)):
        return _checked_choice(name, tuple(spec))
    if not isinstance(spec, str):
        return Param("fixed", value=spec)
    text = spec.strip()
    if "|" in text:
        return _checked_choice(name, tuple(_parse_value(v) for v in text.split("|")))
    if ".." in text:
        bounds, *options = text.split(":")
        low, _, high = bounds.partition("..")
        log, step = False, None
        for option in options:
            option = option.strip()
            if option == "log":
                log = True
            elif option.startswith("step="):
                step = _parse_value(option[len("step="):])
            else:
                raise ValueError(
                    f"Received {name}={spec!r} with unknown option {option!r}; expected "
                    "LOW..HIGH with optional ':log' and ':step=S', such as 1e-4..1e-2:log."
                )
        return _checked_range(name, _parse_value(low), _parse_value(high), log, step)
    return Param("fixed", value=_parse_value(text))


def _checked_choice(name, values):
    if not values:
        raise ValueError(f"Received {name}=[] ; expected at least one value to choose from.")
    return Choice(*values)


def _checked_range(name, low, high, log, step):
    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (low, high))
    if not numeric or low > high or (log and low <= 0) or (step is not None and step <= 0):
        raise ValueError(
            f"Received {name}={low!r}..{high!r} (log={log}, step={step}); expected numbers "
            "with low <= high, low > 0 on a log scale and step > 0, such as 1e-4..1e-2:log."
        )
    return Range(low, high, log=log, step=step)


def _parse_value(text):
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def format_value(value):
    """A value as spaces and reports show it: floats to three significant digits."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def load_spec(path):
    """Read overrides from a JSON file or YAML-ish `name: spec` lines.

    Returns:
        dict of name to `Param`.

    Example:

    >>> import pathlib, tempfile
    >>> from kzoo.training.search_space import load_spec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "space.txt"
    >>> _ = path.write_text("# narrow the MLP search\\ndepth: 2\\nwidth: 64..256:log:step=2\\n")
    >>> sorted(load_spec(path))
    ['depth', 'width']
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"Received spec file {str(path)!r}, which does not exist; pass the path of a "
            "JSON or 'name: spec' file."
        )
    text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"Received spec file {str(path)!r} that is not valid JSON ({err}); fix the "
                "JSON or use 'name: spec' lines."
            ) from None
        return {name: parse_param(name, spec) for name, spec in raw.items()}
    overrides = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, spec = _split_assignment(line)
        if not sep:
            raise ValueError(
                f"Received line {number} of {str(path)!r}, {line!r}; expected 'name: spec' "
                "such as 'learning_rate: 1e-4..1e-2:log'."
            )
        overrides[name] = parse_param(name, _yamlish(spec))
    return overrides


def parse_overrides(items):
    """Parse `name=spec` strings (the `--space` flag) into a dict of `Param`."""
    overrides = {}
    for item in items or ():
        name, sep, spec = _split_assignment(item)
        if not sep or not name:
            raise ValueError(
                f"Received override {item!r}; expected name=spec such as "
                "'learning_rate=1e-4..1e-2:log' or 'optimizer=adam|sgd'."
            )
        overrides[name] = parse_param(name, spec)
    return overrides


def _split_assignment(text):
    # "name=spec" or "name: spec", whichever separator comes first.
    positions = [(text.find(s), s) for s in ("=", ":") if s in text]
    if not positions:
        return text.strip(), "", ""
    _, sep = min(positions)
    name, _, spec = text.partition(sep)
    return name.strip(), sep, spec.strip()


def _yamlish(spec):
    # YAML-style lists "[adam, sgd]" are choices.
    if spec.startswith("[") and spec.endswith("]"):
        return [_parse_value(v) for v in spec[1:-1].split(",") if v.strip()]
    return spec


# === The spaces families declare ===
@dataclasses.dataclass(frozen=True)
class FamilySpace:
    """The default search space a model family declares beside its registration.

    Pass it as `search_space=` to `kzoo.register_model` or
    `kzoo.register_variant`; the tuner reads it from the registry entry.

    Attributes:
        params: dict. Name to a `Param`, or to a spec in the override syntax
            (`"1..3"`, `"32..512:log:step=2"`, `"relu|gelu"`, a list, a
            value), parsed when the space is made.
        to_kwargs: callable or None. `to_kwargs(values, entry)` pops the
            sampled values that are not builder arguments (say `width` and
            `depth`) from the dict `values` and returns the `create_model`
            kwargs they make (`hidden_units`); the values left that are
            builder arguments pass through unchanged. Without it, a name the
            builder does not take is left out of the space. Defaults to None.

    Example:

    >>> from kzoo.training.search_space import FamilySpace
    >>> space = FamilySpace({"units": "16..128:log:step=2", "bidirectional": "false|true"})
    >>> space.params["units"].describe(), space.params["bidirectional"].values
    ('16..128:log:step=2', (False, True))
    """

    params: dict
    to_kwargs: Callable | None = None

    def __post_init__(self):
        if not isinstance(self.params, dict) or (
            self.to_kwargs is not None and not callable(self.to_kwargs)
        ):
            raise TypeError(
                f"Received FamilySpace(params={self.params!r}, to_kwargs={self.to_kwargs!r}); "
                "expected a dict of name to spec and a function or None, such as "
                "FamilySpace({'dropout': '0.0..0.5:step=0.1'})."
            )
        # Frozen: the parsed specs replace the written ones once, here.
        parsed = {name: parse_param(name, spec) for name, spec in self.params.items()}
        object.__setattr__(self, "params", parsed)

    def params_for(self, entry):
        """The hyperparameters this space searches for registry entry `entry`."""
        return {k: v for k, v in self.params.items() if self.to_kwargs or k in entry.defaults}

    def model_kwargs(self, values, entry):
        """The `create_model` kwargs that sampled model values make for `entry`."""
        values = dict(values)
        kwargs = self.to_kwargs(values, entry) if self.to_kwargs else {}
        kwargs.update({k: v for k, v in values.items() if k in entry.defaults})
        return kwargs


#: The space of a family that declares none: its dropout, if the builder has one.
GENERIC_SPACE = FamilySpace({"dropout": "0.0..0.5:step=0.1"})

#: Hyperparameters every search adds; they set runner flags per trial.
TRAINING_SPACE = {
    # Log scale: the useful rates span two orders of magnitude.
    "learning_rate": Range(1e-4, 1e-2, log=True),
    # Decoupled (AdamW-style) weight decay, for every optimizer.
    "weight_decay": Range(1e-6, 1e-2, log=True),
    "optimizer": Choice(*OPTIMIZERS),
    # Small data: the batch size changes the number of updates per epoch.
    "batch_size": Choice(32, 64, 128),
}
