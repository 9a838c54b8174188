"""The CPU protocol's reduced mode runs end to end on real Fashion-MNIST (so the benchmark command
cannot rot): the coreset chosen on the validation split, two full-data seeds, the rows with and
without the batch rule and at equal iterations, RS2, and a results page whose numbers are the runs' own."""
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
    for img in ("cpu_protocol_accuracy_vs_rate.png", "cpu_protocol_time_to_accuracy.png"):
        assert (out / "docs" / "img" / img).stat().st_size > 1000
    rows = json.loads((out / "rows.json").read_text())
    table = build_table(rows)
    cells = {(t["method"], t["rate"]): t for t in table if t["rate"] is not None}
    rates = (0.5, 0.8)
    # the rows the verdict rests on: two full-data seeds x two coreset seeds, paired on both
    for m in ("random", "rs2", "recommended", "tdds"):
        for r in rates:
            assert cells[(m, r)]["seeds"] == [4200, 4201, 4300, 4301], (m, r)
            assert cells[(m + " (no batch rule)", r)]["n"] == 4
    for r in rates:   # the other rows: the first coreset seed of each full-data run
        assert cells[("el2n[k=2]", r)]["seeds"] == [4200, 4300] and cells[("tdds-rule", r)]["n"] == 2
    assert {m for m, r in cells if m.endswith("(equal iterations)")} == {
        "random (equal iterations)", "rs2 (equal iterations)", "recommended (equal iterations)"}
    assert {r for m, r in cells if m.endswith("(equal iterations)")} == {0.8}
    # RS2 trains as many iterations as the static coreset of its rate, in every variant
    for r in rates:
        assert cells[("rs2", r)]["iterations"] == cells[("random", r)]["iterations"]
    assert cells[("rs2 (equal iterations)", 0.8)]["iterations"] == cells[("random (equal iterations)", 0.8)]["iterations"]
    full = [x for x in rows if x.get("rate") is None]
    assert sorted(x["seed"] for x in full) == [42, 43]
    # the page carries the runs' numbers: each mean and each paired difference
    for t in cells.values():
        assert f"{t['final_acc_mean']:.2f} ± {t['final_acc_std']:.2f}" in page
    main = [x for x in rows if not str(x["method"]).endswith(")")]
    for d in paired_differences(main) + paired_differences(main, reference="rs2"):
        assert f"{d['mean']:+.2f} ± {d['std']:.2f} ({d['wins']}/{d['n']})" in page
    # the recommended row is what tune chose on the validation split, and the page says so per rate
    info = json.loads((out / "tuned.json").read_text())
    tuned = load_config(out / "tuned.yaml")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from cpu_protocol import SMOKE
    from tdds_core.tune import choose_candidates
    cands = {c.label: c for c in choose_candidates(load_config(ROOT / "configs/fashion-mnist-cpu.yaml", SMOKE))}
    for r in rates:
        chosen = info["recommended"][str(r)]
        assert f"**p={r:.2f}: take `{chosen['label']}`**" in page
        (entry,) = [m for m in tuned.methods if m.label == "recommended" and m.rates == [r]]
        assert (entry.name, entry.params) == (cands[chosen["label"]].name, cands[chosen["label"]].params_for(r))
    assert "The test set was not read" in page and "What each row costs" in page
