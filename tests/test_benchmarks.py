"""The benchmark harness runs end to end on its tiniest case (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import keras

ROOT = Path(__file__).resolve().parents[1]


def test_harness_smoke_run_writes_json_markdown_and_png(tmp_path):
    backend = keras.config.backend()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--cases", "mlp", "--steps", "2",
         "--rounds", "1", "--warmup", "1", "--contenders", "torch_eager", f"kzoo_{backend}",
         "--out-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    rows = report["cases"]["mlp"]["contenders"]
    kzoo_row = rows[f"kzoo_{backend}"]
    assert kzoo_row["train"]["steps"] == 2 and kzoo_row["train"]["median_s"] > 0
    assert kzoo_row["infer"]["examples_per_s"] > 0
    if "torch_eager" in rows:  # only where PyTorch is installed
        assert report["cases"]["mlp"]["params_equal"]
        assert kzoo_row["train"]["vs_torch_eager"] > 0
    assert report["peak_gflops"] > 0
    assert (tmp_path / "latest.md").read_text().count("| mlp |") == len(rows)
    assert (tmp_path / "latest.png").stat().st_size > 0
