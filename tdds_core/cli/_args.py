"""Arguments several commands share."""
from __future__ import annotations

import argparse

__all__ = ["add_config_args"]


def add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--config CFG`` and repeatable ``--set key=value``."""
    p.add_argument("--config", required=required, help="YAML config file (see configs/).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a config field, e.g. --set train.epochs=5 (repeatable).")
