"""TDDS's per-epoch kernel (:class:`TddsAccumulator`: softmax, inner terms, windows) and the
machinery of its fast paths (per-thread scratch buffers, the read-ahead thread, block sizes). The
method and its entry points are in :mod:`tdds_core.scoring.tdds`; this module holds no formula of
its own beyond those of its docstring."""
from __future__ import annotations

import itertools
import os
import queue
import threading
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from ..errors import ScoringError
from ._common import EPS, NanGuard, check_policy
from ._registry import check_option

__all__ = ["TddsAccumulator", "window_weights", "auto_block_rows", "default_workers", "check_tdds_options",
           "check_tdds_combination", "INNERS", "AGGREGATES", "DTYPES", "INPUTS"]

INNERS = ("kl", "loss", "el2n")
AGGREGATES = ("ema", "mean")
DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32)}
INPUTS = ("logits", "probs")

#: values per row block of the blocked path (rows = BLOCK_ELEMENTS // C): a block's buffers stay in
#: the L2 cache and each operation on it runs in one thread (parallelism comes from workers)
BLOCK_ELEMENTS = 1 << 16
#: bytes of stored logits read ahead for one block (all T epochs of its rows)
PREFETCH_BYTES = 1 << 22


def check_tdds_combination(opts: dict) -> None:
    """The checks that span TDDS options (the registry's ``check`` of method "tdds")."""
    if opts["W"] > opts["T"]:
        raise ScoringError(f"window W={opts['W']} is longer than the trajectory T={opts['T']}; use W <= T (e.g. T=30, W=10)")
    if opts["signed"] and opts["inner"] == "el2n":
        raise ScoringError("signed=True has no meaning for inner='el2n' (EL2N is a norm); use inner='kl' or 'loss'")


def check_tdds_options(*, inputs: str = "logits", **opts: Any) -> None:
    """TDDS options given to an array-level entry point, checked as the registry checks method
    "tdds" (:func:`~tdds_core.scoring._registry.check_option`), and ``inputs``."""
    for k, v in opts.items():
        check_option("tdds", k, v)
    check_tdds_combination(opts)
    if inputs not in INPUTS:
        raise ScoringError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")


def window_weights(T: int, W: int, decay: float = 0.9, aggregate: str = "ema") -> list[float]:
    """Weight of each window ``k = 0 .. T-W``: ``decay * (1-decay)**(T-W-k)`` ("ema") or 1 ("mean",
    divided by the number of windows at the end)."""
    K = T - W + 1
    if aggregate == "mean":
        return [1.0] * K
    return [float(decay) * (1.0 - float(decay)) ** (T - W - k) for k in range(K)]


def _rowsum(A: np.ndarray) -> np.ndarray:
    """Sum over axis 0, adding rows one after the other (numpy's own reduction switches to pairwise
    summation for a single column, which would make scores depend on the block size)."""
    total = A[0].copy()
    for r in range(1, A.shape[0]):
        total += A[r]
    return total


def _window_scores(ring: Any, rows: int = 1 << 16) -> np.ndarray:
    """:func:`_window_score` of the window ``ring`` (``W-1`` arrays ``(n,)``, oldest first), in row
    chunks: the same numbers (each sample's score is its own column), temporaries of one chunk."""
    terms = list(ring)
    n = len(terms[0])
    if n <= rows:
        return _window_score(np.stack(terms))
    out = np.empty(n, dtype=np.float64)
    for a in range(0, n, rows):
        out[a:a + rows] = _window_score(np.stack([d[a:a + rows] for d in terms]))
    return out


def _window_score(D: np.ndarray) -> np.ndarray:
    """``[W-1, n]`` terms of one window (oldest first) -> L2 norm of their deviation from the mean."""
    m = _rowsum(D) / D.shape[0]
    dev = D - m
    return np.sqrt(_rowsum(dev * dev))


def _source_array(x: Any) -> np.ndarray:
    """``x`` as a 2-D numpy array (a CPU tensor or any array-like converts without a copy)."""
    arr = np.asarray(x)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


