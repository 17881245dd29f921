"""Write reference checkpoints, inputs and outputs for the weights tests.

    KERAS_BACKEND=torch python tests/weights/make_references.py OUTDIR [--slow] [CASE ...]

(`--slow` adds the cases marked `slow`, which only `pytest -m slow` runs.)

Runs where torch (and torchvision, timm, transformers) are installed. Each
`refs_*.py` module beside this file defines `CASES`, a dict from a case name
to a `Case`: it builds a random-initialised reference model, every parameter
and buffer re-randomised here (default initial values hide epsilon, bias and
norm-placement errors; batch-norm statistics are measured on random inputs,
then perturbed, so that every layer shows in the outputs), and saves it in the case's formats:

- `model.safetensors`, `model.pth` (a state dict for `torch.load(...,
  weights_only=True)`), `folder/` (`save_pretrained` or timm's `save_for_hf`);
- `wrong.safetensors`: the same weights through a deliberately wrong mapping
  (a transposed kernel, swapped q/k), which must not reproduce the outputs;
- `io.npz`: `x` (the kzoo input), `y` (the reference output);
- `model.keras` (cases with `keras_file`): the checkpoint converted by kzoo
  under this backend, for the jax and tensorflow envs to load.

`OUTDIR/manifest.json` lists every case: the kzoo model, its arguments, the
files. The tests (`tests/test_weights_references.py`) read OUTDIR from
`KZOO_REFERENCE_CHECKPOINTS`.

A case module's `Case` (see `Case` below) needs: `model` (kzoo name),
`build()` (the torch module, eval mode), `inputs(rng)` (a numpy input for
the torch module), and optionally `kwargs`, `formats`, `to_kzoo`,
`forward`, `wrong`, `layout`, `save_folder`, `tolerance`.
"""

import dataclasses
import importlib
import json
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
FORMATS = ("safetensors", "pth", "folder")


def _channels_last(x):
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)) if x.ndim == 4 else x


@dataclasses.dataclass
class Case:
    """One reference model and how kzoo must load it.

    Attributes:
        model: str. The kzoo model name.
        build: callable. `build() -> torch.nn.Module`, random-initialised.
        inputs: callable. `inputs(rng) -> np.ndarray` for the torch module.
        kwargs: dict. kzoo `create_model` arguments besides `weights`.
        formats: tuple. Which of `FORMATS` to write.
        to_kzoo: callable. Torch input -> kzoo input (NCHW -> NHWC).
        forward: callable. `forward(module, torch_input) -> np.ndarray`.
        wrong: callable. `wrong(state) -> state` with one deliberate mistake.
        layout: str or None. The `export` layout round-tripped.
        save_folder: callable or None. `save_folder(module, folder)`.
        tolerance: float. Relative tolerance on the outputs.
        slow: bool. Only in slow runs (a heavy model covered small elsewhere).
        state_from_folder: bool. Take the state dict from the saved folder's
            `model.safetensors` (transformers renames modules in memory and
            writes the published names on save).
        keras_file: bool. Also write `model.keras`, converted under torch,
            for the other backends to load.
    """

    model: str
    build: Callable[[], Any]
    inputs: Callable[[Any], np.ndarray]
    kwargs: dict = dataclasses.field(default_factory=dict)
    formats: tuple = ("safetensors",)
    to_kzoo: Callable = _channels_last
    forward: Callable | None = None
    wrong: Callable | None = None
    layout: str | None = "torchvision"
    save_folder: Callable | None = None
    tolerance: float = 1e-4
    slow: bool = False
    state_from_folder: bool = False
    keras_file: bool = False


def case_modules():
    """The `refs_*.py` modules beside this file."""
    sys.path.insert(0, str(HERE))
    return [importlib.import_module(p.stem) for p in sorted(HERE.glob("refs_*.py"))]


def all_cases():
    """Every case of every `refs_*.py` module, by name."""
    cases = {}
    for module in case_modules():
        for name, case in module.CASES.items():
            if name in cases:
                raise ValueError(f"Received a second case named {name!r} in {module.__name__}.")
            cases[name] = case
    return cases


