"""Training dynamics as per-sample statistics: a few numbers per sample and epoch instead of its C
logits (issue 17; the TDDS paper's section 4.3 is about the memory the logits cost).

Per epoch ``t`` and sample ``i``, from that epoch's logits ``z_t`` (float64), the columns of
:data:`COLUMNS`, each computed as the method that reads it computes it, so that a method scored
from statistics converted in float64 gives the numbers it gives from the same logits (to float64
rounding):

* ``kl``: the TDDS inner term of the pair ``(t-1, t)`` (the authors' semantics, tdds-facts.md):
  ``sum_c | p_{t,c} (log(p_{t,c} + 1e-8) - log(p_{t-1,c} + 1e-8)) |`` with TDDS's softmax
  ``p = exp(z - max) * (1 / sum)`` (:mod:`tdds_core.scoring.tdds`); NaN at the first recorded epoch;
* ``kl_signed``: the same without the absolute value (the paper's ablation);
* ``ce``: ``-log(p_{t,y} + 1e-8)`` (TDDS's loss ablation, ``inner="loss"``);
* ``el2n``: ``|| q_t - onehot(y) ||_2`` (EL2N, Paul et al. 2021; also TDDS's ``inner="el2n"``)
  with the baselines' softmax ``q = exp(z - max) / sum`` (:func:`tdds_core.scoring._common.softmax64`);
* ``p_target``: ``q_{t,y}`` (Dyn-Unc, DUAL);
* ``margin_p`` / ``margin_logit``: target minus the largest other class, in probability (AUM as
  the TDDS paper and CCS compute it) and in logit (AUM of Pleiss et al. 2020);
* ``correct``: 1 when ``argmax_c z_t == y`` (Forgetting, Toneva et al. 2019);
* ``entropy``: ``-sum_c q_c log q_c`` through ``log q = z - logsumexp(z)`` (Entropy).

A row whose logits hold NaN/Inf is NaN in every column (the scorers' ``nan_policy`` sees it). Every
column is computed in float64 and stored as float64 (``8 * 9 = 72`` bytes a sample and epoch
whatever the number of classes; float16 logits: ``2 C`` bytes) or, with ``dynamics.stats_dtype:
float32``, as float32 (36 bytes; scores then agree with float64 ones to float32 precision). Because the TDDS inner terms are stored, any
``(T, W, decay, start)`` is scored after training without the logits (:func:`tdds_from_statistics`).

Folder layout (``tdds-stats/1``): ``epoch_XXXX.npy`` (float64 or float32 ``[N, len(columns)]``, rows in
sample-id order), optionally ``final.npy`` (the same columns for the clean final pass: the final
model in eval mode without augmentation, ``kl`` NaN; the input of Entropy's default source) and
``features.npy`` (float32 ``[N, D]`` penultimate features of that pass, Moderate's input),
``labels.npy``, ``ids.txt`` and ``manifest.json`` (written last, checksums of every file, the
columns, the recorded epochs, the dataset fingerprint, ``final_pass``, ``computed_on``).

Where they come from:

* in training (``dynamics.record: stats | both``): :class:`StatsRecorder` computes them on the
  training device inside each training step, from the logits of the same forward pass that logits
  capture stores, with the previous epoch's logits kept on the device indexed by sample id (float32
  ``[N, C]``; written beside the statistics at each epoch end, ``_last_XXXX.npy``, and kept back to
  the run's last checkpoint, so a resumed run continues bit for bit; removed when the run ends);
* after training: :func:`write_statistics` converts a logits dynamics folder (``tdds stats``).

:func:`open_statistics` reads a folder back, one epoch at a time; every dynamics-based method of
:mod:`tdds_core.scoring` scores from it through its registered function (``register_method(stats=)``).
Nothing here imports torch at module level: only :class:`StatsRecorder` does, when training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import numpy as np

from .errors import ArtifactError, ScoringError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["COLUMNS", "STATS_FORMAT", "EPS", "FINAL", "FEATURES", "DTYPES", "epoch_statistics", "write_statistics", "open_statistics",
           "Statistics", "StatsWriter", "StatsRecorder", "tdds_from_statistics", "column_over", "finite_scores",
           "is_statistics", "bytes_per_sample_epoch"]

STATS_FORMAT = "tdds-stats/1"
EPS = 1e-8    # the authors' log offset
COLUMNS = ("kl", "kl_signed", "ce", "el2n", "p_target", "margin_p", "margin_logit", "correct", "entropy")
FINAL = "final.npy"
DTYPES = ("float64", "float32")   # storage dtypes (computed in float64 either way)
FEATURES = "features.npy"   # optional: the clean final pass's penultimate features (Moderate)
_C = {c: i for i, c in enumerate(COLUMNS)}


def bytes_per_sample_epoch(num_classes: int, logits_dtype: str = "float16", stats_dtype: str = "float64") -> dict[str, int]:
    """Bytes one sample costs per recorded epoch: ``{"logits": C * itemsize, "stats": 72 (float64) or 36}``."""
    return {"logits": int(num_classes) * np.dtype(logits_dtype).itemsize,
            "stats": len(COLUMNS) * np.dtype(stats_dtype).itemsize}


def is_statistics(obj: Any) -> bool:
    """Whether ``obj`` is an opened statistics folder (its manifest's format is ``tdds-stats/1``)."""
    manifest = getattr(obj, "manifest", None)
    return isinstance(manifest, dict) and manifest.get("format") == STATS_FORMAT


def epoch_statistics(logits: np.ndarray, labels: np.ndarray,
                     prev_probs: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's statistics (numpy, float64).

    Parameters
    ----------
    logits : array ``[N, C]`` (any float dtype), rows in sample-id order
    labels : array ``(N,)`` of int
    prev_probs : array ``[N, C]``, optional
        The previous epoch's probabilities as this function returned them (None at the first
        recorded epoch: the ``kl`` columns are NaN).

    Returns
    -------
    (stats, probs)
        float64 ``[N, len(COLUMNS)]`` and this epoch's TDDS probabilities ``[N, C]`` (the next
        epoch's ``prev_probs``).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n = len(z)
    rows = np.arange(n)
    out = np.empty((n, len(COLUMNS)), dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = z.max(axis=1, keepdims=True) if z.size else np.zeros((n, 1))
        zm = z - m
        e = np.exp(zm)
        s = e.sum(axis=1, keepdims=True)
        # TDDS (scoring.tdds._softmax_, _log_eps, _kl_term_): p = e * (1 / s), L = log(p + 1e-8)
        p = e * np.reciprocal(s)
        L = np.log(p + EPS)
        if prev_probs is None:
            out[:, _C["kl"]] = out[:, _C["kl_signed"]] = np.nan
        else:
            term = p * (L - np.log(np.asarray(prev_probs, dtype=np.float64) + EPS))
            out[:, _C["kl_signed"]] = term.sum(axis=1)
            out[:, _C["kl"]] = np.abs(term, out=term).sum(axis=1)
        out[:, _C["ce"]] = -np.log(p[rows, y] + EPS)
        # the baselines (scoring._common.softmax64): q = e / s
        q = e / s
        q_y = q[rows, y].copy()
        out[:, _C["p_target"]] = q_y
        err = q.copy()
        err[rows, y] -= 1.0
        out[:, _C["el2n"]] = np.sqrt((err * err).sum(axis=1))
        q[rows, y] = -np.inf
        out[:, _C["margin_p"]] = q_y - q.max(axis=1)
        other = z.copy()
        other[rows, y] = -np.inf
        out[:, _C["margin_logit"]] = z[rows, y] - other.max(axis=1)
        out[:, _C["correct"]] = (z.argmax(axis=1) == y).astype(np.float64)
        # entropy (scoring.entropy._entropy_rows): log q = (z - max) - log(sum)
        logq = zm - np.log(s)
        pq = np.exp(logq)
        out[:, _C["entropy"]] = -np.where(pq > 0, pq * logq, 0.0).sum(axis=1)
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        out[bad] = np.nan
    return out, p


# ------------------------------------------------------------------------------------------ reading
@dataclass
class Statistics:
    """A ``tdds-stats/1`` folder (:func:`open_statistics`): ``epochs``, ``num_samples``,
    ``num_classes``, ``labels``, ``ids``, ``fingerprint``; :meth:`column` reads one column of one
    epoch, :meth:`final_column` one of the clean final pass."""

    folder: Path
    manifest: dict
    labels: np.ndarray
    ids: list[str]
    verified: set = field(default_factory=set, repr=False)   # files whose checksum this object checked

    @property
    def epochs(self) -> list[int]:
        return list(self.manifest["epochs"])

    @property
    def num_samples(self) -> int:
        return int(self.manifest["num_samples"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest.get("fingerprint", ""))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.manifest["columns"])

    @property
    def has_final(self) -> bool:
        """Whether the folder holds the clean final pass's statistics (``final.npy``)."""
        return FINAL in self.manifest.get("files", {})

    @property
    def has_features(self) -> bool:
        """Whether the folder holds the clean final pass's penultimate features (``features.npy``)."""
        return FEATURES in self.manifest.get("files", {})

    def features(self) -> np.ndarray:
        """float32 ``[N, D]`` penultimate features of the final model's clean pass (Moderate)."""
        from .io import load_npy

        if not self.has_features:
            raise ArtifactError(f"{self.folder} has no features.npy; train with dynamics.save_features: true "
                                "(Moderate needs it).")
        self._verify(FEATURES)
        return load_npy(self.folder / FEATURES)

    def _verify(self, name: str) -> None:
        """Check ``name``'s checksum once per opened folder (every later read is of the checked bytes)."""
        from .io import verify_file

        if name not in self.verified:
            verify_file(self.folder, name, self.manifest)
            self.verified.add(name)

    def _read(self, name: str) -> np.ndarray:
        from .io import load_npy

        self._verify(name)
        arr = load_npy(self.folder / name)
        if arr.shape != (self.num_samples, len(self.columns)):
            raise ArtifactError(f"{self.folder / name} has shape {arr.shape}, the manifest says "
                                f"({self.num_samples}, {len(self.columns)}); delete the folder and record it again.")
        return arr

    @property
    def dtype(self) -> str:
        """Their storage dtype (``float64`` or ``float32``; every read returns float64)."""
        return str(self.manifest.get("dtype", "float64"))

    def epoch(self, t: int) -> np.ndarray:
        """Epoch ``t``'s statistics, float64 ``[N, len(columns)]`` (checksum verified)."""
        if t not in self.manifest["epochs"]:
            raise ScoringError(f"epoch {t} is not in the statistics at {self.folder} (recorded: "
                               f"{self.epochs[0]}..{self.epochs[-1]}); choose start/T within them.")
        return self._read(_epoch_file(t)).astype(np.float64, copy=False)

    def _index(self, name: str) -> int:
        if name not in self.columns:
            raise ScoringError(f"the statistics at {self.folder} have no column {name!r} (they have "
                               f"{', '.join(self.columns)}); record them again with this version.")
        return self.columns.index(name)

    def _column(self, name: str, i: int) -> np.ndarray:
        """Column ``i`` of the file ``name`` (checksum verified once), read in row chunks: only the
        column and a chunk are ever in memory (a memory map would keep every page it touched)."""
        self._verify(name)
        path = self.folder / name
        n, k = self.num_samples, len(self.columns)
        try:
            with open(path, "rb") as f:
                fmt = np.lib.format
                read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(fmt.read_magic(f))
                if read_header is None:
                    raise ArtifactError(f"{path} is not a .npy file of a known version; record it again.")
                shape, fortran, dtype = read_header(f)
                if tuple(shape) != (n, k) or fortran or dtype != np.dtype(self.dtype):
                    raise ArtifactError(f"{path} holds a {dtype} array of shape {shape}, the manifest says {self.dtype} "
                                        f"({n}, {k}); delete the folder and record it again.")
                out = np.empty(n, dtype=np.float64)
                rows = max(1, (1 << 20) // k)
                for a in range(0, n, rows):
                    b = min(n, a + rows)
                    chunk = np.fromfile(f, dtype=dtype, count=(b - a) * k)
                    if chunk.size != (b - a) * k:
                        raise ArtifactError(f"{path} is truncated; delete the folder and record it again.")
                    out[a:b] = chunk.reshape(b - a, k)[:, i]
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{path} cannot be read ({e}); delete the folder and record it again.") from e
        return out

    def column(self, t: int, name: str) -> np.ndarray:
        """Column ``name`` of epoch ``t``, float64 ``(N,)``."""
        i = self._index(name)
        if t not in self.manifest["epochs"]:
            self.epoch(t)   # the error naming the recorded epochs
        return self._column(_epoch_file(t), i)

    def final_column(self, name: str) -> np.ndarray:
        """Column ``name`` of the clean final pass, float64 ``(N,)`` (ArtifactError when not recorded)."""
        i = self._index(name)
        if not self.has_final:
            raise ArtifactError(
                f"{self.folder} holds no statistics of the clean final pass (final.npy: the final model in eval mode "
                "without augmentation), which entropy's default source='clean' reads. Record the run again with this "
                "version of tdds (dynamics.record: stats or both), convert a logits folder that has final_logits.npy "
                "(`tdds stats`), or score from the last training epoch with source='last_epoch' "
                "(CLI: --param source=last_epoch).")
        return self._column(FINAL, i)


def _epoch_file(t: int) -> str:
    return f"epoch_{int(t):04d}.npy"


def _last_file(t: int) -> str:
    return f"_last_{int(t):04d}.npy"


def open_statistics(folder: str | Path) -> Statistics:
    """A ``tdds-stats/1`` folder (ArtifactError when it is not one)."""
    from .io import load_npy, read_manifest, verify_file

    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except Exception as e:  # noqa: BLE001 - a missing or foreign folder
        raise ArtifactError(f"{folder} is not a statistics folder ({e}); write one with `tdds stats` "
                            "(tdds_core.statistics.write_statistics) or train with dynamics.record: stats.") from None
    if manifest.get("format") != STATS_FORMAT:
        raise ArtifactError(f"{folder} holds {manifest.get('format') or manifest.get('kind')!r}, not {STATS_FORMAT!r} "
                            "statistics")
    for name in ("labels.npy", "ids.txt"):
        verify_file(folder, name, manifest)
    ids = (folder / "ids.txt").read_text().splitlines()
    return Statistics(folder, manifest, load_npy(folder / "labels.npy"), ids)


def column_over(stats: Statistics, ts: Sequence[int], name: str) -> Iterator[np.ndarray]:
    """Column ``name`` of each epoch of ``ts``, in order, one epoch in memory at a time."""
    for t in ts:
        yield stats.column(t, name)


def finite_scores(scores: np.ndarray, nan_policy: str, method: str) -> np.ndarray:
    """``scores`` with non-finite entries refused (``raise``) or scored lowest (``skip``: -inf,
    with the warning the logits path gives)."""
    from .scoring._common import finish_skipped

    bad = ~np.isfinite(scores)
    if bad.any():
        if nan_policy == "raise":
            raise ScoringError(f"{method}: {int(bad.sum())} samples have NaN/Inf statistics (training diverged: lower "
                               "train.lr), or pass nan_policy='skip' to score them lowest.")
        return finish_skipped(scores, bad, method)
    return scores


# ------------------------------------------------------------------------------------------ TDDS
def _pair_terms(stats: Statistics, ts: Sequence[int], inner: str, signed: bool) -> Iterator[np.ndarray]:
    """The ``T - 1`` inner terms of the trajectory ``ts`` (pair ``(ts[i], ts[i+1])`` -> term i)."""
    if inner == "kl":
        name = "kl_signed" if signed else "kl"
        for t in ts[1:]:
            yield stats.column(t, name)
    elif inner == "loss":
        prev = stats.column(ts[0], "ce")
        for t in ts[1:]:
            cur = stats.column(t, "ce")
            yield cur - prev if signed else np.abs(cur - prev)
            prev = cur
    elif inner == "el2n":
        for t in ts[1:]:
            yield stats.column(t, "el2n")
    else:
        raise ScoringError(f"inner must be kl, loss or el2n, not {inner!r}")


def tdds_from_statistics(stats: Statistics, *, T: int = 30, W: int = 10, decay: float = 0.9,
                         start: Optional[int] = None, inner: str = "kl", signed: bool = False,
                         aggregate: str = "ema") -> np.ndarray:
    """TDDS scores from recorded statistics, for any ``(T, W, decay, start)`` chosen after training.

    The inner terms of the pairs of epochs ``start .. start+T-1`` go through the windows of
    :class:`tdds_core.scoring.tdds.TddsAccumulator` (``s_k = ||d - mean(d)||_2`` over the terms
    ``d_k .. d_{k+W-2}``, ``w_k = decay (1 - decay)^(T-W-k)``, or the mean over windows), so the
    score equals TDDS scored from the logits the statistics were computed from, to float64 rounding.

    Returns float64 ``(N,)`` (NaN where a term is NaN), higher = keep first.
    """
    from .scoring.tdds import TddsAccumulator

    T, W = int(T), int(W)
    if not 2 <= W <= T:
        raise ScoringError(f"TDDS needs 2 <= W <= T, got T={T}, W={W}")
    first = stats.epochs[0] if start is None else int(start)
    ts = list(range(first, first + T))
    missing = [t for t in ts if t not in stats.manifest["epochs"]]
    if missing:
        raise ScoringError(f"TDDS with start={first}, T={T} needs epochs {ts[0]}..{ts[-1]}; the statistics at "
                           f"{stats.folder} hold {stats.epochs[0]}..{stats.epochs[-1]}: lower T or start.")
    acc = TddsAccumulator(stats.num_samples, T=T, W=W, decay=decay, inner=inner, signed=signed, aggregate=aggregate,
                          labels=np.asarray(stats.labels, dtype=np.int64), nan_policy="skip")
    for d in _pair_terms(stats, ts, inner, signed):
        acc.add_term(d)
    return acc.result()


# ------------------------------------------------------------------------------------------ writing
class StatsWriter:
    """The files of a statistics folder while a run records it (resumable): :meth:`put_epoch`
    writes one epoch's statistics and rewrites the manifest (``complete: false``); :meth:`save_last`
    keeps the epoch's logits beside them (``_last_XXXX.npy``, not part of the artifact; those older
    than the run's last checkpoint go, :meth:`prune_last`) for the next epoch's TDDS term after a
    resume; :meth:`finalize` removes them and writes the manifest with ``complete: true``.
    The statistics come from :class:`StatsRecorder` (computed where the model trains)."""

    def __init__(self, folder: str | Path, *, ids: Sequence[str], labels: np.ndarray, num_classes: int,
                 fingerprint: str, computed_on: str = "cpu", dtype: str = "float64"):
        from .io import atomic_save_npy, atomic_write_text, read_manifest

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
        from .io import atomic_write_json

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
        from .io import atomic_save_npy

        arr = self._check(stats, f"epoch {t}")
        self._put(_epoch_file(t), lambda p: atomic_save_npy(p, arr))
        if t not in self.epochs:
            self.epochs.append(int(t))
        self._manifest(False)

    def put_final(self, stats: np.ndarray, *, epoch: Optional[int]) -> None:
        """Write the clean final pass's statistics (after the last epoch ``epoch``)."""
        from .io import atomic_save_npy

        arr = self._check(stats, "final pass")
        self._put(FINAL, lambda p: atomic_save_npy(p, arr))
        self.final_pass = {"mode": "eval", "augment": False, "epoch": epoch, "stats": FINAL}
        self._manifest(False)

    def put_features(self, features: np.ndarray) -> None:
        """Write the clean final pass's penultimate features (float32 ``[N, D]``, id order)."""
        from .io import atomic_save_npy

        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[0] != len(self.labels):
            raise ArtifactError(f"features have shape {f.shape}, expected ({len(self.labels)}, D)")
        self._put(FEATURES, lambda p: atomic_save_npy(p, f))
        self._manifest(False)

    def save_last(self, t: int, logits: np.ndarray) -> None:
        """Keep epoch ``t``'s logits (float32 ``[N, C]``) for a resume (:meth:`prune_last` removes
        those a resume can no longer need)."""
        from .io import atomic_save_npy

        atomic_save_npy(self.folder / _last_file(t), np.asarray(logits, dtype=np.float32))

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
    from .io import load_npy

    p = Path(folder) / _last_file(t)
    return load_npy(p) if p.is_file() else None


def write_statistics(dynamics: Any, out: str | Path, *, dtype: str = "float64") -> Statistics:
    """The statistics of every recorded epoch of ``dynamics`` (a logits dynamics folder opened with
    :func:`tdds_core.dynamics.open_dynamics`; its epochs must be consecutive), and of its clean final
    pass when it has one, into the folder ``out`` (computed in float64 with numpy, stored as ``dtype``:
    float64 or float32). Returns it opened."""
    from .io import atomic_save_npy, atomic_write_text, write_manifest

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
        atomic_save_npy(out / _epoch_file(t), stats.astype(dtype, copy=False))
    files = [_epoch_file(t) for t in epochs] + ["labels.npy", "ids.txt"]
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


# ------------------------------------------------------------------------------------------ recording in training
def device_statistics(logits: "torch.Tensor", labels: "torch.Tensor",
                      prev_logits: "Optional[torch.Tensor]" = None) -> "torch.Tensor":
    """:func:`epoch_statistics` on the logits' device (torch, float64): ``logits`` ``[B, C]``,
    ``labels`` ``(B,)`` long, ``prev_logits`` the same samples' logits of the previous epoch (None:
    ``kl`` NaN). Returns float64 ``[B, len(COLUMNS)]``, the numpy function's operations one for one
    (values agree to float64 rounding; exp/log kernels differ between libraries)."""
    import torch

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
        import torch

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
        import torch

        if self.prev_epoch != t - 1:
            last = load_last(self.folder, t - 1)
            self.prev = None if last is None else torch.from_numpy(last).to(self.device)
            self.prev_epoch = None if last is None else t - 1
        if self.prev is None:
            self.prev = torch.full((self.n, self.c), float("nan"), dtype=torch.float32, device=self.device)
        self.epoch = int(t)
        self.buf.fill_(float("nan"))
        self.visits.zero_()

    def update(self, idx: "torch.Tensor", logits: "torch.Tensor") -> None:
        """The statistics of the samples ``idx`` (``(B,)`` ids) from this step's ``logits`` ``[B, C]``."""
        import torch

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
        import torch

        if self.epoch != t:
            raise RuntimeError(f"StatsRecorder.end_epoch({t}) but epoch {self.epoch} was begun")
        visits = self.visits
        if _distributed():
            import torch.distributed as dist

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

    def final_pass(self, logits: "torch.Tensor", *, features: "Optional[torch.Tensor]" = None,
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
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
