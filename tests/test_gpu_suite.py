"""The GPU suite's reduced CPU mode runs end to end (so the script cannot rot) and publishes its own figures."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_suite_smoke_mode(tmp_path):
    out = tmp_path / "suite"
    env = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TDDS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    thr = json.loads((out / "throughput.json").read_text())
    assert thr["engine_capture_img_s"] > 0 and thr["reference_img_s"] > 0 and "speedup_vs_reference" in thr
    grid = json.loads((out / "grid_time.json").read_text())
    assert grid["wall_s"] > 0
    bench = (out / "docs" / "BENCHMARKS.md").read_text()
    results = (out / "docs" / "RESULTS.md").read_text()
    # the documents hold the figures the suite printed, not retyped ones
    assert f"{thr['engine_capture_img_s']:,.1f}" in bench
    assert (out / "grid" / "report" / "table.md").read_text().strip() in results
    assert f"{grid['wall_s']:.0f} s" in results
    assert (out / "docs" / "results_smoke_accuracy_vs_rate.png").stat().st_size > 1000
    # the smoke grid has the cross-architecture row for TDDS and Random at 70%
    table = (out / "grid" / "report" / "table.csv").read_text()
    assert "tdds" in table and "random" in table and "resnet18" in table


@pytest.mark.slow
def test_a_slim_copy_of_a_grid_carries_its_finished_work(tmp_path, synthetic):
    """benchmarks/gpu_carry.py: the copy leaves out model weights and features, and a grid run on it
    trains nothing again (no weights reappear) and gives the same table."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_carry import slim_copy

    from tdds_core.config import parse_config
    from tdds_core.grid import run_grid

    conf = synthetic(160, 80, 12, name="carry", batch_size=32,
                     methods=[{"name": "random"}, {"name": "moderate"}, {"name": "tdds", "params": {"T": 3, "W": 2}}],
                     selection={"rates": [0.5]}, coreset={"batch_size": 16},
                     evaluate={"rates": [0.5], "methods": ["tdds"], "archs": ["small_cnn_fc"]}, tracking={"enabled": False})
    first = run_grid(parse_config({**conf, "output": str(tmp_path / "call1")}))
    copied, left = slim_copy(tmp_path / "call1", tmp_path / "call2")
    assert any(p.endswith("model.pt") for p in left) and any(p.endswith("features.npy") for p in left)
    assert not list((tmp_path / "call2").rglob("*.pt"))
    second = run_grid(parse_config({**conf, "output": str(tmp_path / "call2")}))
    assert not list((tmp_path / "call2").rglob("*.pt")), "something was trained again"
    assert second.table_md == first.table_md
