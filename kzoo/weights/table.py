"""The weights table: the published checkpoints kzoo models load, as data.

The rows live in `assets/weights_table.json` (package data), written by
`python -m kzoo.weights.make_table` from the installed torchvision and timm
metadata, so every published figure comes from the reference library itself.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from pathlib import Path
from typing import Any

_ASSETS = Path(__file__).parent / "assets"


@functools.cache
def _rows():
    # weights_table.json (vision, generated) then weights_table_*.json (text, ...).
    rows = []
    for path in sorted(_ASSETS.glob("weights_table*.json")):
        rows += json.loads(path.read_text())
    return rows


@functools.cache
def imagenet_classes():
    """The 1000 ImageNet-1k class names, in torchvision's order.

    Example:

    >>> from kzoo.weights.table import imagenet_classes
    >>> len(imagenet_classes()), imagenet_classes()[0]
    (1000, 'tench')
    """
    return (_ASSETS / "imagenet_classes.txt").read_text().splitlines()


def list_weights(pattern: str = "*") -> list[dict[str, Any]]:
    """Return the weights table rows whose model matches `pattern`.

    Each row is a dict: `model` (kzoo name), `preset` (the `weights=` name),
    `source` (the SOURCE it reads), `library`, `reference` (the reference's
    name for it), `license`, `metrics` (as published), `preprocessing` and
    `labels`.

    Args:
        pattern: str. A shell-style wildcard on kzoo model names. Defaults to
            `"*"`.

    Example:

    >>> import kzoo
    >>> row = kzoo.weights.list_weights("resnet50")[0]
    >>> row["model"], row["preset"]
    ('resnet50', 'imagenet')
    """
    return [dict(r) for r in _rows() if fnmatch.fnmatchcase(r["model"], pattern)]


def find_preset(model_name: str | None, preset: str) -> dict[str, Any] | None:
    for row in _rows():
        if row["model"] == model_name and row["preset"] == preset:
            return dict(row)
    return None


def presets_for(model_name: str | None) -> list[str]:
    return [r["preset"] for r in _rows() if r["model"] == model_name]


def _input(pre):
    if not pre:
        return "-"
    size = pre.get("input_size")
    text = f"{size[0]}x{size[1]}" if size else "any"
    if pre.get("resize"):
        text += f", resize {pre['resize']}"
    if pre.get("crop"):
        text += f", crop {pre['crop']}"
    if pre.get("interpolation"):
        text += f" {pre['interpolation']}"
    if pre.get("mean") is not None:
        mean = ", ".join(f"{m:g}" for m in pre["mean"])
        std = ", ".join(f"{s:g}" for s in pre["std"])
        text += f"; mean ({mean}), std ({std})"
    if pre.get("value_range"):
        text += f" on [{pre['value_range'][0]:g}, {pre['value_range'][1]:g}]"
    return text


def weights_table_markdown(pattern="*"):
    """The weights table as Markdown (README's "Published weights" section).

    Example:

    >>> import kzoo
    >>> print(kzoo.weights.weights_table_markdown("resnet50").splitlines()[0])
    | model | `weights=` | source | library | license | published metric | input | labels |
    """
    lines = [
        "| model | `weights=` | source | library | license | published metric | input | labels |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in list_weights(pattern):
        metrics = ", ".join(f"{k} {v}" for k, v in (r.get("metrics") or {}).items()) or "-"
        lines.append(
            f"| `{r['model']}` | `{r['preset']}` | `{r['source']}` | {r['library']} "
            f"({r['reference']}) | {r['license']} | {metrics} | {_input(r.get('preprocessing'))} "
            f"| {r.get('labels', '-')} |"
        )
    return "\n".join(lines)
