"""GPU mode of the harness: accelerator-sized cases in mixed bfloat16, with MFU.

    python -m benchmarks --device gpu                       # every case, every backend
    python -m benchmarks --device gpu --cases vit_b16 --batch vit_b16=128
    python -m benchmarks --device gpu --tiny --steps 1 --rounds 1   # the smoke test

Cases (batch sizes by `--batch CASE=N`): ViT-B/16 at 224 x 224, GPT-2 small
at 1,024 tokens, ResNet-50 at 224 x 224, BERT-Base at 512 tokens. Every
contender runs in its own process, in mixed bfloat16: kzoo on each installed
backend (`keras.mixed_precision.set_global_policy("mixed_bfloat16")`, Adam,
`jit_compile="auto"`) and the same architecture written as a PyTorch user
would on a GPU (`F.scaled_dot_product_attention`, `torch.autocast` to
bfloat16, fused AdamW), eager (`torch_eager`, the reference of every ratio)
and `torch.compile` (`torch_compile`). Each contender takes a first step
(reported apart as the compile time), `--warmup` steps, then `--rounds`
blocks of `--steps` synchronised training steps; the figure is the median
step. MFU is the model FLOPs of a training step (analytic for the
Transformers, `benchmarks/cases.py`; PyTorch's FLOP counter for ResNet-50)
per second over the device's bfloat16 peak, which this harness measures
itself: the fastest of a few large bfloat16 matrix products.

Without an accelerator the run stops after one sentence and exits 0, so the
smoke test (`tests/test_benchmarks.py`) runs everywhere; `--allow-cpu` runs
the same code on the CPU (to develop the harness, not to measure).
Outputs: `gpu.json` and `gpu.md` in `--out-dir`.
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ("torch_eager", "torch_compile", "kzoo_jax", "kzoo_torch", "kzoo_tensorflow")


# === Cases ===
def make_gpu_cases(tiny=False):
    """name -> dict(kind, size, batch, classes); `tiny` shrinks every size."""
    cases = {
        "vit_b16": dict(kind="vit", image=224, patch=16, d=768, heads=12, layers=12, ff=3072,
                        classes=1000, batch=64),
        "gpt2_small": dict(kind="gpt", length=1024, d=768, heads=12, layers=12, ff=3072,
                           vocab=50257, batch=8),
        "resnet50": dict(kind="resnet", image=224, classes=1000, batch=64),
        "bert_base": dict(kind="bert", length=512, d=768, heads=12, layers=12, ff=3072,
                          vocab=30522, classes=2, batch=16),
    }
    if not tiny:
        return cases
    small = dict(image=32, length=16, d=32, heads=2, layers=1, ff=64, vocab=64, batch=2)
    return {name: {k: small.get(k, min(v, 10) if k == "classes" else v) for k, v in case.items()}
            for name, case in cases.items()}


def train_flops(case):
    """Analytic model FLOPs of one training step (None: counted by PyTorch)."""
    from benchmarks.cases import attention_layer_flops

    b, d, ff, layers = case["batch"], case.get("d"), case.get("ff"), case.get("layers")
    if case["kind"] == "vit":
        patches = (case["image"] // case["patch"]) ** 2
        forward = (patches * 2 * case["patch"] ** 2 * 3 * d
                   + layers * attention_layer_flops(patches + 1, patches + 1, d, ff)
                   + 2 * d * case["classes"])
    elif case["kind"] in ("gpt", "bert"):
        n = case["length"]
        forward = layers * attention_layer_flops(n, n, d, ff)
        forward += n * 2 * d * case["vocab"] if case["kind"] == "gpt" else 2 * d * d
    else:
        return None
    return 3 * b * forward


# === Accelerator detection (in the parent, without starting a framework there) ===
PROBE = {
    "torch": "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() "
             "else '')",
    "jax": "import jax; d = jax.devices()[0]; print('' if d.platform == 'cpu' else d.device_kind)",
    "tensorflow": "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); "
                  "print(g[0].name if g else '')",
}


def find_accelerator():
    """The first accelerator any installed framework sees, as (framework, name), or None."""
    for framework, code in PROBE.items():
        if importlib.util.find_spec(framework) is None:
            continue
        env = {**os.environ, "KERAS_BACKEND": framework, "TF_CPP_MIN_LOG_LEVEL": "3"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, timeout=300)
        name = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        if out.returncode == 0 and name:
            return framework, name
    return None


# === Native PyTorch twins, as written for a GPU ===
def native_model(case):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):  # pre-norm, fused SDPA
        def __init__(self, d, heads, ff, causal):
            super().__init__()
            self.heads, self.causal = heads, causal
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))

        def forward(self, x):
            b, n, d = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, -1).unbind(2)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), is_causal=self.causal)
            x = x + self.out(a.transpose(1, 2).reshape(b, n, d))
            return x + self.ff(self.norm2(x))

    class Transformer(nn.Module):
        def __init__(self, c):
            super().__init__()
            d, self.kind = c["d"], c["kind"]
            if c["kind"] == "vit":
                self.embed = nn.Conv2d(3, d, c["patch"], c["patch"])
                self.cls = nn.Parameter(torch.zeros(1, 1, d))
                tokens = (c["image"] // c["patch"]) ** 2 + 1
            else:
                self.embed = nn.Embedding(c["vocab"], d)
                tokens = c["length"]
            self.pos = nn.Parameter(torch.zeros(1, tokens, d))
            self.blocks = nn.ModuleList(Block(d, c["heads"], c["ff"], c["kind"] == "gpt")
                                        for _ in range(c["layers"]))
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, c["vocab"] if c["kind"] == "gpt" else c["classes"],
                                  bias=c["kind"] != "gpt")

        def forward(self, x):
            if self.kind == "vit":
                x = self.embed(x).flatten(2).transpose(1, 2)
                x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
            else:
                x = self.embed(x)
            x = x + self.pos
            for block in self.blocks:
                x = block(x)
            x = self.norm(x)
            return self.head(x if self.kind == "gpt" else x[:, 0])

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = 4 * width
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
                nn.ReLU(True), nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = (nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x):
            return F.relu(self.body(x) + self.skip(x))

    if case["kind"] != "resnet":
        return Transformer(case)
    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
                   nn.MaxPool2d(3, 2, 1)], 64
    for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for j in range(blocks):
            layers.append(Bottleneck(cin, width, 2 if j == 0 and i > 0 else 1))
            cin = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, case["classes"])]
    return nn.Sequential(*layers)


def kzoo_model(case):
    import kzoo

    c = case
    if c["kind"] == "vit":
        return kzoo.create_model("vit_base", input_shape=(c["image"], c["image"], 3),
                                 patch_size=c["patch"], hidden_dim=c["d"], num_heads=c["heads"],
                                 num_layers=c["layers"], intermediate_dim=c["ff"],
                                 num_classes=c["classes"])
    if c["kind"] == "gpt":
        return kzoo.create_model("transformer_lm", vocabulary_size=c["vocab"],
                                 max_sequence_length=c["length"], hidden_dim=c["d"],
                                 num_heads=c["heads"], num_layers=c["layers"],
                                 intermediate_dim=c["ff"])
    if c["kind"] == "bert":
        return kzoo.create_model("bert_base", vocabulary_size=c["vocab"],
                                 max_sequence_length=c["length"],
                                 hidden_dim=c["d"], num_heads=c["heads"], num_layers=c["layers"],
                                 intermediate_dim=c["ff"], num_classes=c["classes"])
    return kzoo.create_model("resnet50", input_shape=(c["image"], c["image"], 3),
                             num_classes=c["classes"])


def batch_data(case, rng):
    """(inputs, targets) as channels-last numpy arrays (kzoo's layout)."""
    b = case["batch"]
    if case["kind"] in ("vit", "resnet"):
        x = rng.random((b, case["image"], case["image"], 3), dtype=np.float32)
        return x, rng.integers(0, case["classes"], b).astype("int32")
    ids = rng.integers(1, case["vocab"], (b, case["length"])).astype("int32")
    if case["kind"] == "gpt":
        return ids, rng.integers(0, case["vocab"], (b, case["length"])).astype("int32")
    inputs = {"token_ids": ids, "segment_ids": np.zeros_like(ids)}
    return inputs, rng.integers(0, case["classes"], b).astype("int32")


# === Workers (one process per contender) ===
def peak_bf16_flops(n=8192, repeats=10):
    """The device's bfloat16 matrix-multiply peak: the fastest of `repeats` n x n products."""
    if importlib.util.find_spec("torch"):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        (a @ a), sync()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            a @ a
            sync()
            best = min(best, time.perf_counter() - t)
        return 2 * n**3 / best
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.bfloat16)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mm(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def torch_step(case, compiled):
    import torch
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = native_model(case).to(device)
    if case["kind"] in ("vit", "resnet"):
        model = model.to(memory_format=torch.channels_last)
    x, y = batch_data(case, np.random.default_rng(0))
    if isinstance(x, dict):
        x = x["token_ids"]
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).long().to(device)
    if x.ndim == 4:
        x = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    fused = device == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4, fused=fused)
    forward = torch.compile(model) if compiled else model

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = forward(x)
            loss = F.cross_entropy(logits.float().flatten(0, -2), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    params = sum(p.numel() for p in model.parameters())
    return step, params, model, x


def kzoo_step(case):
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = kzoo_model(case)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile="auto")
    x, y = batch_data(case, np.random.default_rng(0))

    def step():
        loss = model.train_on_batch(x, y)
        float(np.asarray(loss).ravel()[0])  # waits for the device

    return step, model.count_params()


