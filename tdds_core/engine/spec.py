"""What one training run is and what it gives: :class:`TrainSpec` (its digest keys the run folder),
built from a config for the full-data run (:func:`full_data_spec`) or a coreset
(:func:`coreset_spec`), and :class:`TrainResult`.

Which fields count follows :data:`tdds_core.fields.FIELDS`: runtime settings are left out of the
digest, the numerics settings (:data:`tdds_core.fields.NUMERICS`) enter by their effective values on
this machine (:func:`tdds_core.numerics.effective_numerics`), every other field as set."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..config import Config, config_digest
from ..errors import ConfigError
from ..fields import NUMERICS, methods_read_statistics, runtime_spec_fields
from ..models import is_model, list_models
from ..numerics import effective_numerics
from ..scoring import epochs_read

__all__ = ["TrainSpec", "TrainResult", "full_data_spec", "dynamics_stop", "coreset_spec", "coreset_batch_size", "kept_weights",
           "check_arch", "runtime_names"]


@dataclass
class TrainSpec:
    """Everything one training run depends on (its digest keys the output folder)."""

    arch: str
    epochs: int
    batch_size: int
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 42
    augment: bool = True
    drop_last: bool = False
    eval_every: int = 1                        # which epochs are evaluated changes best_acc
    model_options: dict = field(default_factory=dict)
    # dynamics capture (full-data run)
    record_dynamics: bool = False
    dynamics_mode: str = "train"
    dynamics_dtype: str = "float16"
    dynamics_start: int = 0
    dynamics_stop: Optional[int] = None
    save_features: bool = False
    stop_epoch: Optional[int] = None           # end the run after this many epochs of its `epochs`-epoch schedule
    record_stats: bool = False                 # per-sample statistics every recorded epoch (tdds_core.recorder)
    stats_dtype: str = "float64"               # their storage dtype
    # coreset training
    positions: Optional[list[int]] = None      # training positions used (None = all)
    weights: Optional[list[float]] = None      # importance per position (aligned with positions)
    weighting: str = "none"                    # none | batch | sample
    iterations: Optional[int] = None           # exact number of iterations (Strategy-P); None = epochs x batches
    per_epoch: Optional[int] = None            # RS2: a fresh subset of this many of the positions every epoch
    # numerics: in the digest by their effective values (numerics())
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False                # deterministic CUDA kernels (identity on a GPU)
    # runtime (fields.FIELDS): not in the digest
    eval_batch_size: int = 1000
    checkpoint_every: int = 1
    progress: bool = True
    resident: str = "auto"
    resident_max_bytes: int = 4 << 30
    num_workers: int = 2

    def digest(self, fingerprint: str) -> str:
        """Digest of what changes the numbers: the fields of :func:`runtime_names` left out, the
        numerics settings by their effective values on this machine."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in runtime_names()}
        if not d["record_stats"] or d["stats_dtype"] == "float64":
            d.pop("stats_dtype")       # keys only when they matter: runs from before the options keep theirs
        if not d["record_stats"]:
            d.pop("record_stats")
        if d["stop_epoch"] is None:
            d.pop("stop_epoch")
        if d["per_epoch"] is None:
            d.pop("per_epoch")
        d["numerics"] = self.numerics()
        d["fingerprint"] = fingerprint
        return config_digest(d, 16)

    def numerics(self) -> dict:
        """:func:`~tdds_core.numerics.effective_numerics` of this spec on this machine."""
        return effective_numerics(self.device, self.amp, self.channels_last, self.compile, self.deterministic)

    def describe(self) -> dict:
        """The fields as ``run.json`` records them (positions and weights by their count)."""
        d = dataclasses.asdict(self)
        for k in ("positions", "weights"):
            if d[k] is not None:
                d[k] = f"<{len(d[k])} values>"
        return d


def runtime_names() -> set[str]:
    """TrainSpec fields whose set values stay out of a run's identity: the runtime settings of
    :data:`~tdds_core.fields.FIELDS` and the numerics (which enter by their effective values)."""
    return set(runtime_spec_fields()) | {p.rsplit(".", 1)[1] for p in NUMERICS}


@dataclass
class TrainResult:
    final_acc: float            # test accuracy (%) after the last epoch
    best_acc: float             # best test accuracy (%) over evaluated epochs (what the authors' logs report)
    best_epoch: int
    final_loss: float
    per_class_acc: list[float]  # % per class, final epoch
    epochs: int
    iterations: int
    num_train: int
    wall_s: float
    img_per_s: float
    history: list[dict] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {"final_acc": self.final_acc, "best_acc": self.best_acc, "best_epoch": self.best_epoch,
                "final_loss": self.final_loss, "epochs": self.epochs, "iterations": self.iterations,
                "num_train": self.num_train, "wall_s": self.wall_s, "img_per_s": self.img_per_s}


def check_arch(arch: str, field: str = "model.arch") -> None:
    """Refuse an unregistered architecture before anything is written (ConfigError listing the known ones)."""
    if not is_model(arch):
        raise ConfigError(f"{field}: unknown architecture {arch!r}; use one of the known architectures: "
                          f"{', '.join(list_models())} (see `tdds list`)")


