"""kzoo.backend.memory keeps freed memory in the process, so large buffers freed
and allocated again (what every training step does) are not faulted in anew.

Each case runs in a fresh interpreter, since the setting is process-wide.
"""

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


def _faults_per_step(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_buffers_are_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    # glibc's default maps a large buffer afresh each time: every page faults.
    assert _faults_per_step("default") > pages // 2
    # Retained: after the first steps the heap already holds the buffer.
    assert _faults_per_step("retain") < pages // 100
