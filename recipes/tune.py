"""Hyperparameter search with KerasTuner over any registered classifier.

Random search, Bayesian optimisation or Hyperband over the search space the
model's family declares beside its registration (`search_space=` in
`kzoo/models/`, in the syntax of `kzoo.training.search_space`) plus learning
rate, weight decay, optimizer and batch size, with early stopping of bad
trials. Failing trials are counted and the search goes on. Rerunning the same
command continues an interrupted search; `--overwrite` starts over.

Every runner flag means what it means in any recipe: each trial is built
inside `run.building()` (`--precision`, `--remat`), compiled with
`run.compile` and trained with `run.fit` (`--optimizer`, `--lr`,
`--schedule`, `--weight-decay`, `--grad-clip`, `--grad-accum`, `--l1`,
`--l2`, `--label-smoothing`, `--patience`, `--debug-*` under
`debug/trial_<id>/`, ...). A hyperparameter of the space that is a flag
(`learning_rate` for `--lr`, `optimizer`, `weight_decay`, `batch_size`, or
any flag added with `--space`, such as `label_smoothing=0..0.2`) overrides
that flag per trial, and `trials.md` names it; a flag given on the command
line fixes its hyperparameter instead (`--lr 3e-3` searches no learning
rate) unless `--space` names it too. `--find-lr` and `--distribute` do not
apply to a search and are refused.

Default data: scikit-learn's copy of the UCI optical digits (1,797 real 8x8
images shipped inside the scikit-learn package, so it runs offline); recurrent
models read each image row by row.

    KERAS_BACKEND=jax python recipes/tune.py --model mlp --tuner bayesian
    python recipes/tune.py --model simple_cnn --tuner hyperband --epochs 9 \\
        --space optimizer=adam learning_rate=3e-4..3e-3:log --space-file narrow.txt

The run folder holds `trials.md` (ranked table), `trials.json`,
`best_hyperparameters.json`, `search.png` (objective against trial and against
the most important hyperparameter), `model.keras` (the best trial's model at
its best epoch), `metrics.json` and `search/` (KerasTuner's state). For a
search over several machines, set KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT
and KERASTUNER_TUNER_ID (`chief`, `tuner0`, `tuner1`, ...) and run the same
command with a shared `--output-dir` on every machine (docs/results/tune.md).
"""

import os

import keras

from kzoo.training import plots, runner