def worker(contender, case_name, tiny, warmup, rounds, steps, batch=None):
    case = dict(make_gpu_cases(tiny)[case_name])
    if batch:
        case["batch"] = batch
    t = time.perf_counter()
    flops = train_flops(case)
    if contender.startswith("torch_"):
        step, params, model, x = torch_step(case, compiled=contender == "torch_compile")
        if flops is None:
            flops = _counted_train_flops(model, x)
    else:
        step, params = kzoo_step(case)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    step()
    first_s = time.perf_counter() - t
    for _ in range(warmup):
        step()
    times = []
    for _ in range(rounds * steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return dict(ok=True, params=params, build_s=build_s, first_step_s=first_s, times=times,
                train_flops=flops)


def _counted_train_flops(model, x):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return 3 * counter.get_total_flops()


# === The run ===
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks --device gpu",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cases = make_gpu_cases()
    parser.add_argument("--cases", nargs="+", choices=sorted(cases), default=sorted(cases))
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--batch", nargs="+", default=[], metavar="CASE=N",
                        help="batch size of a case, e.g. vit_b16=128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run on the CPU when no accelerator is present (develop only)")
    parser.add_argument("--setup-timeout", type=float, default=1800)
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results" / "gpu"))
    args = parser.parse_args(argv)
    batches = {}
    for item in args.batch:
        name, _, size = item.partition("=")
        if name not in cases or not size.isdigit() or int(size) < 1:
            print(f"Received --batch {item!r}; expected CASE=N with CASE one of "
                  f"{', '.join(sorted(cases))} and N a positive integer, so fix that value.",
                  file=sys.stderr)
            return 2
        batches[name] = int(size)

    found = find_accelerator()
    if found is None and not args.allow_cpu:
        print("No GPU or TPU is visible to torch, jax or tensorflow here, so the GPU "
              "benchmark is skipped.")
        return 0
    device = found[1] if found else f"CPU ({platform.processor() or platform.machine()})"
    have = {m: importlib.util.find_spec(m) is not None for m in ("jax", "torch", "tensorflow")}
    labels = [c for c in args.contenders
              if have["torch" if c.startswith("torch_") else c.removeprefix("kzoo_")]]
    peak = _in_process(["--peak"], args)
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device,
              "peak_bf16_tflops": peak.get("flops", 0.0) / 1e12, "precision": "mixed_bfloat16",
              "tiny": args.tiny, "rounds": args.rounds, "steps": args.steps, "cases": {}}
    for name in args.cases:
        rows = {}
        for label in labels:
            print(f"case {name}: {label}", file=sys.stderr)
            extra = ["--batch-size", str(batches[name])] if name in batches else []
            rows[label] = _in_process(["--contender", label, "--case", name, *extra], args)
        report["cases"][name] = _summarise(rows, batches.get(name, make_gpu_cases(
            args.tiny)[name]["batch"]), peak.get("flops"))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    table = _markdown(report)
    (out / "gpu.md").write_text(table)
    print(table)
    return 0


