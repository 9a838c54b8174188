"""``tdds train``: full-data training with dynamics capture."""
from __future__ import annotations

import argparse

from ..config import load_config
from ..stages.train_full import train_full
from ._args import add_config_args


def register(sub) -> None:
    p = sub.add_parser("train", help="Full-data training that records per-sample dynamics.",
                       description="Train on the full dataset, record per-epoch logits by sample id, save the model, "
                                   "features and metrics. Rerunning with the same config and --out reuses finished work "
                                   "and resumes an interrupted run.")
    add_config_args(p)
    p.add_argument("--out", help="Output root (local folder or s3://bucket/prefix); default: the config's output.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.out:
        cfg.output = args.out
    res = train_full(cfg)
    r = res.result
    print(f"full-data training: final test acc {r.final_acc:.2f}%, best {r.best_acc:.2f}% (epoch {r.best_epoch + 1}), "
          f"{r.epochs} epochs, {r.iterations} iterations, {r.img_per_s:.0f} img/s")
    print(f"artifacts: {res.uri}")
    print(f"  dynamics: {res.uri}/dynamics  (tdds score --dynamics ... --method tdds)")
    return 0
