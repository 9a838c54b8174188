"""Per-epoch training dynamics: writing during training, streaming for scoring.

Layout of a dynamics folder (format ``tdds-dynamics/1``)::

    epoch_0000.npy ...   float16|float32 [N, C] logits, row i = sample i of the dataset (id order,
                         not visit order), one file per recorded epoch
    labels.npy           int64 [N], the training labels the run used (after any injected noise)
    ids.txt              N lines, the stable sample ids
    features.npy         float32 [N, D] penultimate features of the final model (optional)
    manifest.json        written last: format, fingerprint, num_samples, num_classes, epochs, dtype,
                         mode, complete, files {name: {sha256, bytes}}

The manifest is rewritten (atomically) after every epoch with ``complete: false`` so a killed
run resumes from its last complete epoch; :meth:`DynamicsWriter.finalize` sets ``complete: true``.
Readers stream one epoch at a time and check each file's SHA-256 against the manifest.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import ArtifactError
from .io import (MANIFEST, atomic_save_npy, atomic_write_json, atomic_write_text, load_npy, read_manifest,
                 sha256_file, verify_file)

FORMAT = "tdds-dynamics/1"


def epoch_file(t: int) -> str:
    return f"epoch_{t:04d}.npy"


class DynamicsWriter:
    """Writes one ``[N, C]`` logits array per epoch plus labels, ids and features."""

    def __init__(self, folder: str | os.PathLike, *, ids: Sequence[str], labels: np.ndarray, num_classes: int,
                 fingerprint: str, dtype: str = "float16", mode: str = "train", extra: dict | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self.meta = {
            "format": FORMAT, "fingerprint": fingerprint, "num_samples": int(len(labels)),
            "num_classes": int(num_classes), "dtype": str(self.dtype), "mode": mode,
            **(extra or {}),
        }
        existing = self._existing_manifest()
        self.files: dict[str, dict] = {}
        self.epochs: list[int] = []
        if existing is not None:
            if existing.get("fingerprint") != fingerprint or existing.get("num_samples") != len(labels):
                raise ArtifactError(
                    f"{self.folder} holds dynamics of another dataset (fingerprint {existing.get('fingerprint')}); "
                    "choose another output folder or delete it."
                )
            self.files = dict(existing.get("files", {}))
            self.epochs = list(existing.get("epochs", []))
        if "labels.npy" not in self.files:
            self._put("labels.npy", lambda p: atomic_save_npy(p, np.asarray(labels, dtype=np.int64)))
            self._put("ids.txt", lambda p: atomic_write_text(p, "\n".join(map(str, ids)) + "\n"))
            self._write_manifest(False)

    def _existing_manifest(self) -> dict | None:
        if (self.folder / MANIFEST).is_file():
            return read_manifest(self.folder)
        return None

    def _put(self, name: str, write) -> None:
        p = self.folder / name
        write(p)
        self.files[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}

    def _write_manifest(self, complete: bool) -> None:
        atomic_write_json(self.folder / MANIFEST, {**self.meta, "epochs": sorted(self.epochs), "complete": complete,
                                                   "files": self.files})

    def write_epoch(self, t: int, logits: np.ndarray) -> None:
        """Store epoch ``t``'s logits ``[N, C]`` (rows in id order) and update the manifest."""
        n, c = self.meta["num_samples"], self.meta["num_classes"]
        if logits.shape != (n, c):
            raise ArtifactError(f"epoch {t} logits have shape {logits.shape}, expected ({n}, {c})")
        self._put(epoch_file(t), lambda p: atomic_save_npy(p, logits.astype(self.dtype, copy=False)))
        if t not in self.epochs:
            self.epochs.append(t)
        self._write_manifest(False)

    def write_features(self, features: np.ndarray) -> None:
        self._put("features.npy", lambda p: atomic_save_npy(p, np.asarray(features, dtype=np.float32)))
        self._write_manifest(False)

    def finalize(self, **extra) -> None:
        self.meta.update(extra)
        self._write_manifest(True)


