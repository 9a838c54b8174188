"""Per-sample statistics recorded inside the training step (``dynamics.record: stats | both``; the
format is :mod:`tdds_core.statistics`). torch is imported here at module level: only the engine
imports this module, the scoring path never does.

Per batch, :func:`device_statistics` computes the columns of
:data:`~tdds_core.statistics.COLUMNS` on the training device from the logits of the same forward
pass that logits capture stores, against the previous epoch's logits kept on the device indexed by
sample id (float32 ``[N, C]``; written beside the statistics at each epoch end, ``_last_XXXX.npy``,
and kept back to the run's last checkpoint, so a resumed run continues bit for bit; removed when
the run ends).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from .errors import ScoringError
from .statistics import COLUMNS, EPS, StatsWriter, load_last

__all__ = ["device_statistics", "StatsRecorder"]

_C = {c: i for i, c in enumerate(COLUMNS)}


def device_statistics(logits: torch.Tensor, labels: torch.Tensor,
                      prev_logits: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`epoch_statistics` on the logits' device (torch, float64): ``logits`` ``[B, C]``,
    ``labels`` ``(B,)`` long, ``prev_logits`` the same samples' logits of the previous epoch (None:
    ``kl`` NaN). Returns float64 ``[B, len(COLUMNS)]``, the numpy function's operations one for one
    (values agree to float64 rounding; exp/log kernels differ between libraries)."""
    z = logits.detach().to(torch.float64)
    y = labels.to(z.device, torch.long)
    n = z.shape[0]
    rows = torch.arange(n, device=z.device)
    out = torch.empty(n, len(COLUMNS), dtype=torch.float64, device=z.device)
    if n == 0:
        return out
    m = z.amax(dim=1, keepdim=True)
    zm = z - m
    e = torch.exp(zm)
    s = e.sum(dim=1, keepdim=True)
    p = e * s.reciprocal()
    L = torch.log(p + EPS)
    if prev_logits is None:
        out[:, _C["kl"]] = float("nan")
        out[:, _C["kl_signed"]] = float("nan")
    else:
        pz = prev_logits.detach().to(torch.float64)
        pe = torch.exp(pz - pz.amax(dim=1, keepdim=True))
        pp = pe * pe.sum(dim=1, keepdim=True).reciprocal()
        term = p * (L - torch.log(pp + EPS))
        out[:, _C["kl_signed"]] = term.sum(dim=1)
        out[:, _C["kl"]] = term.abs().sum(dim=1)
    out[:, _C["ce"]] = -torch.log(p[rows, y] + EPS)
    q = e / s
    q_y = q[rows, y].clone()
    out[:, _C["p_target"]] = q_y
    err = q.clone()
    err[rows, y] -= 1.0
    out[:, _C["el2n"]] = torch.sqrt((err * err).sum(dim=1))
    q[rows, y] = float("-inf")
    out[:, _C["margin_p"]] = q_y - q.amax(dim=1)
    other = z.clone()
    other[rows, y] = float("-inf")
    out[:, _C["margin_logit"]] = z[rows, y] - other.amax(dim=1)
    out[:, _C["correct"]] = (z.argmax(dim=1) == y).to(torch.float64)
    logq = zm - torch.log(s)
    pq = torch.exp(logq)
    out[:, _C["entropy"]] = -torch.where(pq > 0, pq * logq, torch.zeros((), dtype=torch.float64, device=z.device)).sum(dim=1)
    bad = ~torch.isfinite(z).all(dim=1)
    out[bad] = float("nan")
    return out


