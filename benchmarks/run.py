"""Benchmark runner: kzoo on every installed backend against native PyTorch.

Method. Every contender runs in its own process with the thread count fixed
to the machine's cores. For each case, each contender builds its model, takes
one timed first step (the compile time, reported apart) and a few warm-up
steps; then the runner alternates the contenders block by block (`--rounds`
blocks of `--steps` steps each) so that drift of the machine hits all alike.
Each block takes `--steps` steps, or fewer for slow steps: as many as fill
`--block-seconds` judged by the warm-up steps (at least one). Each figure is
the median step time with its interquartile spread, and each
kzoo backend is reported as a throughput ratio to native PyTorch eager (and
to `torch.compile` where it works). For the Transformer and ViT cases the
model FLOPs utilisation (MFU) is the analytic model FLOPs of a training step
(`benchmarks/cases.py`: matrix products only, training = 3 x forward) per
second, over the float32 matrix-multiply peak this run measures itself.
Then, for the cases marked `export`, the exported model (ONNX under
onnxruntime, written by the torch backend; TF SavedModel, written by the
tensorflow backend) is timed at batch 1 and at the case's batch beside the
Keras model, with `kzoo.benchmark.benchmark`. The load average of the machine is
recorded before and after every case. Outputs: JSON, a Markdown table and a
PNG bar chart in `--out-dir`.

    python -m benchmarks                          # all cases, all backends
    python -m benchmarks --cases mlp lstm_classifier --rounds 5 --steps 20
    python -m benchmarks --device gpu             # accelerator cases (benchmarks/gpu.py)
"""

import argparse
import importlib.util
import json
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


class Contender:
    """A worker process speaking the JSON-lines protocol of `benchmarks/worker.py`."""

    def __init__(self, label, kind, backend=None, tiny=False, threads=None):
        self.label = label
        env = dict(os.environ)
        if backend:
            env["KERAS_BACKEND"] = backend
        elif "KERAS_BACKEND" not in env and importlib.util.find_spec("torch"):
            # Native workers import kzoo too (for kzoo.backend.memory); on torch
            # rather than Keras' default backend, which may not be installed.
            env["KERAS_BACKEND"] = "torch"
        if threads:
            env["KZOO_BENCH_THREADS"] = str(threads)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        argv = [sys.executable, "-m", "benchmarks.worker", kind] + (["--tiny"] if tiny else [])
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env, cwd=ROOT,
        )
        self.replies = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("@@"):
                self.replies.put(json.loads(line[2:]))
        self.replies.put({"ok": False, "error": f"worker exited with code {self.proc.wait()}"})

    def ask(self, timeout=None, **cmd):
        """Send a command; a worker silent for `timeout` seconds is stopped."""
        if self.proc.poll() is not None:
            return {"ok": False, "error": "worker is not running"}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        try:
            return self.replies.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            return {"ok": False, "error": f"no answer within {timeout} s (stopped)"}

    def close(self):
        try:
            self.ask(cmd="quit", timeout=30)
        except (BrokenPipeError, OSError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)


def contenders_available(requested):
    have = {m: importlib.util.find_spec(m) is not None for m in ("jax", "torch", "tensorflow")}
    found = []
    for name in requested:
        if name == "torch_eager" or name == "torch_compile":
            if have["torch"]:
                found.append(name)
        elif have.get(name.removeprefix("kzoo_")):
            found.append(name)
    return found


def run_case(case_name, labels, args, export=False):
    """Time one case for every contender; return per-contender results (and
    the exported-model latency under the key "export" when `export`)."""
    procs = []
    results = {}
    for label in labels:
        kind = label if label.startswith("torch_") else "kzoo"
        backend = None if kind != "kzoo" else label.removeprefix("kzoo_")
        procs.append(Contender(label, kind, backend, tiny=args.tiny, threads=args.threads))
    try:
        live = []
        for c in procs:
            r = c.ask(cmd="setup", case=case_name, jit_compile=args.jit_compile,
                      warmup=args.warmup, timeout=args.setup_timeout)
            results[c.label] = {"setup": r, "train": [], "infer": []}
            if r.get("ok"):
                live.append(c)
            else:
                print(f"  {c.label}: {r.get('error')}", file=sys.stderr)
        def block_steps(c, what):
            warm = results[c.label]["setup"]["warm_step_s"][what]
            return max(1, min(args.steps, round(args.block_seconds / max(warm, 1e-9))))

        for _ in range(args.rounds):
            for what in ("train", "infer"):
                for c in live:  # alternate the contenders block by block
                    r = c.ask(cmd="time", what=what, steps=block_steps(c, what),
                              timeout=args.setup_timeout)
                    if r.get("ok"):
                        results[c.label][what] += r["times"]
        if export:
            results["export"] = run_export(case_name, procs, args)
    finally:
        for c in procs:
            c.close()
    return results


