"""What the CPU protocol's training costs on this machine, as whole `tdds train` processes.

    python benchmarks/cpu_train.py [--config configs/fashion-mnist-cpu.yaml] [--epochs 2] [--docs docs]

Variants: channels_last on and off, one process with every core's thread, and one single-thread
process per core running at once (how `benchmarks/cpu_protocol.py` runs its grids). Each process
trains the config's full-data run for ``--epochs`` epochs into a fresh folder; the figures are the
process wall time and the engine's own img/s (``result.json``), summed over concurrent processes.
Writes the table between ``<!-- cpu-train:begin -->`` and ``<!-- cpu-train:end -->`` of
docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- cpu-train:begin -->", "<!-- cpu-train:end -->"


def _variant(config: str, epochs: int, channels_last: bool, procs: int, threads: int, tmp: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    outs = [tmp / f"cl{int(channels_last)}-p{procs}-t{threads}-{i}" for i in range(procs)]
    sets = [f"train.epochs={epochs}", f"train.eval_every={epochs}", "train.progress=false", "tracking.enabled=false",
            f"train.channels_last={str(channels_last).lower()}"]
    t0 = time.time()
    ps = [subprocess.Popen([sys.executable, "-m", "tdds_core", "train", "--config", config, "--out", str(o)]
                           + [a for s in sets for a in ("--set", s)], env=env, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for o in outs]
    for p in ps:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"tdds train failed:\n{err[-2000:]}")
    wall = time.time() - t0
    results = [json.loads(next(o.glob("train/*/result.json")).read_text()) for o in outs]
    return {"channels_last": channels_last, "processes": procs, "threads": threads, "wall_s": wall,
            "img_s": sum(r["img_per_s"] for r in results), "samples": results[0]["num_train"], "epochs": epochs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/fashion-mnist-cpu.yaml"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--docs", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cl in (False, True):
            rows.append(_variant(args.config, args.epochs, cl, 1, cores, Path(tmp)))
            if cores > 1:
                rows.append(_variant(args.config, args.epochs, cl, cores, 1, Path(tmp)))
    import torch

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    lines = ["## CPU training (the CPU protocol's model and data)", "",
             f"- machine: {cpu}, {cores} cores; torch {torch.__version__}; {datetime.date.today().isoformat()}",
             f"- command: `python benchmarks/cpu_train.py --epochs {args.epochs}`; config `{Path(args.config).name}`: "
             f"{rows[0]['samples']:,} samples, {args.epochs} epochs per process, dynamics recorded", "",
             "| channels_last | processes x threads | img/s (all processes) | wall s (whole processes) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'on' if r['channels_last'] else 'off'} | {r['processes']} x {r['threads']} | "
                     f"{r['img_s']:,.0f} | {r['wall_s']:.1f} |")
    base = rows[0]["img_s"]
    best = max(rows, key=lambda r: r["img_s"])
    lines += ["", f"Best: channels_last {'on' if best['channels_last'] else 'off'}, {best['processes']} x "
              f"{best['threads']}: {best['img_s'] / base:.2f}x the img/s of one process without channels_last. "
              "The grid of `benchmarks/cpu_protocol.py` runs one single-thread process per core."]
    body = "\n".join(lines)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from publish import replace_block

    replace_block(Path(args.docs) / "BENCHMARKS.md", "Benchmarks", body, BEGIN, END)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
