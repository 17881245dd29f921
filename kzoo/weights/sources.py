"""Reading a SOURCE (file, folder, hub id, URL or preset) into a `Checkpoint`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.request
from pathlib import Path

from kzoo.weights.core import Checkpoint, WeightsError

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "preprocessor_config.json",
              "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
              "special_tokens_map.json", "open_clip_config.json")
_HUB_PATTERN = re.compile(r"^hf://([\w.-]+/[\w.-]+)(?:@([\w./-]+))?$")


def cache_dir():
    """The folder where URL checkpoints are cached.

    `$KZOO_CACHE/weights` if `KZOO_CACHE` is set, else
    `$XDG_CACHE_HOME/kzoo/weights` (by default `~/.cache/kzoo/weights`). A
    file is saved under its URL's file name; torchvision's names end in the
    first hex digits of their SHA-256, which is checked as `torch.hub` does.

    Example:

    >>> from kzoo.weights.sources import cache_dir
    >>> cache_dir().name
    'weights'
    """
    root = os.environ.get("KZOO_CACHE")
    if root:
        return Path(root) / "weights"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "kzoo" / "weights"


def _hash_prefix(filename):
    match = re.search(r"-([a-f0-9]{6,})\.", filename)
    return match.group(1) if match else None


def download_url(url):
    """Return the local path of `url`'s file, downloading it into `cache_dir()` once."""
    filename = os.path.basename(url.split("?")[0])
    path = cache_dir() / filename
    if path.exists():
        return path
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("KZOO_OFFLINE") == "1":
        raise WeightsError(
            f"Received weights={url!r}, not in the cache {str(path)!r}, while offline "
            "(HF_HUB_OFFLINE or KZOO_OFFLINE is 1); download it once online or copy it there."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url) as response, tempfile.NamedTemporaryFile(
            dir=path.parent, delete=False
        ) as tmp:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                tmp.write(block)
    except OSError as err:
        raise WeightsError(
            f"Received weights={url!r}, which could not be downloaded ({err}); check the "
            f"network or copy the file to {str(path)!r}."
        ) from None
    prefix = _hash_prefix(filename)
    if prefix and not digest.hexdigest().startswith(prefix):
        os.unlink(tmp.name)
        raise WeightsError(
            f"Received a download of {url!r} whose SHA-256 does not start with {prefix!r}; "
            "the file is corrupt, so try again."
        )
    shutil.move(tmp.name, path)
    return path


def _load_safetensors(path):
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise WeightsError(
            f"Received weights file {str(path)!r}, which safetensors cannot read ({err}); "
            "pass a valid .safetensors file."
        ) from None


def _load_torch(path):
    # Reading a torch pickle needs torch itself, so it lives with the backend code.
    from kzoo.backend.torch_checkpoint import read_state_dict

    return read_state_dict(path)


def read_file(path):
    """Read a `.safetensors` or torch state-dict file into a dict of numpy arrays."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        return _load_torch(path)
    raise WeightsError(
        f"Received weights file {str(path)!r} with suffix {path.suffix!r}; expected "
        ".safetensors, .pth, .pt or .bin, so convert or rename it."
    )


def read_folder(folder, origin):
    """Read a Hugging Face model folder (`config.json` + weights)."""
    folder = Path(folder)
    config = _json(folder / "config.json")
    for name in _WEIGHT_FILES:
        if (folder / name).exists():
            state = read_file(folder / name)
            break
    else:
        raise WeightsError(
            f"Received model folder {str(folder)!r} without {' or '.join(_WEIGHT_FILES)}; "
            "pass a folder written by save_pretrained."
        )
    files = {p.name: str(p) for p in folder.iterdir() if p.is_file() and p.name not in _WEIGHT_FILES}
    return Checkpoint(state=state, config=config, preprocessor=_json(folder / "preprocessor_config.json"),
                      origin=origin, files=files)


def _json(path):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise WeightsError(f"Received {str(path)!r}, which is not valid JSON ({err}); fix or "
                           "replace it.") from None


def hub_folder(hub_id, revision=None):
    """Fetch the files of Hugging Face repo `hub_id` into the hub cache; return the folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError

    try:
        return Path(snapshot_download(hub_id, revision=revision, allow_patterns=list(_HUB_FILES)))
    except (HfHubHTTPError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0].split(". ")[0].rstrip(".") if str(err) else (
            type(err).__name__)
        raise WeightsError(
            f"Received weights='hf://{hub_id}{'@' + revision if revision else ''}', which "
            f"huggingface_hub could not fetch ({reason}); check the id and the network, or "
            "unset HF_HUB_OFFLINE."
        ) from None


def read_checkpoint(source: str | os.PathLike, *, model_name: str | None = None) -> Checkpoint:
    """Read SOURCE into a `Checkpoint` (see `kzoo.weights` for the kinds of SOURCE).

    Args:
        source: str or path. A file, a model folder, `hf://ORG/NAME[@REV]`, a
            URL, or a preset name from the weights table.
        model_name: str or None. The kzoo model, to resolve a preset name.

    Example:

    >>> import numpy as np, tempfile, os
    >>> from safetensors.numpy import save_file
    >>> from kzoo.weights import read_checkpoint
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> save_file({"fc.weight": np.zeros((2, 3), "float32")}, path)
    >>> read_checkpoint(path).state["fc.weight"].shape
    (2, 3)
    """
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise TypeError(
            f"Received weights of type {type(source).__name__}; expected a path, 'hf://ORG/NAME' "
            "or a preset name such as 'imagenet', so pass a string."
        )
    match = _HUB_PATTERN.match(source)
    if match:
        hub_id, revision = match.groups()
        folder = hub_folder(hub_id, revision)
        return read_folder(folder, {"hub_id": hub_id, **({"revision": revision} if revision else {})})
    if source.startswith("hf://"):
        raise WeightsError(
            f"Received weights={source!r}; expected 'hf://ORG/NAME' or 'hf://ORG/NAME@REVISION', "
            "so fix the id."
        )
    if source.startswith(("https://", "http://")):
        return Checkpoint(state=read_file(download_url(source)), origin={"url": source})
    path = Path(source).expanduser()
    if path.is_dir():
        return read_folder(path, {"path": str(path)})
    if path.is_file():
        return Checkpoint(state=read_file(path), origin={"path": str(path)})
    from kzoo.weights import table

    row = table.find_preset(model_name, source)
    if row is not None:
        checkpoint = read_checkpoint(row["source"], model_name=model_name)
        checkpoint.origin = {**checkpoint.origin, "preset": f"{model_name}:{source}",
                             "preset_row": row}
        return checkpoint
    presets = table.presets_for(model_name)
    hint = f"presets for {model_name!r} are {presets}" if presets else (
        "kzoo.weights.list_weights() lists the presets")
    raise WeightsError(
        f"Received weights={source!r}, which is no file, folder, 'hf://' id or URL, nor a preset "
        f"for {model_name!r}; {hint}."
    )