def randomise(module, seed=0):
    """Re-randomise every floating parameter and buffer (variances positive)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in {**dict(module.named_parameters()), **dict(module.named_buffers())}.items():
            if not tensor.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.1)
            elif tensor.ndim <= 1:  # norm scales: around 1, never 1
                tensor.copy_(1 + torch.randn(tensor.shape, generator=g) * 0.2)
            else:
                fan_in = max(1, int(np.prod(tensor.shape[1:])))
                tensor.copy_(torch.randn(tensor.shape, generator=g) * (2.0 / fan_in) ** 0.5)  # He: ReLU nets keep their signal
    return module


def calibrate_batch_norms(module, x, seed=0):
    """Set batch-norm statistics near those of `x`'s activations, then perturb them.

    Random running statistics far from the true ones shrink the signal layer
    by layer (a randomised EfficientNet's outputs barely depend on its
    input), so a wrong early mapping would go unseen. Measured statistics,
    each perturbed at random, keep every layer's contribution visible.
    """
    import torch

    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return module
    g = torch.Generator().manual_seed(seed + 1)
    module.eval()

    # In one eval-mode pass, each norm takes its statistics from its own input just
    # before it runs, behind the already perturbed norms upstream (a perturbation
    # the next norms never saw would compound over the depth).
    def measure(m, inputs):
        x = inputs[0]
        axes = [0, *range(2, x.ndim)]
        mean, var = x.mean(axes), x.var(axes)
        # Nearly constant channels would get huge gains that amplify round-off.
        var = torch.maximum(var, 0.1 * var.mean())
        std = var.sqrt()
        m.running_mean.copy_(mean + 0.2 * std * torch.randn(std.shape, generator=g))
        m.running_var.copy_(var * (0.7 + 0.6 * torch.rand(std.shape, generator=g)))

    hooks = [m.register_forward_pre_hook(measure) for m in norms]
    try:
        with torch.no_grad():
            module(torch.from_numpy(x))
    finally:
        for h in hooks:
            h.remove()
    return module


def transpose_first_square_kernel(state):
    """The wrong mapping of a conv converter: kh and kw swapped in one kernel."""
    for key, value in state.items():
        if value.ndim == 4 and value.shape[2] == value.shape[3] > 1:
            state[key] = value.transpose(2, 3).contiguous()
            return state
    raise ValueError("no square kernel to transpose")


def transpose_last_square_kernel(state):
    """`transpose_first_square_kernel` nearest the output (deep nets damp early changes)."""
    for key in reversed(list(state)):
        value = state[key]
        if value.ndim == 4 and value.shape[2] == value.shape[3] > 1:
            state[key] = value.transpose(2, 3).contiguous()
            return state
    raise ValueError("no square kernel to transpose")


def default_forward(module, x):
    import torch

    with torch.no_grad():
        out = module(torch.from_numpy(x))
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "logits"):
        out = out.logits
    return out.detach().numpy()


def write_case(name, case, outdir):
    """Build, randomise and save one case; return its manifest entry."""
    import torch
    from safetensors.torch import save_file

    folder = Path(outdir) / name
    folder.mkdir(parents=True, exist_ok=True)
    module = randomise(case.build().eval(), seed=zlib.crc32(name.encode()))
    rng = np.random.default_rng(0)
    x = case.inputs(rng)
    calibration = np.concatenate([case.inputs(rng) for _ in range(8)])
    calibrate_batch_norms(module, calibration, seed=zlib.crc32(name.encode()))
    y = (case.forward or default_forward)(module, x)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    if "folder" in case.formats:
        case.save_folder(module, folder / "folder")
    if case.state_from_folder:
        from safetensors.torch import load_file

        state = load_file(str(folder / "folder" / "model.safetensors"))
    entry = {"model": case.model, "kwargs": case.kwargs, "layout": case.layout,
             "tolerance": case.tolerance, "slow": case.slow, "sources": {}}
    if "safetensors" in case.formats:
        save_file(state, str(folder / "model.safetensors"))
        entry["sources"]["safetensors"] = f"{name}/model.safetensors"
    if "pth" in case.formats:
        torch.save(state, folder / "model.pth")
        entry["sources"]["pth"] = f"{name}/model.pth"
    if "folder" in case.formats:
        entry["sources"]["folder"] = f"{name}/folder"
    wrong = (case.wrong or transpose_first_square_kernel)({k: v.clone() for k, v in state.items()})
    save_file(wrong, str(folder / "wrong.safetensors"))
    entry["wrong"] = f"{name}/wrong.safetensors"
    np.savez(folder / "io.npz", x=case.to_kzoo(x), y=y, torch_x=x)
    entry["io"] = f"{name}/io.npz"
    return entry


def write_keras(name, entry, outdir):
    """Convert the case's first source with kzoo and save it as `.keras`."""
    import keras

    import kzoo

    source = Path(outdir) / next(iter(entry["sources"].values()))
    model = kzoo.create_model(entry["model"], weights=str(source), **entry["kwargs"])
    model.save(Path(outdir) / name / "model.keras")
    keras.backend.clear_session()
    return f"{name}/model.keras"


def main(outdir, names=None, slow=False):
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    manifest_path = outdir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name, case in all_cases().items():
        if (names and name not in names) or (case.slow and not slow and not names):
            continue
        entry = write_case(name, case, outdir)
        if case.keras_file:
            entry["keras"] = write_keras(name, entry, outdir)
        manifest[name] = entry
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"wrote {name}", flush=True)
    if not names:  # modules whose cases do not fit `Case` (refs_text.py) write their own
        for module in case_modules():
            if hasattr(module, "write_references"):
                for path in module.write_references(outdir):
                    print(f"wrote {path}", flush=True)
    return manifest


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: make_references.py OUTDIR [CASE ...]")
    args = [a for a in sys.argv[2:] if a != "--slow"]
    main(sys.argv[1], args or None, slow="--slow" in sys.argv)
