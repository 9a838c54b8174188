"""Reader for the TDDS authors' dynamics layout, with the same interface as :class:`~tdds_core.dynamics.Dynamics`.

The authors' ``train.py`` saves, for every epoch ``t``, three files in one folder::

    {t}_Output.npy   float [R, C] logits of the training forward pass, rows in VISIT order
    {t}_Index.npy    int   [R]    the dataset index of each row
    {t}_Loss.npy     float [R]    per-row losses (never used by their scoring; ignored here)

Their ``importance_evaluation.py`` soft-maxes each visit row and adds the rows into an ``[N, C]``
matrix by index (``index_add``): rows sharing an index are SUMMED (after the softmax) and samples
that were not visited keep an all-zero probability row. :meth:`ReferenceDynamics.probabilities`
builds exactly that matrix, and the TDDS scorer consumes it (``iter_tdds_inputs``: for an epoch
that visits every sample exactly once the matrix is the softmax of the logits in sample order, so
those logits are handed over and soft-maxed by the scorer), so TDDS of a reference folder follows
the authors' semantics.

The layout has no clean final pass (eval-mode logits of the final model, what Entropy reads by
default): :meth:`ReferenceDynamics.final_logits` reads a ``final_logits.npy`` (float ``[N, C]``,
sample order) placed in the folder by hand and otherwise raises the same ArtifactError as a tdds
folder without it (Entropy: ``source="last_epoch"``).

Methods that need logits use :meth:`ReferenceDynamics.epoch` / ``iter_epochs``: logits in sample
order, the MEAN of the visits for a duplicated index and NaN rows for unvisited samples (which the
scorers report under their ``nan_policy``).

The layout has no labels, ids or fingerprint: pass ``labels`` (``--labels FILE``) for methods that
need them; ids are the indices as strings; the fingerprint is derived from N, C and the first
epoch's ``_Index.npy`` (so it identifies the recording whether or not labels are given).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from .dynamics import FINAL_LOGITS, missing_final_logits, open_dynamics
from .errors import ArtifactError, ScoringError
from .io import MANIFEST, load_npy, sha256_file
from .statistics import STATS_FORMAT, open_statistics

__all__ = ["ReferenceDynamics", "open_reference_dynamics", "open_any_dynamics", "is_reference_folder"]

FORMAT = "reference"
_OUTPUT = re.compile(r"^(\d+)_Output\.npy$")


def is_reference_folder(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any(_OUTPUT.match(p.name) for p in folder.iterdir())


def _softmax_rows(src: np.ndarray, out: np.ndarray, chunk_values: int = 1 << 16) -> np.ndarray:
    """``out[i] = softmax(src[i])`` row by row (``exp(x - max) / sum``), in cache-sized chunks
    (numpy only; each row's sum is its own, so a row's value does not depend on the chunk)."""
    rows = max(1, chunk_values // max(1, src.shape[1]))
    for a in range(0, src.shape[0], rows):
        x = out[a:a + rows]
        np.copyto(x, src[a:a + rows], casting="unsafe")
        if x.size == 0:
            continue
        with np.errstate(invalid="ignore", over="ignore"):    # NaN/Inf rows stay NaN (flagged by the caller)
            x -= x.max(axis=1, keepdims=True)
            np.exp(x, out=x)
            x /= x.sum(axis=1, keepdims=True)
    return out


def _nonfinite_rows(x: np.ndarray) -> np.ndarray:
    """bool per row: some value is NaN or +-inf (a float64 row sum of float16/32 values cannot overflow)."""
    bad = ~np.isfinite(x.sum(axis=1, dtype=np.float64))
    if bad.any() and x.dtype == np.float64:
        rows = np.flatnonzero(bad)
        bad[rows] = ~np.isfinite(x[rows]).all(axis=1)
    return bad


class ReferenceDynamics:
    """Read-only view of an authors'-layout folder; one epoch in memory at a time.

    Parameters
    ----------
    folder : path
        Folder with ``{t}_Output.npy`` and ``{t}_Index.npy`` for each recorded epoch ``t``.
    labels : array ``(N,)`` of int or path to a ``.npy``, optional
        Training labels (the layout stores none); needed by methods that use labels.
    num_samples : int, optional
        N when no labels are given (default: the number of rows of the first epoch, as the
        authors' code assumes).
    fingerprint : str, optional
        Dataset fingerprint to report (default: derived from N, C and the first epoch's visit order).
    """

    format = FORMAT

    def __init__(self, folder: str | os.PathLike, *, labels: Any = None, num_samples: Optional[int] = None,
                 fingerprint: Optional[str] = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ArtifactError(f"dynamics folder {self.folder} does not exist; check the path.")
        found = {}
        for p in self.folder.iterdir():
            m = _OUTPUT.match(p.name)
            if m:
                found[int(m.group(1))] = p
        if not found:
            raise ArtifactError(
                f"{self.folder} holds no {{t}}_Output.npy files: it is not in the authors' layout "
                "(for a tdds dynamics folder use --format tdds)"
            )
        self.epochs: list[int] = sorted(found)
        for t in self.epochs:
            if not (self.folder / f"{t}_Index.npy").is_file():
                raise ArtifactError(f"{self.folder / f'{t}_Index.npy'} is missing: every {t}_Output.npy needs its "
                                    "_Index.npy (the sample index of each row); copy it from the training run.")
        first = self._load(f"{self.epochs[0]}_Output.npy", mmap=True)
        if first.ndim != 2:
            raise ArtifactError(f"{self.folder / f'{self.epochs[0]}_Output.npy'} has shape {first.shape}, expected [rows, C]")
        self.num_classes: int = int(first.shape[1])
        self.dtype: str = str(first.dtype)
        rows = int(first.shape[0])
        del first
        self._labels: Optional[np.ndarray] = None
        if labels is not None:
            if isinstance(labels, (str, os.PathLike)):
                labels = load_npy(labels)
            y = np.asarray(labels)
            if y.ndim != 1:
                raise ScoringError(f"labels must be a 1-D [N] array, got shape {y.shape}")
            if y.size and not np.issubdtype(y.dtype, np.integer):
                raise ScoringError(f"labels must be integers, got dtype {y.dtype}")
            y = y.astype(np.int64)
            if y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise ScoringError(f"labels range over {int(y.min())}..{int(y.max())} but the logits have "
                                   f"{self.num_classes} classes; pass the labels of this training run")
            if num_samples is not None and int(num_samples) != len(y):
                raise ScoringError(f"num_samples={num_samples} but the labels hold {len(y)} samples")
            self._labels = y
        self.num_samples: int = int(len(self._labels) if self._labels is not None else
                                    (num_samples if num_samples is not None else rows))
        self.fingerprint: str = fingerprint or self._derive_fingerprint()
        self.mode = "train"
        self.verify = False

    # -- helpers --------------------------------------------------------------------------------
    def _load(self, name: str, mmap: bool = False) -> np.ndarray:
        return load_npy(self.folder / name, mmap=mmap)

    def _derive_fingerprint(self) -> str:
        """N, C and the first epoch's visit order: identifies this recording, with or without labels."""
        h = hashlib.sha256(json.dumps({"format": FORMAT, "N": self.num_samples, "C": self.num_classes}).encode())
        h.update(sha256_file(self.folder / f"{self.epochs[0]}_Index.npy").encode())
        return "ref-" + h.hexdigest()[:16]

    def _check_epoch(self, t: int) -> None:
        if t not in self.epochs:
            lo, hi = self.epochs[0], self.epochs[-1]
            raise ArtifactError(f"epoch {t} was not recorded in {self.folder} (recorded: {lo}..{hi}, {len(self.epochs)} epochs).")

    def visits(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(logits [R, C], index [R] int64)`` of epoch ``t`` in visit order, checked."""
        self._check_epoch(t)
        out = self._load(f"{t}_Output.npy")
        idx = self._load(f"{t}_Index.npy")
        if out.ndim != 2 or out.shape[1] != self.num_classes:
            raise ArtifactError(f"{self.folder / f'{t}_Output.npy'} has shape {out.shape}, expected [rows, {self.num_classes}]")
        idx = np.asarray(idx).reshape(-1)
        if idx.shape[0] != out.shape[0]:
            raise ArtifactError(f"epoch {t}: {self.folder / f'{t}_Index.npy'} has {idx.shape[0]} entries but "
                                f"{t}_Output.npy has {out.shape[0]} rows; the two files come from different runs.")
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ArtifactError(f"{self.folder / f'{t}_Index.npy'} holds {idx.dtype} values, expected integer indices")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_samples):
            raise ArtifactError(
                f"epoch {t}: sample index {int(idx.max()) if idx.max() >= self.num_samples else int(idx.min())} is outside "
                f"0..{self.num_samples - 1}; pass the run's labels (--labels) or num_samples so N is right"
            )
        return out, idx

    def visit_counts(self, t: int) -> np.ndarray:
        """int64 ``[N]``: how many rows of epoch ``t`` carry each sample index (0 = not visited)."""
        _, idx = self.visits(t)
        return np.bincount(idx, minlength=self.num_samples)

    # -- the Dynamics interface -----------------------------------------------------------------
    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            raise ScoringError(
                f"{self.folder} is in the authors' layout, which stores no labels; pass --labels FILE "
                "(an int64 [N] .npy of the training labels) for methods that need them"
            )
        return self._labels

    @property
    def ids(self) -> list[str]:
        return [str(i) for i in range(self.num_samples)]

    @property
    def has_features(self) -> bool:
        return False

    def features(self) -> np.ndarray:
        raise ArtifactError(f"{self.folder} is in the authors' layout, which has no penultimate features (Moderate needs "
                            "them); pass a feature file with --param features=FILE.npy (float [N, D], sample order).")

    @property
    def has_final_logits(self) -> bool:
        """Whether the folder holds a ``final_logits.npy`` (the authors' code writes none; a user may add one)."""
        return (self.folder / FINAL_LOGITS).is_file()

    def final_logits(self) -> np.ndarray:
        """float32 ``[N, C]`` logits of a clean eval-mode pass of the final model, sample order.

        The authors' layout records no such pass: this reads ``final_logits.npy`` in the folder when
        someone put one there (float ``[N, C]``, row i = sample i) and otherwise raises the same
        :class:`ArtifactError` as a tdds folder without it."""
        if not self.has_final_logits:
            raise missing_final_logits(self.folder, ": the authors' layout records none (a float [N, C] "
                                       f"{FINAL_LOGITS} in sample order may be put in the folder by hand)")
        arr = self._load(FINAL_LOGITS)
        if arr.shape != (self.num_samples, self.num_classes) or not np.issubdtype(arr.dtype, np.floating):
            raise ArtifactError(f"{self.folder / FINAL_LOGITS} is {arr.dtype} {arr.shape}, expected float "
                                f"({self.num_samples}, {self.num_classes}) logits in sample order")
        return arr.astype(np.float32, copy=False)

    def probabilities(self, t: int, *, dtype: str = "float64") -> np.ndarray:
        """The authors' ``[N, C]`` probability matrix of epoch ``t``: softmax per visit row, rows of
        the same index summed, unvisited samples all zero. Rows whose logits hold NaN/Inf come out
        as NaN (so the scorers' ``nan_policy`` sees them)."""
        out, idx = self.visits(t)
        n, c = self.num_samples, self.num_classes
        counts = np.bincount(idx, minlength=n)
        P = np.empty((n, c), dtype=np.dtype(dtype))
        if len(idx) == n and counts.max(initial=0) == 1:  # every sample visited once: gather, no scatter
            row_of = np.empty(n, dtype=np.int64)
            row_of[idx] = np.arange(n)
            _softmax_rows(out[row_of], P)
        else:
            P.fill(0.0)
            once = counts[idx] == 1
            P[idx[once]] = _softmax_rows(out[once], np.empty((int(once.sum()), c), dtype=P.dtype))
            rep = ~once
            if rep.any():
                np.add.at(P, idx[rep], _softmax_rows(out[rep], np.empty((int(rep.sum()), c), dtype=P.dtype)))
        bad = _nonfinite_rows(out)
        if bad.any():
            P[idx[bad]] = np.nan
        return P

    def tdds_input(self, t: int) -> tuple[str, np.ndarray]:
        """What TDDS needs of epoch ``t``, cheaply: when every sample was visited exactly once the
        authors' matrix is just the softmax of the logits in sample order, so ``("logits", X)`` is
        returned for the scorer to soft-max; otherwise ``("probs", probabilities(t))``."""
        out, idx = self.visits(t)
        if len(idx) == self.num_samples and np.bincount(idx, minlength=self.num_samples).max(initial=0) == 1:
            row_of = np.empty(self.num_samples, dtype=np.int64)
            row_of[idx] = np.arange(self.num_samples)
            return "logits", out[row_of]
        return "probs", self.probabilities(t)

    def iter_tdds_inputs(self, start: int = 0, stop: Optional[int] = None) -> Iterator[tuple[int, np.ndarray, str]]:
        """Yield ``(t, array, kind)`` from :meth:`tdds_input` for recorded epochs ``start <= t < stop``."""
        for t in self.epochs:
            if t < start or (stop is not None and t >= stop):
                continue
            kind, arr = self.tdds_input(t)
            yield t, arr, kind

    def iter_probs(self, start: int = 0, stop: Optional[int] = None, *, dtype: str = "float64") -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(t, probabilities [N, C])`` for recorded epochs ``start <= t < stop``."""
        for t in self.epochs:
            if t < start or (stop is not None and t >= stop):
                continue
            yield t, self.probabilities(t, dtype=dtype)

    def epoch(self, t: int) -> np.ndarray:
        """Logits ``[N, C]`` of epoch ``t`` in sample order (stored float dtype): the mean over
        repeated visits of an index, NaN for samples not visited."""
        out, idx = self.visits(t)
        dt = out.dtype if np.issubdtype(out.dtype, np.floating) else np.float32
        counts = np.bincount(idx, minlength=self.num_samples)
        X = np.full((self.num_samples, self.num_classes), np.nan, dtype=dt)
        if counts.max(initial=0) <= 1:
            X[idx] = out
        else:
            acc = np.zeros((self.num_samples, self.num_classes), dtype=np.float64)
            np.add.at(acc, idx, out.astype(np.float64))
            seen = counts > 0
            X[seen] = (acc[seen] / counts[seen, None]).astype(dt)
        return X

    def iter_epochs(self, start: int = 0, stop: Optional[int] = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(t, logits [N, C])`` for recorded epochs ``start <= t < stop``, one at a time."""
        for t in self.epochs:
            if t < start or (stop is not None and t >= stop):
                continue
            yield t, self.epoch(t)

    def __len__(self) -> int:
        return len(self.epochs)

    def __repr__(self) -> str:
        return (f"ReferenceDynamics({str(self.folder)!r}, N={self.num_samples}, C={self.num_classes}, "
                f"epochs={self.epochs[0]}..{self.epochs[-1]})")


def open_reference_dynamics(folder: str | os.PathLike, *, labels: Any = None, num_samples: Optional[int] = None,
                            fingerprint: Optional[str] = None) -> ReferenceDynamics:
    """Open an authors'-layout folder (see the module docstring)."""
    return ReferenceDynamics(folder, labels=labels, num_samples=num_samples, fingerprint=fingerprint)


def open_any_dynamics(folder: str | os.PathLike, *, format: str = "auto", labels: Any = None, verify: bool = True):
    """Open a dynamics folder in either layout.

    ``format``: "tdds" (``tdds-dynamics/1`` with manifest), "reference" (the authors'
    ``{t}_Output.npy``/``{t}_Index.npy``) or "auto" (by the files present). ``labels`` (array or
    ``.npy`` path) only applies to the reference layout.
    """
    folder = Path(folder)
    if format not in ("auto", "tdds", "reference"):
        raise ScoringError(f"--format must be auto, tdds or reference, not {format!r}")
    if format == "auto":
        if not folder.is_dir():
            raise ArtifactError(f"dynamics folder {folder} does not exist; run `tdds train` first or check the path.")
        if (folder / MANIFEST).is_file():
            format = "tdds"
        elif is_reference_folder(folder):
            format = "reference"
        else:
            raise ArtifactError(
                f"{folder} is neither a tdds dynamics folder (no {MANIFEST}) nor in the authors' layout "
                "(no {t}_Output.npy); check the path or rerun `tdds train`."
            )
    if format == "reference":
        return ReferenceDynamics(folder, labels=labels)
    if labels is not None:
        raise ScoringError("--labels only applies to --format reference; a tdds dynamics folder carries its own labels.")
    if (folder / MANIFEST).is_file() and '"' + STATS_FORMAT + '"' in (folder / MANIFEST).read_text():
        return open_statistics(folder)       # per-sample statistics (tdds_core.statistics)
    return open_dynamics(folder, verify=verify)
