"""Writing a ``tdds-stats/1`` folder: :class:`StatsWriter` (the files of a folder while a run records
it, resumable; :class:`tdds_core.recorder.StatsRecorder` computes the statistics on the training
device) and :func:`write_statistics` (``tdds stats``: the statistics of a logits dynamics folder,
computed with numpy by :func:`~tdds_core.statistics.columns.epoch_statistics`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import ArtifactError
from ..io import atomic_save_npy, atomic_write_json, atomic_write_text, load_npy, read_manifest, write_manifest
from .columns import COLUMNS, DTYPES, FEATURES, FINAL, STATS_FORMAT, epoch_file, epoch_statistics, last_file
from .reader import Statistics, open_statistics

__all__ = ["StatsWriter", "load_last", "write_statistics"]


class StatsWriter:
    """The files of a statistics folder while a run records it (resumable): :meth:`put_epoch`
    writes one epoch's statistics and rewrites the manifest (``complete: false``); :meth:`save_last`
    keeps the epoch's logits beside them (``_last_XXXX.npy``, not part of the artifact; those older
    than the run's last checkpoint go, :meth:`prune_last`) for the next epoch's TDDS term after a
    resume; :meth:`finalize` removes them and writes the manifest with ``complete: true``.
    The statistics come from :class:`StatsRecorder` (computed where the model trains)."""

    def __init__(self, folder: str | Path, *, ids: Sequence[str], labels: np.ndarray, num_classes: int,
                 fingerprint: str, computed_on: str = "cpu", dtype: str = "float64"):
        if dtype not in DTYPES:
            raise ArtifactError(f"statistics are stored as {' or '.join(DTYPES)}, not {dtype!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.dtype = np.dtype(dtype)
        self.meta = {"format": STATS_FORMAT, "kind": "stats", "columns": list(COLUMNS), "num_samples": len(self.labels),
                     "num_classes": int(num_classes), "fingerprint": fingerprint, "computed_on": computed_on,
                     "dtype": dtype}
        self.files: dict[str, dict] = {}
        self.epochs: list[int] = []
        self.final_pass: Optional[dict] = None
        if (self.folder / "manifest.json").is_file():
            prev = read_manifest(self.folder)
            if prev.get("fingerprint") != fingerprint or prev.get("num_samples") != len(self.labels):
                raise ArtifactError(f"{self.folder} holds statistics of another dataset; choose another output folder "
                                    "or delete it.")
            self.files, self.epochs = dict(prev.get("files", {})), list(prev.get("epochs", []))
            self.final_pass = prev.get("final_pass")
        if "labels.npy" not in self.files:
            self._put("labels.npy", lambda p: atomic_save_npy(p, self.labels))
            self._put("ids.txt", lambda p: atomic_write_text(p, "".join(f"{i}\n" for i in ids)))
            self._manifest(False)

    def _put(self, name: str, write: Any) -> None:
        """``write(path)`` (an atomic writer: it returns the file's checksum and size, hashed as written)."""
        self.files[name] = write(self.folder / name)

    def _manifest(self, complete: bool) -> None:
        atomic_write_json(self.folder / "manifest.json", {**self.meta, "epochs": sorted(self.epochs),
                                                          "final_pass": self.final_pass, "complete": complete,
                                                          "files": self.files})

    def _check(self, stats: np.ndarray, what: str) -> np.ndarray:
        arr = np.asarray(stats, dtype=np.float64)
        if arr.shape != (len(self.labels), len(COLUMNS)):
            raise ArtifactError(f"{what}: statistics of shape {arr.shape}, expected ({len(self.labels)}, {len(COLUMNS)})")
        return arr.astype(self.dtype, copy=False)      # computed in float64, stored as configured

    def put_epoch(self, t: int, stats: np.ndarray) -> None:
        """Write epoch ``t``'s statistics ``[N, len(COLUMNS)]`` (float64)."""
        arr = self._check(stats, f"epoch {t}")
        self._put(epoch_file(t), lambda p: atomic_save_npy(p, arr))
        if t not in self.epochs:
            self.epochs.append(int(t))
        self._manifest(False)

    def put_final(self, stats: np.ndarray, *, epoch: Optional[int]) -> None:
        """Write the clean final pass's statistics (after the last epoch ``epoch``)."""
        arr = self._check(stats, "final pass")
        self._put(FINAL, lambda p: atomic_save_npy(p, arr))
        self.final_pass = {"mode": "eval", "augment": False, "epoch": epoch, "stats": FINAL}
        self._manifest(False)

    def put_features(self, features: np.ndarray) -> None:
        """Write the clean final pass's penultimate features (float32 ``[N, D]``, id order)."""
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[0] != len(self.labels):
            raise ArtifactError(f"features have shape {f.shape}, expected ({len(self.labels)}, D)")
        self._put(FEATURES, lambda p: atomic_save_npy(p, f))
        self._manifest(False)

    def save_last(self, t: int, logits: np.ndarray) -> None:
        """Keep epoch ``t``'s logits (float32 ``[N, C]``) for a resume (:meth:`prune_last` removes
        those a resume can no longer need)."""
        atomic_save_npy(self.folder / last_file(t), np.asarray(logits, dtype=np.float32))

    def prune_last(self, checkpoint: int) -> None:
        """The run's checkpoint now holds epoch ``checkpoint``: a resume restarts at the epoch after
        it and needs the side files from ``checkpoint`` on; older ones go."""
        for old in self.folder.glob("_last_*.npy"):
            if int(old.stem.rsplit("_", 1)[1]) < int(checkpoint):
                old.unlink(missing_ok=True)

    def finalize(self) -> None:
        for old in self.folder.glob("_last_*.npy"):
            old.unlink(missing_ok=True)
        self._manifest(True)


def load_last(folder: str | Path, t: int) -> Optional[np.ndarray]:
    """Epoch ``t``'s logits kept by :meth:`StatsWriter.save_last` (float32 ``[N, C]``), or None."""
    p = Path(folder) / last_file(t)
    return load_npy(p) if p.is_file() else None


def write_statistics(dynamics: Any, out: str | Path, *, dtype: str = "float64") -> Statistics:
    """The statistics of every recorded epoch of ``dynamics`` (a logits dynamics folder opened with
    :func:`tdds_core.dynamics.open_dynamics`; its epochs must be consecutive), and of its clean final
    pass when it has one, into the folder ``out`` (computed in float64 with numpy, stored as ``dtype``:
    float64 or float32). Returns it opened."""
    if dtype not in DTYPES:
        raise ArtifactError(f"statistics are stored as {' or '.join(DTYPES)}, not {dtype!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = list(dynamics.epochs)
    if not epochs or epochs != list(range(epochs[0], epochs[0] + len(epochs))):
        raise ArtifactError(f"the dynamics' epochs {epochs} are not consecutive: the TDDS terms need each "
                            "epoch and the one before it; record every epoch.")
    labels = np.asarray(dynamics.labels, dtype=np.int64)
    prev = None
    for t in epochs:
        stats, prev = epoch_statistics(np.asarray(dynamics.epoch(t)), labels, prev)
        atomic_save_npy(out / epoch_file(t), stats.astype(dtype, copy=False))
    files = [epoch_file(t) for t in epochs] + ["labels.npy", "ids.txt"]
    final_pass = None
    if getattr(dynamics, "has_final_logits", False):
        atomic_save_npy(out / FINAL, epoch_statistics(np.asarray(dynamics.final_logits()), labels)[0].astype(dtype, copy=False))
        files.append(FINAL)
        epoch = (dynamics.manifest.get("final_pass") or {}).get("epoch") if isinstance(
            getattr(dynamics, "manifest", None), dict) else None
        final_pass = {"mode": "eval", "augment": False, "epoch": epoch, "stats": FINAL}
    if getattr(dynamics, "has_features", False):
        atomic_save_npy(out / FEATURES, np.asarray(dynamics.features(), dtype=np.float32))
        files.append(FEATURES)
    atomic_save_npy(out / "labels.npy", labels)
    atomic_write_text(out / "ids.txt", "".join(f"{i}\n" for i in dynamics.ids))
    write_manifest(out, files, kind="stats", format=STATS_FORMAT, columns=list(COLUMNS), epochs=epochs,
                   num_samples=int(dynamics.num_samples), num_classes=int(dynamics.num_classes),
                   fingerprint=str(getattr(dynamics, "fingerprint", "") or ""), final_pass=final_pass,
                   computed_on="cpu", complete=True, converted_from=str(getattr(dynamics, "folder", "")), dtype=dtype)
    return open_statistics(out)
