"""The ``tdds`` command line. Each module in this package adds its subcommands through a
``register(subparsers)`` function; modules are discovered automatically, so a new command is one
new file. Packages that build on the library add commands through the ``tdds.commands`` entry-point
group (``pipelines.cli:register`` adds run/compile/submit/schedule), so the library never imports
them. Errors a user can fix (:class:`~tdds_core.errors.TddsError`) print one message and exit 2."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from importlib.metadata import entry_points

from ..errors import TddsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdds", description="Dataset pruning with Temporal Dual-Depth Scoring.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    for ep in sorted(entry_points(group="tdds.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--config CFG`` and repeatable ``--set key=value``."""
    p.add_argument("--config", required=required, help="YAML config file (see configs/).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a config field, e.g. --set train.epochs=5 (repeatable).")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
