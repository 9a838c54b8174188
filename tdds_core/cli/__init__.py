"""The ``tdds`` command line. Each module in this package adds its commands through a
``register(subparsers)`` function and is named in :data:`COMMANDS` (a new command: a new module
and its line there). Only the module of the command being run is imported, so ``tdds score`` loads
numpy and the scoring path, never torch, pydantic's config or kfp; ``tdds --help`` loads them all.
Packages that build on the library add commands through the ``tdds.commands`` entry-point group
(``pipelines.cli:register`` adds run/compile/submit/schedule), so the library never imports them.
Errors a user can fix (:class:`~tdds_core.errors.TddsError`) print one message and exit 2."""
from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points
from typing import Optional, Sequence

from ..errors import TddsError
from ._args import add_config_args

__all__ = ["main", "build_parser", "add_config_args", "COMMANDS"]

# command -> the module that registers it, in the order of the workflow (and of `tdds --help`, after the
# entry-point commands run/compile/submit/schedule; `stats` is an optional side step of scoring)
COMMANDS = {
    "train": "tdds_core.cli.train",
    "score": "tdds_core.cli.score", "select": "tdds_core.cli.score", "stats": "tdds_core.cli.score",
    "train-coreset": "tdds_core.cli.experiment", "evaluate": "tdds_core.cli.experiment",
    "grid": "tdds_core.cli.experiment", "tune": "tdds_core.cli.experiment",
    "report": "tdds_core.cli.report",
    "config": "tdds_core.cli.config", "list": "tdds_core.cli.config",
}


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The parser of the command named in ``argv`` (every command when it names none)."""
    wanted = next((a for a in (sys.argv[1:] if argv is None else argv) if not str(a).startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="tdds", description="Dataset pruning with Temporal Dual-Depth Scoring. Start here: "
                                 "tdds run --config configs/quickstart.yaml (the whole pipeline on this machine).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    if wanted not in COMMANDS:      # a command of a package built on the library, or the full help
        for ep in sorted(entry_points(group="tdds.commands"), key=lambda e: e.name):
            ep.load()(sub)
    modules = [COMMANDS[wanted]] if wanted in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except TddsError as e:
        print(f"tdds: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tdds: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