class Dynamics:
    """Read-only view of a dynamics folder; epochs are loaded one at a time."""

    def __init__(self, folder: str | os.PathLike, *, verify: bool = True, allow_incomplete: bool = False):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ArtifactError(f"dynamics folder {self.folder} does not exist; run `tdds train` first or check the path.")
        self.manifest = read_manifest(self.folder)
        if self.manifest.get("format") != FORMAT:
            raise ArtifactError(
                f"{self.folder} is not a tdds dynamics folder (format {self.manifest.get('format')!r}); "
                "for the authors' {t}_Output.npy/{t}_Index.npy layout pass --format reference."
            )
        if not self.manifest.get("complete", False) and not allow_incomplete:
            raise ArtifactError(
                f"{self.folder} holds incomplete dynamics (epochs {self.manifest.get('epochs')}); "
                "the training run was interrupted: rerun `tdds train` with the same config and output to resume."
            )
        self.verify = verify
        self.num_samples: int = int(self.manifest["num_samples"])
        self.num_classes: int = int(self.manifest["num_classes"])
        self.epochs: list[int] = list(self.manifest["epochs"])
        self.fingerprint: str = self.manifest["fingerprint"]
        self.dtype: str = self.manifest["dtype"]
        self._labels: np.ndarray | None = None

    def _file(self, name: str) -> Path:
        if self.verify:
            return verify_file(self.folder, name, self.manifest)
        p = self.folder / name
        if not p.is_file():
            raise ArtifactError(f"{p} is missing; rerun the training stage.")
        return p

    @property
    def labels(self) -> np.ndarray:
        """int64 ``[N]`` training labels."""
        if self._labels is None:
            self._labels = load_npy(self._file("labels.npy")).astype(np.int64)
        return self._labels

    @property
    def ids(self) -> list[str]:
        return self._file("ids.txt").read_text().splitlines()

    @property
    def has_features(self) -> bool:
        return "features.npy" in self.manifest.get("files", {})

    def features(self) -> np.ndarray:
        """float32 ``[N, D]`` penultimate features of the final model."""
        if not self.has_features:
            raise ArtifactError(f"{self.folder} has no features.npy; train with dynamics.save_features: true (Moderate needs it).")
        return load_npy(self._file("features.npy"))

    def epoch(self, t: int) -> np.ndarray:
        """Logits ``[N, C]`` of epoch ``t`` in the stored dtype."""
        if t not in self.epochs:
            raise ArtifactError(f"epoch {t} was not recorded in {self.folder} (recorded: {self._epoch_range()}).")
        arr = load_npy(self._file(epoch_file(t)))
        if arr.shape != (self.num_samples, self.num_classes):
            raise ArtifactError(f"{self.folder / epoch_file(t)} has shape {arr.shape}, manifest says "
                                f"({self.num_samples}, {self.num_classes}); delete it and rerun training.")
        return arr

    def _epoch_range(self) -> str:
        if not self.epochs:
            return "none"
        return f"{min(self.epochs)}..{max(self.epochs)} ({len(self.epochs)} epochs)"

    def iter_epochs(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(t, logits[N, C])`` for recorded epochs ``start <= t < stop`` in order, one at a time."""
        for t in sorted(self.epochs):
            if t < start or (stop is not None and t >= stop):
                continue
            yield t, self.epoch(t)

    def __len__(self) -> int:
        return len(self.epochs)


def open_dynamics(folder: str | os.PathLike, *, verify: bool = True, allow_incomplete: bool = False) -> Dynamics:
    """Open a tdds dynamics folder (see module docstring)."""
    return Dynamics(folder, verify=verify, allow_incomplete=allow_incomplete)


def check_matches(dyn: "Dynamics", *, num_samples: int, num_classes: int, fingerprint: str | None = None,
                  what: str = "the dataset") -> None:
    """Refuse dynamics whose N, C or fingerprint differ from ``what``."""
    if dyn.num_samples != num_samples or dyn.num_classes != num_classes:
        raise ArtifactError(
            f"dynamics at {dyn.folder} have N={dyn.num_samples}, C={dyn.num_classes} but {what} has N={num_samples}, "
            f"C={num_classes}; they come from another dataset version: retrain with `tdds train` on this dataset."
        )
    if fingerprint is not None and dyn.fingerprint != fingerprint:
        raise ArtifactError(
            f"dynamics at {dyn.folder} were recorded on another version of {what} (fingerprint {dyn.fingerprint[:12]} "
            f"vs {fingerprint[:12]}); retrain with `tdds train` on this dataset."
        )
