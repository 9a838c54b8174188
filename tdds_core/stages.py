"""The pipeline stages as library functions; the CLI and the KFP components are thin shells over them.

Each stage derives its output key from content and config (dataset fingerprint, stage, parameters)
under the run's output root, so a rerun finds and reuses finished artifacts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .data import Splits, create_dataset
from .engine import TrainResult, full_data_spec, train


@dataclass
class StageOutput:
    uri: str              # where the artifact lives (local folder or s3://...)
    local: Path           # a local folder holding it (the same folder for local outputs)
    result: TrainResult | None = None


def train_full(cfg: Config, *, splits: Splits | None = None, on_epoch=None) -> StageOutput:
    """Full-data training with dynamics capture into ``<output>/train/<fingerprint>-<spec>``."""
    splits = splits or create_dataset(cfg.data)
    spec = full_data_spec(cfg)
    key = f"train/{splits.fingerprint[:12]}-{spec.digest(splits.fingerprint)[:12]}"
    local = Path(cfg.output) / key
    result = train(splits, spec, local, on_epoch=on_epoch)
    return StageOutput(str(local), local, result)
