"""Which config fields can change a stored number: :data:`FIELDS` classifies every leaf field of
:class:`~tdds_core.config.Config` as ``IDENTITY`` (part of the artifact keys) or ``RUNTIME`` (speed,
display, location; never in a key). A new config field must be added here (``tests/test_plan.py``
fails otherwise). The engine reads the runtime training fields from here; :mod:`tdds_core.plan`
builds the keys from the identity ones."""
from __future__ import annotations

from typing import Any, Iterator, Literal

from pydantic import BaseModel

from .config import Config
from .scoring import method_reads_statistics

__all__ = ["IDENTITY", "RUNTIME", "FIELDS", "NUMERICS", "config_fields", "runtime_spec_fields",
           "methods_read_statistics"]

IDENTITY: Literal["identity"] = "identity"
RUNTIME: Literal["runtime"] = "runtime"

# every leaf field of Config (dotted path) -> identity | runtime. Dicts and lists are leaves.
FIELDS: dict[str, str] = {
    "name": RUNTIME,                     # labels and folder names only
    "output": RUNTIME,                   # where; the store's identity keys the caches instead
    "data.name": IDENTITY, "data.root": RUNTIME,   # the content is keyed by the dataset fingerprint
    "data.download": RUNTIME, "data.train_subset": IDENTITY, "data.test_subset": IDENTITY,
    "data.subset_seed": IDENTITY, "data.val_size": IDENTITY, "data.evaluate_on": IDENTITY, "data.image_size": IDENTITY, "data.resident": RUNTIME,
    "data.resident_max_bytes": RUNTIME, "data.num_workers": RUNTIME, "data.options": IDENTITY,
    "data.noise.label_noise": IDENTITY, "data.noise.corruption": IDENTITY,
    "data.noise.corruption_types": IDENTITY, "data.noise.seed": IDENTITY,
    "model.arch": IDENTITY, "model.options": IDENTITY,
    "train.epochs": IDENTITY, "train.batch_size": IDENTITY, "train.lr": IDENTITY, "train.momentum": IDENTITY,
    "train.nesterov": IDENTITY, "train.weight_decay": IDENTITY, "train.schedule": IDENTITY, "train.seed": IDENTITY,
    "train.augment": IDENTITY, "train.device": IDENTITY, "train.amp": IDENTITY, "train.channels_last": IDENTITY,
    "train.compile": IDENTITY, "train.deterministic": IDENTITY, "train.eval_batch_size": RUNTIME, "train.drop_last": IDENTITY,
    "train.eval_every": IDENTITY,        # which epochs are evaluated changes best_acc
    "train.checkpoint_every": RUNTIME,   # how often a resumable state is saved, not what is trained
    "train.processes": IDENTITY,         # by its effect: the full-data run's world size (numerics)
    "train.nodes": IDENTITY,             # likewise (world size = nodes x processes)
    "train.progress": RUNTIME,
    "dynamics.record": IDENTITY, "dynamics.mode": IDENTITY, "dynamics.dtype": IDENTITY, "dynamics.stats_dtype": IDENTITY,
    "dynamics.epoch_start": IDENTITY, "dynamics.epoch_stop": IDENTITY, "dynamics.save_features": IDENTITY,
    "dynamics.stop_training": IDENTITY,  # in a key only when set (plan.KEYED_WHEN_SET)
    "methods": IDENTITY,                 # per score item
    "selection.rates": IDENTITY,         # per pair
    "selection.class_balanced": IDENTITY, "selection.export": RUNTIME,
    "coreset.strategy": IDENTITY, "coreset.weighting": IDENTITY, "coreset.batch_size": IDENTITY,
    "coreset.batch_rule": IDENTITY, "coreset.batch_rule_thresholds": IDENTITY, "coreset.epochs": IDENTITY,
    "coreset.seeds": IDENTITY,           # per coreset item
    "coreset.concurrent_runs": RUNTIME,  # how many trainings run side by side, not what they compute
    "evaluate.archs": IDENTITY, "evaluate.rates": IDENTITY, "evaluate.methods": IDENTITY,   # which eval items exist
    # `tdds tune` reads these and writes what it chose into methods; no stage reads them
    "tune.method": RUNTIME, "tune.grid": RUNTIME, "tune.epochs": RUNTIME, "tune.seeds": RUNTIME,
    "tune.rates": RUNTIME, "tune.baseline": RUNTIME, "tune.rule": RUNTIME,
    "tune.choose": RUNTIME, "tune.grids": RUNTIME, "tune.budget": RUNTIME,
    "tracking.enabled": RUNTIME, "tracking.uri": RUNTIME, "tracking.experiment": RUNTIME,
    "tracking.log_models": RUNTIME, "tracking.register_model": RUNTIME, "tracking.system_metrics": RUNTIME,
    "tracking.system_metrics_interval_s": RUNTIME,
    "pipeline.image": RUNTIME, "pipeline.gpu_image": RUNTIME, "pipeline.accelerator_type": RUNTIME,
    "pipeline.gpus": RUNTIME, "pipeline.cpu_request": RUNTIME, "pipeline.memory_request": RUNTIME,
    "pipeline.retries": RUNTIME, "pipeline.caching": RUNTIME, "pipeline.pipeline_root": RUNTIME,
    "pipeline.parallelism": RUNTIME, "pipeline.light_cpu_request": RUNTIME, "pipeline.light_memory_request": RUNTIME,
    "pipeline.secrets": RUNTIME, "pipeline.tolerations": RUNTIME, "pipeline.node_selector": RUNTIME,
    "pipeline.shm_size": RUNTIME, "pipeline.data_volume": RUNTIME, "pipeline.shared_volume": RUNTIME,
    "pipeline.image_pull_secrets": RUNTIME, "pipeline.image_pull_policy": RUNTIME, "pipeline.cpu_limit": RUNTIME,
    "pipeline.memory_limit": RUNTIME, "pipeline.light_cpu_limit": RUNTIME, "pipeline.light_memory_limit": RUNTIME,
    "pipeline.allow_unstamped_image": RUNTIME,
    "pipeline.job_deadline_s": RUNTIME, "pipeline.job_wait_s": RUNTIME,
}

# the numerics settings: identity by their effective values on the training machine (plan.numerics)
NUMERICS = ("train.device", "train.amp", "train.channels_last", "train.compile", "train.deterministic",
            "train.processes", "train.nodes")


def config_fields(model: Any = Config, prefix: str = "") -> Iterator[str]:
    """Every leaf field path of the config model (nested models recurse; dicts and lists are leaves)."""
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from config_fields(ann, path + ".")
        else:
            yield path


def runtime_spec_fields() -> tuple[str, ...]:
    """Names of :class:`~tdds_core.engine.TrainSpec` fields that are runtime settings (not in its digest)."""
    return tuple(p.rsplit(".", 1)[1] for p, k in FIELDS.items() if k == RUNTIME and p.startswith(("train.", "data.")))


def methods_read_statistics(cfg: Config) -> bool:
    """Whether every configured method scores from per-sample statistics (``dynamics.record: auto``)."""
    return all(method_reads_statistics(m.name) for m in cfg.methods)
