"""One contender in its own process: kzoo on one backend, or native PyTorch.

The parent (`benchmarks/run.py`) sends JSON commands on stdin and reads JSON
replies from lines starting with `@@` on stdout, so that the contenders can be
alternated step block by step block within one run.

    KERAS_BACKEND=jax python -m benchmarks.worker kzoo
    python -m benchmarks.worker torch_eager | torch_compile
"""

import json
import os
import sys
import time
from pathlib import Path

THREADS = int(os.environ.get("KZOO_BENCH_THREADS", os.cpu_count() or 1))
# Fix the thread count in every framework before any of them is imported.
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
os.environ.setdefault("MKL_NUM_THREADS", str(THREADS))
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(THREADS))
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault(
    "XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={THREADS}"
)

import numpy as np  # noqa: E402


def reply(**payload):
    sys.stdout.write("@@" + json.dumps(payload) + "\n")
    sys.stdout.flush()


class KzooContender:
    def __init__(self, case, jit_compile):
        import keras

        import kzoo
        from kzoo.optimizers import Adam

        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        self.x = case.inputs(case.batch, rng)
        self.y = case.make_targets(case.batch, rng) if case.task == "classify" else None
        self.model = kzoo.create_model(case.model, **case.kwargs)
        if case.task == "classify":
            self.model.compile(
                optimizer=Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=jit_compile,
            )
        else:  # the model's own loss and default optimizer(s)
            self.model.compile(jit_compile=jit_compile)
        self.params = int(sum(np.prod(w.shape) for w in self.model.trainable_weights))
        self.setting = f"{keras.config.backend()}, jit_compile={self.model.jit_compile}"
        # What one inference step runs, on inputs prepared once.
        self.infer_model, self.infer_x = self.model, self.x
        if case.task == "gan":  # sampling: the generator on latent vectors
            self.infer_model = self.model.generator
            self.infer_x = rng.standard_normal((case.batch, self.model.latent_dim), "float32")
        elif case.task == "ddpm":  # one denoising call of the U-Net
            self.infer_model = self.model.network
            t = rng.integers(0, self.model.num_timesteps, case.batch).astype("int32")
            self.infer_x = [self.x * 2 - 1, t]

    def train_step(self):
        self.model.train_on_batch(self.x, self.y)  # returns host floats: synchronised

    def infer_step(self):
        self.infer_model.predict_on_batch(self.infer_x)


class TorchContender:
    def __init__(self, case, compiled):
        import torch

        torch.set_num_threads(THREADS)
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        x = case.inputs(case.batch, rng)
        if case.channels_first:
            x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
        self.x = ({k: torch.from_numpy(v).long() for k, v in x.items()} if isinstance(x, dict)
                  else torch.from_numpy(x))
        self.y = torch.from_numpy(case.make_targets(case.batch, rng)).long()
        self.module = case.native()
        from benchmarks.native_torch import trainable_params

        self.params = trainable_params(self.module)
        self.torch = torch
        self.setting = "torch.compile" if compiled else "eager"
        self.custom = hasattr(self.module, "train_step")  # a generative model's own step
        if self.custom:
            self.opts = self.module.make_optimizers()
            step = self.module.train_step
            self.step_fn = torch.compile(step) if compiled else step
            infer_inputs = getattr(self.module, "infer_inputs", None)
            with torch.no_grad():
                self.infer_x = infer_inputs(self.x) if infer_inputs else self.x
            self.infer_fn = torch.compile(self.module.infer) if compiled else self.module.infer
            return
        self.train_model = torch.compile(self.module) if compiled else self.module
        self.opt = torch.optim.Adam(
            [p for p in self.module.parameters() if p.requires_grad], lr=1e-3
        )
        self.loss = torch.nn.CrossEntropyLoss()

    def _forward(self):
        if isinstance(self.x, dict):
            return self.train_model(**self.x)
        return self.train_model(self.x)

    def train_step(self):
        self.module.train()
        if self.custom:
            self.step_fn(self.x, self.y, self.opts).item()
            return
        self.opt.zero_grad(set_to_none=True)
        logits = self._forward()
        loss = self.loss(logits.reshape(-1, logits.shape[-1]), self.y.reshape(-1))
        loss.backward()
        self.opt.step()
        loss.item()

    def infer_step(self):
        self.module.eval()
        with self.torch.inference_mode():
            out = self.infer_fn(self.infer_x) if self.custom else self._forward()
            out = out[0] if isinstance(out, tuple) else out
            out.sum().item()


