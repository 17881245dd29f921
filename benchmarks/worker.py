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

        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        self.x = case.inputs(case.batch, rng)
        self.y = rng.integers(0, case.num_classes, size=case.batch).astype("int32")
        self.model = kzoo.create_model(case.model, **case.kwargs)
        self.model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        self.params = int(sum(np.prod(w.shape) for w in self.model.trainable_weights))
        self.setting = f"{keras.config.backend()}, jit_compile={self.model.jit_compile}"

    def train_step(self):
        self.model.train_on_batch(self.x, self.y)  # returns host floats: synchronised

    def infer_step(self):
        self.model.predict_on_batch(self.x)


class TorchContender:
    def __init__(self, case, compiled):
        import torch

        torch.set_num_threads(THREADS)
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        x = case.inputs(case.batch, rng)
        if case.channels_first:
            x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(rng.integers(0, case.num_classes, size=case.batch)).long()
        self.module = case.native()
        from benchmarks.native_torch import trainable_params

        self.params = trainable_params(self.module)
        self.train_model = torch.compile(self.module) if compiled else self.module
        self.opt = torch.optim.Adam(
            [p for p in self.module.parameters() if p.requires_grad], lr=1e-3
        )
        self.loss = torch.nn.CrossEntropyLoss()
        self.torch = torch
        self.setting = "torch.compile" if compiled else "eager"

    def train_step(self):
        self.module.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.train_model(self.x), self.y)
        loss.backward()
        self.opt.step()
        loss.item()

    def infer_step(self):
        self.module.eval()
        with self.torch.inference_mode():
            self.train_model(self.x).sum().item()


def matmul_peak(n=1024, repeats=20):
    """The machine's float32 matrix-multiply rate in FLOP/s (median of repeats)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    try:
        import torch

        torch.set_num_threads(THREADS)
        ta = torch.from_numpy(a)

        def mm():
            return torch.mm(ta, ta)
    except ImportError:

        def mm():
            return a @ a
    mm()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mm()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / float(np.median(times))


def main():
    kind = sys.argv[1]
    tiny = "--tiny" in sys.argv
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
                first = {}
                for what in ("train", "infer"):
                    step = getattr(contender, f"{what}_step")
                    t = time.perf_counter()
                    step()
                    first[what] = time.perf_counter() - t
                    for _ in range(cmd.get("warmup", 3)):
                        step()
                reply(ok=True, params=contender.params, build_s=build, first_step_s=first,
                      setting=contender.setting)
            elif cmd["cmd"] == "time":
                step = getattr(contender, f"{cmd['what']}_step")
                times = []
                for _ in range(cmd["steps"]):
                    t = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t)
                reply(ok=True, times=times)
            elif cmd["cmd"] == "peak":
                reply(ok=True, flops=matmul_peak())
            elif cmd["cmd"] == "quit":
                reply(ok=True)
                return
        except Exception as err:  # report, the parent decides
            reply(ok=False, error=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}")


if __name__ == "__main__":
    main()
