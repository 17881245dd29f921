"""Argument checks shared by every builder.

Each check raises `ValueError` (or `TypeError`) with one sentence: the value
received, what is expected, and how to fix it.
"""

import numbers


def positive_int(name, value):
    """Return `value` if it is a positive integer, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"Received {name}={value!r}; expected a positive integer, "
            f"so pass e.g. {name}=1 or more."
        )
    return int(value)


def non_negative_int(name, value):
    """Return `value` if it is an integer >= 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            f"Received {name}={value!r}; expected an integer >= 0."
        )
    return int(value)


def image_size_for_two_stride2_stages(name, value):
    """Return `value` if it is a positive multiple of 4 (two stride-2 stages)."""
    value = positive_int(name, value)
    if value % 4:
        raise ValueError(
            f"Received {name}={value!r}; expected a multiple of 4 (two stride-2 "
            "stages), so resize or pad the images to e.g. 16, 28 or 32."
        )
    return value


def square_image(name, value, *, multiple_of=1, channels=None):
    """Return `(size, channels)` of a square image shape `(size, size, channels)`.

    Args:
        name: str. The argument's name, for messages.
        value: the shape as given.
        multiple_of: int. The side must be a multiple of it. Defaults to 1.
        channels: tuple of int or None. The allowed channel counts; None
            allows any. Defaults to None.
    """
    height, width, depth = shape(name, value, ranks=(3,))
    if height is None or height != width or height % multiple_of:
        multiple = f" with a side that is a multiple of {multiple_of}" if multiple_of > 1 else ""
        raise ValueError(
            f"Received {name}={tuple(value)!r}; expected a square (size, size, channels) "
            f"image{multiple}, so resize or pad the images, e.g. {name}=(16, 16, 1)."
        )
    if depth is None or (channels is not None and depth not in channels):
        raise ValueError(
            f"Received {name}={tuple(value)!r}; expected {channels or 'a known number of'} "
            f"channels last, so convert the images, e.g. {name}=({height}, {height}, 1)."
        )
    return height, depth


def fraction(name, value, *, inclusive_one=False):
    """Return `value` if it lies in [0, 1) (or [0, 1]), else raise."""
    upper_ok = value <= 1 if inclusive_one else value < 1
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not (
        0 <= value and upper_ok
    ):
        interval = "[0, 1]" if inclusive_one else "[0, 1)"
        raise ValueError(
            f"Received {name}={value!r}; expected a number in {interval}, "
            f"such as {name}=0.1."
        )
    return float(value)


def choice(name, value, choices):
    """Return `value` if it is one of `choices`, else raise."""
    if value not in choices:
        raise ValueError(
            f"Received {name}={value!r}; expected one of {list(choices)}."
        )
    return value


def int_sequence(name, value, *, allow_empty=False):
    """Return `value` as a tuple of positive ints, else raise."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        items = None
    if (
        items is None
        or (not items and not allow_empty)
        or any(
            isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1
            for v in items
        )
    ):
        raise ValueError(
            f"Received {name}={value!r}; expected a "
            f"{'' if allow_empty else 'non-empty '}sequence of positive "
            f"integers, such as {name}=(64, 64)."
        )
    return tuple(int(v) for v in items)


def shape(name, value, ranks):
    """Return `value` as a tuple of positive ints whose length is in `ranks`.

    `None` entries are allowed (variable-length axes).
    """
    try:
        items = tuple(value)
    except TypeError:
        items = None
    ok = items is not None and len(items) in ranks and all(
        v is None
        or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1)
        for v in items
    )
    if not ok:
        wanted = " or ".join(str(r) for r in sorted(ranks))
        raise ValueError(
            f"Received {name}={value!r}; expected a tuple of {wanted} positive "
            f"integers (batch axis excluded), such as {name}="
            f"{(32,) * min(ranks)}."
        )
    return tuple(None if v is None else int(v) for v in items)


def exactly_one(names_values):
    """Raise unless exactly one of the `(name, value)` pairs is not None."""
    given = [n for n, v in names_values if v is not None]
    names = " or ".join(n for n, _ in names_values)
    if len(given) != 1:
        raise ValueError(
            f"Received {given or 'neither'} set; expected exactly one of "
            f"{names}, so pass one of them."
        )


def heads_divide(width_name, width, heads_name, heads, example):
    """Refuse an attention width that `heads` does not divide into equal heads.

    Args:
        width_name: str. The width's argument name, such as `"hidden_dim"`.
        width: int. Its value.
        heads_name: str. The heads' argument name, such as `"num_heads"`.
        heads: int. Its value.
        example: str. Ends the error sentence, such as `"768 with 12 heads"`.

    Raises:
        ValueError: `heads` does not divide `width`.

    Example:

    >>> from kzoo import validation
    >>> validation.heads_divide("hidden_dim", 10, "num_heads", 4, "768 with 12 heads")
    Traceback (most recent call last):
    ValueError: Received hidden_dim=10 and num_heads=4; expected hidden_dim divisible by num_heads, such as 768 with 12 heads.
    """
    if width % heads:
        raise ValueError(
            f"Received {width_name}={width} and {heads_name}={heads}; expected {width_name} "
            f"divisible by {heads_name}, such as {example}."
        )
