"""What the training stages share: training into a stage folder (in this process, in K torchrun
processes or over nodes; resumed from and mirrored to S3), per-epoch metrics, final metrics, the
per-class table, the final model and the result row."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..artifacts import RemoteCheckpoint, publish, work_dir
from ..config import Config
from ..data import Splits
from ..engine import load_model, train
from ..engine.launch import train_in_processes, train_on_nodes, under_torchrun
from ..names import (METRIC_BEST_ACC, METRIC_FINAL_ACC, METRIC_ITERATIONS, METRIC_NUM_TRAIN, METRIC_WALL_S, MODEL_ALIAS,
                     slug)
from ..storage import is_remote
from ..tracking import Tracker

__all__ = ["train_into", "epoch_logger", "result_metrics", "result_row", "noisy_kept", "log_training_outputs",
           "registered_name"]


def train_into(uri: str, splits: Splits, spec, on_epoch, *, cfg: Config | None = None) -> Any:
    """Train into the stage folder of ``uri`` and publish it; on S3, resume from and mirror to
    ``_partial``. With ``cfg.train.processes`` above 1 (the full-data run), the training runs in that
    many processes (:mod:`tdds_core.launch`, torchrun) and ``on_epoch`` gets the epochs afterwards."""
    if cfg is not None and cfg.train.nodes > 1 and not under_torchrun():
        return _train_on_nodes(uri, cfg, on_epoch)
    work = work_dir(uri)
    remote = RemoteCheckpoint(uri, work) if is_remote(uri) else None
    if remote is not None and not (work / "checkpoint.pt").is_file():
        remote.restore()
    if cfg is not None and cfg.train.processes > 1 and not under_torchrun():
        result = train_in_processes(cfg, work, mirror=uri if remote is not None else None)
        for rec in result.history if on_epoch is not None else ():
            on_epoch(rec)
    else:
        result = train(splits, spec, work, on_epoch=on_epoch, on_checkpoint=None if remote is None else remote.push)
    if remote is not None:
        publish(work, uri)
        remote.clear()
    return result


def _train_on_nodes(uri: str, cfg: Config, on_epoch) -> Any:
    """The full-data run as a PyTorchJob over ``train.nodes`` pods (:func:`tdds_core.launch.train_on_nodes`):
    its folder lies on ``pipeline.shared_volume`` and is published to ``uri`` when the job succeeds."""
    leaf = uri.rstrip("/").rsplit("/", 1)[-1]
    assert cfg.pipeline.shared_volume is not None      # Config refuses nodes > 1 without one
    work = Path(cfg.pipeline.shared_volume.mount_path) / "tdds" / hashlib.sha256(uri.encode()).hexdigest()[:16] / leaf
    name = f"tdds-{slug(cfg.name).lower().replace('_', '-').replace('.', '-')[:30]}-{hashlib.sha256(uri.encode()).hexdigest()[:10]}"
    result = train_on_nodes(cfg, work, uri if is_remote(uri) else None, name=name,
                            image=cfg.pipeline.gpu_image or cfg.pipeline.image)
    for rec in result.history if on_epoch is not None else ():
        on_epoch(rec)
    publish(work, uri)
    if is_remote(uri):
        RemoteCheckpoint(uri, work).clear()
    return result


# per-epoch metrics; the learning rate as ``lr_epoch`` (the lr *setting* is the param ``lr``)
# (throughput is logged once, with the final metrics)
_EPOCH_KEYS = {"train_loss": "train_loss", "train_acc": "train_acc", "test_loss": "test_loss", "test_acc": "test_acc",
               "lr": "lr_epoch"}


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


def registered_name(cfg: Any) -> Optional[str]:
    """The registry name of the full-data model: ``tracking.register_model``, ``tdds-<config name>``
    for ``auto``, None when not registered."""
    name = cfg.tracking.register_model
    if not name:
        return None
    return f"tdds-{slug(cfg.name)}" if name == "auto" else name


def log_training_outputs(cfg: Any, tracker: Tracker, out: Any, classes: Optional[list[str]] = None, *,
                         full: bool = False, model_name: str = "model") -> None:
    """Into the active run: the final per-class test accuracy as one table (``per_class_acc.json``:
    class, name, acc in percent) and the final model (``tracking.log_models``) under ``model_name``
    (:func:`tdds_core.names.model_name`, after the run) with the run's final metrics and its last
    ``test_acc``; the full-data model registered (:func:`registered_name`) with the alias
    :data:`~tdds_core.names.MODEL_ALIAS`. ``out``: a StageOutput of a training stage."""
    per_class = list(out.result.per_class_acc)
    names = list(classes) if classes and len(classes) == len(per_class) else [str(i) for i in range(len(per_class))]
    tracker.log_table({"class": list(range(len(per_class))), "name": names, "acc": per_class}, "per_class_acc.json")
    if cfg.tracking.enabled and (cfg.tracking.log_models == "all" or (full and cfg.tracking.log_models == "full")):
        res = out.result
        history = list(getattr(res, "history", None) or [])
        last = int(history[-1]["epoch"]) if history and "epoch" in history[-1] else 0
        final = {**result_metrics(res), "test_acc": res.final_acc}
        tracker.log_model(load_model(out.local / "model.pt"), model_name,
                          registered_name=registered_name(cfg) if full else None, metrics=final, step=last,
                          alias=MODEL_ALIAS if full else None)


def result_row(method: str, rate: Optional[float], seed: int, arch: str, res: Any, uri: Optional[str] = None,
               **extra: Any) -> dict:
    """One row of the results table."""
    row = {"method": method, "rate": rate, "seed": seed, "arch": arch, "final_acc": res.final_acc,
           "best_acc": res.best_acc, "num_train": res.num_train, "iterations": res.iterations, "wall_s": res.wall_s,
           "epochs": res.epochs}
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
