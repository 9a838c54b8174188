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

from concurrent.futures import Future, ThreadPoolExecutor
from collections import deque
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from ..errors import ScoringError
from ._common import (EpochBlocks, NonFiniteError, blockable, check_labels, check_policy, contiguous_epochs,
                      finish_skipped, finite_rows, split_item)
from ._registry import Option, register_method, resolve_params
from ._tdds_kernel import (AGGREGATES, DTYPES, INNERS, TddsAccumulator, _kl_term_, _log_eps, _prefetched, _scratch_scope,
                           _window_score, auto_block_rows, check_tdds_combination, check_tdds_options, default_workers,
                           window_weights)
from ._view import ColumnView, open_view

__all__ = ["tdds", "tdds_from_epochs", "tdds_from_array", "tdds_from_statistics", "TddsAccumulator", "window_weights",
           "auto_block_rows"]

OPTIONS = {
    "T": Option(30, int, min=2, doc="trajectory length in epochs"),
    "W": Option(10, int, min=2, doc="window size in epochs"),
    "decay": Option(0.9, float, min=0, max=1, min_open=True, doc="EMA beta", hint="the authors use 0.9"),
    "start": Option(None, int, doc="first epoch"),
    "inner": Option("kl", choices=INNERS),
    "signed": Option(False, bool),
    "aggregate": Option("ema", choices=AGGREGATES),
    "dtype": Option("float64", choices=tuple(DTYPES)),
    "block_rows": Option(None, int, min=1, doc="rows per block"),
    "workers": Option(None, int, min=1, doc="threads"),
}


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
    return finish_skipped(*_streamed(epochs, labels, T=T, W=W, decay=decay, inner=inner, signed=signed,
                                     aggregate=aggregate, dtype=dtype, inputs=inputs, nan_policy=nan_policy,
                                     block_rows=block_rows, workers=workers), "tdds")


def _streamed(epochs: Iterable[Any], labels: Optional[np.ndarray], *, T: int, W: int, decay: float, inner: str,
              signed: bool, aggregate: str, dtype: str, inputs: str, nan_policy: str, block_rows: Optional[int],
              workers: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`tdds_from_epochs` before the rows with NaN/Inf inputs get -inf: ``(scores, bad rows)``."""
    check_tdds_options(T=T, W=W, decay=decay, inner=inner, signed=signed, aggregate=aggregate, dtype=dtype,
                       inputs=inputs)
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
    return scores, bad


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


def _pair_terms(view: ColumnView, ts: list[int], inner: str, signed: bool) -> Iterator[np.ndarray]:
    """The ``T - 1`` inner terms of the trajectory ``ts`` from the statistics columns (pair
    ``(ts[i], ts[i+1])`` -> term i): ``kl``/``kl_signed`` of the newer epoch, the difference of
    ``ce``, or ``el2n`` of the newer epoch."""
    if inner == "loss":
        prev = view.column(ts[0], "ce")
        for t in ts[1:]:
            cur = view.column(t, "ce")
            yield cur - prev if signed else np.abs(cur - prev)
            prev = cur
    else:
        yield from view.columns(ts[1:], ("kl_signed" if signed else "kl") if inner == "kl" else "el2n")


def tdds_from_statistics(stats: Any, *, T: int = 30, W: int = 10, decay: float = 0.9, start: Optional[int] = None,
                         inner: str = "kl", signed: bool = False, aggregate: str = "ema") -> np.ndarray:
    """TDDS scores from recorded statistics (:func:`tdds_core.statistics.open_statistics`), for any
    ``(T, W, decay, start)`` chosen after training: the method over their columns. float64 ``(N,)``
    (NaN where a term is NaN), higher = keep first."""
    opts = resolve_params("tdds", T=T, W=W, decay=decay, start=start, inner=inner, signed=signed, aggregate=aggregate)
    return tdds(open_view(stats, nan_policy="skip", method="tdds"), **opts)


@register_method("tdds", options=OPTIONS, weighting="batch", check=check_tdds_combination,
                 epochs_read=lambda p, epochs: (p["start"] or 0) + p["T"])
def tdds(view: ColumnView, *, T: int, W: int, decay: float, start: Optional[int], inner: str, signed: bool,
         aggregate: str, dtype: str, block_rows: Optional[int], workers: Optional[int]) -> np.ndarray:
    """TDDS scores of every sample of the recording (see the module docstring for the formula).

    Parameters
    ----------
    view : ColumnView
        The recording. Logits (``Dynamics``, the fast blocked path; ``ReferenceDynamics``, whose
        epoch probability matrix is the authors' one: softmax per visit, summed by sample index,
        zero rows for unvisited samples) or statistics (the stored ``kl``, ``ce`` or ``el2n`` terms).
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

    Returns
    -------
    np.ndarray
        float64 ``(N,)``; higher = keep first.
    """
    ts = contiguous_epochs(view, start, int(T), method="tdds", what="T")
    opts = dict(T=int(T), W=int(W), decay=float(decay), inner=inner, signed=bool(signed), aggregate=aggregate, dtype=dtype)
    if view.is_statistics:      # the stored terms, added as they are (no softmax: "inner" names no kernel here)
        acc = TddsAccumulator(view.num_samples, labels=None, nan_policy="skip", **{**opts, "inner": "kl"})
        for d in _pair_terms(view, ts, inner, signed):
            acc.add_term(d)
        return acc.result()
    source = view.source
    labels = view.labels if view.has_labels or inner != "kl" else None   # (checked when present, as always)
    perf = dict(block_rows=block_rows, workers=workers, nan_policy=view.nan_policy)
    if hasattr(source, "iter_tdds_inputs"):  # the authors' layout: their per-index probabilities (ReferenceDynamics)
        scores, bad = _streamed(source.iter_tdds_inputs(ts[0], ts[-1] + 1), labels, inputs="probs", **opts, **perf)
    elif not blockable(source):
        scores, bad = _streamed(source.iter_epochs(ts[0], ts[-1] + 1), labels, inputs="logits", **opts, **perf)
    else:
        scores, bad = _tdds_blocked(EpochBlocks(source, ts), ts, labels, opts, block_rows, workers, view.nan_policy)
    view.mark_bad(bad)
    return scores


def _tdds_blocked(src: EpochBlocks, ts: list[int], labels: Optional[np.ndarray], opts: dict,
                  block_rows: Optional[int], workers: Optional[int], nan_policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Row blocks of a tdds folder: the calling thread reads each block's rows of the T epochs in
    file order (so the checksums are computed from these reads) while ``workers`` threads run the
    accumulators; at most ``workers + 1`` blocks (each at most ``PREFETCH_BYTES`` of logits) are in
    memory. Returns ``(scores, bad rows)``."""
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
    return scores, bad


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


