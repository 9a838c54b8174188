"""What the numerics settings do on this machine (``train.device``, ``amp``, ``channels_last``,
``compile``, ``deterministic`` and the processes training one run). The artifact keys hold these
*effective* values (:func:`tdds_core.plan.numerics`), so the module stays light: torch is imported
only when a device is resolved."""
from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError

__all__ = ["effective_numerics", "resolve_device", "world_size"]


def resolve_device(name: str) -> Any:
    """``torch.device`` for ``train.device`` (``auto``: CUDA when available); ConfigError for CUDA without CUDA."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
    return torch.device(name)


def world_size() -> int:
    """How many processes train one run together: the initialised process group's size, else
    torchrun's ``WORLD_SIZE`` (1 outside torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


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
