"""Keep freed memory in the process, so that each training step does not fault it in anew.

Why: glibc's `malloc` serves a large request from a thread's arena with a
fresh `mmap` and returns it to the kernel with `munmap` when it is freed. XLA
on CPU allocates the temporaries of a jitted step as one buffer on its worker
threads (1.37 GB for the ViT-Tiny benchmark step), so every step maps it
again and faults in every page of it: 367,000 minor faults and 0.64 s of
kernel time on a 1.3 s step, on 2 cores (`benchmarks/page_faults.py`,
`benchmarks/README.md`). With one arena, no `mmap` for large chunks and no
trimming, freed memory stays in the heap and the next step reuses it.

The cost: the process keeps its peak heap (it does not shrink after a large
step), and threads share one arena lock. `retain_freed_memory` is therefore
opt-in; kzoo's recipes, its `predict` command and the benchmark harness
call it at start-up.
"""

import ctypes
import ctypes.util
import sys

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int; the largest one

_applied = False


def retain_freed_memory():
    """Make glibc keep freed memory for reuse (one arena, no `mmap`, no trimming).

    Call it early, before the backend starts its threads: threads keep the
    arena they first allocated in. Elsewhere than Linux with glibc it does
    nothing.

    Returns:
        bool. Whether glibc took the settings (also True when already applied).
    """
    global _applied
    if _applied:
        return True
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
