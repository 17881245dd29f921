"""Memory of a long search: resident memory after each of N small trials.

Runs a random search over the MLP's default space on the digits (shipped in
scikit-learn) in this process, and records the resident set size (RSS, from
/proc/self/statm, so Linux only) at the end of every trial. A search that clears
the Keras session between trials (KerasTuner's tuner does before each build,
kzoo's again after each trial) should level off after the first trials;
`--no-clear` turns every `clear_session` into a no-op to show the difference.

    KERAS_BACKEND=jax python benchmarks/tune_memory.py --trials 20
"""

import argparse
import json
import os
import tempfile
import time

import keras

import kzoo.data
from kzoo.training import search


def rss_mib():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-clear", action="store_true",
                        help="disable keras.backend.clear_session (to compare)")
    parser.add_argument("--output", default=None, help="write the RSS series as JSON here")
    args = parser.parse_args(argv)

    if args.no_clear:
        keras.backend.clear_session = lambda *a, **k: None
    data = kzoo.data.load("digits")
    train, val, _, model_kwargs = search.prepare_data("mlp", data)
    hypermodel = search.ZooHyperModel("mlp", search.search_space("mlp"), model_kwargs)
    directory = tempfile.mkdtemp(prefix="tune_memory_")
    tuner = search.make_tuner(hypermodel, "random", directory=directory,
                              max_trials=args.trials, overwrite=True)
    series = []
    end_trial = tuner.on_trial_end

    def on_trial_end(trial):
        end_trial(trial)
        series.append(round(rss_mib(), 1))
        print(f"trial {len(series):2d}: RSS {series[-1]:.1f} MiB", flush=True)

    tuner.on_trial_end = on_trial_end
    start = time.time()
    before = rss_mib()
    tuner.search(*train, validation_data=val, epochs=args.epochs, verbose=0)
    wall = time.time() - start
    fifth = series[min(4, len(series) - 1)]
    record = {
        "backend": keras.config.backend(),
        "trials": len(series),
        "epochs": args.epochs,
        "clear_session": not args.no_clear,
        "rss_before_mib": round(before, 1),
        "rss_after_trial_mib": series,
        "growth_trial1_to_last_mib": round(series[-1] - series[0], 1),
        "growth_trial5_to_last_mib": round(series[-1] - fifth, 1),
        "peak_mib": max(series),
        "wall_time_s": round(wall, 1),
    }
    print(json.dumps({k: v for k, v in record.items() if k != "rss_after_trial_mib"}))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(record, f, indent=2)
    return record


if __name__ == "__main__":
    main()