def main(argv=None):
    parser = runner.make_parser(__doc__, epochs=20, patience=3, dataset="digits")
    g = parser.add_argument_group("search")
    g.add_argument("--model", default="mlp", help="a registered classifier (kzoo list)")
    g.add_argument("--tuner", choices=("random", "bayesian", "hyperband"), default="random", help="search algorithm")
    g.add_argument("--max-trials", type=runner._positive_int, default=20,
                   help="trials of random and Bayesian search (Hyperband sets its own)")
    g.add_argument("--objective", choices=("val_loss", "val_accuracy"), default="val_loss", help="what the search optimises")
    g.add_argument("--space", nargs="+", action="extend", default=[], metavar="NAME=SPEC",
                   help="narrow or widen the space: lr=1e-4..1e-2:log, width=32..256:log:step=2, "
                        "optimizer=adam|lion, depth=2, label_smoothing=0..0.2")
    g.add_argument("--space-file", default=None,
                   help="overrides in a JSON file or 'name: spec' lines (--space wins)")
    g.add_argument("--show-space", action="store_true", help="print the search space and exit")
    g.add_argument("--hyperband-factor", type=runner._positive_int, default=3, help="Hyperband reduction factor")
    g.add_argument("--max-consecutive-failures", type=runner._positive_int, default=3,
                   help="stop after this many failed trials in a row")
    g.add_argument("--image-size", type=runner._positive_int, default=None,
                   help="resize digits to this square size (for CNNs that need larger images)")
    args = parser.parse_args(argv)
    # Refused before anything is written: these flags do not train a model.
    if args.find_lr:
        raise runner.RunError(
            "--find-lr runs a learning-rate range test instead of training, and a search "
            "trains every trial; run the range test with a recipe (recipes/mlp.py --find-lr) "
            "and search the suggested range with --space learning_rate=LOW..HIGH:log.")
    if args.distribute != "none":
        raise runner.RunError(
            "--distribute trains one model on several devices, and a search spreads its "
            "trials over processes with KerasTuner's own protocol (KERASTUNER_TUNER_ID, see "
            "docs/results/tune.md); drop --distribute.")

    try:
        from kzoo.training import search, tuning_report
        from kzoo.training.search_space import TRAINING_SPACE, Param, load_spec, parse_overrides
    except ImportError as err:
        raise runner.RunError(str(err)) from None
    try:
        overrides = load_spec(args.space_file) if args.space_file else {}
        overrides.update(parse_overrides(args.space))
        overrides = {"learning_rate" if k == "lr" else k: v for k, v in overrides.items()}
        # A flag given on the command line fixes the hyperparameter it names, unless
        # --space names it too.
        given = runner.given_flags(parser, argv)
        for name in TRAINING_SPACE:
            flag = search.FLAG_NAMES.get(name, name)
            if flag in given and name not in overrides:
                overrides[name] = Param("fixed", value=getattr(args, flag))
        space = search.search_space(args.model, overrides)
    except ValueError as err:
        raise runner.RunError(str(err)) from None
    if args.show_space:
        for name, param in space.items():
            print(f"{name} = {param.describe()}")
        return space

    # KerasTuner keeps its own record of the search in the folder: the same command
    # continues it and --overwrite starts it over.
    run = runner.Run(args, recipe=f"tune-{args.model}-{args.tuner}", own_folder=True)
    role = search.role()
    extra = {"image_size": args.image_size} if args.image_size else {}
    data = run.load_data(needs_arrays=True, **extra)
    try:
        train, val, test, model_kwargs = search.prepare_data(args.model, data)
        hypermodel = search.ZooHyperModel(args.model, space, model_kwargs, run=run,
                                          monitor=args.objective)
        if not args.overwrite:
            search.check_space(run.dir / "search", space)
        # Fail fast, with the model's own message, if the default point cannot build.
        import keras_tuner

        hypermodel.build(keras_tuner.HyperParameters())
    except ValueError as err:
        raise runner.RunError(str(err)) from None
    keras.backend.clear_session()

    smoke_trials = min(args.max_trials, 3)
    tuner = search.make_tuner(
        hypermodel,
        args.tuner,
        directory=run.dir,
        objective=args.objective,
        max_trials=smoke_trials if run.smoke else args.max_trials,
        max_epochs=2 if run.smoke else args.epochs,
        hyperband_factor=2 if run.smoke else args.hyperband_factor,
        seed=args.seed,
        max_consecutive_failures=args.max_consecutive_failures,
        overwrite=args.overwrite,
    )
    if role != "worker":
        search.record_space(run.dir / "search", space)
    # run.fit adds the flags' callbacks (--patience on the objective, --schedule plateau,
    # --debug-*) and stops a trial on a NaN loss.
    verbose = args.verbose if args.verbose is not None else 2
    fit_kwargs = {"validation_data": val, "epochs": run.epochs, "verbose": verbose}
    try:
        tuner.search(*train, **fit_kwargs)
    except RuntimeError as err:  # KerasTuner's "too many consecutive failures"
        raise runner.RunError(
            f"the search stopped after {args.max_consecutive_failures} failed trials in a row "
            f"({search.last_line(str(err))}); fix or narrow the search space with --space."
        ) from None
    if role == "worker":
        print(f"[tune worker {os.environ['KERASTUNER_TUNER_ID']}] no trials left.")
        return {"role": role}

    # "tune recipe: random search over mlp on digits (jax backend)"
    title = plots.run_title("tune", f"{args.tuner} search over {args.model}", data.name,
                            run.backend)
    report = tuning_report.write_report(tuner, hypermodel, run.dir, args.objective, title)
    print(report["table"])
    if report["overridden_flags"]:
        print(tuning_report.overridden_note(report["overridden_flags"]))
    print(f"{report['completed']} trials completed, {report['failed']} failed.")
    if report["best"] is None:
        raise runner.RunError("no trial completed, so there is no best model; see trials.json.")
    model = search.best_model(tuner, hypermodel, train, fit_kwargs)
    results = model.evaluate(*test, verbose=0, return_dict=True)
    return run.finish(model, {
        "test_accuracy": results["accuracy"],
        "test_loss": results["loss"],
        "best_trial": report["best"].trial_id,
        args.objective: report["best"].score,
        "trials_completed": report["completed"],
        "trials_failed": report["failed"],
    })


if __name__ == "__main__":
    main()
