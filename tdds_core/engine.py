"""The one training loop: full-data training that records dynamics, and (weighted) coreset training.

``train(splits, spec, out_dir)`` trains, evaluates, optionally records per-epoch logits by sample
id (no extra forward pass in the default ``train`` mode), checkpoints every ``checkpoint_every``
epochs and resumes from the newest checkpoint when started again with the same spec and folder.
An epoch's files (dynamics, statistics, checkpoint, the S3 mirror) are written by one writer thread
while the next epoch trains, hashed as they are written. Each epoch's
data order and augmentation come from generators seeded by ``(seed, epoch)``, so a resumed run is
bit-identical on CPU to an uninterrupted one.

A run that records dynamics ends with one clean pass of the final model over the training set
(eval mode, no augmentation): its logits and penultimate features go into the dynamics folder
(``final_logits.npy``, ``features.npy``; see :mod:`tdds_core.dynamics`), the input of Entropy
and Moderate.

Stored logits are computed with the classifier head in float32: under bf16 autocast (CUDA) the
forward passes whose logits are stored (the training pass of a recorded epoch, the clean passes)
run the feature extractor under autocast and then ``head(features.float())`` with autocast off
(:func:`split_head`), since bf16 rounding of the logits moved TDDS scores by up to 1%. Storage
keeps ``dynamics.dtype``. Without autocast (CPU) this is the same computation as ``model(x)``,
bit for bit.

A run's identity (``run.json``, :meth:`TrainSpec.digest`) includes its numerics as applied on the
machine (:func:`effective_numerics`: device class, bf16 autocast, channels_last, compile,
deterministic kernels, process count): resuming a folder with other numerics is refused, naming the
setting. Checkpoints load onto the CPU and the RNG states are restored from CPU byte tensors, so a
run resumes on a GPU. ``train.deterministic`` selects deterministic CUDA kernels for the run
(:func:`kernel_flags`). Under ``torchrun --nproc-per-node K`` one run trains in K processes
(:func:`train`).

Outputs in ``out_dir``: ``run.json`` (spec and digest; a folder holding another spec is refused),
``dynamics/`` (see :mod:`tdds_core.dynamics`), ``checkpoint.pt`` (removed at the end),
``model.pt``, ``history.json``, ``result.json`` and ``manifest.json`` (written last).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import Config, config_digest
from .data import Splits
from .data.loader import ResidentLoader, epoch_seed, make_loader
from .dynamics import DynamicsWriter
from .errors import ArtifactError, ConfigError, ScoringError
from .io import (MANIFEST, atomic_torch_save, atomic_write_bytes, atomic_write_json, read_json, verify_manifest,
                 write_manifest)
from .models import create_model, is_model, list_models

log = logging.getLogger("tdds.engine")

#: Run the classifier head in float32 outside autocast in the forward passes whose logits are
#: stored (tests set it to False to compare with the plain ``model(x)`` path).
FP32_HEAD = True


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
    model_options: dict = field(default_factory=dict)
    # dynamics capture (full-data run)
    record_dynamics: bool = False
    dynamics_mode: str = "train"
    dynamics_dtype: str = "float16"
    dynamics_start: int = 0
    dynamics_stop: Optional[int] = None
    save_features: bool = False
    record_stats: bool = False                 # per-sample statistics every recorded epoch (tdds_core.statistics)
    stats_dtype: str = "float64"               # their storage dtype
    # coreset training
    positions: Optional[list[int]] = None      # training positions used (None = all)
    weights: Optional[list[float]] = None      # importance per position (aligned with positions)
    weighting: str = "none"                    # none | batch | sample
    iterations: Optional[int] = None           # exact number of iterations (Strategy-P); None = epochs x batches
    # runtime (not part of the digest)
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False                # deterministic CUDA kernels (identity on a GPU, see effective_numerics)
    eval_batch_size: int = 1000
    eval_every: int = 1
    checkpoint_every: int = 1
    progress: bool = True
    resident: str = "auto"
    resident_max_bytes: int = 4 << 30
    num_workers: int = 2

    def digest(self, fingerprint: str) -> str:
        """Digest of what changes the numbers: runtime fields (:mod:`tdds_core.plan`) left out, the
        numerics settings by their effective values on this machine."""
        from .plan import runtime_spec_fields

        skip = set(runtime_spec_fields()) | set(NUMERIC_FIELDS)
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        if not d["record_stats"] or d["stats_dtype"] == "float64":
            d.pop("stats_dtype")       # keys only when they matter: runs from before the options keep theirs
        if not d["record_stats"]:
            d.pop("record_stats")
        d["numerics"] = self.numerics()
        d["fingerprint"] = fingerprint
        return config_digest(d, 16)

    def numerics(self) -> dict:
        """:func:`effective_numerics` of this spec on this machine."""
        return effective_numerics(self.device, self.amp, self.channels_last, self.compile, self.deterministic)

    def describe(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("positions", "weights"):
            if d[k] is not None:
                d[k] = f"<{len(d[k])} values>"
        return d


NUMERIC_FIELDS = ("device", "amp", "channels_last", "compile", "deterministic")   # identity by effective value


def effective_numerics(device: str, amp: str, channels_last: bool, compile: bool, deterministic: bool = False,
                       processes: int | None = None) -> dict:
    """What the numerics settings do on this machine: the device class, and bf16 autocast,
    channels_last (CUDA and CPU, where it speeds convolutions up), torch.compile (CUDA),
    deterministic kernels (CUDA) and the number of processes training together (``processes``;
    None: this run's, :func:`world_size`) as applied. ``deterministic`` and ``world_size`` are
    keys only when on / above 1, so runs from before those options keep theirs."""
    dev = resolve_device(device).type
    cuda = dev == "cuda"
    out = {"device": dev, "bf16": cuda and amp in ("auto", "bf16"), "channels_last": dev in ("cuda", "cpu") and bool(channels_last),
           "compile": cuda and bool(compile)}
    if cuda and deterministic:
        out["deterministic"] = True
    k = world_size() if processes is None else processes
    if k > 1:       # gradients and batch statistics reduced across processes: the same run within float tolerance
        out["world_size"] = int(k)
    return out


def world_size() -> int:
    """How many processes train one run together: the initialised process group's size, else
    torchrun's ``WORLD_SIZE`` (1 outside torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def check_arch(arch: str, field: str = "model.arch") -> None:
    """Refuse an unregistered architecture before anything is written (ConfigError listing the known ones)."""
    if not is_model(arch):
        raise ConfigError(f"{field}: unknown architecture {arch!r}; use one of the known architectures: "
                          f"{', '.join(list_models())} (see `tdds list`)")


def full_data_spec(cfg: Config, num_classes: Optional[int] = None) -> TrainSpec:
    """The full-data run of ``cfg``: records dynamics as ``cfg.dynamics`` says (``record: auto``
    decided for a dataset of ``num_classes`` classes and the configured methods; logits while the
    classes are not known)."""
    from .plan import methods_read_statistics

    t, d = cfg.train, cfg.dynamics
    check_arch(cfg.model.arch)
    record = d.resolved(num_classes, methods_read_statistics(cfg))
    logits, stats = record is True or record == "both", record in ("stats", "both")
    if d.record is not False and t.drop_last:
        raise ConfigError("train.drop_last: dynamics need every sample in every epoch; set train.drop_last: false")
    return TrainSpec(arch=cfg.model.arch, model_options=dict(cfg.model.options), epochs=t.epochs, batch_size=t.batch_size,
                     lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay, schedule=t.schedule,
                     seed=t.seed, augment=t.augment, drop_last=t.drop_last, record_dynamics=logits, record_stats=stats,
                     dynamics_mode=d.mode, dynamics_dtype=d.dtype, stats_dtype=d.stats_dtype, dynamics_start=d.epoch_start,
                     dynamics_stop=d.epoch_stop, save_features=(logits or stats) and d.save_features, **_runtime(cfg))


def _runtime(cfg: Config) -> dict:
    t, d = cfg.train, cfg.data
    return dict(device=t.device, amp=t.amp, channels_last=t.channels_last, compile=t.compile, deterministic=t.deterministic,
                eval_batch_size=t.eval_batch_size, eval_every=t.eval_every, checkpoint_every=t.checkpoint_every,
                progress=t.progress,
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
                 arch: str | None = None, seed: int | None = None, weighting: str = "none") -> TrainSpec:
    """Training on a selection: Strategy E (same epochs) or P (E / (1 - rate) epochs: as many sample
    visits as the full-data run),
    with the loss ``weighting`` (:func:`weighted_loss`; ``mean1`` = ``sample`` with the kept
    samples' weights scaled to mean 1)."""
    t, c = cfg.train, cfg.coreset
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
                     augment=t.augment, drop_last=False, positions=[int(p) for p in positions],
                     weights=[float(w) for w in kept_weights(weights, weighting)],
                     weighting="sample" if weighting == "mean1" else weighting, **_runtime(cfg))


