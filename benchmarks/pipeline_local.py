"""Wall time of the embedded default: ``tdds run`` (the tdds-prune pipeline through kfp.local) on a
config, cold, then rerun unchanged (KFP cache), then rerun with one more pruning rate.

    python benchmarks/pipeline_local.py [--config configs/quickstart.yaml] [--add-rate 0.7] [--set key=value ...]

Each run is a separate ``python -m tdds_core run`` process into one fresh temporary output folder;
the script counts the tasks each run executed (the lines `tdds run` prints per task) and prints a
Markdown table (``--json FILE`` writes the rows too).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from pipelines.console import TASK_LINE as _EXEC   # the line `tdds run` prints per task that ran

REPO = Path(__file__).resolve().parents[1]


def run_once(config: str, out: Path, sets: list[str]) -> tuple[float, Counter, str]:
    """One ``tdds run``; returns (wall seconds, executed tasks, the printed table)."""
    cmd = [sys.executable, "-m", "tdds_core", "run", "--config", config, "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"tdds run failed (exit {proc.returncode}):\n{log[-4000:]}")
    table = "\n".join(line for line in proc.stdout.splitlines() if line.startswith("|"))
    return wall, Counter(_EXEC.findall(log)), table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument("--add-rate", type=float, default=0.7, help="the rate added for the third run")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override for every run")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()

    from tdds_core.config import load_config

    cfg = load_config(REPO / args.config, args.sets)
    grown = sorted(set(cfg.selection.rates) | {args.add_rate})
    print(f"# tdds run (kfp.local) wall time, {datetime.now():%Y-%m-%d %H:%M}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"config: {args.config} {' '.join(args.sets)}; methods {len(cfg.methods)}, rates {cfg.selection.rates}\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tdds-bench-") as tmp:
        out = Path(tmp) / "out"
        cases = [("cold", args.sets), ("rerun, unchanged", args.sets),
                 (f"rerun, rates {grown}", [*args.sets, f"selection.rates={json.dumps(grown)}"])]
        for name, sets in cases:
            wall, tasks, table = run_once(args.config, out, sets)
            rows.append({"run": name, "wall_s": round(wall, 1), "tasks": sum(tasks.values()), "executed": dict(tasks)})
            if name == "cold":
                cold_table = table
    print("| run | wall (s) | tasks executed | which |")
    print("|---|---|---|---|")
    for r in rows:
        which = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(r["executed"].items()))
        print(f"| {r['run']} | {r['wall_s']} | {r['tasks']} | {which} |")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\nresults table of the cold run:\n" + cold_table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
