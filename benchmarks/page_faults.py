"""Wall time, CPU time and page faults of a kzoo training step, one step at a time.

    KERAS_BACKEND=jax python benchmarks/page_faults.py vit_tiny
    KERAS_BACKEND=torch python benchmarks/page_faults.py resnet20_cifar --steps 8
    KERAS_BACKEND=torch python -m benchmarks.page_faults simple_cnn --infer --glibc-default

For each step after `--warmup` untimed ones: the wall time, the process's user
and system CPU time and its minor page faults (`getrusage`). A step whose
buffers are mapped afresh faults every page it touches, and each fault is
kernel time (benchmarks/README.md says what this showed for the JAX ViT).
"""

import argparse
import resource
import statistics
import time

import numpy as np

from benchmarks.cases import make_cases
from benchmarks.worker import KzooContender
from kzoo.backend import memory


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=sorted(make_cases()))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--glibc-default", action="store_true",
                        help="skip kzoo.backend.memory.retain_freed_memory (to compare)")
    parser.add_argument("--infer", action="store_true",
                        help="time the inference step instead of the training step")
    parser.add_argument("--force-retain", action="store_true",
                        help="apply the memory setting even where kzoo does not (another "
                             "backend or platform), to measure whether it should")
    args = parser.parse_args(argv)
    if args.force_retain:
        memory._apply()
    elif not args.glibc_default:
        memory.retain_freed_memory()
    contender = KzooContender(make_cases()[args.case], "auto")
    step = contender.infer_step if args.infer else contender.train_step
    for _ in range(args.warmup):
        step()
    rows = []
    for _ in range(args.steps):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        step()
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        rows.append((wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
                     after.ru_minflt - before.ru_minflt))
        print(f"step: wall {rows[-1][0]:.3f} s, user {rows[-1][1]:.2f} s, "
              f"system {rows[-1][2]:.2f} s, minor faults {rows[-1][3]:,}", flush=True)
    wall, user, system, faults = (statistics.median(col) for col in np.array(rows).T)
    print(f"{contender.setting}, {args.case} {'inference' if args.infer else 'training'}, "
          f"median per step: wall {wall:.3f} s, user "
          f"{user:.2f} s, system {system:.2f} s, minor faults {faults:,.0f} "
          f"({faults * resource.getpagesize() / 2**20:,.0f} MiB)")


if __name__ == "__main__":
    main()
