"""The CPU protocol end to end (docs/RESULTS.md): the coreset to take per rate, chosen on a validation
split, against Random and RS2 over two full-data seeds, with and without the batch-size rule, at
equal epochs and equal iterations, with the whole cost of every row.

    python benchmarks/cpu_protocol.py                      # about 95 minutes on 2 cores (configs/fashion-mnist-cpu.yaml)
    python benchmarks/cpu_protocol.py --smoke --out DIR    # the same steps at toy size, minutes (CI)

1. ``tdds tune`` with ``tune.choose``: per rate, the coreset to take among the configured methods,
   TDDS's settings, strategies and loss weightings, on the held-out training samples (test labels
   never read; successive halving over two tune seeds). Writes ``<out>/tuned.yaml`` with the
   ``recommended`` row. While it runs, the full-data runs (one output root per full-data seed,
   ``<out>/s<seed>``) and the rows that do not depend on it train on the other core.
2. The grids, ``--jobs`` single-thread processes at a time (a small CNN on 2 cores trains faster as
   two single-thread processes than as one two-thread one):
   - main: every row at the protocol's rates with the batch-size rule; the rows the page's verdict
     rests on (:data:`KEY_ROWS`) on every coreset seed, the others on the first only;
   - no batch rule: :data:`RULE_OFF_ROWS`, every coreset seed;
   - equal iterations: :data:`ITER_ROWS` trained as many iterations as the full-data run
     (Strategy P, no batch rule) at :data:`ITER_RATES`, on the first full-data seed.
3. The rows back (every run is served from the store), then the page: tables, paired differences
   (a pair = one full-data seed and one coreset seed), the cost of each row, a sentence per rate,
   the plots, the machine, the command and the wall time. Nothing is typed by hand.

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
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tdds_core.config import Config, load_config  # noqa: E402
from tdds_core.grid import run_grid  # noqa: E402
from tdds_core.io import atomic_write_text  # noqa: E402
from tdds_core.names import format_rate  # noqa: E402
from tdds_core.report import build_table, paired_differences, paired_markdown, plot_accuracy_vs_rate, to_markdown  # noqa: E402
from tdds_core.tune import RECOMMENDED  # noqa: E402
from publish import replace_block  # noqa: E402

BEGIN, END = "<!-- cpu-protocol:begin -->", "<!-- cpu-protocol:end -->"
FULL_SEEDS = (42, 43)
KEY_ROWS = ("random", "rs2", RECOMMENDED, "tdds", "ccs", "dual")          # every coreset seed
TUNED_ROWS = ("tdds", "tdds-rule", RECOMMENDED)                           # rows written by tdds tune
RULE_OFF_ROWS = ("random", "rs2", RECOMMENDED, "tdds")
ITER_ROWS = ("random", "rs2", RECOMMENDED)
ITER_RATES = (0.8, 0.9)
NO_RULE, EQUAL_ITERS = " (no batch rule)", " (equal iterations)"
SMOKE = ["data.train_subset=700", "data.val_size=200", "data.test_subset=300",
         "model.options={width: 8, hidden: 32}", "train.epochs=4", "train.eval_every=4", "selection.rates=[0.5, 0.8]",
         "coreset.seeds=[0, 1]", "tune.grid={T: [3, 4], W: [3], weighting: [batch, none]}", "tune.epochs=2",
         "tune.choose=[random, el2n, tdds]", "tune.budget=6",
         "methods=[{name: random}, {name: rs2}, {name: el2n, params: {k: 2}}, {name: tdds, params: {T: 4, W: 3}}]"]


# ------------------------------------------------------------------------------------------ processes
def _sh(cmd: list[str], log: Path, threads: Optional[int] = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print("$", " ".join(cmd), f"> {log}", flush=True)
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _run_all(cmds: list[tuple[list[str], Path]], jobs: int, threads: int, beside: Optional[subprocess.Popen] = None) -> None:
    """Run the commands in order, ``jobs`` at a time (one slot fewer while ``beside`` runs); a failed
    one is retried once alone (its finished work is kept)."""
    pending, running, failed = list(cmds), [], []
    while pending or running:
        slots = jobs - (1 if beside is not None and beside.poll() is None else 0)
        while pending and len(running) < max(1, slots):
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
    """Method labels split into ``jobs`` groups of about equal training cost (kept fractions x seeds)."""
    cost: dict[str, float] = {}
    for m in cfg.methods:
        label = m.label or m.display
        cost[label] = cost.get(label, 0.0) + sum(1 - r for r in (m.rates or cfg.selection.rates))
    groups: list[list[str]] = [[] for _ in range(max(1, jobs))]
    load = [0.0] * len(groups)
    for label in sorted(cost, key=lambda k: -cost[k]):
        i = load.index(min(load))
        groups[i].append(label)
        load[i] += cost[label]
    return [g for g in groups if g]


# ---------------------------------------------------------------------------------------------- grids
def _only(cfg: Config, labels, **update: Any) -> Config:
    """``cfg`` with only the method entries labelled ``labels`` (in config order) and ``update`` applied
    to its sections (``coreset={...}``, ``train={...}``, ``output=...``)."""
    d = cfg.model_dump(mode="json")
    d["methods"] = [m for m in d["methods"] if (m.get("label") or Config.model_validate(
        {"methods": [m]}).methods[0].display) in labels]
    for k, v in update.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) else v
    if "selection" in update:            # entries that name their own rates keep those of the new rates
        keep = update["selection"]["rates"]
        for m in d["methods"]:
            if m.get("rates") is not None:
                m["rates"] = [r for r in m["rates"] if any(abs(r - k) < 1e-9 for k in keep)]
        d["methods"] = [m for m in d["methods"] if m.get("rates") is None or m["rates"]]
    return Config.model_validate(d)


def grids(cfg: Config, out: Path, full_seeds=FULL_SEEDS) -> dict[str, Config]:
    """Every grid of the protocol by name (``<part>-s<full-data seed>``). ``cfg`` is the tuned config
    (or the untuned one for the rows :func:`tune_free` picks)."""
    labels = [m.label or m.display for m in cfg.methods]
    seeds = list(cfg.coreset.seeds)
    rates = [r for r in cfg.selection.rates if any(abs(r - i) < 1e-9 for i in ITER_RATES)] or cfg.selection.rates[-1:]
    out_grids: dict[str, Config] = {}
    for s in full_seeds:
        base = dict(output=str(out / f"s{s}"), train={"seed": s})
        key = [lb for lb in labels if lb in KEY_ROWS]
        other = [lb for lb in labels if lb not in KEY_ROWS]
        out_grids[f"main-s{s}"] = _only(cfg, key, **base)
        if other:
            out_grids[f"other-s{s}"] = _only(cfg, other, coreset={"seeds": seeds[:1]}, **base)
        out_grids[f"norule-s{s}"] = _only(cfg, [lb for lb in labels if lb in RULE_OFF_ROWS],
                                          coreset={"batch_rule": False}, **base)
    s = full_seeds[0]
    iters = _only(cfg, [lb for lb in labels if lb in ITER_ROWS], coreset={"batch_rule": False, "strategy": "P"},
                  output=str(out / f"s{s}"), train={"seed": s}, selection={"rates": rates})
    out_grids[f"iters-s{s}"] = iters
    return out_grids


def tune_free(g: Config) -> Config:
    """The part of grid ``g`` that does not wait for ``tdds tune`` (its rows without tuned settings)."""
    return _only(g, [m.label or m.display for m in g.methods if (m.label or m.display) not in TUNED_ROWS])


def composed_rows(named: dict[str, Config]) -> list[dict]:
    """Every grid's rows (served from the store), relabelled for one table: the variants get a suffix
    and each row's ``seed`` becomes ``full-data seed x 100 + coreset seed`` so pairs never mix runs."""
    rows: list[dict] = []
    for name, g in named.items():
        suffix = NO_RULE if name.startswith("norule") else EQUAL_ITERS if name.startswith("iters") else ""
        for r in run_grid(g).rows:                       # with their costs (tdds_core.cost)
            r = dict(r, full_seed=g.train.seed)
            if r.get("seed") is not None:
                r["coreset_seed"], r["seed"] = r["seed"], g.train.seed * 100 + int(r["seed"])
            if r.get("rate") is None:          # the full-data row: once per full-data seed
                if suffix or any(x.get("rate") is None and x.get("full_seed") == g.train.seed for x in rows):
                    continue
                r["seed"] = g.train.seed
            else:
                r["method"] = str(r["method"]) + suffix
            rows.append(r)
    return rows