EXPORTERS = {"kzoo_torch": ("torch", "onnx"), "kzoo_tensorflow": ("tensorflow", "tf_saved_model")}


def run_export(case_name, procs, args):
    """Exported-model latency of one case, in the kzoo workers of the exporting
    backends once their timing is done."""
    rows = {}
    for c in procs:
        if c.label not in EXPORTERS:
            continue
        backend, fmt = EXPORTERS[c.label]
        r = c.ask(cmd="export", case=case_name, format=fmt, repeats=args.export_repeats,
                  timeout=args.setup_timeout)
        if not r.pop("ok", False):
            print(f"  export {fmt} ({backend}): {r.get('error')}", file=sys.stderr)
        rows[f"{fmt} ({backend})"] = r
    return rows


def summarise(case, raw, peak_flops):
    """Median, spread, throughput and ratios for one case."""
    rows = {}
    for label, r in raw.items():
        setup = r["setup"]
        if not setup.get("ok"):
            rows[label] = {"error": setup.get("error")}
            continue
        row = {"params": setup["params"], "setting": setup["setting"],
               "first_step_s": setup["first_step_s"]}
        for what in ("train", "infer"):
            t = np.asarray(r[what])
            if t.size == 0:
                continue
            q1, med, q3 = np.percentile(t, [25, 50, 75])
            row[what] = {
                "median_s": float(med), "iqr_s": float(q3 - q1), "steps": int(t.size),
                "examples_per_s": float(case.batch / med),
            }
        rows[label] = row
    base = rows.get("torch_eager", {})
    comp = rows.get("torch_compile", {})
    for row in rows.values():
        for what in ("train", "infer"):
            if what not in row:
                continue
            for ref_name, ref in (("vs_torch_eager", base), ("vs_torch_compile", comp)):
                if what in ref:
                    row[what][ref_name] = row[what]["examples_per_s"] / ref[what]["examples_per_s"]
            if case.train_flops and what == "train" and peak_flops:
                flops = case.train_flops(case.batch)
                row[what]["mfu"] = flops / row[what]["median_s"] / peak_flops
    params = {row["params"] for row in rows.values() if "params" in row}
    return {"batch": case.batch, "model": case.model, "kwargs": _jsonable(case.kwargs),
            "train_gflop": case.train_flops(case.batch) / 1e9 if case.train_flops else None,
            "params_equal": len(params) <= 1, "contenders": rows}


