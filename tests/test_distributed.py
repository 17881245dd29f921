"""Data-parallel training through the runner's `--distribute data_parallel`.

Each path runs for real on this CPU-only machine, in subprocesses with
timeouts: several simulated devices (JAX: XLA's host platform device count;
TensorFlow: logical CPU devices) and two real processes on the loopback
interface (JAX's coordinator, TF_CONFIG for MultiWorkerMirroredStrategy,
torchrun with gloo). Every distributed run must end with the same weights
as the single-process run with the same global batch, within float32
tolerance. Only the active backend's paths run (one backend per tox env).
"""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.config.backend()
TIMEOUT = 240

# Trains a small net for 2 epochs of 4 global batches of 16 through the
# runner and saves the chief's final weights.
WORKER = textwrap.dedent('''
    import os, sys
    import numpy as np
    import keras
    from kzoo.training import runner

    out, distribute = sys.argv[1], sys.argv[2]
    args = runner.make_parser("", epochs=2, batch_size=16, lr=0.05, optimizer="sgd").parse_args(
        ["--output-dir", out, "--distribute", distribute, "--verbose", "0"])
    run = runner.Run(args, recipe="distributed")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-1.0], [0.5], [2.0]]) + 0.1 * np.sin(x[:, :1] * 3)).astype("float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    run.compile(model, loss="mse", metrics=None)
    run.fit(model, x, y, shuffle=False)
    weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
    if run.distribution is None or run.distribution.is_chief:
        np.savez(os.path.join(out, "weights.npz"), *weights)
        print("replicas:", 1 if run.distribution is None else run.distribution.num_replicas)
    if run.distribution is not None:
        run.distribution.shutdown()
''')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KERAS_DISTRIBUTION_", "TF_CONFIG", "XLA_FLAGS"))}
    env.update(KERAS_BACKEND=BACKEND, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def launch(commands, timeout=TIMEOUT):
    """Start every command at once; fail with their output if any fails."""
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for cmd, env in commands]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"distributed run did not finish in {timeout} s")
    failed = [f"process {i} exited {p.returncode}:\n{out[-3000:]}"
              for i, (p, out) in enumerate(zip(procs, outputs)) if p.returncode != 0]
    assert not failed, "\n\n".join(failed)
    return outputs


def load(folder):
    with np.load(Path(folder) / "weights.npz") as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process run with the same global batch."""
    folder = tmp_path_factory.mktemp("single")
    script = folder / "worker.py"
    script.write_text(WORKER)
    out = folder / "run"  # a run folder of its own: the runner refuses one holding other files
    launch([([sys.executable, str(script), str(out), "none"], base_env())])
    return script, load(out)


def assert_same_weights(folder, expected):
    got = load(folder)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert any(np.abs(w).sum() > 0 for w in got)


def assert_data_parallel_trains_as_one_device(script, expected, folder, envs):
    """One process per env trains data-parallel over two replicas, to the reference weights."""
    outputs = launch([([sys.executable, str(script), str(folder), "data_parallel"], env)
                      for env in envs])
    assert "replicas: 2" in outputs[0]
    assert_same_weights(folder, expected)


def needs(backend):
    if BACKEND != backend:
        pytest.skip(f"this path needs KERAS_BACKEND={backend}")
    pytest.importorskip({"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}[backend])


# === JAX ===
def test_jax_data_parallel_on_two_simulated_devices(request, tmp_path):
    needs("jax")
    script, expected = request.getfixturevalue("reference")  # after the skip check
    env = base_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert_data_parallel_trains_as_one_device(script, expected, tmp_path, [env])


def test_jax_two_processes_through_keras_distribution_initialize(request, tmp_path):
    needs("jax")
    script, expected = request.getfixturevalue("reference")  # after the skip check
    address = f"127.0.0.1:{free_port()}"
    envs = [base_env(KERAS_DISTRIBUTION_JOB_ADDRESSES=address, KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                     KERAS_DISTRIBUTION_PROCESS_ID=str(rank)) for rank in range(2)]
    assert_data_parallel_trains_as_one_device(script, expected, tmp_path, envs)


# === TensorFlow ===
# Steps like the jax test's on purpose: a test per backend and device flag, each skipped alone.
def test_tf_mirrored_strategy_on_two_logical_cpus(request, tmp_path):
    needs("tensorflow")
    script, expected = request.getfixturevalue("reference")  # after the skip check
    env = base_env(KZOO_TF_CPU_DEVICES="2")
    assert_data_parallel_trains_as_one_device(script, expected, tmp_path, [env])


def test_tf_multi_worker_mirrored_strategy_with_tf_config(request, tmp_path):
    needs("tensorflow")
    import json

    script, expected = request.getfixturevalue("reference")
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    envs = [base_env(TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                           "task": {"type": "worker", "index": rank}}))
            for rank in range(2)]
    assert_data_parallel_trains_as_one_device(script, expected, tmp_path, envs)


# === PyTorch ===
def test_torch_ddp_two_processes_under_torchrun(request, tmp_path):
    needs("torch")
    script, expected = request.getfixturevalue("reference")  # after the skip check
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}",
               str(script), str(tmp_path), "data_parallel"]
    (out,) = launch([(command, base_env(OMP_NUM_THREADS="1"))])
    assert "replicas: 2" in out
    assert_same_weights(tmp_path, expected)