def _in_process(extra, args):
    """Run one worker in a fresh process; its last stdout line is its JSON reply."""
    label = extra[1] if extra[0] == "--contender" else "torch_eager"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["KERAS_BACKEND"] = (label.removeprefix("kzoo_") if label.startswith("kzoo_")
                            else "torch" if importlib.util.find_spec("torch") else "jax")
    argv = [sys.executable, "-m", "benchmarks.gpu", "--worker", *extra,
            "--warmup", str(args.warmup), "--rounds", str(args.rounds),
            "--steps", str(args.steps)] + (["--tiny"] if args.tiny else [])
    try:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT,
                             timeout=args.setup_timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"no result within {args.setup_timeout} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    if out.returncode or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"ok": False, "error": f"exit {out.returncode}: {tail}"}
    return json.loads(lines[-1][2:])


def _summarise(rows, batch, peak):
    counted = [r["train_flops"] for r in rows.values() if r.get("train_flops")]
    for row in rows.values():  # one architecture: PyTorch's count holds for kzoo's too
        if row.get("ok") and not row.get("train_flops") and counted:
            row["train_flops"] = counted[0]
    for row in rows.values():
        if not row.get("ok"):
            continue
        med = float(np.median(row["times"]))
        row.update(median_s=med, examples_per_s=batch / med)
        if row.get("train_flops") and peak:
            row["mfu"] = row["train_flops"] / med / peak
    base = rows.get("torch_eager", {}).get("examples_per_s")
    for row in rows.values():
        if base and row.get("examples_per_s"):
            row["vs_torch_eager"] = row["examples_per_s"] / base
    return {"batch": batch, "contenders": rows}