def markdown(report):
    lines = [
        f"Machine: {report['machine']['cpu']}, {report['machine']['threads']} threads; "
        f"float32 matmul peak {report['peak_gflops']:.1f} GFLOP/s (fastest 1024 x 1024 product, "
        "higher of start and end of the run); "
        f"{report['rounds']} rounds x up to {report['steps']} steps (blocks of about "
        f"{report['block_seconds']} s) per contender; {report['date']}; load average "
        f"(1 min) {report['load_before']:.2f} at the start, {report['load_after']:.2f} at the "
        "end; per case in the JSON.",
        "",
        "| case | contender | setting | params | train ex/s | x torch eager | infer ex/s "
        "| x torch eager | first train step (s) | MFU |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, case in report["cases"].items():
        for label, row in case["contenders"].items():
            if "error" in row:
                lines.append(f"| {name} | {label} | failed: {row['error']} | | | | | | | |")
                continue
            tr, inf = row.get("train", {}), row.get("infer", {})
            lines.append(
                f"| {name} | {label} | {row['setting']} | {row['params']:,} "
                f"| {tr.get('examples_per_s', 0):.0f} | {_ratio(tr.get('vs_torch_eager'))} "
                f"| {inf.get('examples_per_s', 0):.0f} | {_ratio(inf.get('vs_torch_eager'))} "
                f"| {row['first_step_s']['train']:.2f} "
                f"| {_percent(tr.get('mfu'))} |"
            )
        if not case["params_equal"]:
            lines.append(f"| {name} | | parameter counts differ between contenders | | | | | | | |")
    exports = {n: c["export"] for n, c in report["cases"].items() if c.get("export")}
    if exports:
        lines += [
            "",
            "Exported models (`kzoo.benchmark.benchmark`: mean of "
            f"{report['export_repeats']} calls after one warm-up; Keras = `predict_on_batch` "
            "on the exporting backend):",
            "",
            "| case | format (written by) | Keras batch-1 latency (ms) | exported batch-1 latency "
            "(ms) | Keras ex/s | exported ex/s | batch |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, rows in exports.items():
            for label, r in rows.items():
                fmt = label.split(" ")[0]
                if "error" in r:
                    lines.append(f"| {name} | {label} | failed: {r['error']} | | | | |")
                    continue
                k, e = r["keras"], r[fmt]
                lines.append(
                    f"| {name} | {label} | {k['latency_ms']:.2f} | {e['latency_ms']:.2f} "
                    f"| {k['throughput']:.0f} | {e['throughput']:.0f} | {r['batch']} |"
                )
    return "\n".join(lines) + "\n"


def bar_chart(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["cases"])
    labels = sorted({lb for c in report["cases"].values() for lb in c["contenders"]})
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(names)), 4), squeeze=False)
    width = 0.8 / max(1, len(labels))
    for ax, what in zip(axes[0], ("train", "infer")):
        for i, label in enumerate(labels):
            ratios = [
                report["cases"][n]["contenders"].get(label, {}).get(what, {}).get("vs_torch_eager", 0)
                for n in names
            ]
            ax.bar(np.arange(len(names)) + i * width, ratios, width, label=label)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
        ax.set_ylabel(f"{what} throughput / native PyTorch eager")
        ax.set_title(what)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    from benchmarks.cases import make_cases

    argv = sys.argv[1:] if argv is None else list(argv)
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    chosen, argv = device.parse_known_args(argv)
    if chosen.device == "gpu":  # its own cases, flags and outputs
        from benchmarks import gpu

        return gpu.main(argv)
    all_cases = make_cases()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="gpu: the accelerator cases of benchmarks/gpu.py (own flags)")
    parser.add_argument("--cases", nargs="+", choices=sorted(all_cases), default=sorted(all_cases))
    parser.add_argument("--contenders", nargs="+",
                        default=["torch_eager", "torch_compile", "kzoo_jax", "kzoo_torch",
                                 "kzoo_tensorflow"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--block-seconds", type=float, default=1.0,
                        help="fewer steps per block for steps slower than this / --steps")
    parser.add_argument("--no-export", action="store_true",
                        help="skip the exported-model latency of the export cases")
    parser.add_argument("--export-repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto")
    parser.add_argument("--setup-timeout", type=float, default=900,
                        help="stop a contender silent for this long (s), e.g. a slow torch.compile")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    args.jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]

    labels = contenders_available(args.contenders)
    cases = make_cases(tiny=args.tiny)
    peak_proc = Contender("peak", "torch_eager", tiny=args.tiny, threads=args.threads)
    peak = peak_proc.ask(cmd="peak").get("flops", 0.0)
    peak_proc.close()
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                    "python": platform.python_version()},
        "peak_gflops": peak / 1e9, "rounds": args.rounds, "steps": args.steps,
        "block_seconds": args.block_seconds, "export_repeats": args.export_repeats,
        "load_before": os.getloadavg()[0],
        "jit_compile": str(args.jit_compile), "tiny": args.tiny, "cases": {},
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.cases:
        print(f"case {name}: {', '.join(labels)}", file=sys.stderr)
        load = os.getloadavg()[0]
        raw = run_case(name, labels, args, export=cases[name].export and not args.no_export)
        exported = raw.pop("export", None)
        report["cases"][name] = summarise(cases[name], raw, peak)
        if exported is not None:
            report["cases"][name]["export"] = exported
        report["cases"][name]["load_average"] = [load, os.getloadavg()[0]]
        # Written after every case, so that an interrupted run keeps what it measured.
        (out / "partial.json").write_text(json.dumps(report, indent=2) + "\n")
    report["load_after"] = os.getloadavg()[0]
    # The peak again at the end; the higher of the two is the one used.
    peak_proc = Contender("peak", "torch_eager", tiny=args.tiny, threads=args.threads)
    peak_end = peak_proc.ask(cmd="peak").get("flops", 0.0)
    peak_proc.close()
    report["peak_gflops_start_end"] = [peak / 1e9, peak_end / 1e9]
    if peak_end > peak:
        report["peak_gflops"] = peak_end / 1e9
        for name in report["cases"]:
            for row in report["cases"][name]["contenders"].values():
                if "mfu" in row.get("train", {}):
                    row["train"]["mfu"] *= peak / peak_end
    (out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "partial.json").unlink()
    table = markdown(report)
    (out / "latest.md").write_text(table)
    bar_chart(report, out / "latest.png")
    print(table)
    return 0


def _percent(v):
    return "" if v is None else f"{100 * v:.1f}%"


def _ratio(v):
    return "" if v is None else f"{v:.2f}x"


def _jsonable(d):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