class StatsRecorder:
    """Per-sample statistics recorded inside the training step (``dynamics.record: stats | both``).

    The engine calls :meth:`begin_epoch` before a recorded epoch, :meth:`update` after each
    training step with the step's sample ids and the logits of its forward pass (the ones logits
    capture stores), :meth:`end_epoch` after the epoch (on every process of a multi-process run: the
    rows are gathered there), :meth:`final_pass` with the clean final pass's logits and
    :meth:`finalize` at the end. The statistics are computed on the training device
    (:func:`device_statistics`, float64) against the previous epoch's logits, which stay on the
    device as a float32 ``[N, C]`` table indexed by sample id; at each epoch end rank 0 writes the
    epoch's statistics and that table (``_last_XXXX.npy``, for a resume) with :class:`StatsWriter`.
    A resumed run reads the table back, so its statistics are bit-identical on the CPU.

    Device memory: the table (``4 N C`` bytes) and ``80 N`` bytes of statistics and visit counts.
    """

    def __init__(self, folder: str | Path, *, ids: Sequence[str], labels: np.ndarray, num_classes: int,
                 fingerprint: str, device: Any, main: bool = True,
                 submit: Optional[Callable[..., Any]] = None, dtype: str = "float64"):
        self.submit = submit or (lambda fn, *args: fn(*args))   # the run's writer thread (engine)
        self.folder = Path(folder)
        self.device = torch.device(device)
        self.n, self.c = len(labels), int(num_classes)
        self.main = bool(main)
        self.writer = StatsWriter(folder, ids=ids, labels=labels, num_classes=num_classes, fingerprint=fingerprint,
                                  computed_on=self.device.type, dtype=dtype) if self.main else None
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=self.device)
        self.prev: Optional[torch.Tensor] = None     # float32 [N, C]: logits of epoch self.prev_epoch
        self.prev_epoch: Optional[int] = None
        self.epoch: Optional[int] = None
        self.buf = torch.empty(self.n, len(COLUMNS), dtype=torch.float64, device=self.device)
        self.visits = torch.zeros(self.n, dtype=torch.int32, device=self.device)

    def begin_epoch(self, t: int) -> None:
        """Start recording epoch ``t``: the previous epoch's logits table is the one in memory, or
        read from the folder after a resume (none before the first recorded epoch: ``kl`` NaN)."""
        if self.prev_epoch != t - 1:
            last = load_last(self.folder, t - 1)
            self.prev = None if last is None else torch.from_numpy(last).to(self.device)
            self.prev_epoch = None if last is None else t - 1
        if self.prev is None:
            self.prev = torch.full((self.n, self.c), float("nan"), dtype=torch.float32, device=self.device)
        self.epoch = int(t)
        self.buf.fill_(float("nan"))
        self.visits.zero_()

    def update(self, idx: torch.Tensor, logits: torch.Tensor) -> None:
        """The statistics of the samples ``idx`` (``(B,)`` ids) from this step's ``logits`` ``[B, C]``."""
        if self.epoch is None:
            raise RuntimeError("StatsRecorder.update before begin_epoch")
        idx = idx.to(self.device, torch.long)
        z = logits.detach().float()
        prev = self.prev[idx] if self.prev_epoch is not None else None
        self.buf[idx] = device_statistics(z, self.labels[idx], prev)
        self.prev[idx] = z
        self.visits.index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))

    def end_epoch(self, t: int) -> None:
        """Gather the epoch's rows (every process of a multi-process run calls this), check that
        every sample was visited once, and (rank 0) write the epoch's statistics and logits table."""
        if self.epoch != t:
            raise RuntimeError(f"StatsRecorder.end_epoch({t}) but epoch {self.epoch} was begun")
        visits = self.visits
        if _distributed():
            wrote = (self.visits > 0)[:, None]
            zero64 = torch.zeros((), dtype=torch.float64, device=self.device)
            stats = torch.where(wrote, self.buf, zero64)
            table = torch.where(wrote, self.prev, torch.zeros((), dtype=torch.float32, device=self.device))
            visits = self.visits.clone()
            for x in (stats, table, visits):
                dist.all_reduce(x)
            self.buf, self.prev = stats, table
        once = visits == 1
        if not bool(once.all()):
            bad = int((~once).sum())
            raise ScoringError(f"epoch {t}: {bad} samples were not visited exactly once (statistics need every sample "
                               "once an epoch); set train.drop_last: false, or dynamics.record: false")
        self.prev_epoch, self.epoch = int(t), None
        if self.writer is not None:     # host copies of their own: the next epoch updates buf and prev in place
            self.submit(self.writer.put_epoch, t, self.buf.to("cpu", copy=True).numpy())
            self.submit(self.writer.save_last, t, self.prev.to("cpu", copy=True).numpy())

    def checkpointed(self, t: int) -> None:
        """The run's checkpoint now holds epoch ``t`` (called in order with the writes)."""
        if self.writer is not None:
            self.writer.prune_last(t)

    def final_pass(self, logits: torch.Tensor, *, features: Optional[torch.Tensor] = None,
                   epoch: Optional[int]) -> None:
        """Rank 0: the clean final pass's statistics from its logits ``[N, C]`` (id order), and its
        penultimate features ``[N, D]`` when given (Moderate's input)."""
        if self.writer is not None:
            stats = device_statistics(logits.to(self.device), self.labels, None)
            self.writer.put_final(stats.cpu().numpy(), epoch=epoch)
            if features is not None:
                self.writer.put_features(features.float().cpu().numpy())

    def finalize(self) -> None:
        if self.writer is not None:
            self.writer.finalize()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