# -- the per-epoch kernel (shared by the streaming and the one-shot paths, so both compute the
#    same numbers operation for operation). Row sums reduce a C-contiguous [n, C] array over its
#    last axis: numpy sums each row on its own (pairwise within the row), so a row's value does
#    not depend on how many rows the block holds. ------------------------------------------------
def _row_sums(x: np.ndarray) -> np.ndarray:
    """``(n,)`` sums of the rows of a C-contiguous ``[n, C]`` array, each row on its own (einsum's
    contiguous inner loop: twice as fast as ``sum(axis=1)``; float32 input is summed in float64)."""
    if x.dtype != np.float64:
        return x.sum(axis=1, dtype=np.float64)
    return np.einsum("ij->i", x)


def _softmax_(x: np.ndarray, row_max: np.ndarray) -> np.ndarray:
    """Row-wise softmax in place: ``exp(x - max) * (1 / sum(exp(x - max)))``."""
    x -= row_max
    np.exp(x, out=x)
    s = _row_sums(x).astype(x.dtype, copy=False)[:, None]
    np.reciprocal(s, out=s)
    x *= s
    return x


#: bounds on a row's sum of exp(logits) within which the softmax needs no max shift: the largest
#: term is then far from overflow and from the denormals (logits within about -460 .. 690)
UNSHIFTED_RANGE = (1e-200, 1e300)


def _softmax_unshifted_(x: np.ndarray) -> bool:
    """Row-wise softmax of float64 logits in place without the max shift, ``exp(x) * (1 / sum)``,
    when every row's sum lies in :data:`UNSHIFTED_RANGE` (then it equals the shifted softmax to
    float64 rounding, in two passes fewer). Returns False, with ``x`` overwritten, otherwise."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        np.exp(x, out=x)
        s = _row_sums(x)
    lo, hi = UNSHIFTED_RANGE
    if not (np.all(s >= lo) and np.all(s <= hi)):    # NaN fails both
        return False
    np.reciprocal(s, out=s)
    x *= s[:, None]
    return True


def _log_eps(p: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = log(p + 1e-8)``."""
    np.add(p, EPS, out=out)
    return np.log(out, out=out)


def _kl_term_(L_prev: np.ndarray, L: np.ndarray, p: np.ndarray, signed: bool) -> np.ndarray:
    """``sum_c |p_c (L_c - Lprev_c)|`` per row (``signed``: without the absolute value).
    Overwrites ``L_prev``. Uses ``|a b| = p |Lprev - L|`` for ``p >= 0``, exactly."""
    L_prev -= L
    if not signed:
        np.abs(L_prev, out=L_prev)
    if L_prev.dtype == np.float64:
        d = np.einsum("ij,ij->i", L_prev, p)     # the product and the row sum in one pass
    else:
        L_prev *= p
        d = L_prev.sum(axis=1)
    return np.negative(d, out=d) if signed else d


