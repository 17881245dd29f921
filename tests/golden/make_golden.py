"""Golden files: every registered model's tiny config saved as `.keras` plus expected outputs.

Written under one backend and checked in, they let each single-backend test
environment check that a file saved elsewhere loads under its own backend and
computes the same function (tests/test_portability.py).

Regenerate all of them after a model changes (any backend works; the checked-in
files record which one wrote them):

    KERAS_BACKEND=jax python tests/golden/make_golden.py

Two more modes serve the cross-process portability test:

    python tests/golden/make_golden.py --out DIR       # write to DIR instead
    python tests/golden/make_golden.py --check DIR     # load DIR's files under
                                                       # this backend; print a
                                                       # JSON report
"""

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/harness.py
sys.path.insert(0, str(HERE.parents[1]))  # the kzoo checkout

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kzoo  # noqa: E402

# Golden files are checked in: a tiny config that is not tiny is left out.
MAX_FILE_BYTES = 400_000
# Tiny configs whose file would pass the cap get a narrower one of the same
# architecture here (EfficientNet keeps every stage and block type at width 0.1).
GOLDEN_OVERRIDES = {
    f"efficientnet_{v}": {"width_coefficient": 0.1} for v in ("b0", "b1", "b2", "b3")
}
ATOL = RTOL = 1e-5  # atol is relative to the outputs' largest magnitude


# === Flattening inputs and outputs into one .npz ===
def flatten(prefix, tree):
    """{prefix_path: array} and a JSON-able description of the structure."""
    if isinstance(tree, dict):
        arrays, spec = {}, {}
        for key in sorted(tree):
            sub, spec[key] = flatten(f"{prefix}.{key}", tree[key])
            arrays.update(sub)
        return arrays, {"dict": spec}
    if isinstance(tree, (list, tuple)):
        arrays, spec = {}, []
        for i, item in enumerate(tree):
            sub, s = flatten(f"{prefix}.{i}", item)
            arrays.update(sub)
            spec.append(s)
        return arrays, {"list": spec}
    return {prefix: keras.ops.convert_to_numpy(tree)}, prefix


def unflatten(arrays, spec):
    if isinstance(spec, dict) and "dict" in spec:
        return {k: unflatten(arrays, s) for k, s in spec["dict"].items()}
    if isinstance(spec, dict) and "list" in spec:
        return [unflatten(arrays, s) for s in spec["list"]]
    return arrays[spec]


# === Writing ===
def write_one(name, out_dir):
    """Save `name`'s tiny model and its outputs; return a skip reason or None."""
    from harness import predict, tiny_inputs, tiny_model

    keras.utils.set_random_seed(0)
    model = tiny_model(name, **GOLDEN_OVERRIDES.get(name, {}))
    inputs = tiny_inputs(name, model, batch=2, seed=0)
    outputs = predict(model, inputs)
    again = predict(model, inputs)
    if not _all_equal(outputs, again):
        return "inference is not deterministic (random sampling in call)"
    path = out_dir / f"{name}.keras"
    model.save(path)
    _deflate(path)
    if path.stat().st_size > MAX_FILE_BYTES:
        path.unlink()
        return f"the tiny model file is over {MAX_FILE_BYTES} bytes"
    in_arrays, in_spec = flatten("in", inputs)
    out_arrays, out_spec = flatten("out", outputs)
    meta = {"backend": keras.config.backend(), "keras": keras.__version__,
            "inputs": in_spec, "outputs": out_spec}
    np.savez_compressed(out_dir / f"{name}.npz", meta=np.array(json.dumps(meta)),
                        **in_arrays, **out_arrays)
    return None


def _deflate(path):
    """Recompress a `.keras` file (a zip Keras writes uncompressed): still a valid
    `.keras` file, loaded as is, but HDF5's padding shrinks several-fold."""
    with zipfile.ZipFile(path) as z:
        files = [(info, z.read(info.filename)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for info, data in files:
            z.writestr(info.filename, data)


def _all_equal(a, b):
    fa, _ = flatten("x", a)
    fb, _ = flatten("x", b)
    return all(np.array_equal(fa[k], fb[k]) for k in fa)


def write_all(out_dir, names=None):
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped_file = out_dir / "SKIPPED.json"
    if names:  # a partial regeneration keeps the other models' records
        skipped = json.loads(skipped_file.read_text()) if skipped_file.exists() else {}
    else:  # a full one drops the files of removed models
        names, skipped = kzoo.list_models(), {}
        for stale in [*out_dir.glob("*.keras"), *out_dir.glob("*.npz")]:
            if stale.stem not in names:
                stale.unlink()
    for name in names:
        start = time.time()
        reason = write_one(name, out_dir)
        keras.backend.clear_session()
        skipped.pop(name, None)
        if reason:
            skipped[name] = reason
            for suffix in (".keras", ".npz"):
                (out_dir / f"{name}{suffix}").unlink(missing_ok=True)
        print(f"{name:24s} {'skipped: ' + reason if reason else 'written'} "
              f"({time.time() - start:.1f} s)", file=sys.stderr)
    skipped_file.write_text(json.dumps(skipped, indent=1, sort_keys=True) + "\n")
    return skipped


# === Checking ===
def check_one(name, golden_dir):
    """Load `name`'s golden file under this backend; return the max abs error."""
    from harness import assert_trees_close, predict

    kzoo.list_models()  # registers kzoo's classes for deserialisation
    data = np.load(golden_dir / f"{name}.npz")
    meta = json.loads(str(data["meta"]))
    arrays = {k: data[k] for k in data.files if k != "meta"}
    model = keras.saving.load_model(golden_dir / f"{name}.keras", safe_mode=True)
    got = predict(model, unflatten(arrays, meta["inputs"]))
    want = unflatten(arrays, meta["outputs"])
    fg, _ = flatten("x", got)
    fw, _ = flatten("x", want)
    # float32 round-off grows with the size of the numbers summed: 1e-5 of the
    # outputs' scale (logits of 150 differ by ~4e-5 between backends' convolutions).
    scale = max([1.0] + [float(np.max(np.abs(v), initial=0.0)) for v in fw.values()])
    assert_trees_close(got, want, atol=ATOL * scale, rtol=RTOL)
    return max(float(np.max(np.abs(fg[k].astype("float64") - fw[k]), initial=0.0)) for k in fg)


def check_all(golden_dir):
    report = {}
    for npz in sorted(golden_dir.glob("*.npz")):
        try:
            report[npz.stem] = {"ok": True, "max_abs_error": check_one(npz.stem, golden_dir)}
        except Exception as err:  # report every model, not just the first failure
            report[npz.stem] = {"ok": False, "error": f"{type(err).__name__}: {err}"[:2000]}
        keras.backend.clear_session()
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the files")
    parser.add_argument("--check", type=Path, default=None,
                        help="load the files in this folder and print a JSON report")
    parser.add_argument("names", nargs="*", help="only these models (default: all)")
    args = parser.parse_args(argv)
    if args.check is not None:
        print(json.dumps({"backend": keras.config.backend(), "models": check_all(args.check)}))
        return 0
    skipped = write_all(args.out.resolve(), args.names or None)
    print(f"wrote golden files for {keras.config.backend()} in {args.out} "
          f"({len(skipped)} skipped)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
