"""Helpers shared by the scoring methods: epoch ranges, labels, NaN/Inf handling, row-block reads.

Nothing here is a scoring method; each method's file holds its own formula.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from ..dynamics import Dynamics, epoch_file
from ..errors import ArtifactError, ScoringError
from ..io import sha256_file

log = logging.getLogger("tdds.scoring")

EPS = 1e-8  # the authors' guard inside log(p + 1e-8)

#: elements (rows x classes) processed at once by the chunked baselines: bounds float64 temporaries
CHUNK_ELEMENTS = 1 << 21


class NonFiniteError(ScoringError):
    """NaN/Inf in the scoring inputs of one epoch (``nan_policy="raise"``)."""

    def __init__(self, epoch: Any, count: int, first: int, what: str = "logits"):
        self.epoch, self.count, self.first, self.what = epoch, int(count), int(first), what
        where = f"epoch {epoch}" if epoch is not None else "the input"
        super().__init__(
            f"{where}: {count} sample{'s' if count != 1 else ''} with NaN/Inf {what} (first: sample {first}); "
            "the training run diverged or the file is damaged. Rerun training, or pass nan_policy='skip' "
            "(CLI: --nan-policy skip) to give those samples the lowest score."
        )


def check_policy(nan_policy: str) -> None:
    if nan_policy not in ("raise", "skip"):
        raise ScoringError(f"nan_policy must be 'raise' or 'skip', not {nan_policy!r}")


class NanGuard:
    """Tracks rows with non-finite inputs: raises under ``"raise"``, remembers them under ``"skip"``."""

    def __init__(self, num_rows: int, nan_policy: str, what: str = "logits"):
        check_policy(nan_policy)
        self.policy = nan_policy
        self.what = what
        self.bad = np.zeros(num_rows, dtype=bool)

    def check(self, finite_rows: np.ndarray, epoch: Any, *, at: int = 0, report_offset: int = 0,
              what: Optional[str] = None) -> Optional[np.ndarray]:
        """``finite_rows``: bool per row of a block starting at row ``at`` of this guard (sample
        ``report_offset + at`` in error messages; ``what`` the input named there, default the
        guard's). Returns the block's bad-row mask (None when all are finite) after raising or
        recording."""
        finite_rows = np.asarray(finite_rows, dtype=bool)
        if finite_rows.all():
            return None
        badrows = ~finite_rows
        if self.policy == "raise":
            first = report_offset + at + int(np.flatnonzero(badrows)[0])
            raise NonFiniteError(epoch, int(badrows.sum()), first, what or self.what)
        self.bad[at:at + len(badrows)] |= badrows
        return badrows


def finish_skipped(scores: np.ndarray, bad: np.ndarray, method: str) -> np.ndarray:
    """Give samples with non-finite inputs the lowest score (-inf) and report how many there were."""
    count = int(bad.sum())
    if count:
        scores = np.array(scores, dtype=np.float64, copy=True)
        scores[bad] = -np.inf
        msg = (f"{method}: {count} sample{'s' if count != 1 else ''} had NaN/Inf inputs and got the lowest score "
               "(nan_policy='skip')")
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return scores


def finite_rows(block: np.ndarray) -> np.ndarray:
    """bool per row: every value finite. A float64 row sum is finite exactly when all entries are
    (float16/float32 inputs cannot overflow it); float64 rows whose sum overflows are checked exactly."""
    s = np.asarray(block).sum(axis=1, dtype=np.float64)
    ok = np.isfinite(s)
    if not ok.all():
        rows = np.flatnonzero(~ok)
        ok[rows] = np.isfinite(np.asarray(block)[rows]).all(axis=1)
    return ok


def column_mean(columns: Iterable[np.ndarray]) -> np.ndarray:
    """The mean of ``(N,)`` columns, added one after the other."""
    total, count = 0.0, 0
    for col in columns:
        total, count = total + col, count + 1
    return total / count


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64: ``exp(x - max) / sum(exp(x - max))``."""
    x = np.array(logits, dtype=np.float64, copy=True)
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def row_chunks(n: int, c: int, elements: int = CHUNK_ELEMENTS) -> Iterator[tuple[int, int]]:
    """``(a, b)`` row ranges of about ``elements`` values each."""
    step = max(1, elements // max(1, c))
    for a in range(0, n, step):
        yield a, min(n, a + step)


def split_item(item: Any, default_epoch: int) -> tuple[Any, np.ndarray]:
    """Epoch iterables may yield arrays or ``(t, array)`` pairs (as ``Dynamics.iter_epochs`` does)."""
    if isinstance(item, tuple) and len(item) == 2:
        return item[0], item[1]
    return default_epoch, item


def check_block(arr: Any, n: Optional[int], c: Optional[int], epoch: Any) -> np.ndarray:
    """Shape check of one epoch's ``[N, C]`` array against the first one seen."""
    if not hasattr(arr, "shape") or len(arr.shape) != 2:
        raise ScoringError(f"epoch {epoch}: expected a 2-D [N, C] array, got shape {getattr(arr, 'shape', None)}")
    if n is not None and arr.shape[0] != n:
        raise ScoringError(f"epoch {epoch} has {arr.shape[0]} rows but the other inputs have {n} samples")
    if c is not None and arr.shape[1] != c:
        raise ScoringError(f"epoch {epoch} has {arr.shape[1]} classes but the other epochs have {c}")
    return arr


def check_labels(labels: Any, n: int, c: int) -> np.ndarray:
    """int64 ``[N]`` labels in ``[0, C)``; ScoringError naming the mismatch otherwise."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ScoringError(f"labels have shape {y.shape} but the logits have {n} samples; pass the labels of this run")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ScoringError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if y.size and (y.min() < 0 or y.max() >= c):
        raise ScoringError(f"labels range over {int(y.min())}..{int(y.max())} but the logits have {c} classes")
    return y


def dynamics_labels(dynamics: Any, *, required: bool, method: str) -> Optional[np.ndarray]:
    """Labels of a dynamics object, checked against its N and C. ``required=False`` returns None
    when the dynamics carries no labels (the authors' layout without --labels)."""
    if getattr(dynamics, "has_labels", True) is False:
        if required:
            raise ScoringError(
                f"{method} needs the training labels but {getattr(dynamics, 'folder', 'these dynamics')} has none "
                "(the authors' {t}_Output.npy layout stores no labels); pass --labels FILE (int64 [N] .npy)"
            )
        return None
    return check_labels(dynamics.labels, int(dynamics.num_samples), int(dynamics.num_classes))


def recorded_range(epochs: Sequence[int]) -> str:
    if not epochs:
        return "none"
    e = sorted(epochs)
    contiguous = e == list(range(e[0], e[-1] + 1))
    return f"{e[0]}..{e[-1]}" + ("" if contiguous else f" with gaps ({len(e)} epochs)")


def select_epochs(dynamics: Any, start: Optional[int], stop: Optional[int], *, method: str,
                  minimum: int = 1) -> list[int]:
    """Recorded epochs ``start <= t < stop`` (defaults: all recorded), at least ``minimum`` of them."""
    recorded = sorted(int(t) for t in dynamics.epochs)
    if not recorded:
        raise ScoringError(f"{method}: the dynamics hold no recorded epochs")
    lo = recorded[0] if start is None else int(start)
    hi = recorded[-1] + 1 if stop is None else int(stop)
    ts = [t for t in recorded if lo <= t < hi]
    if len(ts) < minimum:
        raise ScoringError(
            f"{method} needs at least {minimum} recorded epoch{'s' if minimum != 1 else ''} in [{lo}, {hi}) but found "
            f"{len(ts)}; recorded epochs: {recorded_range(recorded)}"
        )
    return ts


def leading_epochs(dynamics: Any, start: Optional[int], count: int, *, minimum: int, method: str, fix: str,
                   what: str = "") -> list[int]:
    """The first ``count`` consecutive recorded epochs from ``start`` (default: the first recorded), at
    least ``minimum`` of them (ScoringError naming ``what``, e.g. "window=", and ending with ``fix``);
    fewer than ``count`` logs a warning and uses those (DUAL's ``target_probs[:30]`` also takes what
    there is)."""
    recorded = sorted(int(t) for t in dynamics.epochs)
    if not recorded:
        raise ScoringError(f"{method}: the dynamics hold no recorded epochs")
    s = recorded[0] if start is None else int(start)
    have = set(recorded)
    ts: list[int] = []
    t = s
    while len(ts) < count and t in have:
        ts.append(t)
        t += 1
    if len(ts) < minimum:
        raise ScoringError(f"{method} needs at least {what}{minimum} consecutive recorded epochs from epoch {s} but found "
                           f"{len(ts)}; recorded epochs: {recorded_range(recorded)}. {fix}")
    if len(ts) < count:
        log.warning("%s: epochs=%d asked but only epochs %d..%d are recorded consecutively from %d; using those %d",
                    method, count, ts[0], ts[-1], s, len(ts))
    return ts


def contiguous_epochs(dynamics: Any, start: Optional[int], count: int, *, method: str, what: str = "T") -> list[int]:
    """Epochs ``start .. start+count-1``, all of which must be recorded (default start: first recorded)."""
    recorded = sorted(int(t) for t in dynamics.epochs)
    if not recorded:
        raise ScoringError(f"{method}: the dynamics hold no recorded epochs")
    s = recorded[0] if start is None else int(start)
    if s < 0:
        raise ScoringError(f"{method}: start must be >= 0, got {s}")
    want = list(range(s, s + count))
    have = set(recorded)
    missing = [t for t in want if t not in have]
    if missing:
        raise ScoringError(
            f"{method}: start={s} with {what}={count} needs epochs {s}..{s + count - 1}, but "
            f"{'epoch ' + str(missing[0]) if len(missing) == 1 else f'{len(missing)} of them (first {missing[0]})'} "
            f"{'is' if len(missing) == 1 else 'are'} not recorded; recorded epochs: {recorded_range(recorded)}. "
            f"Lower {what} or choose start within the recorded range."
        )
    return want


class _NpyRows:
    """Reads rows ``a:b`` of a C-ordered 2-D ``.npy`` file without loading (or mapping) the rest.

    With ``hash_rows=True`` the SHA-256 of the file is computed from the same reads when the rows
    are requested in order (``0:b1, b1:b2, ...``), so checking the checksum costs no second read.
    """

    def __init__(self, path: Path, *, hash_rows: bool = False):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:  # pragma: no cover - np.save writes 1.0/2.0 for plain float arrays
                    raise ValueError(f"unsupported .npy version {version}")
            except ValueError as e:
                raise ArtifactError(f"{self.path} is not a valid .npy file ({e}); delete it and rerun training.") from e
            self.offset = f.tell()
            f.seek(0)
            header = f.read(self.offset)
        if fortran or len(shape) != 2 or dtype.hasobject:
            raise ArtifactError(f"{self.path} is not a C-ordered 2-D numeric array (shape {shape}); rerun training.")
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self.data_end = self.offset + self.shape[0] * self.row_bytes
        size = self.path.stat().st_size
        if size < self.data_end:
            raise ArtifactError(f"{self.path} is truncated ({size} of {self.data_end} bytes); delete it and rerun training.")
        self._hash = hashlib.sha256(header) if hash_rows else None
        self._next = 0
        self._fd: Optional[int] = None

    def rows(self, a: int, b: int) -> np.ndarray:
        arr = np.empty((b - a) * self.shape[1], dtype=self.dtype)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        want = arr.nbytes
        got = os.preadv(self._fd, [memoryview(arr).cast("B")], self.offset + a * self.row_bytes) if want else 0
        if got != want:
            raise ArtifactError(f"{self.path} is truncated; delete it and rerun training.")
        if self._hash is not None:
            if a == self._next:
                self._hash.update(arr)
                self._next = b
            else:  # out-of-order reads: fall back to hashing the file at the end
                self._hash = None
        return arr.reshape(b - a, self.shape[1])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # pragma: no cover - safety net; EpochBlocks.close() is the normal path
        try:
            self.close()
        except Exception:
            pass

    def sha256(self) -> str:
        """SHA-256 of the whole file: from the in-order reads when they covered every row, else by
        reading the file."""
        if self._hash is not None and self._next == self.shape[0]:
            h = self._hash.copy()
            with open(self.path, "rb") as f:
                f.seek(self.data_end)
                h.update(f.read())
            return h.hexdigest()
        return sha256_file(self.path)


class EpochBlocks:
    """Row-block access to some epochs of a ``tdds-dynamics/1`` folder.

    Only the requested rows of an epoch file are read, so memory is bounded by the block size
    rather than by ``N x C``. When the dynamics were opened with ``verify=True`` every file's
    SHA-256 is computed from those same reads and compared with the manifest by :meth:`finish`
    (call it before trusting anything computed from the rows).
    """

    def __init__(self, dynamics: Dynamics, epochs: Sequence[int]):
        self.dynamics = dynamics
        self.verify = bool(dynamics.verify)
        self.num_samples = int(dynamics.num_samples)
        self.num_classes = int(dynamics.num_classes)
        self.readers: dict[int, _NpyRows] = {}
        files = dynamics.manifest.get("files", {})
        for t in epochs:
            name = epoch_file(t)
            path = dynamics.folder / name
            if self.verify and name not in files:
                raise ArtifactError(f"{path} is not listed in {dynamics.folder / 'manifest.json'}; the artifact is "
                                    "incomplete, rerun its stage.")
            if not path.is_file():
                raise ArtifactError(f"{path} is missing; rerun the training stage.")
            r = _NpyRows(path, hash_rows=self.verify)
            if r.shape != (self.num_samples, self.num_classes):
                raise ArtifactError(f"{path} has shape {r.shape}, manifest says ({self.num_samples}, "
                                    f"{self.num_classes}); delete it and rerun training.")
            self.readers[int(t)] = r
        self.itemsize = max((r.dtype.itemsize for r in self.readers.values()), default=4)

    def rows(self, t: int, a: int, b: int) -> np.ndarray:
        return self.readers[int(t)].rows(a, b)

    def check(self, t: int) -> None:
        """Compare epoch ``t``'s file with its manifest checksum (no-op without verification)."""
        if not self.verify:
            return
        r = self.readers[int(t)]
        expected = self.dynamics.manifest["files"][r.path.name]["sha256"]
        digest = r.sha256()
        if digest != expected:
            raise ArtifactError(
                f"{r.path} is corrupt: SHA-256 {digest[:12]}... does not match the manifest's {expected[:12]}...; "
                "delete the folder and rerun the stage."
            )

    def finish(self) -> None:
        """Check every epoch file read through this object against the manifest."""
        for t in self.readers:
            self.check(t)

    def close(self) -> None:
        for r in self.readers.values():
            r.close()

    def count_nonfinite(self, t: int) -> tuple[int, int]:
        """(count, first row) of rows with NaN/Inf in epoch ``t``, scanning it in blocks."""
        count, first = 0, -1
        r = self.readers[int(t)]
        scan = _NpyRows(r.path)
        try:
            for a, b in row_chunks(self.num_samples, self.num_classes):
                bad = ~finite_rows(scan.rows(a, b))
                if bad.any():
                    if first < 0:
                        first = a + int(np.flatnonzero(bad)[0])
                    count += int(bad.sum())
        finally:
            scan.close()
        return count, first


def blockable(dynamics: Any) -> bool:
    """True when rows of an epoch can be read without loading the whole epoch (tdds folders)."""
    return isinstance(dynamics, Dynamics)


def stream_chunks(epochs: Iterable[Any], *, n: Optional[int] = None) -> Iterator[tuple[Any, np.ndarray]]:
    """Normalise an epoch iterable to ``(t, array)`` pairs with consistent shapes."""
    c = None
    for i, item in enumerate(epochs):
        t, arr = split_item(item, i)
        arr = check_block(arr, n, c, t)
        n, c = arr.shape
        yield t, arr