class TddsAccumulator:
    """Streaming TDDS over one epoch at a time for a fixed set of ``n`` rows.

    Feed exactly ``T`` epochs with :meth:`update` (each ``[n, C]`` logits, or probabilities when
    ``inputs="probs"``), then read :meth:`result`. Memory, whatever ``T``: three ``[n, C]`` work
    buffers in the compute dtype (this epoch's probabilities, its log-probabilities and the previous
    epoch's), a float32 staging buffer for float16 input, and ``W-1`` terms per row. Inputs are
    never modified.
    """

    def __init__(self, num_rows: int, *, T: int, W: int, decay: float = 0.9, inner: str = "kl", signed: bool = False,
                 aggregate: str = "ema", dtype: str = "float64", inputs: str = "logits",
                 labels: Optional[np.ndarray] = None, nan_policy: str = "raise", row_offset: int = 0):
        check_tdds_options(T=T, W=W, decay=decay, inner=inner, signed=signed, aggregate=aggregate, dtype=dtype,
                           inputs=inputs)
        check_policy(nan_policy)
        if inner != "kl" and labels is None:
            raise ScoringError(f"inner={inner!r} needs the training labels; pass labels (CLI: --labels FILE)")
        self.n = int(num_rows)
        self.T, self.W, self.inner, self.signed, self.aggregate, self.inputs = int(T), int(W), inner, bool(signed), aggregate, inputs
        self.cdtype = DTYPES[dtype]
        self.weights = window_weights(self.T, self.W, float(decay), aggregate)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and self.labels.shape != (self.n,):
            raise ScoringError(f"labels have shape {self.labels.shape} but there are {self.n} rows")
        self._y: Optional[np.ndarray] = None if self.labels is None else self.labels.copy()
        self.guard = NanGuard(self.n, nan_policy)
        self.row_offset = int(row_offset)
        self.num_classes: Optional[int] = None
        self.seen = 0
        # the only per-block state kept between epochs: last epoch's log(p + 1e-8) (kl) or per-row
        # value (loss, el2n); this epoch's probabilities and logs live in per-thread scratch buffers
        self._L_prev: Optional[np.ndarray] = None
        self._prev_small: Optional[np.ndarray] = None  # loss/el2n: last epoch's per-row value
        self._ring: deque = deque(maxlen=self.W - 1)
        self._k = 0
        self._terms = 0  # inner terms added (T - 1 for a whole trajectory)
        self._acc = np.zeros(self.n, dtype=np.float64)

    # -- per-epoch kernel --------------------------------------------------------------------
    def _load(self, x: Any, out: Optional[np.ndarray], epoch: Any, inputs: Optional[str] = None) -> np.ndarray:
        """Copy ``x`` into ``out`` (compute dtype), check it and zero skipped rows; -> probabilities."""
        src = _source_array(x)
        if out is None or out.shape != src.shape:
            out = np.empty(src.shape, dtype=self.cdtype)
        if src.dtype == np.float16 and self.cdtype == np.float64:
            # float16 -> float32 -> float64 is exact and faster than the direct conversion
            stage = _scratch("stage", src.shape, np.float32)
            np.copyto(stage, src)
            src = stage
        np.copyto(out, src, casting="unsafe")
        if out.size == 0:
            return out
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(_row_sums(out))     # NaN and +-inf propagate into a row's sum
        bad = None
        if not finite.all():
            bad = self.guard.check(finite, epoch, report_offset=self.row_offset)
            out[bad] = 0.0
        if (inputs or self.inputs) != "logits":
            return out
        if out.dtype == np.float64 and _softmax_unshifted_(out):
            return out
        np.copyto(out, src, casting="unsafe")        # large logits: the max-shifted softmax
        if bad is not None:
            out[bad] = 0.0
        return _softmax_(out, out.max(axis=1, keepdims=True))

    def _small_state(self, p: np.ndarray) -> np.ndarray:
        assert self._y is not None
        if self.inner == "loss":
            return np.log(p[np.arange(self.n), self._y] + EPS)
        q = p.copy()
        q[np.arange(self.n), self._y] -= 1.0
        return np.sqrt((q * q).sum(axis=1))

    def _small_term(self, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        if self.inner == "loss":
            d = prev - cur  # CE_{t+1} - CE_t with CE = -log(p_y + 1e-8)
            return d if self.signed else np.abs(d)
        return cur  # el2n: the newer epoch's EL2N

    def _term(self, x: Any, epoch: Any, inputs: Optional[str] = None) -> Optional[np.ndarray]:
        """Process one epoch; return the pair term with the previous epoch (None for the first)."""
        shape = tuple(getattr(x, "shape", ()))
        p = self._load(x, _scratch("p", shape, self.cdtype) if len(shape) == 2 else None, epoch, inputs)
        if self.inner == "kl":
            L = _take("L", p.shape, p.dtype)
            _log_eps(p, L)
            d = None
            if self._L_prev is not None:
                d = _kl_term_(self._L_prev, L, p, self.signed)
                _give("L", self._L_prev)  # its contents are spent: scratch for the next block
            self._L_prev = L
        else:
            cur = self._small_state(p)
            d = None if self._prev_small is None else self._small_term(self._prev_small, cur)
            self._prev_small = cur
        return None if d is None else d.astype(np.float64, copy=False)

    # -- public ------------------------------------------------------------------------------
    def update(self, x: Any, *, epoch: Any = None, inputs: Optional[str] = None) -> None:
        """Add the next epoch (``[n, C]``); ``inputs`` ("logits"/"probs") overrides the
        accumulator's kind for this epoch."""
        if inputs is not None and inputs not in INPUTS:
            raise ScoringError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
        if self.seen >= self.T:
            raise ScoringError(f"TDDS already received its T={self.T} epochs")
        epoch = self.seen if epoch is None else epoch
        shape = tuple(x.shape)
        if len(shape) != 2 or shape[0] != self.n:
            raise ScoringError(f"epoch {epoch} has shape {shape}, expected ({self.n}, C)")
        if self.num_classes is None:
            self.num_classes = shape[1]
            if self.labels is not None and self.labels.size and (self.labels.min() < 0 or self.labels.max() >= shape[1]):
                raise ScoringError(f"labels range over {self.labels.min()}..{self.labels.max()} but epoch {epoch} "
                                   f"has {shape[1]} classes")
        elif shape[1] != self.num_classes:
            raise ScoringError(f"epoch {epoch} has {shape[1]} classes but earlier epochs had {self.num_classes}")
        d = self._term(x, epoch, inputs)
        if d is not None:
            self.add_term(d)
        self.seen += 1

    def add_term(self, d: np.ndarray) -> None:
        """Add the next pair's inner term ``d`` (float64 ``(n,)``) directly: the path of per-sample
        statistics (:mod:`tdds_core.statistics`), which hold the terms already. :meth:`update` calls
        it with the term of each consecutive pair of epochs, so both paths share the windows."""
        if self._terms >= self.T - 1:
            raise ScoringError(f"TDDS already received the T-1={self.T - 1} inner terms of its T={self.T} epochs")
        self._terms += 1
        self._ring.append(np.asarray(d, dtype=np.float64))
        if len(self._ring) == self.W - 1:
            s = _window_scores(self._ring)
            self._acc += self.weights[self._k] * s
            self._k += 1

    @property
    def bad(self) -> np.ndarray:
        """Rows (of this accumulator) whose inputs had NaN/Inf under ``nan_policy="skip"``."""
        return self.guard.bad

    def result(self) -> np.ndarray:
        """float64 ``[n]`` scores (rows with skipped NaN/Inf inputs are not yet set to -inf)."""
        if self.seen < self.T and self._terms < self.T - 1:
            raise ScoringError(f"TDDS got {self.seen} epochs but T={self.T}; pass {self.T} epochs or lower T")
        out = self._acc.copy()
        if self.aggregate == "mean":
            out /= len(self.weights)
        return out


_SCRATCH = threading.local()


def _pool() -> dict:
    pool = getattr(_SCRATCH, "pool", None)
    if pool is None:
        pool = _SCRATCH.pool = {}
    return pool


def _scratch(name: str, shape: tuple, dtype: Any) -> np.ndarray:
    """This thread's scratch buffer ``name`` of ``shape`` and ``dtype`` (reused between calls)."""
    key = (name, tuple(shape), np.dtype(dtype))
    buf = _pool().get(key)
    if buf is None:
        buf = _pool()[key] = np.empty(shape, dtype=dtype)
    return buf


def _take(name: str, shape: tuple, dtype: Any) -> np.ndarray:
    """A buffer the caller keeps (this thread's spare ``name`` buffer, or a new one)."""
    buf = _pool().pop((name, tuple(shape), np.dtype(dtype)), None)
    return np.empty(shape, dtype=dtype) if buf is None else buf


def _give(name: str, buf: np.ndarray) -> None:
    """Hand ``buf`` back as this thread's spare ``name`` buffer."""
    _pool()[(name, buf.shape, buf.dtype)] = buf


@contextmanager
def _scratch_scope() -> Iterator[None]:
    """Free this thread's scratch buffers when the block ends (worker threads free theirs on exit)."""
    try:
        yield
    finally:
        _SCRATCH.pool = {}


def _prefetched(epochs: Iterable[Any], count: int) -> Iterable[Any]:
    """The first ``count`` items of ``epochs``, each read by a reader thread while the caller works
    on the one before (at most one read ahead); the reader's exceptions are raised here, in order."""
    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def read() -> None:
        try:
            for item in itertools.islice(epochs, count):
                if stop.is_set():
                    break
                q.put((True, item))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            q.put((False, e))
        q.put((True, done))

    reader = threading.Thread(target=read, name="tdds-reader", daemon=True)
    reader.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while reader.is_alive():     # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                reader.join(0.01)


def auto_block_rows(num_samples: int, num_classes: int, epochs: int = 1, itemsize: int = 0) -> int:
    """Rows per block: ``BLOCK_ELEMENTS // C``, and no more than fit ``PREFETCH_BYTES`` when a block
    of ``epochs`` epochs (``itemsize`` bytes a value) is read ahead, so memory stays flat in T."""
    c = max(1, int(num_classes))
    rows = BLOCK_ELEMENTS // c
    if itemsize:
        rows = min(rows, PREFETCH_BYTES // (int(epochs) * c * int(itemsize)))
    return max(1, min(int(num_samples), rows))


def default_workers() -> int:
    """Threads for the blocked path: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))