def kept_weights(weights: np.ndarray, weighting: str) -> np.ndarray:
    """The per-sample weights a coreset trains with: as selected, or scaled to mean 1 (``mean1``)."""
    w = np.asarray(weights, dtype=np.float64)
    if weighting == "mean1":
        m = float(w.mean()) if len(w) else 0.0
        return w / m if m > 0 else np.ones_like(w)
    return w


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
    return torch.device(name)


# ------------------------------------------------------------------------------ several processes (torchrun)
@dataclass(frozen=True)
class _Group:
    """This process's place in the run: rank ``rank`` of ``size`` processes (1: a plain single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of ``n`` rows (sizes differ by at most one)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()


@contextlib.contextmanager
def _process_group(device: torch.device) -> Iterator[_Group]:
    """The process group of a run under ``torchrun`` (``WORLD_SIZE`` > 1): joined here when the
    caller has not (nccl on CUDA, gloo on the CPU) and left at the end; a single process otherwise."""
    import torch.distributed as dist

    if world_size() <= 1:
        yield _Group()
        return
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch has no torch.distributed; run one process (no torchrun)")
    own = not dist.is_initialized()
    if own:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield _Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0") or 0))
    finally:
        if own:
            dist.destroy_process_group()


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch across the process
    group (what :class:`torch.nn.SyncBatchNorm` does on GPUs, which refuses CPU tensors): the mean
    and then the biased variance all-reduced with gradients (``torch.distributed.nn``), running
    statistics updated as BatchNorm2d does (unbiased variance). Same parameters and buffers as
    BatchNorm2d, so state dicts load either way. Eval mode (and a single process) is BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        local = torch.tensor([x.numel() // c], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum((0, 2, 3)), local]))
        count = sums[-1]
        mean = sums[:c] / count
        d = x - mean.view(1, c, 1, 1)
        var = all_reduce((d * d).sum((0, 2, 3))) / count
        out = d * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = float(count)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1.0, 1.0)), alpha=m)
        return out


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every BatchNorm synchronised across the process group: torch's SyncBatchNorm
    on CUDA, :class:`GlooSyncBatchNorm` elsewhere (parameters and buffers carried over)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlooSyncBatchNorm):
            new = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats, device=device)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(model, name, new)
        else:
            sync_batchnorm(child, device)
    return model


def weighted_loss(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Importance-aware loss (paper Eq. 13).

    ``none``: mean cross-entropy. ``batch`` (the authors' code): mean cross-entropy times the mean
    importance of the batch. ``sample``: mean over the batch of importance_i x cross-entropy_i."""
    if mode == "none" or w is None:
        return F.cross_entropy(logits, y)
    if mode == "batch":
        return F.cross_entropy(logits, y) * w.mean()
    if mode == "sample":
        return (F.cross_entropy(logits, y, reduction="none") * w).mean()
    raise ConfigError(f"coreset.weighting: unknown mode {mode!r}; use batch, sample, mean1 or none")


