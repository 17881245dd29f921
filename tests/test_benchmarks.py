"""The benchmark harness runs end to end on its tiniest case (no timing asserted);
its native PyTorch twins match kzoo's parameter counts and its MFU formulas
match PyTorch's own FLOP counter."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kzoo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cases import make_cases  # noqa: E402

EXPORT_FORMAT = {"torch": "onnx", "tensorflow": "tf_saved_model"}


def test_harness_smoke_run_writes_json_markdown_and_png(tmp_path):
    backend = keras.config.backend()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--cases", "mlp", "--steps", "2",
         "--rounds", "1", "--warmup", "1", "--export-repeats", "2",
         "--contenders", "torch_eager", f"kzoo_{backend}", "--out-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    case = report["cases"]["mlp"]
    rows = case["contenders"]
    kzoo_row = rows[f"kzoo_{backend}"]
    assert kzoo_row["train"]["steps"] == 2 and kzoo_row["train"]["median_s"] > 0
    assert kzoo_row["infer"]["examples_per_s"] > 0
    if "torch_eager" in rows:  # only where PyTorch is installed
        assert case["params_equal"]
        assert kzoo_row["train"]["vs_torch_eager"] > 0
    assert report["peak_gflops"] > 0
    assert len(case["load_average"]) == 2
    markdown = (tmp_path / "latest.md").read_text()
    assert markdown.count("| mlp |") == len(rows) + len(case.get("export", {}))
    assert (tmp_path / "latest.png").stat().st_size > 0
    if backend in EXPORT_FORMAT:  # this backend writes an exported model and times it
        fmt = EXPORT_FORMAT[backend]
        exported = case["export"][f"{fmt} ({backend})"]
        assert "error" not in exported, exported
        assert exported["keras"]["latency_ms"] > 0 and exported[fmt]["latency_ms"] > 0
        assert exported[fmt]["throughput"] > 0


@pytest.mark.parametrize("name", sorted(make_cases(tiny=True)))
def test_native_twin_has_the_kzoo_parameter_count(name):
    pytest.importorskip("torch")
    from benchmarks.native_torch import trainable_params

    case = make_cases(tiny=True)[name]
    model = kzoo.create_model(case.model, **case.kwargs)
    expected = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    assert trainable_params(case.native()) == expected


@pytest.mark.parametrize("name", ["transformer", "vit_tiny"])
def test_mfu_flop_formula_matches_torch_flop_counter(name):
    """The analytic forward FLOPs (a third of the training FLOPs) equal what
    PyTorch counts on the native twin (math attention, so bmm is visible)."""
    torch = pytest.importorskip("torch")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    case = make_cases(tiny=True)[name]
    module = case.native().train()  # the eval fast path hides its matmuls from the counter
    x = case.inputs(2, np.random.default_rng(0))
    if isinstance(x, dict):
        args = {k: torch.from_numpy(v).long() for k, v in x.items()}
    else:
        args = {"x": torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))}
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as count:
        module(**args)
    assert count.get_total_flops() == case.train_flops(2) / 3


def test_gpu_mode_skips_in_one_sentence_without_an_accelerator(tmp_path):
    """`python -m benchmarks --device gpu --tiny` is the GPU mode's smoke test: on a
    machine without an accelerator it says so in one sentence and exits 0."""
    from benchmarks import gpu

    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--device", "gpu", "--tiny", "--steps", "1",
         "--rounds", "1", "--out-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    if gpu.find_accelerator() is None:
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 1 and "skipped" in lines[0] and lines[0].endswith(".")
        assert not (tmp_path / "gpu.json").exists()
    else:
        report = json.loads((tmp_path / "gpu.json").read_text())
        assert sorted(report["cases"]) == sorted(gpu.make_gpu_cases(tiny=True))


def test_gpu_mode_runs_its_code_on_the_cpu_when_allowed(tmp_path):
    """The GPU mode's workers, twins and MFU run (here on the CPU, tiny, one step)."""
    from benchmarks import gpu

    backend = keras.config.backend()
    contenders = [f"kzoo_{backend}"] + (["torch_eager"] if backend == "torch" else [])
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--device", "gpu", "--tiny", "--allow-cpu",
         "--cases", "vit_b16", "--batch", "vit_b16=3", "--steps", "1", "--rounds", "1",
         "--warmup", "0", "--contenders", *contenders, "--out-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    case = report["cases"]["vit_b16"]
    assert case["batch"] == 3 and report["precision"] == "mixed_bfloat16"
    for label in contenders:
        row = case["contenders"][label]
        assert row["ok"], row
        assert row["median_s"] > 0 and len(row["times"]) == 1
        assert row["train_flops"] == gpu.train_flops({**gpu.make_gpu_cases(True)["vit_b16"],
                                                      "batch": 3})
    if "torch_eager" in case["contenders"]:  # the twins are the same ViT
        assert case["contenders"]["torch_eager"]["params"] == case["contenders"][
            f"kzoo_{backend}"]["params"]


def test_gpu_mode_rejects_a_bad_batch_flag_in_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--device", "gpu", "--batch", "vit_b16=zero"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "vit_b16=zero" in proc.stderr


def test_compare_calls_a_loss_a_regression_only_beyond_the_run_to_run_noise(tmp_path):
    from benchmarks import compare

    def run(name, mlp, cnn):
        cases = {case: {"contenders": {
            "torch_eager": {"train": {"vs_torch_eager": 1.0}},
            "kzoo_jax": {"train": {"vs_torch_eager": ratio}, "infer": {"error": "failed"}}}}
            for case, ratio in (("mlp", mlp), ("cnn", cnn))}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"cases": cases}))
        return path

    before = [run("b1", 1.00, 1.00), run("b2", 1.10, 1.02)]  # 10% and 2% noise
    after = [run("a1", 0.95, 0.80), run("a2", 1.00, 0.82)]
    rows = {(r[0], r[1], r[2]): r for r in compare.compare(
        [compare.ratios(p) for p in before], [compare.ratios(p) for p in after])}
    assert set(rows) == {("mlp", "kzoo_jax", "train"), ("cnn", "kzoo_jax", "train")}
    assert rows[("mlp", "kzoo_jax", "train")][-1] == "within noise"  # -7% inside 10%
    assert rows[("cnn", "kzoo_jax", "train")][-1] == "slower, beyond noise"  # -20% beyond 2.5%
    out = tmp_path / "table.md"
    assert compare.main(["--before", *map(str, before), "--after", *map(str, after),
                         "--out", str(out)]) == 0
    assert "| cnn | kzoo_jax | train | 1.01x | 0.81x | -20% |" in out.read_text()
