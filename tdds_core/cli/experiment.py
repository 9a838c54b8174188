"""``tdds train-coreset``, ``tdds evaluate``, ``tdds grid`` and ``tdds tune``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config
from ..data import create_dataset
from ..engine import check_arch, full_data_spec
from ..grid import check_grid, only_methods, run_grid, split_names
from ..stages.coreset import train_coreset
from ..stages.evaluate import evaluate_cross_arch
from ..tune import tune
from ._args import add_config_args


def register(sub) -> None:
    p = sub.add_parser("train-coreset", help="Train (importance-weighted) on a selection.",
                       description="Train the config's model on one selection folder (from `tdds select`); the test "
                                   "set is never pruned. Prints final and best test accuracy; a finished run is reused.")
    add_config_args(p)
    p.add_argument("--selection", required=True, help="Selection folder or s3:// URI (from `tdds select`).")
    p.add_argument("--arch", help="Architecture (default: model.arch).")
    p.add_argument("--seed", type=int, help="Seed (default: train.seed).")
    p.add_argument("--out", help="Output root (local folder or s3://bucket/prefix); default: the config's output.")
    p.set_defaults(func=run_coreset)

    e = sub.add_parser("evaluate", help="Cross-architecture evaluation: train each architecture on one selection.",
                       description="Train each architecture of --archs (default evaluate.archs) on the same selection, "
                                   "one row per architecture: does a coreset chosen with one model serve another?")
    add_config_args(e)
    e.add_argument("--selection", required=True, help="Selection folder or s3:// URI (from `tdds select`).")
    e.add_argument("--archs", help="Comma-separated architectures (default: evaluate.archs).")
    e.add_argument("--out", help="Output root; default: the config's output.")
    e.set_defaults(func=run_evaluate)

    g = sub.add_parser("grid", help="The methods x rates x seeds experiment in this process (table, plot, MLflow).",
                       description="Run every stage of the config in this process, without KFP: full-data training, "
                                   "scores, selections, coreset trainings (every method x rate x seed), cross-"
                                   "architecture runs and the report (table.csv/.md, accuracy_vs_rate.png, the MLflow "
                                   "parent run). Finished work is reused. `tdds run` runs the same stages as a pipeline.")
    add_config_args(g)
    g.add_argument("--out", help="Output root; default: the config's output.")
    g.add_argument("--methods", help="Comma-separated method labels or names: run only these rows of the config "
                   "(e.g. to split a grid over processes; a later full grid reuses their work).")
    g.add_argument("--dry-run", action="store_true", help="Validate and print the plan without training: methods and "
                   "their options, architectures, the dataset (its files are read), what the full-data run records.")
    g.set_defaults(func=run_grid_cmd)

    t = sub.add_parser("tune", help="Choose a method's settings per pruning rate on a validation split; write a tuned config.",
                       description="Train the candidate settings of each method on a validation split carved from the "
                                   "training data, choose per pruning rate, and write a config with the choices "
                                   "(run it with `tdds run` or `tdds grid --config <tuned>`). The test set is never looked at.")
    add_config_args(t)
    t.add_argument("--out", help="Output root; default: the config's output (the tune runs go under <out>/tune).")
    t.add_argument("--write", help="Where the tuned config goes (default: <config>.tuned.yaml beside --config).")
    t.set_defaults(func=run_tune_cmd)


def _cfg(args):
    cfg = load_config(args.config, args.overrides)
    if getattr(args, "out", None):
        cfg.output = args.out
    return cfg


def _row(arch: str, out) -> str:
    r = out.result
    return (f"| {arch} | {r.final_acc:.2f} | {r.best_acc:.2f} | {r.num_train} | {r.iterations} | {r.wall_s:.1f} |"
            + (" reused |" if out.reused else " |"))


HEADER = "| arch | final acc % | best acc % | train samples | iterations | wall s | |\n|---|---|---|---|---|---|---|"


def run_coreset(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    out = train_coreset(cfg, args.selection, arch=args.arch, seed=args.seed)
    print(HEADER)
    print(_row(args.arch or cfg.model.arch, out))
    print(f"artifacts: {out.uri}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    archs = [a.strip() for a in args.archs.split(",")] if args.archs else None
    print(HEADER)
    for arch, out in evaluate_cross_arch(cfg, args.selection, archs):
        print(_row(arch, out), flush=True)
    return 0


def run_grid_cmd(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    if args.methods:
        cfg = only_methods(cfg, split_names(args.methods))
    if args.dry_run:
        return _dry_run(cfg)
    res = run_grid(cfg)
    print(res.table_md)
    print(f"report: {res.report_dir} (table.csv, table.md, accuracy_vs_rate.png)")
    return 0


def _dry_run(cfg) -> int:
    """Everything ``tdds grid`` checks before it trains, and the dataset, without training."""
    plan = check_grid(cfg)
    check_arch(cfg.model.arch)
    splits = create_dataset(cfg.data)
    spec = full_data_spec(cfg, splits.num_classes)
    recorded = " and ".join(k for k, on in (("logits", spec.record_dynamics), ("statistics", spec.record_stats)) if on)
    seeds = len(cfg.coreset.seeds)
    print(f"config {cfg.name}: valid. dataset {cfg.data.name}: {len(splits.train):,} train / {len(splits.test):,} "
          f"evaluation samples, {splits.num_classes} classes (fingerprint {splits.fingerprint[:12]})")
    print(f"full-data run: {cfg.model.arch}, {cfg.train.epochs} epochs, records {recorded or 'nothing'}")
    print(f"plan: {len(plan.scores)} score settings, {len(plan.pairs)} selections, {len(plan.pairs) * seeds} coreset "
          f"trainings ({seeds} seeds), {len(plan.evals)} cross-architecture trainings")
    return 0


def run_tune_cmd(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    write = Path(args.write) if args.write else Path(args.config).with_suffix(".tuned.yaml")
    res = tune(cfg, write)
    print(res.report)
    for rate, params in sorted(res.chosen.items()):
        print(f"p={rate:g}: {params}")
    print(f"tuned config: {res.path}  (run it: tdds grid --config {res.path})")
    return 0