def _lr_lambda(schedule: str, total: int) -> Callable[[int], float]:
    if schedule == "constant":
        return lambda it: 1.0
    return lambda it: 0.5 * (1.0 + math.cos(math.pi * min(it, total) / max(1, total)))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: ResidentLoader, num_classes: int, autocast) -> tuple[float, float, np.ndarray]:
    """(accuracy %, mean loss, per-class accuracy % ``[C]``) on a loader, eval mode, no augmentation."""
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.float64, device=loader.device)
    total = torch.zeros(num_classes, dtype=torch.float64, device=loader.device)
    loss_sum = 0.0
    for x, y, _ in loader.epoch(shuffle=False):
        with autocast():
            out = model(x)
        loss_sum += float(F.cross_entropy(out.float(), y, reduction="sum"))
        pred = out.argmax(1)
        total.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        correct.index_add_(0, y, (pred == y).double())
    n = float(total.sum())
    per_class = (100.0 * correct / total.clamp(min=1)).cpu().numpy()
    return 100.0 * float(correct.sum()) / max(n, 1.0), loss_sum / max(n, 1.0), per_class


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """``(feature extractor, classifier head)`` of a model, or None when it has no such split.

    Every registered architecture is a :class:`~tdds_core.models.Classifier` whose ``features``
    gives the penultimate features and whose ``head`` is the last ``nn.Linear`` (a compiled
    model is looked through). Other models get None: their logits come from the whole model."""
    m = getattr(model, "_orig_mod", model)
    feats, head = getattr(m, "features", None), getattr(m, "head", None)
    if isinstance(feats, nn.Module) and isinstance(head, nn.Linear):
        return feats, head
    return None


class Fp32HeadForward(nn.Module):
    """``features(x)`` under the caller's autocast, then ``head(features.float())`` in float32 with
    autocast disabled. Shares the modules (and parameters) of the model it was split from.

    Without autocast this is exactly ``model(x)``: ``.float()`` of float32 features is the same
    tensor and the head runs the same float32 ``linear``."""

    def __init__(self, features: nn.Module, head: nn.Linear):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = self.features(x)
        with torch.autocast(x.device.type, enabled=False):
            out = self.head(f.float())
        return (out, f) if return_features else out


def capture_forward(model: nn.Module, *, what: str = "the stored logits") -> nn.Module:
    """The forward used where logits are stored: :class:`Fp32HeadForward` over :func:`split_head`,
    or ``model`` itself (under autocast, as before) with a logged note when no head is found or
    :data:`FP32_HEAD` is off."""
    if not FP32_HEAD:
        return model
    parts = split_head(model)
    if parts is None:
        log.info("%s has no features/head split (a Classifier with an nn.Linear head); %s come from the whole "
                 "model under autocast (bf16 on CUDA)", type(model).__name__, what)
        return model
    return Fp32HeadForward(*parts)


@torch.no_grad()
def _predict(model, loader: ResidentLoader, n: int, num_classes: int, autocast, features: bool):
    """Eval-mode pass over ``loader`` (no augmentation): float32 logits ``[N, C]`` and, with
    ``features``, float32 penultimate features ``[N, D]``, rows by sample position. ``model`` is
    a Classifier or its :func:`capture_forward` (float32 head)."""
    model.eval()
    logits = torch.zeros(n, num_classes, dtype=torch.float32, device=loader.device)
    feats = None
    for x, _, idx in loader.epoch(shuffle=False):
        with autocast():
            out, f = model(x, return_features=True)
        logits[idx] = out.float()
        if features:
            if feats is None:
                feats = torch.zeros(n, f.shape[1], dtype=torch.float32, device=loader.device)
            feats[idx] = f.float()
    return logits, feats