# ----------------------------------------------------------------------------------------------- page
def _d(diffs: list[dict], method: str, rate: float) -> Optional[dict]:
    return next((d for d in diffs if d["method"] == method and abs(d["rate"] - rate) < 1e-9), None)


def _vs(d: Optional[dict], who: str) -> str:
    if d is None:
        return f"not paired with {who}"
    word = "above" if d["mean"] > 0 else "level with" if d["mean"] == 0 else "BELOW"
    return f"{d['mean']:+.2f} ± {d['std']:.2f} points, {word} {who} ({d['wins']}/{d['n']} pairs above)"


def verdicts(rows: list[dict], recommended: dict, cost: dict) -> list[str]:
    """One sentence per rate: the coreset to take, against Random and RS2 (paired), with and without
    the batch-size rule, and its cost."""
    lines = []
    vs = {(ref, suffix): paired_differences([r for r in rows if str(r["method"]).endswith(suffix) or suffix == ""],
                                            reference=ref + suffix)
          for ref in ("random", "rs2") for suffix in ("", NO_RULE)}
    for rate in sorted(recommended):
        rec = recommended[rate]
        parts = [f"**p={format_rate(rate)}: take `{rec['label']}`** (validation {rec['mean']:.2f} ± {rec['std'] or 0:.2f}, "
                 f"n={rec['n']})."]
        for suffix, when in (("", "With the batch-size rule"), (NO_RULE, "Without it")):
            m = RECOMMENDED + suffix
            a, b = _d(vs[("random", suffix)], m, rate), _d(vs[("rs2", suffix)], m, rate)
            if a is None and b is None:
                continue
            parts.append(f"{when}: {_vs(a, 'Random')}; {_vs(b, 'RS2')}.")
        c = cost.get((RECOMMENDED, round(rate, 6)))
        if c:
            parts.append(f"Cost: {c}.")
        lines.append(" ".join(parts))
    return lines