def export_latency(case, fmt, repeats):
    """Batch-1 latency and throughput of the Keras model and its `fmt` export,
    measured by `kzoo.benchmark.benchmark` (mean over `repeats` calls)."""
    import tempfile

    import keras

    import kzoo
    from kzoo import export
    from kzoo.benchmark import benchmark

    keras.utils.set_random_seed(0)
    model = kzoo.create_model(case.model, **case.kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("model.onnx" if fmt == "onnx" else "saved_model")
        t = time.perf_counter()
        export.export_model(model, path, format=fmt)
        export_s = time.perf_counter() - t
        result = benchmark(model, path, fmt, batch_size=case.batch, repeats=repeats)
    return {"export_s": export_s, "batch": case.batch, "repeats": repeats, **result}


def matmul_peak(n=1024, repeats=20):
    """The machine's float32 matrix-multiply peak in FLOP/s: the fastest of
    `repeats` n x n products, with PyTorch (where installed) and with NumPy,
    whichever is faster. The fastest call, not the median: a peak is what the
    machine can do, and on a shared machine the median measures the load."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    candidates = [lambda: a @ a]
    try:
        import torch

        torch.set_num_threads(THREADS)
        ta = torch.from_numpy(a)
        candidates.append(lambda: torch.mm(ta, ta))
    except ImportError:
        pass
    best = float("inf")
    for mm in candidates:
        mm()
        for _ in range(repeats):
            t = time.perf_counter()
            mm()
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def main():
    kind = sys.argv[1]
    tiny = "--tiny" in sys.argv
    # Every contender, native ones too, keeps freed memory for reuse
    # (kzoo/backend/memory.py says why), before any framework starts threads.
    from kzoo.backend import memory

    memory.retain_freed_memory()
    from benchmarks.cases import make_cases

    cases = make_cases(tiny=tiny)
    contender = None
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "setup":
                case = cases[cmd["case"]]
                t0 = time.perf_counter()
                if kind == "kzoo":
                    contender = KzooContender(case, cmd.get("jit_compile", "auto"))
                else:
                    contender = TorchContender(case, compiled=kind == "torch_compile")
                build = time.perf_counter() - t0
                first, warm = {}, {}
                for what in ("train", "infer"):
                    step = getattr(contender, f"{what}_step")
                    t = time.perf_counter()
                    step()
                    first[what] = time.perf_counter() - t
                    times = []
                    for _ in range(cmd.get("warmup", 3)):
                        t = time.perf_counter()
                        step()
                        times.append(time.perf_counter() - t)
                    warm[what] = float(np.median(times)) if times else first[what]
                reply(ok=True, params=contender.params, build_s=build, first_step_s=first,
                      warm_step_s=warm, setting=contender.setting)
            elif cmd["cmd"] == "time":
                step = getattr(contender, f"{cmd['what']}_step")
                times = []
                for _ in range(cmd["steps"]):
                    t = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t)
                reply(ok=True, times=times)
            elif cmd["cmd"] == "export":
                reply(ok=True, **export_latency(cases[cmd["case"]], cmd["format"],
                                                cmd.get("repeats", 20)))
            elif cmd["cmd"] == "peak":
                reply(ok=True, flops=matmul_peak())
            elif cmd["cmd"] == "quit":
                reply(ok=True)
                return
        except Exception as err:  # report, the parent decides
            reply(ok=False, error=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}")


if __name__ == "__main__":
    main()
