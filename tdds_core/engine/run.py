"""One training run in this process (:func:`train`): claim the run folder for its spec
(``run.json``), join the process group under torchrun, choose the kernels, run the trainer.

A run's identity (``run.json``, :meth:`~tdds_core.engine.spec.TrainSpec.digest`) includes its
numerics as applied on the machine (device class, bf16 autocast, channels_last, compile,
deterministic kernels, process count): resuming a folder with other numerics is refused, naming the
setting."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .. import __version__
from ..data import Splits
from ..errors import ArtifactError
from ..io import atomic_write_json, read_json
from ..numerics import resolve_device, world_size
from .checkpoint import load_result
from .distributed import process_group
from .spec import TrainResult, TrainSpec, runtime_names
from .trainer import _Trainer

__all__ = ["train", "kernel_flags"]

#: effective numerics entry (:func:`~tdds_core.numerics.effective_numerics`) -> the setting that changes it
_NUMERIC_SETTING = {"device": "train.device (the device class)", "bf16": "train.amp", "channels_last": "train.channels_last",
                    "compile": "train.compile", "deterministic": "train.deterministic",
                    "world_size": "the process count (torchrun --nproc-per-node)"}


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
    with process_group(device) as group:
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
                                 "numerics": spec.numerics(), "world_size": world_size(), "tdds_version": __version__})
    return None


def _other_run_message(out: Path, prev: dict, spec: TrainSpec, digest: str) -> str:
    """Why ``out`` (whose ``run.json`` is ``prev``) cannot take ``spec``: the differing fields and,
    for numerics, each differing effect with the setting behind it, then the fix."""
    now = spec.describe()
    was = prev.get("spec", {})
    differ = [f"{k} {was[k]!r} -> {now[k]!r}" for k in sorted(now)
              if k in was and was[k] != now[k] and k not in runtime_names()]
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
