"""Profile one case's training (or inference) step on PyTorch: the native twin
against kzoo on the torch backend, top operators by self CPU time.

    python benchmarks/profile_torch.py simple_cnn train
"""

import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks.cases import make_cases  # noqa: E402
from benchmarks.worker import THREADS, KzooContender, TorchContender  # noqa: E402


def main(name, what="train", steps=5):
    torch.set_num_threads(THREADS)
    case = make_cases()[name]
    for label, contender in (("native torch", TorchContender(case, False)),
                             ("kzoo_torch", KzooContender(case, False))):
        step = getattr(contender, f"{what}_step")
        for _ in range(3):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        print(f"===== {label}: {name} {what}, {steps} steps")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18,
                                        max_name_column_width=45))


if __name__ == "__main__":
    main(*sys.argv[1:3])
