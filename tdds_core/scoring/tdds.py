"""TDDS: Temporal Dual-Depth Scoring (Zhang et al., "Spanning Training Progress: Temporal Dual-Depth
Scoring (TDDS) for Enhanced Dataset Pruning", CVPR 2024, arXiv:2311.13613).

Default semantics are those of the authors' ``importance_evaluation.py`` (docs: tdds-facts.md).
For epochs ``t = start .. start+T-1`` of the recorded trajectory:

* ``p_t = softmax(logits_t)`` (float64 by default; computed as ``exp(x - max) * (1 / sum)``);
* inner depth, one term per consecutive pair:
  ``d_t = sum_c | p_{t+1,c} * (log(p_{t+1,c} + 1e-8) - log(p_{t,c} + 1e-8)) |``;
* outer depth, one score per window start ``k = 0 .. T-W`` over the ``W-1`` terms
  ``d_k .. d_{k+W-2}``: ``s_k = || d - mean(d) ||_2`` (a scaled standard deviation);
* ``score = sum_k w_k s_k`` with ``w_k = decay * (1 - decay) ** (T - W - k)`` (the newest window
  weighs ``decay``).

Higher score = more important = keep first (the paper's direction; nothing is flipped).

numpy only (no torch: the scoring path imports no deep-learning framework).

Streaming: each epoch is read and soft-maxed once; the accumulator keeps the previous epoch's
per-class state and a ring of the last ``W-1`` terms, so memory does not grow with ``T``. For
``tdds-dynamics/1`` folders the work runs over row blocks, so memory is bounded by the block as
well (``N x C`` is never held). ``W = 2`` is allowed but degenerate: each window holds one term,
whose deviation from its own mean is 0, so every score is 0 (as in the authors' code).

Ablation options (paper sections 5.3-5.4): ``inner="loss"`` (cross-entropy difference
``|CE_{t+1} - CE_t|`` with ``CE = -log(p_y + 1e-8)``), ``inner="el2n"`` (the pair's term is the
EL2N score ``||p_{t+1} - onehot(y)||_2`` of its newer epoch: the paper's "EL2N + outer" of Table 5),
``signed=True`` (no absolute value: ``d_t = sum_c p_{t+1,c} (log(p_{t+1,c}+1e-8) - log(p_{t,c}+1e-8))``,
or ``CE_{t+1} - CE_t``), ``aggregate="mean"`` (simple average over windows instead of the EMA).
"""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from ..errors import ScoringError
from ._common import (EPS, EpochBlocks, NanGuard, NonFiniteError, blockable, check_labels, check_policy,
                      contiguous_epochs, dynamics_labels, finish_skipped, finite_rows, split_item)
from ._registry import export, register_method

__all__ = ["tdds", "tdds_from_epochs", "tdds_from_array", "TddsAccumulator", "window_weights", "auto_block_rows"]

INNERS = ("kl", "loss", "el2n")
AGGREGATES = ("ema", "mean")
DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32)}
INPUTS = ("logits", "probs")

#: values per row block of the blocked path (rows = BLOCK_ELEMENTS // C): a block's buffers stay in
#: the L2 cache and each operation on it runs in one thread (parallelism comes from workers)
BLOCK_ELEMENTS = 1 << 16
#: bytes of stored logits read ahead for one block (all T epochs of its rows)
PREFETCH_BYTES = 1 << 22


