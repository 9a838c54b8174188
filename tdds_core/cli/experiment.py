"""``tdds train-coreset``, ``tdds evaluate`` and ``tdds grid``."""
from __future__ import annotations

import argparse

from . import add_config_args


def register(sub) -> None:
    p = sub.add_parser("train-coreset", help="Train (importance-weighted) on a selection.")
    add_config_args(p)
    p.add_argument("--selection", required=True, help="Selection folder or s3:// URI (from `tdds select`).")
    p.add_argument("--arch", help="Architecture (default: model.arch).")
    p.add_argument("--seed", type=int, help="Seed (default: train.seed).")
    p.add_argument("--out", help="Output root (local folder or s3://bucket/prefix); default: the config's output.")
    p.set_defaults(func=run_coreset)

    e = sub.add_parser("evaluate", help="Cross-architecture evaluation: train each architecture on one selection.")
    add_config_args(e)
    e.add_argument("--selection", required=True)
    e.add_argument("--archs", help="Comma-separated architectures (default: evaluate.archs).")
    e.add_argument("--out", help="Output root; default: the config's output.")
    e.set_defaults(func=run_evaluate)

    g = sub.add_parser("grid", help="The methods x rates x seeds experiment (table, plot, MLflow).")
    add_config_args(g)
    g.add_argument("--out", help="Output root; default: the config's output.")
    g.set_defaults(func=run_grid_cmd)


def _cfg(args):
    from ..config import load_config

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
    from ..stages import train_coreset

    cfg = _cfg(args)
    out = train_coreset(cfg, args.selection, arch=args.arch, seed=args.seed)
    print(HEADER)
    print(_row(args.arch or cfg.model.arch, out))
    print(f"artifacts: {out.uri}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..stages import evaluate_cross_arch

    cfg = _cfg(args)
    archs = [a.strip() for a in args.archs.split(",")] if args.archs else None
    print(HEADER)
    for arch, out in evaluate_cross_arch(cfg, args.selection, archs):
        print(_row(arch, out), flush=True)
    return 0


def run_grid_cmd(args: argparse.Namespace) -> int:
    from ..grid import run_grid

    cfg = _cfg(args)
    res = run_grid(cfg)
    print(res.table_md)
    print(f"report: {res.report_dir} (table.csv, table.md, accuracy_vs_rate.png)")
    return 0
