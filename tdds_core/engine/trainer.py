"""The one training loop (:class:`_Trainer`): model, optimizer and loaders set up from a
:class:`~tdds_core.engine.spec.TrainSpec`, then epoch after epoch: train (capturing the recorded
epochs' logits and statistics by sample id), store the recordings, evaluate, checkpoint; at the end
the clean final pass, the model and the manifest. Started by :func:`tdds_core.engine.train`.

Each epoch's data order and augmentation (and, with ``per_epoch``, RS2's fresh subset) come from
generators seeded by ``(seed, epoch)``, so a resumed run is bit-identical on CPU to an uninterrupted
one. An epoch's files go to the writer thread (:class:`~tdds_core.engine.checkpoint.Background`)
while the next epoch trains."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..data import Splits
from ..data.loader import epoch_seed, make_loader
from ..dynamics import DynamicsWriter
from ..errors import ArtifactError, ConfigError, ScoringError
from ..io import atomic_torch_save, atomic_write_bytes, atomic_write_json, write_manifest
from ..models import create_model
from ..numerics import resolve_device
from ..recorder import StatsRecorder
from .checkpoint import Background, load_checkpoint, restore_state, torch_bytes, training_state
from .distributed import _Group, rows_from_ranks, sum_over_ranks, sync_batchnorm
from .forward import capture_forward, evaluate, lr_lambda, predict, weighted_loss
from .spec import TrainResult, TrainSpec

__all__ = ["_Trainer"]


@dataclass
class _Progress:
    """Where a run stands: restored from its checkpoint, advanced by every epoch."""

    start_epoch: int = 0
    iteration: int = 0
    history: list[dict] = field(default_factory=list)
    best: tuple = (-1.0, -1)                 # (best test accuracy %, its epoch)
    final: Optional[tuple] = None            # (accuracy %, loss, per-class accuracy) of the last evaluation
    images: int = 0                          # images trained on over the run's epochs
    train_s: float = 0.0                     # seconds of training steps over the run's epochs
    t_start: float = 0.0                     # perf_counter origin of the run's wall time


class _Trainer:
    def __init__(self, splits: Splits, spec: TrainSpec, out: Path, on_epoch: Optional[Callable[[dict], Any]],
                 on_checkpoint: Optional[Callable[[Path], Any]] = None, group: _Group = _Group()):
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
        if (spec.record_dynamics or spec.record_stats) and spec.per_epoch is not None:
            raise ConfigError("a fresh subset every epoch (RS2, per_epoch) with dynamics recording: every sample needs "
                              "its logits every epoch; record dynamics in the full-data run only")
        self.positions = self._positions()
        # samples per epoch: the selection's, or (RS2) the size of each epoch's fresh draw from it
        self.per_epoch = len(self.positions) if spec.per_epoch is None else int(spec.per_epoch)
        if group.size > 1:
            self._check_split(self.per_epoch)
        self._make_loaders()
        self.weights = self._weights()
        torch.manual_seed(spec.seed)
        self._build_model()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
                                   weight_decay=spec.weight_decay)
        batches = len(self.train_loader)     # per epoch: ceil(per_epoch / batch size), or floor with drop_last
        self.total_iters = spec.iterations if spec.iterations is not None else spec.epochs * batches
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(spec.schedule, self.total_iters))

    # ------------------------------------------------------------------------------------ set-up
    def _positions(self) -> np.ndarray:
        """The training positions of the selection (every position without one), checked against the dataset."""
        spec = self.spec
        positions = np.arange(self.n) if spec.positions is None else np.asarray(spec.positions, dtype=np.int64)
        if len(positions) == 0:
            raise ConfigError("the selection is empty: nothing to train on; use a lower pruning rate")
        if positions.max(initial=0) >= self.n or positions.min(initial=0) < 0:
            raise ArtifactError(f"selection positions exceed the dataset ({self.n} samples); the selection belongs to another dataset version")
        if spec.per_epoch is not None and not 0 < spec.per_epoch <= len(positions):
            raise ConfigError(f"per_epoch {spec.per_epoch}: RS2 draws between 1 and the {len(positions)} training "
                              "positions every epoch; use a pruning rate in [0, 1)")
        return positions

    def _check_split(self, n: int) -> None:
        """Every rank needs a part of every batch (a rank without samples has no batch statistics)."""
        b, k = self.spec.batch_size, self.group.size
        last = b if (n % b == 0 or self.spec.drop_last) else n % b
        if min(b, last, n) < k:
            raise ConfigError(f"{k} processes cannot share a batch of {min(b, last, n)} samples (train.batch_size "
                              f"{b}, {n} samples); use a train.batch_size whose last batch has at least {k} samples, "
                              "or fewer processes (torchrun --nproc-per-node)")

    def _make_loaders(self) -> None:
        """The training loader over the selection, and eval-mode loaders over the training and test sets."""
        spec, splits = self.spec, self.splits
        common = dict(device=self.device, mean=splits.mean, std=splits.std, flip=splits.flip, pad=splits.crop_padding,
                      channels_last=self.channels_last, resident=spec.resident, resident_max_bytes=spec.resident_max_bytes,
                      num_workers=spec.num_workers)
        self.train_loader = make_loader(splits.train, batch_size=spec.batch_size, augment=spec.augment,
                                        drop_last=spec.drop_last, positions=self.positions, per_epoch=spec.per_epoch,
                                        **common)
        self.plain_train = make_loader(splits.train, batch_size=spec.eval_batch_size, augment=False, **common)
        self.test_loader = make_loader(splits.test, batch_size=spec.eval_batch_size, augment=False, **common)

    def _weights(self) -> Optional[torch.Tensor]:
        """The importance of every training position ``[N]`` (0 outside the selection), or None."""
        spec = self.spec
        if spec.weights is None:
            return None
        if len(spec.weights) != len(self.positions):
            raise ArtifactError(f"{len(spec.weights)} weights for {len(self.positions)} selected samples; the selection is inconsistent")
        w = torch.zeros(self.n, dtype=torch.float32, device=self.device)
        w[torch.from_numpy(self.positions).to(self.device)] = torch.tensor(spec.weights, dtype=torch.float32, device=self.device)
        return w

    def _build_model(self) -> None:
        """The model (synchronised batch norm under torchrun, channels_last, compiled on CUDA when
        asked) and the forwards of the training steps: ``step_model`` and, in recorded epochs,
        ``capture_step`` (float32 head, :func:`~tdds_core.engine.forward.capture_forward`)."""
        spec, splits, group = self.spec, self.splits, self.group
        cuda = self.device.type == "cuda"
        self.model = create_model(spec.arch, num_classes=self.c, in_channels=splits.channels, image_size=splits.image_size,
                                  **spec.model_options).to(self.device)
        if group.size > 1:
            self.model = sync_batchnorm(self.model, self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.step_model = torch.compile(self.model) if (cuda and spec.compile) else self.model
        # forward passes whose logits are stored: float32 head outside autocast (tdds_core.engine.forward)
        self.capture_model = self.model
        self.capture_step = self.step_model
        if spec.record_dynamics or spec.record_stats:
            self.capture_model = capture_forward(self.model)
            if self.capture_model is not self.model and spec.dynamics_mode == "train":
                self.capture_step = torch.compile(self.capture_model) if (cuda and spec.compile) else self.capture_model
        if group.size > 1:
            self._wrap_ddp()

    def _wrap_ddp(self) -> None:
        """One DistributedDataParallel wrapper for every training step: around the float32-head
        forward when this run records train-mode logits (on the CPU the same numbers as the model,
        bit for bit), else around the model (two wrappers over one set of parameters would reduce
        their gradients twice)."""
        cuda = self.device.type == "cuda"
        base = self.capture_model if self.capture_step is not self.step_model else self.model
        ddp = DistributedDataParallel(base, device_ids=[self.device.index] if cuda else None)
        self.step_model = self.capture_step = torch.compile(ddp) if (cuda and self.spec.compile) else ddp

    # ------------------------------------------------------------------------------------ one step
    def _loss(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
        """The loss of this rank's rows ``idx`` of the global batch (positions ``whole``):
        :func:`~tdds_core.engine.forward.weighted_loss`, with ``batch`` weighting by the whole batch's mean importance."""
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

    def _step(self, step_model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
              whole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch: its logits (detached) and its loss."""
        with self.autocast():
            logits = step_model(x)
        loss = self._loss(logits.float(), y, idx, whole)
        self.opt.zero_grad(set_to_none=True)
        self._backward(loss, len(y), len(whole))
        self.opt.step()
        self.sched.step()
        return logits.detach(), loss

    def autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def records(self, epoch: int) -> bool:
        s = self.spec
        return (s.record_dynamics or s.record_stats) and epoch >= s.dynamics_start and \
            (s.dynamics_stop is None or epoch < s.dynamics_stop)

    # ------------------------------------------------------------------------------------ checkpoints
    def state(self, epoch: int, iteration: int, history: list, best: tuple) -> dict:
        return training_state(self.model, self.opt, self.sched, epoch=epoch, iteration=iteration, history=history,
                              best=best)

    def load(self, st: dict) -> None:
        restore_state(st, self.model, self.opt, self.sched)

    def _resume(self, ckpt: Path) -> _Progress:
        """The run's progress: restored from ``ckpt`` when there is one (model, optimizer, RNG states too)."""
        p = _Progress()
        if ckpt.is_file():
            try:
                st = load_checkpoint(ckpt)
            except Exception as e:  # noqa: BLE001 - a torn file cannot happen (atomic), but a foreign one can
                raise ArtifactError(f"{ckpt} cannot be read ({e}); delete it to restart the run from scratch") from e
            self.load(st)
            p.start_epoch, p.iteration, p.history, p.best = st["epoch"] + 1, st["iteration"], st["history"], tuple(st["best"])
        return p

    # ------------------------------------------------------------------------------------ the run
    def run(self) -> TrainResult:
        self.bg = Background()
        try:
            result = self._run()
        except BaseException:
            self.bg.close(quiet=True)   # what was handed over lands; the run's own error is the one raised
            raise
        self.bg.close()
        return result

    def _recorders(self) -> tuple[Optional[DynamicsWriter], Optional[StatsRecorder]]:
        """The dynamics writer (rank 0, with ``record_dynamics``) and the statistics recorder (every
        process, with ``record_stats``: computed in the training step; rank 0 writes)."""
        spec, out, group, train = self.spec, self.out, self.group, self.splits.train
        writer = stats = None
        if spec.record_dynamics and group.main:
            writer = DynamicsWriter(out / "dynamics", ids=train.ids, labels=train.labels, num_classes=self.c,
                                    fingerprint=self.splits.fingerprint, dtype=spec.dynamics_dtype, mode=spec.dynamics_mode,
                                    extra={"arch": spec.arch, "seed": spec.seed, "world_size": group.size})
        if spec.record_stats:
            stats = StatsRecorder(out / "stats", ids=train.ids, labels=train.labels, num_classes=self.c,
                                  fingerprint=self.splits.fingerprint, device=self.device, main=group.main,
                                  submit=self.bg.submit, dtype=spec.stats_dtype)
        return writer, stats

    def _run(self) -> TrainResult:
        spec, group = self.spec, self.group
        writer, stats = self._recorders()
        ckpt = self.out / "checkpoint.pt"
        p = self._resume(ckpt)
        buf = None      # the recorded epoch's logits [N, C], rows by sample position
        if spec.record_dynamics:
            buf = torch.zeros(self.n, self.c, dtype=getattr(torch, spec.dynamics_dtype), device=self.device)
        p.t_start = time.perf_counter() - sum(h.get("epoch_s", 0.0) for h in p.history)
        p.images = sum(h.get("images", 0) for h in p.history)
        p.train_s = sum(h.get("train_s", 0.0) for h in p.history)
        end = spec.stop_epoch or spec.epochs      # a stopped run keeps the whole run's schedule
        for epoch in range(p.start_epoch, end):
            if p.iteration >= self.total_iters:
                break
            t0 = time.perf_counter()
            rec = self._train_epoch(epoch, t0, p, buf, stats)
            self._store_recordings(epoch, buf, stats, writer)
            last = epoch == end - 1 or p.iteration >= self.total_iters
            if last or (epoch + 1) % spec.eval_every == 0:
                self._evaluate(epoch, rec, p)
            rec["epoch_s"] = time.perf_counter() - t0
            p.history.append(rec)
            p.images += rec["images"]
            p.train_s += rec["train_s"]
            if group.main:
                self._after_epoch(epoch, rec, last, p, ckpt, stats)
        return self._finish(p, ckpt, writer, stats)

    def _train_epoch(self, epoch: int, t0: float, p: _Progress, buf: Optional[torch.Tensor],
                     stats: Optional[StatsRecorder]) -> dict:
        """Train one epoch (capturing its logits into ``buf`` and ``stats`` when it is recorded in
        train mode); its record: training loss and accuracy over every rank's samples, lr, speed."""
        spec, group = self.spec, self.group
        torch.manual_seed(epoch_seed(spec.seed, epoch, 2))
        self.step_model.train()
        rec_train = self.records(epoch) and spec.dynamics_mode == "train"
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        bar = None
        if spec.progress and group.main:
            bar = tqdm(total=min(len(self.train_loader), self.total_iters - p.iteration),
                       desc=f"epoch {epoch + 1}/{spec.epochs}", leave=False, dynamic_ncols=True)
        if rec_train and buf is not None:   # a row the epoch does not write stays NaN and fails the finite check
            buf.fill_(float("nan"))
        if stats is not None and self.records(epoch):
            stats.begin_epoch(epoch)
        step_model = self.capture_step if rec_train else self.step_model
        step_model.train()
        # the global batch of a single process; under torchrun this rank gets its part of each
        # (only its rows augmented, with the whole batch's random draws) and the whole batch's ids
        shares = group.rows if group.size > 1 else None
        for batch in self.train_loader.epoch(epoch, spec.seed, rows=shares):
            if p.iteration >= self.total_iters:
                break
            x, y, idx = batch[:3]
            det, loss = self._step(step_model, x, y, idx, batch[3] if shares is not None else idx)
            p.iteration += 1
            if rec_train:
                if buf is not None:
                    buf.index_copy_(0, idx, det.to(buf.dtype))     # each id once per batch
                if stats is not None:
                    stats.update(idx, det)
            loss_sum += loss.detach().double() * len(y)
            correct += (det.argmax(1) == y).sum()
            seen += len(y)
            if bar is not None:
                _show(bar, t0, loss_sum, correct, seen)
        if bar is not None:
            bar.close()
        if group.size > 1:          # the epoch's metrics over every rank's samples
            loss_sum, correct, seen = sum_over_ranks(loss_sum, correct, seen)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        return {"epoch": epoch, "train_loss": float(loss_sum) / max(seen, 1), "train_acc": 100.0 * int(correct) / max(seen, 1),
                "lr": self.opt.param_groups[0]["lr"], "images": seen, "train_s": train_s,
                "img_per_s": seen / max(train_s, 1e-9), "iteration": p.iteration}

    def _epoch_logits(self, epoch: int, buf: Optional[torch.Tensor], stats: Optional[StatsRecorder]) -> Optional[np.ndarray]:
        """Rank 0: the recorded epoch's logits ``[N, C]`` on the host (every rank's rows under
        torchrun; in ``clean`` mode from an eval-mode pass, which also feeds ``stats``); else None."""
        spec, group = self.spec, self.group
        if self.records(epoch) and buf is not None and group.size > 1 and spec.dynamics_mode == "train":
            return rows_from_ranks(buf)     # rank 0: every rank's rows; NaN where no rank wrote exactly once
        if not (self.records(epoch) and group.main):
            return None
        if spec.dynamics_mode == "clean":
            logits_all, _ = predict(self.capture_model, self.plain_train, self.n, self.c, self.autocast, False)
            if buf is not None:
                buf.copy_(logits_all.to(buf.dtype))
            if stats is not None:
                stats.update(torch.arange(self.n, device=self.device), logits_all)
        # a host copy of its own: the writer thread stores it while the next epoch refills buf
        return buf.to("cpu", torch.float32, copy=True).numpy() if buf is not None else None

    def _store_recordings(self, epoch: int, buf: Optional[torch.Tensor], stats: Optional[StatsRecorder],
                          writer: Optional[DynamicsWriter]) -> None:
        """Hand the recorded epoch's logits (checked finite) and statistics to the writer thread."""
        arr = self._epoch_logits(epoch, buf, stats)
        if arr is not None and self.group.main:
            if not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr).all(1)).sum())
                raise ScoringError(f"epoch {epoch}: {bad} samples have NaN/Inf logits: training diverged (lower "
                                   "train.lr or check the data) or the epoch did not visit them (train.drop_last); "
                                   "nothing was written for this epoch")
            if writer is not None:
                self.bg.submit(writer.write_epoch, epoch, arr)
        if stats is not None and self.records(epoch):
            stats.end_epoch(epoch)      # every process (the rows are gathered); rank 0 writes

    def _evaluate(self, epoch: int, rec: dict, p: _Progress) -> None:
        """Test accuracy and loss after ``epoch`` into its record, the best and the final ones."""
        acc, tloss, per_class = evaluate(self.model, self.test_loader, self.c, self.autocast)
        rec.update(test_acc=acc, test_loss=tloss)
        if acc > p.best[0]:
            p.best = (acc, epoch)
        p.final = (acc, tloss, per_class)

    def _after_epoch(self, epoch: int, rec: dict, last: bool, p: _Progress, ckpt: Path,
                     stats: Optional[StatsRecorder]) -> None:
        """Rank 0: the ``on_epoch`` callback, then every ``checkpoint_every`` epochs (not the last)
        the checkpoint, serialised now and stored by the writer thread after this epoch's recordings."""
        if self.on_epoch is not None:
            self.on_epoch(rec)
        if not last and (epoch + 1) % self.spec.checkpoint_every == 0:
            self.bg.submit(atomic_write_bytes, ckpt, torch_bytes(self.state(epoch, p.iteration, p.history, p.best)))
            if stats is not None:
                self.bg.submit(stats.checkpointed, epoch)
            if self.on_checkpoint is not None:
                self.bg.submit(self.on_checkpoint, self.out)

    def _finish(self, p: _Progress, ckpt: Path, writer: Optional[DynamicsWriter],
                stats: Optional[StatsRecorder]) -> TrainResult:
        """The run's result; rank 0 writes the final outputs and publishes them, the others wait."""
        final = p.final
        if final is None:  # resumed after the last epoch had finished but before result.json was written
            final = evaluate(self.model, self.test_loader, self.c, self.autocast)
        self.bg.flush()     # every epoch's recordings are on disk before the final pass and the manifest
        if self.group.main:
            self._save_outputs(writer, stats, p.history)
        result = TrainResult(final_acc=final[0], best_acc=max(p.best[0], final[0]), best_epoch=p.best[1],
                             final_loss=final[1], per_class_acc=[float(v) for v in final[2]], epochs=len(p.history),
                             iterations=p.iteration, num_train=self.per_epoch,
                             wall_s=time.perf_counter() - p.t_start, img_per_s=p.images / max(p.train_s, 1e-9),
                             history=p.history)
        if self.group.main:
            self._publish(result, ckpt)
        self.group.barrier()     # the other ranks return once the run's files are there
        return result

    def _save_outputs(self, writer: Optional[DynamicsWriter], stats: Optional[StatsRecorder], history: list[dict]) -> None:
        """Rank 0: the clean final pass, the finished recordings and the final model."""
        spec, out = self.spec, self.out
        logits_all = feats = None
        last_epoch = int(history[-1]["epoch"]) if history else None
        if writer is not None:
            # the clean final pass: the final model, eval mode, no augmentation (Entropy, Moderate)
            logits_all, feats = predict(self.capture_model, self.plain_train, self.n, self.c, self.autocast,
                                        spec.save_features)
            writer.write_final_pass(logits_all.cpu().numpy(), None if feats is None else feats.cpu().numpy(),
                                    epoch=last_epoch, info={"head_fp32": self.capture_model is not self.model,
                                                            "autocast": "bf16" if self.use_amp else "none"})
            writer.finalize()
        if stats is not None:
            if logits_all is None:      # the clean final pass, for the statistics alone
                logits_all, feats = predict(self.capture_model, self.plain_train, self.n, self.c, self.autocast,
                                            spec.save_features)
            stats.final_pass(logits_all, features=feats, epoch=last_epoch)
            stats.finalize()
        atomic_torch_save(out / "model.pt", {"arch": spec.arch, "num_classes": self.c, "in_channels": self.splits.channels,
                                             "image_size": self.splits.image_size, "options": spec.model_options,
                                             "state_dict": self.model.state_dict()})

    def _publish(self, result: TrainResult, ckpt: Path) -> None:
        """Rank 0: history, result and, last, the manifest of every file; the checkpoint is removed."""
        out = self.out
        atomic_write_json(out / "history.json", result.history)
        atomic_write_json(out / "result.json", dataclasses.asdict(result))
        if ckpt.exists():
            ckpt.unlink()
        # every file of the run (dynamics included), so the folder verifies and travels as one artifact
        write_manifest(out, None, kind="train", spec_digest=self.spec.digest(self.splits.fingerprint),
                       fingerprint=self.splits.fingerprint, world_size=self.group.size)


def _show(bar: Any, t0: float, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
    """Advance the progress bar; every 10 batches (and at the end) its loss, accuracy and img/s."""
    bar.update(1)
    if bar.n % 10 == 0 or bar.n == bar.total:
        el = time.perf_counter() - t0
        ls, cs = torch.stack([loss_sum, correct.double()]).tolist()   # one host sync
        bar.set_postfix(loss=f"{ls / seen:.3f}", acc=f"{100 * cs / seen:.1f}", img_s=f"{seen / max(el, 1e-9):.0f}")