def _markdown(report):
    lines = [f"Device: {report['device']}; bfloat16 matmul peak "
             f"{report['peak_bf16_tflops']:.3g} TFLOP/s (measured by this run); "
             f"{report['precision']}; {report['rounds']} x {report['steps']} steps; "
             f"{report['date']}.", "",
             "| case | contender | batch | params | train ex/s | x torch eager | first step (s) "
             "| MFU |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, case in report["cases"].items():
        for label, r in case["contenders"].items():
            if not r.get("ok"):
                lines.append(f"| {name} | {label} | failed: {r.get('error')} | | | | | |")
                continue
            ratio = f"{r['vs_torch_eager']:.2f}x" if "vs_torch_eager" in r else ""
            mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else ""
            lines.append(f"| {name} | {label} | {case['batch']} | {r['params']:,} "
                         f"| {r['examples_per_s']:.1f} | {ratio} | {r['first_step_s']:.1f} "
                         f"| {mfu} |")
    return "\n".join(lines) + "\n"


def _worker_main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--peak", action="store_true")
    parser.add_argument("--contender")
    parser.add_argument("--case")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        if args.peak:
            result = {"ok": True, "flops": peak_bf16_flops(512 if args.tiny else 8192)}
        else:
            result = worker(args.contender, args.case, args.tiny, args.warmup, args.rounds,
                            args.steps, args.batch_size)
    except Exception as err:  # reported, the parent decides
        result = {"ok": False, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
    print("@@" + json.dumps(result), flush=True)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        _worker_main(sys.argv[1:])
    else:
        sys.exit(main())
