"""``tdds config`` (show defaults / validate a config) and ``tdds list`` (registered names)."""
from __future__ import annotations

import argparse

from ..config import load_config
from ..data import list_datasets
from ..models import list_models
from ..scoring import list_methods
from ..strategies import list_strategies, strategy_options


def register(sub) -> None:
    p = sub.add_parser("config", help="Print the default config, or validate and print a resolved config.",
                       description="Without --config: print the default config (a starting point for your own). With "
                                   "--config: validate it with the --set overrides and print it resolved; a bad field "
                                   "is named with its fix.")
    p.add_argument("--config", help="YAML config to validate (omit to print the defaults).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a config field, e.g. --set train.epochs=5 (repeatable).")
    p.add_argument("--show-defaults", action="store_true", help="Print every field with its default value.")
    p.set_defaults(func=run_config)
    q = sub.add_parser("list", help="List registered datasets, architectures and scoring methods.",
                       description="List what a config can name: datasets (data.name), architectures (model.arch, "
                                   "evaluate.archs) and scoring methods (methods:, `tdds score --method`) with their "
                                   "options, including those of $TDDS_PLUGINS modules.")
    q.set_defaults(func=run_list)


def run_config(args: argparse.Namespace) -> int:
    cfg = load_config(None if args.show_defaults else args.config, args.overrides)
    print(cfg.to_yaml(), end="")
    return 0


def run_list(args: argparse.Namespace) -> int:
    print("datasets:      " + ", ".join(list_datasets()))
    print("architectures: " + ", ".join(list_models()))
    try:
        print("methods:       " + ", ".join(list_methods()))
    except ImportError:  # pragma: no cover - scoring is part of the package
        pass
    print("strategies:    " + ", ".join(f"{n}({', '.join(strategy_options(n))})" for n in list_strategies()))
    return 0
