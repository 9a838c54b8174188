"""Per-epoch training dynamics: writing during training, streaming for scoring.

Layout of a dynamics folder (format ``tdds-dynamics/1``)::

    epoch_0000.npy ...   float16|float32 [N, C] logits, row i = sample i of the dataset (id order,
                         not visit order), one file per recorded epoch
    labels.npy           int64 [N], the training labels the run used (after any injected noise)
    ids.txt              N lines, the stable sample ids
    final_logits.npy     float32 [N, C] logits of the final model's clean pass (see below), id order
    features.npy         float32 [N, D] penultimate features of the same pass (with save_features)
    manifest.json        written last: format, fingerprint, num_samples, num_classes, epochs, dtype,
                         mode, final_pass, complete, files {name: {sha256, bytes}}

The clean final pass: after its last epoch the full-data run passes the whole training set once
more through the final model in eval mode (batch-norm running statistics, no dropout) without
augmentation, and stores the logits (``final_logits.npy``, always float32 whatever ``dtype`` the
epochs use) and, with ``save_features``, the penultimate features (``features.npy``) of that same
pass. ``final_pass`` in the manifest describes it (``{"mode": "eval", "augment": false, "epoch":
<last epoch>, "logits": "final_logits.npy", "features": "features.npy" | null}``). It is the input
of Entropy and Moderate (their sources score the trained model, not the training pass). Folders
written before it existed have no ``final_logits.npy``: :meth:`Dynamics.final_logits` then raises
an :class:`~tdds_core.errors.ArtifactError` naming the fix.

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
from .io import MANIFEST, atomic_save_npy, atomic_write_json, atomic_write_text, load_npy, read_manifest, verify_file

FORMAT = "tdds-dynamics/1"
FINAL_LOGITS = "final_logits.npy"
FEATURES = "features.npy"


def epoch_file(t: int) -> str:
    return f"epoch_{t:04d}.npy"


def missing_final_logits(folder: str | os.PathLike, why: str = "") -> ArtifactError:
    """The error for dynamics without the clean final pass (tdds folders written before it existed,
    the authors' layout): names what is missing and the two ways out."""
    return ArtifactError(
        f"{folder} has no {FINAL_LOGITS}, the clean final pass (eval-mode logits of the final model over the "
        f"training set, no augmentation){why}. Rerun the full-data training (`tdds train`, dynamics.record: true) "
        "with this version of tdds to record it, or score entropy from the last recorded epoch's logits with "
        "source='last_epoch' (CLI: --param source=last_epoch)."
    )


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
        """``write(path)`` (an atomic writer: it returns the file's checksum and size, hashed as written)."""
        self.files[name] = write(self.folder / name)

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
        """Store float32 ``[N, D]`` penultimate features (rows in id order)."""
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[0] != self.meta["num_samples"]:
            raise ArtifactError(f"features have shape {f.shape}, expected ({self.meta['num_samples']}, D)")
        self._put(FEATURES, lambda p: atomic_save_npy(p, f))
        self._write_manifest(False)

    def write_final_pass(self, logits: np.ndarray, features: np.ndarray | None = None, *, epoch: int | None = None,
                         info: dict | None = None) -> None:
        """Store the clean final pass: float32 ``[N, C]`` logits (``final_logits.npy``) and, when
        given, float32 ``[N, D]`` penultimate features (``features.npy``) of the same eval-mode,
        augmentation-free pass of the final model; rows in id order."""
        n, c = self.meta["num_samples"], self.meta["num_classes"]
        x = np.asarray(logits, dtype=np.float32)
        if x.shape != (n, c):
            raise ArtifactError(f"final-pass logits have shape {x.shape}, expected ({n}, {c})")
        self._put(FINAL_LOGITS, lambda p: atomic_save_npy(p, x))
        if features is not None:
            self.write_features(features)
        self.meta["final_pass"] = {"mode": "eval", "augment": False, "epoch": epoch, "logits": FINAL_LOGITS,
                                   "features": FEATURES if FEATURES in self.files else None, **(info or {})}
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
        return FEATURES in self.manifest.get("files", {})

    def features(self) -> np.ndarray:
        """float32 ``[N, D]`` penultimate features of the final model (the clean final pass)."""
        if not self.has_features:
            raise ArtifactError(f"{self.folder} has no features.npy; train with dynamics.save_features: true (Moderate needs it).")
        f = load_npy(self._file(FEATURES))
        if f.ndim != 2 or f.shape[0] != self.num_samples:
            raise ArtifactError(f"{self.folder / FEATURES} has shape {f.shape}, expected ({self.num_samples}, D); "
                                "delete it and rerun training.")
        return f

    @property
    def has_final_logits(self) -> bool:
        """Whether the run recorded the clean final pass (``final_logits.npy``)."""
        return FINAL_LOGITS in self.manifest.get("files", {})

    def final_logits(self) -> np.ndarray:
        """float32 ``[N, C]`` logits of the clean final pass: the final model in eval mode over the
        training set without augmentation, rows in id order (see the module docstring)."""
        if not self.has_final_logits:
            raise missing_final_logits(self.folder, ": these dynamics were recorded before the pass existed")
        arr = load_npy(self._file(FINAL_LOGITS))
        if arr.shape != (self.num_samples, self.num_classes):
            raise ArtifactError(f"{self.folder / FINAL_LOGITS} has shape {arr.shape}, manifest says "
                                f"({self.num_samples}, {self.num_classes}); delete it and rerun training.")
        return arr

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
