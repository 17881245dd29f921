"""Read a PyTorch state-dict file (`.pth`, `.pt`, `.bin`) into numpy arrays.

The one place kzoo's weights code touches torch: a torch pickle can only be
read by torch, with `torch.load(..., weights_only=True)`, which refuses any
pickled code. Everything after this is numpy (`kzoo.weights`), so the jax and
tensorflow installs need torch only for these files, and say so when it is
missing.
"""

from kzoo.weights.core import WeightsError


def read_state_dict(path):
    """The tensors of the state dict saved at `path`, as numpy arrays (float16/bfloat16 as float32).

    Raises:
        WeightsError: torch is missing, or the file is no readable state dict.
    """
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"Received weights file {str(path)!r}, a torch pickle that needs torch to read, "
            "which is not installed; convert it to .safetensors where torch is installed or "
            "install torch."
        ) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad files
        raise WeightsError(
            f"Received weights file {str(path)!r}, which torch.load(weights_only=True) cannot "
            f"read ({str(err).splitlines()[0]}); pass a state dict saved with torch.save."
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(
            f"Received weights file {str(path)!r} holding a {type(state).__name__}; expected a "
            "state dict (names to tensors), so save model.state_dict()."
        )
    out = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype in (torch.bfloat16, torch.float16):
                value = value.float()
            out[key] = value.numpy()
    return out


