"""kzoo.backend.memory keeps freed memory in the process, so large buffers freed
and allocated again (what every training step does) are not faulted in anew.

It applies only to JAX and PyTorch on CPU (where it was measured) and is opt-out
with KZOO_RETAIN_MEMORY=0. Each case runs in a fresh interpreter, since the setting
is process-wide.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import resource, sys, threading
    if sys.argv[1] == "retain":
        from kzoo.backend import memory
        assert memory.retain_freed_memory() and memory.retain_freed_memory()
    faults = []

    def steps():  # on a thread, as XLA's and TensorFlow's executors allocate
        for _ in range(6):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            buffer = bytearray(64 * 2**20)  # a 64 MiB temporary, then freed
            buffer[::4096] = b"x" * (len(buffer) // 4096)  # written: every page
            del buffer
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    thread = threading.Thread(target=steps)
    thread.start()
    thread.join()
    print(max(faults[2:]))
""")


def _run(code, *argv, **env):
    env = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _faults_per_step(mode):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="applies to JAX on CPU only")
def test_freed_buffers_are_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    # glibc's default maps a large buffer afresh each time: every page faults.
    assert _faults_per_step("default") > pages // 2
    # Retained: after the first steps the heap already holds the buffer.
    assert _faults_per_step("retain") < pages // 100


APPLIED = "from kzoo.backend import memory; print(memory.retain_freed_memory())"


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX to opt out of")
def test_opt_out_leaves_glibc_alone_on_jax():
    assert _run(APPLIED, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
                KZOO_RETAIN_MEMORY="0").split()[-1] == "False"


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX")
def test_jax_on_an_accelerator_leaves_glibc_alone():
    # JAX_PLATFORMS names the platform JAX will compute on; "cuda" is not the CPU.
    assert _run(APPLIED, KERAS_BACKEND="jax", JAX_PLATFORMS="cuda").split()[-1] == "False"


def test_tensorflow_leaves_glibc_alone():
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed in this environment")
    assert _run(APPLIED, KERAS_BACKEND="tensorflow").split()[-1] == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_torch_on_cpu_retains_and_opts_out():
    from kzoo.backend import memory

    expected = str(not memory._nvidia_or_amd_gpu())  # this machine's CPU-only torch: True
    assert _run(APPLIED, KERAS_BACKEND="torch").split()[-1] == expected
    assert _run(APPLIED, KERAS_BACKEND="torch", KZOO_RETAIN_MEMORY="0").split()[-1] == "False"
    # A GPU hidden from torch means it computes on the CPU.
    assert _run(APPLIED, KERAS_BACKEND="torch",
                CUDA_VISIBLE_DEVICES="").split()[-1] == "True"
