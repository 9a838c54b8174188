"""What a run keeps and leaves: the training state of a checkpoint (saved, loaded onto the CPU,
restored), the one writer thread that stores an epoch's files while the next epoch trains, and
the readers of a finished run folder (``result.json``, ``model.pt``)."""
from __future__ import annotations

import logging
import os
import random
from concurrent.futures import Future, ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..io import MANIFEST, read_json, verify_manifest
from ..models import create_model
from .spec import TrainResult

__all__ = ["Background", "torch_bytes", "training_state", "restore_state", "load_checkpoint", "load_result",
           "load_model"]

log = logging.getLogger("tdds.engine")


class Background:
    """The one writer thread of a run: an epoch's files (dynamics, statistics, checkpoint, the S3
    mirror) are written in the order they are handed over, while the next epoch trains. A failed
    write is raised by the next :meth:`submit` or by :meth:`flush`; :meth:`close` waits for every
    write handed over (also when the run stops on an error), so what was finished lands."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tdds-writer")
        self.pending: list[Future] = []

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


def torch_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` into memory: a snapshot of live tensors that a writer thread can store
    while training changes them."""
    buf = BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def training_state(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, *, epoch: int, iteration: int,
                   history: list, best: tuple) -> dict:
    """A checkpoint's content after ``epoch``: model, optimizer and schedule state, the run's
    progress, and the torch (CUDA too), numpy and Python RNG states."""
    st = {"epoch": epoch, "iteration": iteration, "history": history, "best": best,
          "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
          "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}
    if torch.cuda.is_available():
        st["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    return st


def restore_state(st: dict, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any) -> None:
    """Restore a checkpoint (loaded onto the CPU, :func:`load_checkpoint`): model and optimizer
    state move to the training device; the RNG states stay CPU byte tensors, the only kind
    ``torch.set_rng_state`` / ``torch.cuda.set_rng_state_all`` accept."""
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["opt"])
    sched.load_state_dict(st["sched"])
    torch.set_rng_state(_cpu_bytes(st["rng"]["torch"]))
    np.random.set_state(st["rng"]["numpy"])
    random.setstate(st["rng"]["python"])
    if "cuda" in st["rng"] and torch.cuda.is_available():
        saved = [_cpu_bytes(x) for x in st["rng"]["cuda"]]
        torch.cuda.set_rng_state_all(saved[:torch.cuda.device_count()])


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


def load_model(path: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """Rebuild a model saved by :func:`~tdds_core.engine.train` (``model.pt``)."""
    st = torch.load(path, map_location=device, weights_only=False)
    m = create_model(st["arch"], num_classes=st["num_classes"], in_channels=st["in_channels"], image_size=st["image_size"],
                     **st.get("options", {}))
    m.load_state_dict(st["state_dict"])
    return m
