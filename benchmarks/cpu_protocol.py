"""The CPU protocol end to end (docs/RESULTS.md): settings chosen on a validation split, every
method at five pruning rates and three coreset seeds, TDDS ablations, and the results page.

    python benchmarks/cpu_protocol.py                      # about 80 minutes on 2 cores (configs/fashion-mnist-cpu.yaml)
    python benchmarks/cpu_protocol.py --smoke --out DIR    # the same steps at toy size, minutes (CI)

1. ``tdds tune``: TDDS's (T, W) per rate and its loss weighting on the held-out training samples
   (test labels never read); writes ``<out>/tuned.yaml`` with the fixed fallback row ``tdds-rule``.
2. ``tdds train``, then ``tdds grid --methods ...`` over ``--jobs`` processes (one thread each; a
   small CNN on 2 cores trains faster as two single-thread processes than as one two-thread one).
3. TDDS ablations at 70/80/90%: the other loss weighting, the earliest and the latest window, and
   the batch-size rule off (with Random beside it).
4. The full grids again in this process (every run is served from the store) for the rows, then
   the page: tables, paired differences to Random per seed, the plot, the machine, the command and
   the wall time. Every figure comes from the runs; nothing is typed by hand.

Interrupted, it continues where it stopped (every piece is keyed by content and settings).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tdds_core.config import Config, load_config  # noqa: E402
from tdds_core.grid import run_grid  # noqa: E402
from tdds_core.io import atomic_write_text  # noqa: E402
from tdds_core.plan import format_rate  # noqa: E402
from publish import replace_block  # noqa: E402
from tdds_core.report import (build_table, paired_differences, paired_markdown, plot_accuracy_vs_rate,  # noqa: E402
                              to_markdown)

BEGIN, END = "<!-- cpu-protocol:begin -->", "<!-- cpu-protocol:end -->"
ABLATION_RATES = [0.7, 0.8, 0.9]
SMOKE = ["data.train_subset=700", "data.val_size=200", "data.test_subset=300",
         "model.options={width: 8, hidden: 32}", "train.epochs=4", "train.eval_every=4", "selection.rates=[0.5, 0.8]",
         "coreset.seeds=[0, 1]", "tune.grid={T: [3, 4], W: [3], weighting: [batch, none]}", "tune.epochs=2",
         "methods=[{name: random}, {name: el2n, params: {k: 2}}, {name: tdds, params: {T: 4, W: 3}}]"]


def _sh(cmd: list[str], log: Path, threads: int | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print("$", " ".join(cmd), f"> {log}", flush=True)
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _run_all(cmds: list[tuple[list[str], Path]], jobs: int, threads: int) -> None:
    """Run the commands ``jobs`` at a time; a failed one is retried once alone (its finished work is kept)."""
    pending, running, failed = list(cmds), [], []
    while pending or running:
        while pending and len(running) < jobs:
            cmd, log = pending.pop(0)
            running.append((_sh(cmd, log, threads), cmd, log))
        time.sleep(2)
        for item in list(running):
            if item[0].poll() is not None:
                running.remove(item)
                if item[0].returncode != 0:
                    failed.append(item[1:])
    for cmd, log in failed:
        if _sh(cmd, log.with_suffix(".retry.log"), None).wait() != 0:
            raise SystemExit(f"failed twice: {' '.join(cmd)} (see {log} and {log.with_suffix('.retry.log')})")


def _shards(cfg: Config, jobs: int) -> list[list[str]]:
    """Method labels split into ``jobs`` groups of about equal training cost (sum of kept fractions)."""
    cost = {m.label or m.display: sum(1 - r for r in (m.rates or cfg.selection.rates)) for m in cfg.methods}
    groups: list[list[str]] = [[] for _ in range(max(1, jobs))]
    load = [0.0] * len(groups)
    for label in sorted(cost, key=lambda k: -cost[k]):
        i = load.index(min(load))
        groups[i].append(label)
        load[i] += cost[label]
    return [g for g in groups if g]


def _write(cfg: Config, path: Path) -> Path:
    atomic_write_text(path, cfg.to_yaml())
    return path


def ablations(tuned: Config) -> tuple[Config, Config]:
    """(variants, batch rule off) grids at :data:`ABLATION_RATES`: TDDS with the other loss weighting
    (batch <-> none, per rate), the earliest window (T = W) and the latest trajectory (T = all
    epochs) where they differ from the tuned setting, and TDDS and Random without the batch-size
    rule. Random rides along in both for the paired differences."""
    from tdds_core.plan import coreset_weighting

    tdds = next(m for m in tuned.methods if m.label == "tdds")
    rand = next(m for m in tuned.methods if m.name == "random")
    rates = [r for r in ABLATION_RATES if r in tuned.selection.rates] or tuned.selection.rates[-1:]
    epochs = tuned.train.epochs
    tw = {r: (tdds.params_for(r)["T"], tdds.params_for(r)["W"]) for r in rates}
    other = {r: "none" if coreset_weighting(tuned, tdds, r) != "none" else "batch" for r in rates}
    variants = [rand.model_copy(update={"rates": rates}),
                tdds.model_copy(update={"label": "tdds (other weighting)", "rates": rates, "per_rate": {
                    r: {"T": tw[r][0], "W": tw[r][1], "weighting": other[r]} for r in rates}})]
    for label, t_of in (("tdds (earliest window: T = W)", lambda w: w), (f"tdds (latest: T = {epochs})", lambda w: epochs)):
        # only the rates where the variant differs from the tuned setting (a copy would retrain the same)
        differ = [r for r in rates if t_of(tw[r][1]) != tw[r][0]]
        if differ:
            variants.append(tdds.model_copy(update={"label": label, "rates": differ, "per_rate": {
                r: {**tdds.per_rate_for(r), "T": t_of(tw[r][1]), "W": tw[r][1]} for r in differ}}))
    a = tuned.model_copy(update={"methods": variants})
    b = tuned.model_copy(update={"methods": [rand.model_copy(update={"rates": rates, "label": "random"}),
                                             tdds.model_copy(update={"rates": rates})],
                                 "coreset": tuned.coreset.model_copy(update={"batch_rule": False})})
    return a, b


def page(env: dict, main: list[dict], abl: list[dict], batch_off: list[dict], tune_md: str, tuned: Config,
         plot: str) -> str:
    from tdds_core.plan import coreset_weighting

    table = build_table(main)
    c = tuned
    tdds = next(m for m in c.methods if m.label == "tdds")
    n_seeds = len(c.coreset.seeds)
    lines = [f"## CPU protocol: {c.data.name}, {c.model.arch}, {n_seeds} coreset seeds ({env['mode']} mode)", "",
             f"- machine: {env['machine']}; torch {env['torch']}; {env['date']}",
             f"- command: `{env['command']}`",
             f"- wall time of this invocation: {env['wall_min']:.1f} min ({env['phases']}); training time of the "
             f"runs in these tables, summed: {env['train_min']:.1f} min (a rerun is served from the store)",
             f"- data: {env['n_train']:,} training samples, {c.data.val_size:,} held out as the validation split, "
             f"{env['n_test']:,} test images; {c.train.epochs} epochs, batch {c.train.batch_size}, lr {c.train.lr}; "
             f"coreset: Strategy-{c.coreset.strategy}, batch {c.coreset.batch_size}"
             + (f" halved at >= {c.coreset.batch_rule_thresholds[0]:g} and quartered at >= "
                f"{c.coreset.batch_rule_thresholds[1]:g}" if c.coreset.batch_rule else "")
             + ", each method's own loss weighting (TDDS: from `tdds tune`; baselines: none)",
             f"- one full-data run (seed {c.train.seed}) scores every method; each cell trains {n_seeds} coresets "
             f"(seeds {', '.join(map(str, c.coreset.seeds))}); accuracy is the test accuracy after the last epoch "
             "(no epoch or setting is picked on the test set)", "",
             "### Test accuracy (%), mean ± std over coreset seeds", "",
             to_markdown(table).strip(), "",
             "### Against Random, paired by seed", "",
             paired_markdown(paired_differences(main)).strip(), ""]
    diffs = {(d["method"], d["rate"]): d for d in paired_differences(main)}
    target = [(r, diffs.get(("tdds", r))) for r in (0.7, 0.8, 0.9)]
    verdict = ", ".join(f"p={format_rate(r)}: {'at or above' if d and d['mean'] >= 0 else 'BELOW'} Random "
                        f"({d['mean']:+.2f})" if d else f"p={format_rate(r)}: not run" for r, d in target)
    lines += [f"TDDS (tuned on the validation split) against Random: {verdict}.", "",
              f"![accuracy vs pruning rate]({plot})", "",
              "### TDDS settings chosen on the validation split (`tdds tune`)", "", tune_md.strip(), "",
              "Chosen per rate: " + "; ".join(
                  f"p={format_rate(r)}: T={p['T']}, W={p['W']}, weighting {coreset_weighting(c, tdds, r)}"
                  for r, p in sorted(tdds.per_rate.items())) + ". The row `tdds-rule` is the fixed fallback: the paper's CIFAR-100 (T, W) as fractions of the run "
              "(tdds_core/tune.py `paper_rule`).", ""]
    if abl or batch_off:
        base = [r for r in main if r["method"] in ("tdds", "random") and r.get("rate") in ABLATION_RATES]
        variants = [r for r in abl if r["method"] != "random"]     # its random rows are the main grid's runs
        off = [dict(r, method=f"{r['method']} (no batch rule)") for r in batch_off]
        lines += ["### TDDS ablation (test accuracy, %)", "", to_markdown(build_table(base + variants + off)).strip(), "",
                  "Paired by seed against Random (the rows without the batch rule against Random without it):", "",
                  paired_markdown(paired_differences(base + variants)
                                  + paired_differences(off, reference="random (no batch rule)")).strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/fashion-mnist-cpu.yaml"))
    ap.add_argument("--out", help="Output root (default: the config's output).")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="Grid processes at once (default: cores).")
    ap.add_argument("--smoke", action="store_true", help="Toy sizes (CI); the page goes to <out>/docs.")
    ap.add_argument("--docs", help="Where RESULTS.md is (default: docs/, or <out>/docs with --smoke).")
    args = ap.parse_args(argv)
    t0 = time.time()
    sets = (SMOKE if args.smoke else []) + ["train.progress=false"]
    cfg = load_config(args.config, sets)
    out = Path(args.out or cfg.output).absolute()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    docs = Path(args.docs) if args.docs else (out / "docs" if args.smoke else ROOT / "docs")
    tdds = [sys.executable, "-m", "tdds_core"]
    setargs = [a for s in sets for a in ("--set", s)]
    phases: dict[str, float] = {}

    # 1. choose TDDS's settings on the validation split
    t = time.time()
    tuned_path = out / "tuned.yaml"
    if _sh(tdds + ["tune", "--config", args.config, "--out", str(out), "--write", str(tuned_path)] + setargs,
           logs / "tune.log").wait() != 0:
        raise SystemExit(f"tdds tune failed; see {logs / 'tune.log'}")
    phases["tune"] = time.time() - t
    tuned = load_config(tuned_path, ["train.progress=false"])
    tuned.output = str(out)
    abl, batch_off = ablations(tuned)
    paths = {"main": _write(tuned, out / "grid-main.yaml"), "ablation": _write(abl, out / "grid-ablation.yaml"),
             "batch-off": _write(batch_off, out / "grid-batch-off.yaml")}

    # 2. the full-data run once, then the grids over processes
    t = time.time()
    if _sh(tdds + ["train", "--config", str(paths["main"])], logs / "train.log").wait() != 0:
        raise SystemExit(f"tdds train failed; see {logs / 'train.log'}")
    phases["train"] = time.time() - t
    t = time.time()
    cmds = [(tdds + ["grid", "--config", str(paths["main"]), "--methods", ",".join(g)], logs / f"grid-main-{i}.log")
            for i, g in enumerate(_shards(tuned, args.jobs))]
    cmds += [(tdds + ["grid", "--config", str(paths[k])], logs / f"grid-{k}.log") for k in ("ablation", "batch-off")]
    _run_all(cmds, args.jobs, max(1, (os.cpu_count() or 1) // args.jobs))
    phases["grids"] = time.time() - t

    # 3. rows back (all served from the store); the main grid last, so <out>/report is its report
    t = time.time()
    rows_abl = run_grid(abl).rows
    rows_off = run_grid(batch_off).rows
    res = run_grid(tuned)
    phases["compose"] = time.time() - t
    main_rows = res.rows
    import torch

    from tdds_core.data import create_dataset

    splits = create_dataset(tuned.data)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").is_file() else platform.processor()
    train_s = sum(float(r.get("wall_s") or 0) for r in main_rows + rows_abl + rows_off)
    env: dict[str, Any] = {
        "mode": "smoke" if args.smoke else "full", "machine": f"{cpu}, {os.cpu_count()} cores, {platform.machine()}",
        "torch": torch.__version__, "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/cpu_protocol.py" + (" --smoke" if args.smoke else "") + f" --jobs {args.jobs}",
        "wall_min": (time.time() - t0) / 60, "train_min": train_s / 60,
        "phases": ", ".join(f"{k} {v / 60:.1f} min" for k, v in phases.items()),
        "n_train": len(splits.train), "n_test": len(splits.test)}
    img = docs / "img" / "cpu_protocol_accuracy_vs_rate.png"
    plot_accuracy_vs_rate(main_rows, img, title=f"{tuned.name}: {tuned.data.name}, n={len(tuned.coreset.seeds)} seeds")
    tune_md = tuned_path.with_suffix(".md").read_text()
    body = page(env, main_rows, rows_abl, rows_off, tune_md, tuned, os.path.relpath(img, docs))
    replace_block(docs / "RESULTS.md", "Results", body, BEGIN, END)
    (out / "env.json").write_text(json.dumps(env, indent=2))
    shutil.copy(res.report_dir / "table.csv", out / "table.csv") if res.report_dir else None
    print(body)
    print(f"\nwritten: {docs / 'RESULTS.md'}, {img}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