def cost_cells(rows: list[dict]) -> dict[tuple[str, float], str]:
    """Per (row, rate): its cost in words (means over its runs): the share of the dynamics run it
    reads, scoring and selection seconds, coreset training seconds."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        if r.get("rate") is not None:
            groups.setdefault((str(r["method"]), round(float(r["rate"]), 6)), []).append(r)

    def mean(rs: list[dict], k: str) -> Optional[float]:
        v = [float(x[k]) for x in rs if x.get(k) is not None]
        return sum(v) / len(v) if v else None

    out = {}
    for key, rs in groups.items():
        share, sc, se, tr = (mean(rs, k) for k in ("cost_dynamics_share", "cost_scoring_s", "cost_selection_s", "cost_train_s"))
        pick = (sc or 0.0) + (se or 0.0)
        out[key] = (f"{0 if share is None else share:.0%} of the dynamics run, "
                    + (f"{pick:.2g} s scoring and selection, " if sc is not None or se is not None else "")
                    + (f"{tr:.1f} s coreset training" if tr is not None else "training time not recorded"))
    return out


def page(env: dict, rows: list[dict], tuned: Config, recommended: dict, tune_md: str, plots: dict, cost_md: str,
         cost: dict) -> str:
    c = tuned
    main = [r for r in rows if not str(r["method"]).endswith((NO_RULE, EQUAL_ITERS))]
    norule = [r for r in rows if str(r["method"]).endswith(NO_RULE) or r.get("rate") is None]
    iters = [r for r in rows if str(r["method"]).endswith(EQUAL_ITERS) or r.get("rate") is None]
    pairs = sorted({r["seed"] for r in rows if r.get("rate") is not None})
    lines = [f"## CPU protocol: {c.data.name}, {c.model.arch} ({env['mode']} mode)", "",
             f"- machine: {env['machine']}; torch {env['torch']}; {env['date']}",
             f"- command: `{env['command']}`",
             f"- wall time of this invocation: {env['wall_min']:.1f} min ({env['phases']}); training time of the runs in "
             f"these tables, summed: {env['train_min']:.1f} min (a rerun is served from the store)",
             f"- data: {env['n_train']:,} training samples, {c.data.val_size:,} held out as the validation split, "
             f"{env['n_test']:,} test images; {c.train.epochs} epochs, batch {c.train.batch_size}, lr {c.train.lr}",
             f"- full-data runs: seeds {', '.join(map(str, FULL_SEEDS))}, each scoring every method; coreset seeds "
             f"{', '.join(map(str, c.coreset.seeds))} per full-data run for {', '.join(KEY_ROWS)}, the first only for "
             f"the other rows. A pair is one full-data seed and one coreset seed (shown as seed = full x 100 + coreset: "
             f"{', '.join(map(str, pairs))}); every difference below is paired on it",
             f"- coreset training: Strategy-E (the full run's epochs), batch {c.coreset.batch_size}"
             + (f" halved at >= {c.coreset.batch_rule_thresholds[0]:g} and quartered at >= "
                f"{c.coreset.batch_rule_thresholds[1]:g} (the batch-size rule; rows marked{NO_RULE} train without it)"
                if c.coreset.batch_rule else "")
             + f"; rows marked{EQUAL_ITERS} train as many iterations as the full-data run (Strategy P, no batch rule)",
             "- RS2 trains a fresh random subset of the same size every epoch (no repeat until all samples are used) "
             "for as many iterations as the static coreset of its rate: it yields no fixed subset",
             "- accuracy is the test accuracy after the last epoch; nothing (epoch, setting, method) is chosen on the "
             "test set", "",
             "### The coreset to take", ""]
    lines += [f"- {v}" for v in verdicts(rows, recommended, cost)] + [""]
    lines += ["### Test accuracy (%), with the batch-size rule", "", to_markdown(build_table(main)).strip(), "",
              f"![accuracy vs pruning rate]({plots['accuracy']})", "",
              "### Against Random and RS2, paired", "", paired_markdown(paired_differences(main)).strip(), "",
              paired_markdown(paired_differences(main, reference="rs2"), reference="rs2").strip(), "",
              f"### Without the batch-size rule", "", to_markdown(build_table(norule), random_method="random" + NO_RULE).strip(),
              "", paired_markdown(paired_differences(norule, reference="random" + NO_RULE),
                                  reference="random" + NO_RULE).strip(), "",
              "### Equal iterations (as many as the full-data run)", "",
              to_markdown(build_table(iters), random_method="random" + EQUAL_ITERS).strip(), "",
              paired_markdown(paired_differences(iters, reference="random" + EQUAL_ITERS),
                              reference="random" + EQUAL_ITERS).strip(), "",
              "### What each row costs", "", cost_md.strip(), "",
              f"![time to accuracy]({plots['time']})", "",
              "### The choice on the validation split (`tdds tune`)", "", tune_md.strip(), ""]
    return "\n".join(lines)


def _write(cfg: Config, path: Path) -> Path:
    atomic_write_text(path, cfg.to_yaml())
    return path


def _grid_cmds(named: dict[str, Config], out: Path, jobs: int, pick, tag: str) -> list[tuple[list[str], Path]]:
    """``tdds grid`` commands over ``jobs`` shards of each grid's methods that ``pick`` keeps (one
    shard a grid with ``jobs`` 1: at toy size a process's start-up outweighs its training)."""
    tdds = [sys.executable, "-m", "tdds_core"]
    cmds = []
    for name, g in named.items():
        g = pick(g)
        if not g.methods:
            continue
        path = _write(g, out / f"grid-{name}{tag}.yaml")
        cmds += [(tdds + ["grid", "--config", str(path), "--methods", ",".join(sh)], out / "logs" / f"grid-{name}{tag}-{i}.log")
                 for i, sh in enumerate(_shards(g, jobs))]
    return cmds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/fashion-mnist-cpu.yaml"))
    ap.add_argument("--out", help="Output root (default: the config's output).")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="Processes at once (default: cores).")
    ap.add_argument("--smoke", action="store_true", help="Toy sizes (CI); the page goes to <out>/docs.")
    ap.add_argument("--docs", help="Where RESULTS.md is (default: docs/, or <out>/docs with --smoke).")
    args = ap.parse_args(argv)
    t0 = time.time()
    sets = (SMOKE if args.smoke else []) + ["train.progress=false"]
    cfg = load_config(args.config, sets)
    out = Path(args.out or cfg.output).absolute()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    docs = Path(args.docs) if args.docs else (out / "docs" if args.smoke else ROOT / "docs")
    tdds = [sys.executable, "-m", "tdds_core"]
    setargs = [a for s in sets for a in ("--set", s)]
    phases: dict[str, float] = {}

    # 1. tdds tune on one core; the full-data runs and the rows that need no tuning on the other
    t = time.time()
    tuned_path = out / "tuned.yaml"
    tune_proc = _sh(tdds + ["tune", "--config", args.config, "--out", str(out / f"s{FULL_SEEDS[0]}"), "--write",
                            str(tuned_path)] + setargs, logs / "tune.log", threads=1)
    cfg.output = str(out)
    untuned = grids(cfg, out)
    trains = [(tdds + ["train", "--config", str(_write(g, out / f"train-s{g.train.seed}.yaml"))], logs / f"train-s{g.train.seed}.log")
              for name, g in untuned.items() if name.startswith("main")]
    shards = 1 if args.smoke else args.jobs
    free = _grid_cmds(untuned, out, shards, lambda g: _only(g, [m.label or m.display for m in g.methods
                                                                   if m.name != cfg.tune.method
                                                                   and (m.label or m.display) not in TUNED_ROWS]), "")
    _run_all(trains + free, args.jobs, 1, beside=tune_proc)
    if tune_proc.wait() != 0:
        raise SystemExit(f"tdds tune failed; see {logs / 'tune.log'}")
    phases["tune, full-data runs, untuned rows"] = time.time() - t

    # 2. the rows tune wrote (tdds, tdds-rule, recommended) in every grid
    t = time.time()
    tuned = load_config(tuned_path, ["train.progress=false"])
    tuned.output = str(out)
    named = grids(tuned, out)
    _run_all(_grid_cmds(named, out, 1 if args.smoke else args.jobs, lambda g: _only(g, TUNED_ROWS), "-tuned"),
             args.jobs, 1)
    phases["tuned rows"] = time.time() - t

    # 3. every row back from the store, then the page
    t = time.time()
    rows = composed_rows(named)
    phases["compose"] = time.time() - t
    page_out = write_page(args, out, docs, rows, tuned, tuned_path, phases, t0)
    print(page_out)
    return 0


