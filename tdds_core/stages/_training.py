"""Tracking helpers of the training stages: per-epoch metrics, final metrics, the per-class table,
the final model and the result row."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from ..tracking import (METRIC_BEST_ACC, METRIC_FINAL_ACC, METRIC_ITERATIONS, METRIC_NUM_TRAIN, METRIC_WALL_S,
                        Tracker)

__all__ = ["epoch_logger", "result_metrics", "result_row", "noisy_kept", "log_training_outputs"]

# per-epoch metrics; the learning rate as ``lr_epoch`` (the lr *setting* is the param ``lr``)
_EPOCH_KEYS = {"train_loss": "train_loss", "train_acc": "train_acc", "test_loss": "test_loss", "test_acc": "test_acc",
               "lr": "lr_epoch", "img_per_s": "img_per_s"}


def epoch_logger(tracker: Tracker) -> Callable[[dict], None]:
    """An ``on_epoch`` callback logging the epoch's metrics at step = epoch."""
    def on_epoch(rec: dict) -> None:
        tracker.log_metrics({name: float(rec[k]) for k, name in _EPOCH_KEYS.items() if k in rec}, step=int(rec["epoch"]))
    return on_epoch


def result_metrics(res: Any) -> dict[str, float]:
    """Final metrics of a :class:`~tdds_core.engine.TrainResult` (accuracies in percent)."""
    m = {METRIC_FINAL_ACC: res.final_acc, METRIC_BEST_ACC: res.best_acc, METRIC_NUM_TRAIN: res.num_train,
         METRIC_ITERATIONS: res.iterations, METRIC_WALL_S: res.wall_s, "img_per_s": res.img_per_s,
         "epochs_run": res.epochs}
    return m


def log_training_outputs(cfg: Any, tracker: Tracker, out: Any, classes: Optional[list[str]] = None, *,
                         full: bool = False) -> None:
    """Into the active run: the final per-class test accuracy as one table (``per_class_acc.json``:
    class, name, acc in percent) and the final model (``tracking.log_models``; the full-data model
    registered as ``tracking.register_model`` when set). ``out``: a StageOutput of a training stage."""
    per_class = list(out.result.per_class_acc)
    names = list(classes) if classes and len(classes) == len(per_class) else [str(i) for i in range(len(per_class))]
    tracker.log_table({"class": list(range(len(per_class))), "name": names, "acc": per_class}, "per_class_acc.json")
    if cfg.tracking.enabled and (cfg.tracking.log_models == "all" or (full and cfg.tracking.log_models == "full")):
        from ..engine import load_model

        tracker.log_model(load_model(out.local / "model.pt"), "model",
                          registered_name=cfg.tracking.register_model if full else None)


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
