"""Batch loaders that yield ``(x, y, idx)`` on the training device.

``ResidentLoader`` keeps the whole split as a uint8 tensor on the device and augments on tensors
(random crop with zero padding, horizontal flip): no PIL, no per-sample Python. ``StreamLoader``
reads the split through a ``DataLoader`` (for data that does not fit) and applies the same tensor
augmentation on the device. Both draw the epoch's order and augmentation from generators seeded
by ``(seed, epoch)``, so an epoch is reproducible on its own (resume needs no sampler state).
``idx`` are positions into the full split, so dynamics and weights are keyed by sample.
With ``per_epoch`` (RS2), an epoch trains on a fresh subset of that many of the positions
(:class:`~tdds_core.data.rs2_draws.RS2Draws`, seeded by ``seed``), shuffled as a whole epoch is.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from .base import ArrayDataset
from .rs2_draws import RS2Draws


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + stream * 104_729) % (2**63 - 1)


def augment_batch(x: torch.Tensor, gen: torch.Generator, *, pad: int, flip: bool,
                  batch: int | None = None, part: slice | None = None) -> torch.Tensor:
    """Random crop with ``pad`` zero padding and random horizontal flip on a uint8 batch ``[B, C, H, W]``.

    ``x`` may be the rows ``part`` of a batch of ``batch`` rows (one process's share of a global
    batch): the random draws are those of the whole batch, so the rows come out as they would from
    augmenting the whole batch and slicing."""
    b, _, h, w = x.shape
    total = b if batch is None else int(batch)
    sel = slice(None) if part is None else part
    if pad > 0:
        xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (total,), generator=gen, device=x.device)[sel]
        ox = torch.randint(0, 2 * pad + 1, (total,), generator=gen, device=x.device)[sel]
        rows = (oy[:, None] + torch.arange(h, device=x.device)[None])[:, :, None]   # [B, H, 1]
        cols = (ox[:, None] + torch.arange(w, device=x.device)[None])[:, None, :]   # [B, 1, W]
        x = xp[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if flip:
        m = (torch.rand(total, generator=gen, device=x.device) < 0.5)[sel]
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    return x


class _Base:
    def __init__(self, ds: ArrayDataset, *, batch_size: int, device: torch.device, mean, std, augment: bool,
                 flip: bool, pad: int, drop_last: bool = False, positions: np.ndarray | None = None,
                 channels_last: bool = False, per_epoch: int | None = None):
        self.ds = ds
        self.batch_size = batch_size
        self.device = device
        self.augment = augment
        self.flip = flip
        self.pad = pad
        self.drop_last = drop_last
        self.positions = np.arange(len(ds)) if positions is None else np.asarray(positions, dtype=np.int64)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.channels_last = channels_last
        self.per_epoch = None if per_epoch is None else int(per_epoch)   # RS2: samples drawn every epoch
        self._draws: RS2Draws | None = None
        if self.per_epoch is not None:
            RS2Draws(len(self.positions), self.per_epoch, 0)      # refuses a size the positions cannot give

    def __len__(self) -> int:
        n = len(self.positions) if self.per_epoch is None else self.per_epoch
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _finish(self, xb: torch.Tensor, gen: torch.Generator | None, batch: int | None = None,
                part: slice | None = None) -> torch.Tensor:
        if self.augment and gen is not None:
            xb = augment_batch(xb, gen, pad=self.pad, flip=self.flip, batch=batch, part=part)
        x = (xb.float().div_(255.0) - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _epoch_positions(self, epoch: int, seed: int) -> np.ndarray:
        """The positions ``epoch`` trains on: all of them, or (``per_epoch``) RS2's draw of the epoch."""
        if self.per_epoch is None:
            return self.positions
        if self._draws is None or self._draws.seed != int(seed):
            self._draws = RS2Draws(len(self.positions), self.per_epoch, seed)
        return self.positions[self._draws.epoch(epoch)]

    def _order(self, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
        positions = self._epoch_positions(epoch, seed)
        if not shuffle:
            return positions
        rng = np.random.default_rng(epoch_seed(seed, epoch))
        return positions[rng.permutation(len(positions))]


class ResidentLoader(_Base):
    """Serves a split from a device-resident uint8 tensor."""

    def __init__(self, ds: ArrayDataset, **kw):
        super().__init__(ds, **kw)
        # a private writable copy: the arrays may be read-only memory maps
        self.images = torch.from_numpy(np.array(ds.images, order="C", copy=True)).to(self.device)
        self.labels = torch.from_numpy(np.array(ds.labels, copy=True)).to(self.device)

    def epoch(self, epoch: int = 0, seed: int = 0, shuffle: bool = True,
              rows: Callable[[int], slice] | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
        """``(x, y, idx)`` per batch; with ``rows`` (one process's share of each global batch,
        ``rows(batch size) -> slice``) ``(x, y, idx, whole idx)`` with only that share's images
        gathered, augmented (with the whole batch's random draws) and normalised."""
        order = torch.from_numpy(self._order(epoch, seed, shuffle)).to(self.device)
        gen = None
        if self.augment and shuffle:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(epoch_seed(seed, epoch, 1))
        n = len(order)
        stop = (n // self.batch_size) * self.batch_size if self.drop_last else n
        for s in range(0, stop, self.batch_size):
            idx = order[s:s + self.batch_size]
            if rows is None:
                yield self._finish(self.images[idx], gen), self.labels[idx], idx
            else:
                part = rows(len(idx))
                mine = idx[part]
                yield self._finish(self.images[mine], gen, len(idx), part), self.labels[mine], mine, idx


class _Rows(torch.utils.data.Dataset):
    def __init__(self, ds: ArrayDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return torch.from_numpy(np.ascontiguousarray(self.ds.images[i])), int(self.ds.labels[i]), i


class StreamLoader(_Base):
    """Reads a split through a ``DataLoader`` (``num_workers`` processes) and augments on the device."""

    def __init__(self, ds: ArrayDataset, *, num_workers: int = 2, **kw):
        super().__init__(ds, **kw)
        self.num_workers = num_workers

    def epoch(self, epoch: int = 0, seed: int = 0, shuffle: bool = True,
              rows: Callable[[int], slice] | None = None):
        """As :meth:`ResidentLoader.epoch` (the whole batch is read; only the share is augmented)."""
        order = self._order(epoch, seed, shuffle).tolist()
        n = len(order)
        if self.drop_last:
            order = order[: (n // self.batch_size) * self.batch_size]
        dl = torch.utils.data.DataLoader(_Rows(self.ds), batch_size=self.batch_size, sampler=order,
                                         num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                                         persistent_workers=False)
        gen = None
        if self.augment and shuffle:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(epoch_seed(seed, epoch, 1))
        for xb, yb, ib in dl:
            yb, ib = yb.to(self.device, non_blocking=True), ib.to(self.device, non_blocking=True)
            if rows is None:
                yield self._finish(xb.to(self.device, non_blocking=True), gen), yb, ib
            else:
                part = rows(len(ib))
                yield self._finish(xb[part].to(self.device, non_blocking=True), gen, len(ib), part), yb[part], ib[part], ib


def make_loader(ds: ArrayDataset, *, resident: str, resident_max_bytes: int, num_workers: int, **kw):
    """ResidentLoader when the split fits (or ``resident == 'always'``), else StreamLoader."""
    if resident == "always" or (resident == "auto" and ds.nbytes <= resident_max_bytes):
        return ResidentLoader(ds, **kw)
    return StreamLoader(ds, num_workers=num_workers, **kw)
