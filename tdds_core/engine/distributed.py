"""One run in several processes (``torchrun --nproc-per-node K``): this process's place in the
group, joining and leaving it, batch norm synchronised across it, and the reductions an epoch
needs (its metrics summed, its captured logits gathered on rank 0)."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError
from ..numerics import world_size

__all__ = ["GlooSyncBatchNorm", "sync_batchnorm", "process_group", "sum_over_ranks", "rows_from_ranks"]


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
            dist.barrier()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[_Group]:
    """The process group of a run under ``torchrun`` (``WORLD_SIZE`` > 1): joined here when the
    caller has not (nccl on CUDA, gloo on the CPU) and left at the end; a single process otherwise."""
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


def sum_over_ranks(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """An epoch's training-loss sum, correct count and sample count summed over the process group."""
    t = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), dtype=torch.float64,
                                                                         device=loss_sum.device)])
    dist.all_reduce(t)
    return t[0], t[1].round().long(), int(t[2].item())


def rows_from_ranks(buf: torch.Tensor) -> np.ndarray | None:
    """The epoch's captured rows ``[N, C]`` of every rank, on rank 0 (None elsewhere): each rank
    sends the rows it wrote (finite; NaN elsewhere after the per-epoch fill) and how many times each
    row was written; a row written by no rank, or by two, comes out NaN and fails the finite check."""
    wrote = torch.isfinite(buf).all(1)
    part = torch.where(wrote[:, None], buf.float(), torch.zeros((), dtype=torch.float32, device=buf.device))
    count = wrote.float()
    dist.reduce(part, 0)
    dist.reduce(count, 0)
    if dist.get_rank() != 0:
        return None
    part[count != 1] = float("nan")
    return part.cpu().numpy()
