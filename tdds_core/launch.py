"""One process of a full-data run in several processes (started by torchrun, or in a PyTorchJob's
pod): it reads the run's config, trains its part of the run into the shared folder and, as rank 0,
mirrors the checkpoints to S3.

The command line of :func:`tdds_core.engine.launch.torchrun_command` and of the PyTorchJob
(:func:`tdds_core.engine.launch.pytorchjob_manifest`):

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m tdds_core.launch \\
        --config-json cfg.json --out WORK [--mirror s3://bucket/prefix/train/KEY]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

from .artifacts import RemoteCheckpoint
from .config import Config, parse_config
from .data import create_dataset
from .engine import full_data_spec, train

__all__ = ["main"]


def _read_config(arg: str) -> Config:
    """The config of ``--config-json``: a JSON file, or ``env:VAR`` (the variable's value)."""
    text = os.environ[arg[4:]] if arg.startswith("env:") else Path(arg).read_text()
    return parse_config(json.loads(text))


def main(argv: Optional[list[str]] = None) -> int:
    """One process of a multi-process full-data run (started by torchrun)."""
    ap = argparse.ArgumentParser(prog="python -m tdds_core.launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config-json", required=True, help="The run's config as a JSON file, or env:VAR.")
    ap.add_argument("--out", required=True, help="The stage's local folder (shared by the processes).")
    ap.add_argument("--mirror", default=None, help="The S3 artifact URI whose _partial/ mirrors the checkpoints.")
    args = ap.parse_args(argv)
    cfg = _read_config(args.config_json)
    splits = create_dataset(cfg.data)
    on_checkpoint = None
    if args.mirror and int(os.environ.get("RANK", "0") or 0) == 0:
        on_checkpoint = RemoteCheckpoint(args.mirror, Path(args.out)).push
    train(splits, full_data_spec(cfg, splits.num_classes), args.out, on_checkpoint=on_checkpoint)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
