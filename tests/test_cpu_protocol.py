"""The CPU protocol's reduced mode runs end to end on real Fashion-MNIST (so the benchmark command
cannot rot): tune on the validation split, grids over two processes, ablations, and a results page
whose numbers are the runs' own."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tdds_core.config import load_config
from tdds_core.report import build_table, paired_differences

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_cpu_protocol_smoke_mode(tmp_path):
    out = tmp_path / "proto"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TDDS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "benchmarks/cpu_protocol.py", "--smoke", "--jobs", "2", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    page = (out / "docs" / "RESULTS.md").read_text()
    assert "<!-- cpu-protocol:begin -->" in page and "<!-- cpu-protocol:end -->" in page
    assert (out / "docs" / "img" / "cpu_protocol_accuracy_vs_rate.png").stat().st_size > 1000
    # the grid split over two processes and composed again: every (method, rate) has both seeds
    rows = json.loads((out / "report" / "rows.json").read_text())
    table = build_table(rows)
    cells = [t for t in table if t["rate"] is not None]
    assert {t["method"] for t in cells} == {"random", "el2n[k=2]", "tdds", "tdds-rule"}
    assert all(t["n"] == 2 and t["seeds"] == [0, 1] for t in cells)
    assert len(list((out / "logs").glob("grid-main-*.log"))) == 2
    # the page carries the runs' numbers: each mean of the table and each paired difference to Random
    for t in cells:
        assert f"{t['final_acc_mean']:.2f} ± {t['final_acc_std']:.2f}" in page
    for d in paired_differences(rows):
        assert f"{d['mean']:+.2f} ± {d['std']:.2f} ({d['wins']}/{d['n']})" in page
    # the TDDS row trains with what tune chose on the validation split
    tuned = load_config(out / "tuned.yaml")
    tdds = next(m for m in tuned.methods if m.label == "tdds")
    assert set(tdds.per_rate) == {0.5, 0.8}
    for rate, chosen in tdds.per_rate.items():
        assert f"p={rate:.2f}: T={chosen['T']}, W={chosen['W']}, weighting {chosen['weighting']}" in page
        assert {r["weighting"] for r in rows if r["method"] == "tdds" and r["rate"] == rate} == {chosen["weighting"]}
    assert "The test set was not read" in page and (out / "tuned.md").read_text().strip() in page
    # the ablation rows, paired against Random (with and without the batch-size rule); a window variant
    # appears only where it differs from the tuned setting
    t, w = tdds.per_rate[0.8]["T"], tdds.per_rate[0.8]["W"]
    assert ("| tdds (earliest window: T = W)" in page) == (t != w)
    assert ("| tdds (latest: T = 4)" in page) == (t != 4)
    assert "| tdds (other weighting)" in page and "| tdds (no batch rule)" in page
    with open(out / "table.csv") as f:
        assert {r["method"] for r in csv.DictReader(f)} >= {"random", "tdds", "full"}