def full_data_spec(cfg: Config, num_classes: Optional[int] = None) -> TrainSpec:
    """The full-data run of ``cfg``: records dynamics as ``cfg.dynamics`` says (``record: auto``
    decided for a dataset of ``num_classes`` classes and the configured methods; logits while the
    classes are not known)."""
    t, d = cfg.train, cfg.dynamics
    check_arch(cfg.model.arch)
    record = d.resolved(num_classes, methods_read_statistics(cfg))
    logits, stats = record is True or record == "both", record in ("stats", "both")
    if d.record is not False and t.drop_last:
        raise ConfigError("train.drop_last: dynamics need every sample in every epoch; set train.drop_last: false")
    return TrainSpec(arch=cfg.model.arch, model_options=dict(cfg.model.options), epochs=t.epochs, batch_size=t.batch_size,
                     lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay, schedule=t.schedule,
                     seed=t.seed, augment=t.augment, drop_last=t.drop_last, eval_every=t.eval_every,
                     record_dynamics=logits, record_stats=stats, dynamics_mode=d.mode, dynamics_dtype=d.dtype,
                     stats_dtype=d.stats_dtype, dynamics_start=d.epoch_start, dynamics_stop=d.epoch_stop,
                     save_features=(logits or stats) and d.save_features, stop_epoch=dynamics_stop(cfg), **_machine(cfg))


def dynamics_stop(cfg: Config) -> Optional[int]:
    """With ``dynamics.stop_training``: the epoch the full-data run ends after (``dynamics.epoch_stop``,
    else the latest epoch any configured method setting reads, :func:`tdds_core.scoring.epochs_read`,
    at least 1); its schedule stays that of ``train.epochs``, so the recorded epochs are those of a
    whole run. None without the setting (or when that is every epoch)."""
    d, total = cfg.dynamics, cfg.train.epochs
    if not d.stop_training:
        return None
    stop = d.epoch_stop
    if stop is None:
        stop = max((epochs_read(m.name, m.params_for(r), total) for m in cfg.methods
                    for r in (m.rates or cfg.selection.rates)), default=total)
    stop = max(1, d.epoch_start + 1, min(int(stop), total))
    return None if stop >= total else stop


def _machine(cfg: Config) -> dict:
    """The numerics and runtime settings of ``cfg``, as TrainSpec fields."""
    t, d = cfg.train, cfg.data
    return dict(device=t.device, amp=t.amp, channels_last=t.channels_last, compile=t.compile, deterministic=t.deterministic,
                eval_batch_size=t.eval_batch_size, checkpoint_every=t.checkpoint_every, progress=t.progress,
                resident=d.resident, resident_max_bytes=d.resident_max_bytes, num_workers=d.num_workers)


def coreset_batch_size(cfg: Config, rate: float) -> int:
    """Coreset batch size; with ``coreset.batch_rule`` halved at rate >= thresholds[0], quartered at >= thresholds[1]."""
    b = cfg.coreset.batch_size
    if cfg.coreset.batch_rule:
        lo, hi = cfg.coreset.batch_rule_thresholds
        if rate >= hi:
            b = max(1, b // 4)
        elif rate >= lo:
            b = max(1, b // 2)
    return b


def coreset_spec(cfg: Config, *, rate: float, positions: np.ndarray, weights: np.ndarray, num_full: int,
                 arch: str | None = None, seed: int | None = None, weighting: str = "none",
                 per_epoch: bool = False) -> TrainSpec:
    """Training on a selection: Strategy E (same epochs) or P (E / (1 - rate) epochs: as many sample
    visits as the full-data run), with the loss ``weighting`` (:func:`~tdds_core.engine.forward.weighted_loss`;
    ``mean1`` = ``sample`` with the kept samples' weights scaled to mean 1).

    ``per_epoch`` (RS2): no fixed subset; every epoch a fresh random subset of ``len(positions)`` of
    all ``num_full`` samples (:mod:`tdds_core.data.rs2_draws`), unweighted, with the same epochs,
    batch size and so iterations as the static coreset of that size."""
    t, c = cfg.train, cfg.coreset
    if per_epoch:
        if weighting != "none":
            raise ConfigError(f"RS2 trains unweighted on a fresh subset every epoch; it cannot take loss weighting "
                              f"{weighting!r}: set the method entry's weighting to none (or leave it out)")
        if not 0 < len(positions) <= num_full:
            raise ConfigError(f"RS2 draws {len(positions)} of {num_full} samples per epoch; use a pruning rate in [0, 1)")
    check_arch(arch or cfg.model.arch, "model.arch" if arch is None else "--arch / evaluate.archs")
    b = coreset_batch_size(cfg, rate)
    epochs = c.epochs or t.epochs
    if c.strategy == "P":
        # the paper's Strategy-P: as many sample visits as the full-data run, E / (1 - p) epochs
        # (whatever the batch sizes; CIFAR-100, E = 200, p = 0.9: 2000 epochs)
        epochs = max(1, math.ceil(round(t.epochs / (1.0 - rate), 9)))
    return TrainSpec(arch=arch or cfg.model.arch, model_options=dict(cfg.model.options) if arch in (None, cfg.model.arch) else {},
                     epochs=epochs, batch_size=b, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                     weight_decay=t.weight_decay, schedule=t.schedule, seed=t.seed if seed is None else seed,
                     augment=t.augment, drop_last=False, eval_every=t.eval_every,
                     positions=None if per_epoch else [int(p) for p in positions],
                     weights=None if per_epoch else [float(w) for w in kept_weights(weights, weighting)],
                     weighting="sample" if weighting == "mean1" else weighting,
                     per_epoch=len(positions) if per_epoch else None, **_machine(cfg))


def kept_weights(weights: np.ndarray, weighting: str) -> np.ndarray:
    """The per-sample weights a coreset trains with: as selected, or scaled to mean 1 (``mean1``)."""
    w = np.asarray(weights, dtype=np.float64)
    if weighting == "mean1":
        m = float(w.mean()) if len(w) else 0.0
        return w / m if m > 0 else np.ones_like(w)
    return w