def write_page(args, out: Path, docs: Path, rows: list[dict], tuned: Config, tuned_path: Path, phases: dict,
               t0: float) -> str:
    import torch

    from tdds_core.report_cost import cost_markdown, plot_time_to_accuracy
    from tdds_core.data import create_dataset

    splits = create_dataset(tuned.data)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    train_s = sum(float(r.get("wall_s") or 0) for r in rows)
    env: dict[str, Any] = {
        "mode": "smoke" if args.smoke else "full", "machine": f"{cpu}, {os.cpu_count()} cores, {platform.machine()}",
        "torch": torch.__version__, "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/cpu_protocol.py" + (" --smoke" if args.smoke else "") + f" --jobs {args.jobs}",
        "wall_min": (time.time() - t0) / 60, "train_min": train_s / 60,
        "phases": ", ".join(f"{k} {v / 60:.1f} min" for k, v in phases.items()),
        "n_train": len(splits.train), "n_test": len(splits.test)}
    main = [r for r in rows if not str(r["method"]).endswith((NO_RULE, EQUAL_ITERS))]
    plots = {"accuracy": docs / "img" / "cpu_protocol_accuracy_vs_rate.png",
             "time": docs / "img" / "cpu_protocol_time_to_accuracy.png"}
    plot_accuracy_vs_rate(main, plots["accuracy"], title=f"{tuned.name}: {tuned.data.name}, pairs of full-data and coreset seeds")
    plot_time_to_accuracy(main, plots["time"], title=f"{tuned.name}: accuracy against the whole cost")
    info = json.loads(tuned_path.with_suffix(".json").read_text())
    recommended = {float(r): v for r, v in info["recommended"].items()}
    body = page(env, rows, tuned, recommended, tuned_path.with_suffix(".md").read_text(),
                {k: os.path.relpath(v, docs) for k, v in plots.items()}, cost_markdown(main), cost_cells(main))
    replace_block(docs / "RESULTS.md", "Results", body, BEGIN, END)
    (out / "env.json").write_text(json.dumps(env, indent=2))
    (out / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    print(f"\nwritten: {docs / 'RESULTS.md'}, {plots['accuracy']}, {plots['time']}")
    return body


if __name__ == "__main__":
    sys.exit(main())
