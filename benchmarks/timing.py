"""The timing loop the benchmark tools share: median wall time, and cores used."""

import resource
import statistics
import time


def median_ms(fn, repeats, warmup=1):
    """Median wall time of `fn()` in milliseconds over `repeats` calls, after
    `warmup` untimed ones."""
    return median_ms_and_cores(fn, repeats, warmup)[0]


def median_ms_and_cores(fn, repeats, warmup=1):
    """`(median wall ms, cores used)`: the process's CPU time (user + system)
    over the summed wall time of the timed calls."""
    for _ in range(warmup):
        fn()
    walls = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return statistics.median(walls) * 1e3, cpu / sum(walls)