def _check_options(T: int, W: int, decay: float, inner: str, signed: bool, aggregate: str, dtype: str,
                   inputs: str) -> None:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 2:
        raise ScoringError(f"T (trajectory length in epochs) must be an integer >= 2, got {T!r}")
    if isinstance(W, bool) or not isinstance(W, (int, np.integer)) or W < 2:
        raise ScoringError(f"W (window size in epochs) must be an integer >= 2, got {W!r}")
    if W > T:
        raise ScoringError(f"window W={W} is longer than the trajectory T={T}; use W <= T (e.g. T=30, W=10)")
    if isinstance(decay, bool) or not isinstance(decay, (int, float, np.floating)) or not (0.0 < float(decay) <= 1.0):
        raise ScoringError(f"decay (EMA beta) must be in (0, 1], got {decay!r}; the authors use 0.9")
    if inner not in INNERS:
        raise ScoringError(f"inner must be one of {', '.join(INNERS)}, got {inner!r}")
    if aggregate not in AGGREGATES:
        raise ScoringError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    if dtype not in DTYPES:
        raise ScoringError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if inputs not in INPUTS:
        raise ScoringError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    if not isinstance(signed, (bool, np.bool_)):
        raise ScoringError(f"signed must be true or false, got {signed!r}")
    if signed and inner == "el2n":
        raise ScoringError("signed=True has no meaning for inner='el2n' (EL2N is a norm); use inner='kl' or 'loss'")


@export
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


@export
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
        _check_options(T, W, decay, inner, signed, aggregate, dtype, inputs)
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


