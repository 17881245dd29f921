"""Keep freed memory in the process, so that each training step does not fault it in anew.

Why: glibc's `malloc` serves a large request from a thread's arena with a
fresh `mmap` and returns it to the kernel with `munmap` when it is freed. XLA
on CPU allocates the temporaries of a jitted step as one buffer on its worker
threads, so every step maps it again and faults in every page of it (the
measurement: `KERAS_BACKEND=jax python -m benchmarks.page_faults vit_tiny`,
figures in `benchmarks/README.md`). With one arena, no `mmap` for large
chunks and no trimming, freed memory stays in the heap and the next step
reuses it.

PyTorch on CPU does the same: oneDNN's convolutions and the other large ops
take their outputs from `malloc`, so a convolution network's step faults in
every activation anew (the measurement: `KERAS_BACKEND=torch python -m
benchmarks.page_faults simple_cnn --infer`, with and without
`--glibc-default`; figures in `benchmarks/README.md`).

The cost: the process keeps its peak heap (it does not shrink after a large
step), and threads share one arena lock. It was measured for JAX and PyTorch
on CPU, so `retain_freed_memory` applies only there: on TensorFlow, on JAX or
PyTorch with an accelerator, and with the environment variable
`KZOO_RETAIN_MEMORY=0` it does nothing. kzoo's recipes, its `predict` command
and the benchmark harness (native PyTorch workers included) call it at
start-up.
"""

import ctypes
import ctypes.util
import importlib.util
import os
import sys

import keras

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int; the largest one

# JAX's accelerator plugins; with one installed (and JAX_PLATFORMS not
# "cpu"), JAX computes on the accelerator.
_JAX_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                            "jax_rocm7_plugin", "libtpu")

_applied = False


def _jax_on_cpu():
    """Whether this process runs JAX on its CPU, judged without starting JAX's backend.

    Starting it (`jax.devices()`) would start the threads that must be
    started after `mallopt`; so this reads `JAX_PLATFORMS` and otherwise
    whether an accelerator plugin is installed.
    """
    if keras.config.backend() != "jax":
        return False
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0] == "cpu"
    return not any(importlib.util.find_spec(p) for p in _JAX_ACCELERATOR_PLUGINS)


def _nvidia_or_amd_gpu():
    """Whether the machine has an NVIDIA or AMD GPU driver loaded, judged without starting torch."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/kfd")


def _torch_on_cpu():
    """Whether this process runs PyTorch on its CPU: the torch backend, and no GPU driver
    (or `CUDA_VISIBLE_DEVICES` hides every GPU). Judged without importing torch."""
    if keras.config.backend() != "torch":
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    return not _nvidia_or_amd_gpu()


def retain_freed_memory():
    """Make glibc keep freed memory for reuse (one arena, no `mmap`, no trimming), on JAX's or
    PyTorch's CPU.

    Call it early, before the backend starts its threads: threads keep the
    arena they first allocated in. It does nothing (and returns False)
    unless Keras runs on JAX or PyTorch on the CPU, on Linux with glibc, and
    `KZOO_RETAIN_MEMORY` is not `"0"`.

    Returns:
        bool. Whether glibc took the settings (also True when already applied).

    Example:

    >>> from kzoo.backend import memory
    >>> isinstance(memory.retain_freed_memory(), bool)
    True
    """
    if _applied:
        return True
    if os.environ.get("KZOO_RETAIN_MEMORY", "1").strip() == "0" or not (
            _jax_on_cpu() or _torch_on_cpu()):
        return False
    return _apply()


def _apply():
    """Set glibc's options, whatever the backend; True if glibc took them (see above)."""
    global _applied
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM))
    _applied = all(mallopt(param, value) == 1 for param, value in settings)
    return _applied
