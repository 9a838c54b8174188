"""Tracking helpers of the training stages: per-epoch metrics, final metrics and the result row."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from ..tracking import (METRIC_BEST_ACC, METRIC_FINAL_ACC, METRIC_ITERATIONS, METRIC_NUM_TRAIN, METRIC_WALL_S,
                        Tracker)

__all__ = ["epoch_logger", "result_metrics", "result_row", "noisy_kept"]

_EPOCH_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "img_per_s")


def epoch_logger(tracker: Tracker) -> Callable[[dict], None]:
    """An ``on_epoch`` callback logging the epoch's metrics at step = epoch."""
    def on_epoch(rec: dict) -> None:
        tracker.log_metrics({k: float(rec[k]) for k in _EPOCH_KEYS if k in rec}, step=int(rec["epoch"]))
    return on_epoch


def result_metrics(res: Any) -> dict[str, float]:
    """Final metrics of a :class:`~tdds_core.engine.TrainResult` (accuracies in percent)."""
    m = {METRIC_FINAL_ACC: res.final_acc, METRIC_BEST_ACC: res.best_acc, METRIC_NUM_TRAIN: res.num_train,
         METRIC_ITERATIONS: res.iterations, METRIC_WALL_S: res.wall_s, "img_per_s": res.img_per_s,
         "epochs_run": res.epochs}
    m.update({f"class_acc_{i}": v for i, v in enumerate(res.per_class_acc)})
    return m


def result_row(method: str, rate: Optional[float], seed: int, arch: str, res: Any, uri: Optional[str] = None,
               **extra: Any) -> dict:
    """One row of the results table."""
    row = {"method": method, "rate": rate, "seed": seed, "arch": arch, "final_acc": res.final_acc,
           "best_acc": res.best_acc, "num_train": res.num_train, "iterations": res.iterations, "wall_s": res.wall_s}
    if uri is not None:
        row["uri"] = uri
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


def noisy_kept(splits: Any, indices: np.ndarray) -> Optional[float]:
    """Fraction of the noisy training samples that a coreset kept (None without injected noise)."""
    mask = splits.info.get("noisy_mask")
    if mask is None or not mask.any():
        return None
    return float(mask[np.asarray(indices, dtype=np.int64)].sum() / mask.sum())