@export
def tdds_from_epochs(epochs: Iterable[Any], labels: Optional[np.ndarray] = None, *, T: int, W: int = 10,
                     decay: float = 0.9, inner: str = "kl", signed: bool = False, aggregate: str = "ema",
                     dtype: str = "float64", inputs: str = "logits", nan_policy: str = "raise",
                     block_rows: Optional[int] = None, workers: Optional[int] = None) -> np.ndarray:
    """TDDS from an iterable of epochs, streamed (the first ``T`` items are consumed).

    Parameters
    ----------
    epochs : iterable of array ``[N, C]``, of ``(t, array)`` pairs or of ``(t, array, kind)`` triples
        Logits (any float dtype; converted to ``dtype`` before the softmax), or probabilities when
        ``inputs="probs"`` (rows need not sum to 1: the authors' per-index sums are used as given).
        A triple's ``kind`` ("logits" or "probs") overrides ``inputs`` for that epoch. Never modified.
    labels : array ``(N,)`` of int, optional
        Needed for ``inner="loss"`` and ``inner="el2n"``; checked against N and C when given.
    T, W, decay, inner, signed, aggregate, dtype, nan_policy
        See the module docstring.
    block_rows, workers : int, optional
        Performance only: each epoch is processed in row blocks of ``block_rows`` (default
        ``BLOCK_ELEMENTS // C``) by ``workers`` threads (default: the usable CPUs, at most 8).

    Returns
    -------
    np.ndarray
        float64 ``(N,)``; higher = keep first. Samples with NaN/Inf inputs under
        ``nan_policy="skip"`` get ``-inf``.
    """
    _check_options(T, W, decay, inner, signed, aggregate, dtype, inputs)
    check_policy(nan_policy)
    opts = dict(T=int(T), W=int(W), decay=float(decay), inner=inner, signed=bool(signed), aggregate=aggregate,
                dtype=dtype, inputs=inputs)
    accs: list[TddsAccumulator] = []
    spans: list[tuple[int, int]] = []
    n = c = None
    nworkers = default_workers() if workers is None else int(workers)
    # the next epoch is read (a reader thread) while this one is computed
    it = _prefetched(epochs, int(T)) if nworkers > 1 else iter(epochs)
    with ThreadPoolExecutor(max_workers=max(1, nworkers), thread_name_prefix="tdds") as pool, _scratch_scope():
        for i in range(int(T)):
            try:
                item = next(it)
            except StopIteration:
                raise ScoringError(f"TDDS needs T={T} epochs but the input held only {i}; lower T or record more epochs") from None
            kind = None
            if isinstance(item, tuple) and len(item) == 3:
                t, arr, kind = item
            else:
                t, arr = split_item(item, i)
            shape = tuple(getattr(arr, "shape", ()))
            if len(shape) != 2:
                raise ScoringError(f"epoch {t}: expected a 2-D [N, C] array, got shape {shape or None}")
            if n is None:
                n, c = shape
                y = None if labels is None else check_labels(labels, n, c)
                rows = int(block_rows) if block_rows else auto_block_rows(n, c)
                spans = [(a, min(n, a + rows)) for a in range(0, max(n, 1), rows)]
                accs = [TddsAccumulator(b - a, labels=None if y is None else y[a:b], nan_policy=nan_policy, row_offset=a,
                                        **opts) for a, b in spans]
            elif shape[0] != n:
                raise ScoringError(f"epoch {t} has {shape[0]} rows but earlier epochs had {n}")
            elif shape[1] != c:
                raise ScoringError(f"epoch {t} has {shape[1]} classes but earlier epochs had {c}")
            def run(part: range, arr: Any = arr, t: Any = t, kind: Any = kind) -> None:
                for j in part:
                    a, b = spans[j]
                    accs[j].update(arr[a:b], epoch=t, inputs=kind)

            try:
                if nworkers <= 1 or len(accs) == 1:
                    run(range(len(accs)))
                else:   # one task per worker: a contiguous run of cache-sized blocks
                    step = -(-len(accs) // nworkers)
                    for f in [pool.submit(run, range(j, min(len(accs), j + step))) for j in range(0, len(accs), step)]:
                        f.result()
            except NonFiniteError as e:  # report the whole epoch, not one block
                bad_rows = ~finite_rows(np.asarray(arr))
                raise NonFiniteError(t, int(bad_rows.sum()), int(np.flatnonzero(bad_rows)[0])) from e
    scores = np.concatenate([acc.result() for acc in accs]) if accs else np.zeros(0)
    bad = np.concatenate([acc.bad for acc in accs]) if accs else np.zeros(0, dtype=bool)
    return finish_skipped(scores, bad, "tdds")


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
    import itertools
    import queue

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


@export
def tdds_from_array(logits: np.ndarray, labels: Optional[np.ndarray] = None, *, W: int = 10, decay: float = 0.9,
                    inner: str = "kl", signed: bool = False, aggregate: str = "ema", dtype: str = "float64",
                    inputs: str = "logits", nan_policy: str = "raise") -> np.ndarray:
    """One-shot TDDS of a whole trajectory ``[T, N, C]`` held in memory: all ``T-1`` terms are
    computed first, then every window from slices of them. Same numbers as the streaming
    :func:`tdds_from_epochs` (kept for checking it); memory grows with ``T``."""
    x = np.asarray(logits)
    if x.ndim != 3:
        raise ScoringError(f"expected a [T, N, C] array, got shape {x.shape}")
    T, n, c = x.shape
    y = None if labels is None else check_labels(labels, n, c)
    acc = TddsAccumulator(n, T=T, W=W, decay=decay, inner=inner, signed=signed, aggregate=aggregate, dtype=dtype,
                          inputs=inputs, labels=y, nan_policy=nan_policy)
    # every epoch's state kept at once, then all T-1 terms, with the accumulator's own kernel
    probs = [acc._load(x[t], None, t) for t in range(T)]
    if inner == "kl":
        logs = [_log_eps(p, np.empty_like(p)) for p in probs]
        terms = [_kl_term_(logs[t].copy(), logs[t + 1], probs[t + 1], acc.signed) for t in range(T - 1)]
    else:
        small = [acc._small_state(p) for p in probs]
        terms = [acc._small_term(small[t], small[t + 1]) for t in range(T - 1)]
    D = np.stack([d.astype(np.float64, copy=False) for d in terms])  # [T-1, N]
    weights = window_weights(T, W, decay, aggregate)
    score = np.zeros(n, dtype=np.float64)
    for k, w in enumerate(weights):
        score += w * _window_score(D[k:k + W - 1])
    if aggregate == "mean":
        score /= len(weights)
    return finish_skipped(score, acc.bad, "tdds")


def auto_block_rows(num_samples: int, num_classes: int, epochs: int = 1, itemsize: int = 0) -> int:
    """Rows per block: ``BLOCK_ELEMENTS // C``, and no more than fit ``PREFETCH_BYTES`` when a block
    of ``epochs`` epochs (``itemsize`` bytes a value) is read ahead, so memory stays flat in T."""
    c = max(1, int(num_classes))
    rows = BLOCK_ELEMENTS // c
    if itemsize:
        rows = min(rows, PREFETCH_BYTES // (int(epochs) * c * int(itemsize)))
    return max(1, min(int(num_samples), rows))


def _check(T: int, W: int, decay: float, inner: str, signed: bool, aggregate: str, dtype: str) -> None:
    _check_options(T, W, decay, inner, signed, aggregate, dtype, "logits")


def _tdds_stats(stats: Any, *, T: int = 30, W: int = 10, decay: float = 0.9, start: Optional[int] = None,
                inner: str = "kl", signed: bool = False, aggregate: str = "ema", dtype: str = "float64",
                block_rows: Optional[int] = None, workers: Optional[int] = None, nan_policy: str = "raise") -> np.ndarray:
    """TDDS from per-sample statistics (:func:`tdds_core.statistics.tdds_from_statistics`); the
    performance options do not apply (the statistics are already a few numbers per sample)."""
    from ..statistics import finite_scores, tdds_from_statistics

    _check_options(T, W, decay, inner, signed, aggregate, dtype, "logits")
    check_policy(nan_policy)
    scores = tdds_from_statistics(stats, T=T, W=W, decay=decay, start=start, inner=inner, signed=signed,
                                  aggregate=aggregate)
    return finite_scores(scores, nan_policy, "tdds")


@register_method("tdds", weighting="batch", check=_check, stats=_tdds_stats)
def tdds(dynamics: Any, *, T: int = 30, W: int = 10, decay: float = 0.9, start: Optional[int] = None,
         inner: str = "kl", signed: bool = False, aggregate: str = "ema", dtype: str = "float64",
         block_rows: Optional[int] = None, workers: Optional[int] = None, nan_policy: str = "raise") -> np.ndarray:
    """TDDS scores of every sample of ``dynamics`` (see the module docstring for the formula).

    Parameters
    ----------
    dynamics : Dynamics or ReferenceDynamics
        Per-epoch ``[N, C]`` logits. For the authors' layout (``ReferenceDynamics``) each epoch's
        probability matrix is the authors' one (softmax per visit, summed by sample index, zero rows
        for unvisited samples; for an epoch that visits every sample once, simply the softmax of its
        logits in sample order).
    T : int
        Trajectory length: epochs ``start .. start+T-1`` (all must be recorded). Default 30.
    W : int
        Window size in epochs, ``2 <= W <= T``. Default 10.
    decay : float
        EMA coefficient beta in ``(0, 1]``. Default 0.9.
    start : int, optional
        First epoch of the trajectory (default: the first recorded epoch, 0 for a full run).
    inner : {"kl", "loss", "el2n"}
    signed : bool
    aggregate : {"ema", "mean"}
    dtype : {"float64", "float32"}
        Compute precision (float32 is faster; scores then differ in the last digits).
    block_rows : int, optional
        Rows per block for tdds folders (performance only; default ``BLOCK_ELEMENTS // C``).
    workers : int, optional
        Threads computing blocks in parallel (performance only; default: the usable CPUs, at most 8).
    nan_policy : {"raise", "skip"}

    Returns
    -------
    np.ndarray
        float64 ``(N,)``; higher = keep first.
    """
    _check_options(T, W, decay, inner, signed, aggregate, dtype, "logits")
    check_policy(nan_policy)
    for name, v in (("block_rows", block_rows), ("workers", workers)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ScoringError(f"{name} must be a positive integer, got {v!r}")
    ts = contiguous_epochs(dynamics, start, int(T), method="tdds", what="T")
    labels = dynamics_labels(dynamics, required=inner != "kl", method=f"tdds with inner={inner!r}")
    opts = dict(T=int(T), W=int(W), decay=float(decay), inner=inner, signed=bool(signed), aggregate=aggregate, dtype=dtype)

    perf = dict(block_rows=block_rows, workers=workers)
    iter_inputs = getattr(dynamics, "iter_tdds_inputs", None)
    if iter_inputs is not None:  # the authors' layout: their per-index probabilities (see ReferenceDynamics)
        return tdds_from_epochs(iter_inputs(ts[0], ts[-1] + 1), labels, inputs="probs", nan_policy=nan_policy,
                                **opts, **perf)
    if not blockable(dynamics):
        return tdds_from_epochs(dynamics.iter_epochs(ts[0], ts[-1] + 1), labels, nan_policy=nan_policy, **opts, **perf)

    src = EpochBlocks(dynamics, ts)
    return _tdds_blocked(src, ts, labels, opts, block_rows, workers, nan_policy)


def _tdds_blocked(src: EpochBlocks, ts: list[int], labels: Optional[np.ndarray], opts: dict,
                  block_rows: Optional[int], workers: Optional[int], nan_policy: str) -> np.ndarray:
    """Row blocks of a tdds folder: the calling thread reads each block's rows of the T epochs in
    file order (so the checksums are computed from these reads) while ``workers`` threads run the
    accumulators; at most ``workers + 1`` blocks (each at most ``PREFETCH_BYTES`` of logits) are in
    memory."""
    n = src.num_samples
    rows = int(block_rows) if block_rows else auto_block_rows(n, src.num_classes, len(ts), src.itemsize)
    nworkers = default_workers() if workers is None else int(workers)
    scores = np.empty(n, dtype=np.float64)
    bad = np.zeros(n, dtype=bool)

    def work(a: int, b: int, blocks: list) -> None:
        acc = TddsAccumulator(b - a, labels=None if labels is None else labels[a:b], nan_policy=nan_policy,
                              row_offset=a, **opts)
        for t, arr in zip(ts, blocks):
            acc.update(arr, epoch=t)
        scores[a:b] = acc.result()
        bad[a:b] = acc.bad

    def settle(fut: Any) -> None:
        try:
            fut.result()
        except NonFiniteError as e:  # a damaged file first; else report the whole epoch, not one block
            src.check(e.epoch)
            count, first = src.count_nonfinite(e.epoch)
            raise NonFiniteError(e.epoch, count, first) from e

    starts = range(0, n, rows)
    try:
        with _scratch_scope():
            _run_blocks(src, ts, starts, rows, n, nworkers, work, settle)
        src.finish()
    finally:
        src.close()
    return finish_skipped(scores, bad, "tdds")


def _run_blocks(src: EpochBlocks, ts: list[int], starts: range, rows: int, n: int, nworkers: int, work: Any,
                settle: Any) -> None:
    if nworkers <= 1:
        for a in starts:
            b = min(n, a + rows)
            fut: Future = Future()
            try:
                work(a, b, [src.rows(t, a, b) for t in ts])
                fut.set_result(None)
            except BaseException as e:  # noqa: BLE001 - re-raised by settle
                fut.set_exception(e)
            settle(fut)
    else:
        with ThreadPoolExecutor(max_workers=nworkers, thread_name_prefix="tdds") as pool:
            pending: deque = deque()
            try:
                for a in starts:
                    b = min(n, a + rows)
                    pending.append(pool.submit(work, a, b, [src.rows(t, a, b) for t in ts]))
                    while len(pending) > nworkers:
                        settle(pending.popleft())
                while pending:
                    settle(pending.popleft())
            finally:
                for f in pending:
                    f.cancel()


def default_workers() -> int:
    """Threads for the blocked path: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))