class _Background:
    """The one writer thread of a run: an epoch's files (dynamics, statistics, checkpoint, the S3
    mirror) are written in the order they are handed over, while the next epoch trains. A failed
    write is raised by the next :meth:`submit` or by :meth:`flush`; :meth:`close` waits for every
    write handed over (also when the run stops on an error), so what was finished lands."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tdds-writer")
        self.pending: list = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        for f in [f for f in self.pending if f.done()]:
            self.pending.remove(f)
            f.result()
        self.pending.append(self.pool.submit(fn, *args))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for f in pending:
            f.result()

    def close(self, quiet: bool = False) -> None:
        """Wait for every write handed over; ``quiet``: a failed write is logged, not raised (the
        caller is already raising the run's own error)."""
        try:
            self.flush()
        except Exception as e:  # noqa: BLE001
            if not quiet:
                raise
            log.warning("a background write failed while the run stopped: %s", e)
        finally:
            self.pool.shutdown(wait=True)


def _torch_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` into memory: a snapshot of live tensors that a writer thread can store
    while training changes them."""
    import io as _io

    buf = _io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class _Trainer:
    def __init__(self, splits: Splits, spec: TrainSpec, out: Path, on_epoch, on_checkpoint=None,
                 group: _Group = _Group()):
        self.splits, self.spec, self.out, self.on_epoch = splits, spec, out, on_epoch
        self.on_checkpoint = on_checkpoint
        self.group = group
        self.device = resolve_device(spec.device)
        cuda = self.device.type == "cuda"
        if cuda and group.size > 1:     # one GPU per process (torchrun's LOCAL_RANK)
            if self.device.index is None:
                self.device = torch.device("cuda", group.local_rank)
            torch.cuda.set_device(self.device)
        self.use_amp = cuda and spec.amp in ("auto", "bf16")
        self.channels_last = self.device.type in ("cuda", "cpu") and spec.channels_last
        # cuDNN / deterministic-kernel flags: set (and restored afterwards) by kernel_flags() in train()
        self.n = len(splits.train)
        self.c = splits.num_classes
        if (spec.record_dynamics or spec.record_stats) and spec.drop_last:
            raise ConfigError("drop_last with dynamics recording: every sample needs its logits every epoch; set "
                              "train.drop_last: false (or dynamics.record: false)")
        positions = np.arange(self.n) if spec.positions is None else np.asarray(spec.positions, dtype=np.int64)
        if len(positions) == 0:
            raise ConfigError("the selection is empty: nothing to train on; use a lower pruning rate")
        if positions.max(initial=0) >= self.n or positions.min(initial=0) < 0:
            raise ArtifactError(f"selection positions exceed the dataset ({self.n} samples); the selection belongs to another dataset version")
        self.positions = positions
        if group.size > 1:
            self._check_split(len(positions))
        common = dict(device=self.device, mean=splits.mean, std=splits.std, flip=splits.flip, pad=splits.crop_padding,
                      channels_last=self.channels_last)
        resident, max_bytes, workers = spec.resident, spec.resident_max_bytes, spec.num_workers
        self.train_loader = make_loader(splits.train, resident=resident, resident_max_bytes=max_bytes, num_workers=workers,
                                        batch_size=spec.batch_size, augment=spec.augment, drop_last=spec.drop_last,
                                        positions=positions, **common)
        self.plain_train = make_loader(splits.train, resident=resident, resident_max_bytes=max_bytes, num_workers=workers,
                                       batch_size=spec.eval_batch_size, augment=False, **common)
        self.test_loader = make_loader(splits.test, resident=resident, resident_max_bytes=max_bytes, num_workers=workers,
                                       batch_size=spec.eval_batch_size, augment=False, **common)
        self.weights = None
        if spec.weights is not None:
            if len(spec.weights) != len(positions):
                raise ArtifactError(f"{len(spec.weights)} weights for {len(positions)} selected samples; the selection is inconsistent")
            w = torch.zeros(self.n, dtype=torch.float32, device=self.device)
            w[torch.from_numpy(positions).to(self.device)] = torch.tensor(spec.weights, dtype=torch.float32, device=self.device)
            self.weights = w
        torch.manual_seed(spec.seed)
        self.model = create_model(spec.arch, num_classes=self.c, in_channels=splits.channels, image_size=splits.image_size,
                                  **spec.model_options).to(self.device)
        if group.size > 1:
            self.model = sync_batchnorm(self.model, self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.step_model = torch.compile(self.model) if (cuda and spec.compile) else self.model
        # forward passes whose logits are stored: float32 head outside autocast (module docstring)
        self.capture_model = self.model
        self.capture_step = self.step_model
        if spec.record_dynamics or spec.record_stats:
            self.capture_model = capture_forward(self.model)
            if self.capture_model is not self.model and spec.dynamics_mode == "train":
                self.capture_step = torch.compile(self.capture_model) if (cuda and spec.compile) else self.capture_model
        if group.size > 1:
            self._wrap_ddp()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
                                   weight_decay=spec.weight_decay)
        per_epoch = len(self.train_loader)
        self.total_iters = spec.iterations if spec.iterations is not None else spec.epochs * per_epoch
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(spec.schedule, self.total_iters))

    def _check_split(self, n: int) -> None:
        """Every rank needs a part of every batch (a rank without samples has no batch statistics)."""
        b, k = self.spec.batch_size, self.group.size
        last = b if (n % b == 0 or self.spec.drop_last) else n % b
        if min(b, last, n) < k:
            raise ConfigError(f"{k} processes cannot share a batch of {min(b, last, n)} samples (train.batch_size "
                              f"{b}, {n} samples); use a train.batch_size whose last batch has at least {k} samples, "
                              "or fewer processes (torchrun --nproc-per-node)")

    def _wrap_ddp(self) -> None:
        """One DistributedDataParallel wrapper for every training step: around the float32-head
        forward when this run records train-mode logits (on the CPU the same numbers as the model,
        bit for bit), else around the model (two wrappers over one set of parameters would reduce
        their gradients twice)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        cuda = self.device.type == "cuda"
        base = self.capture_model if self.capture_step is not self.step_model else self.model
        ddp = DDP(base, device_ids=[self.device.index] if cuda else None)
        self.step_model = self.capture_step = torch.compile(ddp) if (cuda and self.spec.compile) else ddp

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
        """The loss of this rank's rows ``idx`` of the global batch (positions ``whole``):
        :func:`weighted_loss`, with ``batch`` weighting by the whole batch's mean importance."""
        spec = self.spec
        if self.group.size > 1 and spec.weighting == "batch" and self.weights is not None:
            return F.cross_entropy(logits, y) * self.weights[whole].mean()
        return weighted_loss(logits, y, self.weights[idx] if self.weights is not None else None, spec.weighting)

    def _backward(self, loss: torch.Tensor, rows: int, whole: int) -> None:
        """Gradients of the global batch's loss: a rank's mean over its ``rows`` of the ``whole``
        batch counts ``K * rows / whole`` times, since DDP averages the K ranks' gradients."""
        if self.group.size > 1:
            loss = loss * (self.group.size * rows / whole)
        loss.backward()

    def autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def records(self, epoch: int) -> bool:
        s = self.spec
        return (s.record_dynamics or s.record_stats) and epoch >= s.dynamics_start and \
            (s.dynamics_stop is None or epoch < s.dynamics_stop)

    def state(self, epoch: int, iteration: int, history: list, best: tuple) -> dict:
        st = {"epoch": epoch, "iteration": iteration, "history": history, "best": best,
              "model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
              "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}
        if torch.cuda.is_available():
            st["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        return st

    def load(self, st: dict) -> None:
        """Restore a checkpoint (loaded onto the CPU, :func:`load_checkpoint`): model and optimizer
        state move to the training device; the RNG states stay CPU byte tensors, the only kind
        ``torch.set_rng_state`` / ``torch.cuda.set_rng_state_all`` accept."""
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        torch.set_rng_state(_cpu_bytes(st["rng"]["torch"]))
        np.random.set_state(st["rng"]["numpy"])
        random.setstate(st["rng"]["python"])
        if "cuda" in st["rng"] and torch.cuda.is_available():
            saved = [_cpu_bytes(x) for x in st["rng"]["cuda"]]
            torch.cuda.set_rng_state_all(saved[:torch.cuda.device_count()])

    def run(self) -> TrainResult:
        self.bg = _Background()
        try:
            result = self._run()
        except BaseException:
            self.bg.close(quiet=True)   # what was handed over lands; the run's own error is the one raised
            raise
        self.bg.close()
        return result

    def _run(self) -> TrainResult:
        spec, out, group = self.spec, self.out, self.group
        writer = None      # the files are written by rank 0 (the only process of a single-process run)
        if spec.record_dynamics and group.main:
            writer = DynamicsWriter(out / "dynamics", ids=self.splits.train.ids, labels=self.splits.train.labels,
                                    num_classes=self.c, fingerprint=self.splits.fingerprint, dtype=spec.dynamics_dtype,
                                    mode=spec.dynamics_mode,
                                    extra={"arch": spec.arch, "seed": spec.seed, "world_size": group.size})
        stats = None        # per-sample statistics, computed in the training step on every process; rank 0 writes
        if spec.record_stats:
            from .statistics import StatsRecorder

            stats = StatsRecorder(out / "stats", ids=self.splits.train.ids, labels=self.splits.train.labels,
                                  num_classes=self.c, fingerprint=self.splits.fingerprint, device=self.device,
                                  main=group.main, submit=self.bg.submit, dtype=spec.stats_dtype)
        ckpt = out / "checkpoint.pt"
        start_epoch, iteration, history, best = 0, 0, [], (-1.0, -1)
        if ckpt.is_file():
            try:
                st = load_checkpoint(ckpt)
            except Exception as e:  # noqa: BLE001 - a torn file cannot happen (atomic), but a foreign one can
                raise ArtifactError(f"{ckpt} cannot be read ({e}); delete it to restart the run from scratch") from e
            self.load(st)
            start_epoch, iteration, history, best = st["epoch"] + 1, st["iteration"], st["history"], tuple(st["best"])
        buf = None
        if spec.record_dynamics:
            buf = torch.zeros(self.n, self.c, dtype=getattr(torch, spec.dynamics_dtype), device=self.device)
        t_start = time.perf_counter() - sum(h.get("epoch_s", 0.0) for h in history)
        imgs_total = sum(h.get("images", 0) for h in history)
        train_s_total = sum(h.get("train_s", 0.0) for h in history)
        final = None
        for epoch in range(start_epoch, spec.epochs):
            if iteration >= self.total_iters:
                break
            t0 = time.perf_counter()
            torch.manual_seed(epoch_seed(spec.seed, epoch, 2))
            self.step_model.train()
            rec_train = self.records(epoch) and spec.dynamics_mode == "train"
            loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
            correct = torch.zeros((), dtype=torch.int64, device=self.device)
            seen = 0
            bar = None
            if spec.progress and group.main:
                from tqdm.auto import tqdm

                bar = tqdm(total=min(len(self.train_loader), self.total_iters - iteration), desc=f"epoch {epoch + 1}/{spec.epochs}",
                           leave=False, dynamic_ncols=True)
            if rec_train and buf is not None:   # a row the epoch does not write stays NaN and fails the finite check below
                buf.fill_(float("nan"))
            if stats is not None and self.records(epoch):
                stats.begin_epoch(epoch)
            step_model = self.capture_step if rec_train else self.step_model
            step_model.train()
            # the global batch of a single process; under torchrun this rank gets its part of each
            # (only its rows augmented, with the whole batch's random draws) and the whole batch's ids
            shares = group.rows if group.size > 1 else None
            for batch in self.train_loader.epoch(epoch, spec.seed, rows=shares):
                if iteration >= self.total_iters:
                    break
                x, y, idx = batch[:3]
                whole = batch[3] if shares is not None else idx
                with self.autocast():
                    logits = step_model(x)
                loss = self._loss(logits.float(), y, idx, whole)
                self.opt.zero_grad(set_to_none=True)
                self._backward(loss, len(y), len(whole))
                self.opt.step()
                self.sched.step()
                iteration += 1
                det = logits.detach()
                if rec_train:
                    if buf is not None:
                        buf.index_copy_(0, idx, det.to(buf.dtype))     # each id once per batch
                    if stats is not None:
                        stats.update(idx, det)
                loss_sum += loss.detach().double() * len(y)
                correct += (det.argmax(1) == y).sum()
                seen += len(y)
                if bar is not None:
                    bar.update(1)
                    if bar.n % 10 == 0 or bar.n == bar.total:
                        el = time.perf_counter() - t0
                        ls, cs = torch.stack([loss_sum, correct.double()]).tolist()   # one host sync
                        bar.set_postfix(loss=f"{ls / seen:.3f}", acc=f"{100 * cs / seen:.1f}",
                                        img_s=f"{seen / max(el, 1e-9):.0f}")
            if bar is not None:
                bar.close()
            if group.size > 1:          # the epoch's metrics over every rank's samples
                loss_sum, correct, seen = _sum_over_ranks(loss_sum, correct, seen)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            train_s = time.perf_counter() - t0
            rec = {"epoch": epoch, "train_loss": float(loss_sum) / max(seen, 1), "train_acc": 100.0 * int(correct) / max(seen, 1),
                   "lr": self.opt.param_groups[0]["lr"], "images": seen, "train_s": train_s,
                   "img_per_s": seen / max(train_s, 1e-9), "iteration": iteration}
            if self.records(epoch) and buf is not None and group.size > 1 and spec.dynamics_mode == "train":
                arr = _rows_from_ranks(buf)     # rank 0: every rank's rows; NaN where no rank wrote exactly once
            elif self.records(epoch) and group.main:
                if spec.dynamics_mode == "clean":
                    logits_all, _ = _predict(self.capture_model, self.plain_train, self.n, self.c, self.autocast, False)
                    if buf is not None:
                        buf.copy_(logits_all.to(buf.dtype))
                    if stats is not None:
                        stats.update(torch.arange(self.n, device=self.device), logits_all)
                # a host copy of its own: the writer thread stores it while the next epoch refills buf
                arr = buf.to("cpu", torch.float32, copy=True).numpy() if buf is not None else None
            else:
                arr = None
            if arr is not None and group.main:
                if not np.isfinite(arr).all():
                    bad = int((~np.isfinite(arr).all(1)).sum())
                    raise ScoringError(f"epoch {epoch}: {bad} samples have NaN/Inf logits: training diverged (lower "
                                       "train.lr or check the data) or the epoch did not visit them (train.drop_last); "
                                       "nothing was written for this epoch")
                if writer is not None:
                    self.bg.submit(writer.write_epoch, epoch, arr)
            if stats is not None and self.records(epoch):
                stats.end_epoch(epoch)      # every process (the rows are gathered); rank 0 writes
            last = epoch == spec.epochs - 1 or iteration >= self.total_iters
            if last or (epoch + 1) % spec.eval_every == 0:
                acc, tloss, per_class = evaluate(self.model, self.test_loader, self.c, self.autocast)
                rec.update(test_acc=acc, test_loss=tloss)
                if acc > best[0]:
                    best = (acc, epoch)
                final = (acc, tloss, per_class)
            rec["epoch_s"] = time.perf_counter() - t0
            history.append(rec)
            imgs_total += seen
            train_s_total += train_s
            if not group.main:
                continue
            if self.on_epoch is not None:
                self.on_epoch(rec)
            if not last and (epoch + 1) % spec.checkpoint_every == 0:
                # serialised now, stored by the writer thread after this epoch's recordings
                self.bg.submit(atomic_write_bytes, ckpt, _torch_bytes(self.state(epoch, iteration, history, best)))
                if stats is not None:
                    self.bg.submit(stats.checkpointed, epoch)
                if self.on_checkpoint is not None:
                    self.bg.submit(self.on_checkpoint, out)
        if final is None:  # resumed after the last epoch had finished but before result.json was written
            final = evaluate(self.model, self.test_loader, self.c, self.autocast)
        self.bg.flush()     # every epoch's recordings are on disk before the final pass and the manifest
        if group.main:
            self._save_outputs(writer, stats, history)
        result = TrainResult(final_acc=final[0], best_acc=max(best[0], final[0]), best_epoch=best[1], final_loss=final[1],
                             per_class_acc=[float(v) for v in final[2]], epochs=len(history), iterations=iteration,
                             num_train=len(self.positions), wall_s=time.perf_counter() - t_start,
                             img_per_s=imgs_total / max(train_s_total, 1e-9), history=history)
        if group.main:
            self._publish(result, ckpt)
        group.barrier()     # the other ranks return once the run's files are there
        return result

    def _save_outputs(self, writer: DynamicsWriter | None, stats: Any, history: list[dict]) -> None:
        """Rank 0: the clean final pass, the finished recordings and the final model."""
        spec, out = self.spec, self.out
        logits_all = feats = None
        if writer is not None:
            # the clean final pass: the final model, eval mode, no augmentation (Entropy, Moderate)
            logits_all, feats = _predict(self.capture_model, self.plain_train, self.n, self.c, self.autocast,
                                         spec.save_features)
            writer.write_final_pass(logits_all.cpu().numpy(), None if feats is None else feats.cpu().numpy(),
                                    epoch=int(history[-1]["epoch"]) if history else None,
                                    info={"head_fp32": self.capture_model is not self.model,
                                          "autocast": "bf16" if self.use_amp else "none"})
            writer.finalize()
        if stats is not None:
            if logits_all is None:      # the clean final pass, for the statistics alone
                logits_all, feats = _predict(self.capture_model, self.plain_train, self.n, self.c, self.autocast,
                                             spec.save_features)
            stats.final_pass(logits_all, features=feats, epoch=int(history[-1]["epoch"]) if history else None)
            stats.finalize()
        atomic_torch_save(out / "model.pt", {"arch": spec.arch, "num_classes": self.c, "in_channels": self.splits.channels,
                                             "image_size": self.splits.image_size, "options": spec.model_options,
                                             "state_dict": self.model.state_dict()})

    def _publish(self, result: TrainResult, ckpt: Path) -> None:
        """Rank 0: history, result and, last, the manifest of every file; the checkpoint is removed."""
        spec, out = self.spec, self.out
        atomic_write_json(out / "history.json", result.history)
        atomic_write_json(out / "result.json", dataclasses.asdict(result))
        if ckpt.exists():
            ckpt.unlink()
        # every file of the run (dynamics included), so the folder verifies and travels as one artifact
        write_manifest(out, None, kind="train", spec_digest=spec.digest(self.splits.fingerprint),
                       fingerprint=self.splits.fingerprint, world_size=self.group.size)


def _sum_over_ranks(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """An epoch's training-loss sum, correct count and sample count summed over the process group."""
    import torch.distributed as dist

    t = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), dtype=torch.float64,
                                                                         device=loss_sum.device)])
    dist.all_reduce(t)
    return t[0], t[1].round().long(), int(t[2].item())


def _rows_from_ranks(buf: torch.Tensor) -> np.ndarray | None:
    """The epoch's captured rows of every rank, on rank 0 (None elsewhere): each rank sends the rows
    it wrote (finite; NaN elsewhere after the per-epoch fill) and how many times each row was
    written; a row written by no rank, or by two, comes out NaN and fails the finite check."""
    import torch.distributed as dist

    wrote = torch.isfinite(buf).all(1)
    part = torch.where(wrote[:, None], buf.float(), torch.zeros((), dtype=torch.float32, device=buf.device))
    count = wrote.float()
    dist.reduce(part, 0)
    dist.reduce(count, 0)
    if dist.get_rank() != 0:
        return None
    part[count != 1] = float("nan")
    return part.cpu().numpy()


def _runtime_names() -> set[str]:
    """TrainSpec fields that change no number (left out of a run's identity)."""
    from .plan import runtime_spec_fields

    return set(runtime_spec_fields()) | set(NUMERIC_FIELDS)


def _cpu_bytes(t: Any) -> torch.Tensor:
    """An RNG state as the CPU uint8 tensor torch's setters require, wherever it was loaded."""
    return torch.as_tensor(t).detach().to("cpu", torch.uint8)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint, every tensor on the CPU (``load_state_dict`` then moves model and
    optimizer state to the training device; RNG states must stay on the CPU: loading them onto a
    GPU made every resume there fail)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def load_result(out_dir: str | os.PathLike) -> TrainResult | None:
    """The finished result in ``out_dir`` (checksums verified), or None when the run has not finished."""
    out = Path(out_dir)
    if not (out / MANIFEST).is_file():
        return None
    verify_manifest(out)
    return TrainResult(**read_json(out / "result.json"))


def train(splits: Splits, spec: TrainSpec, out_dir: str | os.PathLike, *,
          on_epoch: Callable[[dict], Any] | None = None,
          on_checkpoint: Callable[[Path], Any] | None = None) -> TrainResult:
    """Train (or resume, or return the finished result of) ``spec`` on ``splits`` into ``out_dir``.

    ``on_epoch(record)`` is called after every epoch with its metrics; ``on_checkpoint(out_dir)``
    after every checkpoint (the stages use it to mirror the checkpoint to S3).

    Under ``torchrun --nproc-per-node K`` (one machine, a shared ``out_dir``) the K processes train
    one run with DistributedDataParallel and synchronised batch norm: each epoch's order and
    augmentation are those of a single process (the global batch is drawn as one process draws it
    and each rank trains on its contiguous part), each rank captures its own samples' logits, and
    rank 0 writes the same files as a single process, with ``"world_size": K`` in the manifests and
    the numerics (a different run from a single process's: the same numbers within float
    tolerance, not bit for bit). The callbacks run on rank 0 only."""
    out = Path(out_dir)
    device = resolve_device(spec.device)
    with _process_group(device) as group:
        done = _claim(out, splits, spec) if group.main else None
        group.barrier()
        if not group.main:      # rank 0 claimed the folder: the same answer, nothing written
            done = _claim(out, splits, spec)
        if done is not None:
            return done
        with kernel_flags(device, spec.deterministic):
            return _Trainer(splits, spec, out, on_epoch, on_checkpoint, group=group).run()


def _claim(out: Path, splits: Splits, spec: TrainSpec) -> TrainResult | None:
    """Claim ``out`` for ``spec`` (``run.json``): its finished result, None to train (fresh or
    resumed), or ArtifactError when it holds another run."""
    out.mkdir(parents=True, exist_ok=True)
    digest = spec.digest(splits.fingerprint)
    run_file = out / "run.json"
    if run_file.is_file():
        prev = read_json(run_file)
        if prev.get("spec_digest") != digest:
            raise ArtifactError(_other_run_message(out, prev, spec, digest))
        return load_result(out)
    atomic_write_json(run_file, {"spec_digest": digest, "fingerprint": splits.fingerprint, "spec": spec.describe(),
                                 "numerics": spec.numerics(), "world_size": world_size(), "tdds_version": _version()})
    return None


#: effective numerics entry (:func:`effective_numerics`) -> the setting that changes it
_NUMERIC_SETTING = {"device": "train.device (the device class)", "bf16": "train.amp", "channels_last": "train.channels_last",
                    "compile": "train.compile", "deterministic": "train.deterministic",
                    "world_size": "the process count (torchrun --nproc-per-node)"}


def _other_run_message(out: Path, prev: dict, spec: TrainSpec, digest: str) -> str:
    """Why ``out`` (whose ``run.json`` is ``prev``) cannot take ``spec``: the differing fields and,
    for numerics, each differing effect with the setting behind it, then the fix."""
    now = spec.describe()
    was = prev.get("spec", {})
    differ = [f"{k} {was[k]!r} -> {now[k]!r}" for k in sorted(now)
              if k in was and was[k] != now[k] and k not in _runtime_names()]
    num_was, num_now = prev.get("numerics"), spec.numerics()
    settings: list[str] = []
    if isinstance(num_was, dict) and num_was != num_now:
        for k in sorted(set(num_was) | set(num_now)):
            a, b = num_was.get(k, False), num_now.get(k, False)
            if a != b:
                setting = _NUMERIC_SETTING.get(k, k)
                differ.append(f"numerics {k} {a!r} -> {b!r} ({setting})")
                settings.append(setting)
    what = f" (differs in {'; '.join(differ)})" if differ else ""
    fix = (f"set {', '.join(settings)} back to what the run used (a run's numbers must not mix numerics), or "
           if settings else "")
    return (f"{out} holds another run (spec {prev.get('spec_digest')}, this one {digest}){what}; refusing to mix "
            f"them: {fix}choose another output folder or delete it (numeric settings such as train.amp, "
            "channels_last, compile, deterministic and the device class count as a different run).")


@contextlib.contextmanager
def kernel_flags(device: torch.device, deterministic: bool) -> Iterator[None]:
    """The kernel choice of one training run on ``device``, restored when it ends.

    On CUDA: cuDNN autotuning (``benchmark``) unless ``deterministic``; with ``deterministic``
    (``train.deterministic``), deterministic kernels for bit-identical reruns:
    ``torch.use_deterministic_algorithms(True)``, ``cudnn.deterministic`` and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS reads it at its first call, so it is left set).
    Elsewhere nothing changes (a CPU run is deterministic already). Restoring keeps a later run or
    a scorer in the same process (``tdds grid``) from inheriting the flags: some CUDA ops refuse
    to run under deterministic mode."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = bool(deterministic)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(deterministic))
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def _version() -> str:
    from . import __version__

    return __version__


def load_model(path: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """Rebuild a model saved by :func:`train` (``model.pt``)."""
    st = torch.load(path, map_location=device, weights_only=False)
    m = create_model(st["arch"], num_classes=st["num_classes"], in_channels=st["in_channels"], image_size=st["image_size"],
                     **st.get("options", {}))
    m.load_state_dict(st["state_dict"])
    return m
