"""TDDS: Temporal Dual-Depth Scoring (Zhang et al., "Spanning Training Progress: Temporal Dual-Depth
Scoring (TDDS) for Enhanced Dataset Pruning", CVPR 2024, arXiv:2311.13613).

Default semantics are those of the authors' ``importance_evaluation.py`` (docs: tdds-facts.md).
For epochs ``t = start .. start+T-1`` of the recorded trajectory:

* ``p_t = softmax(logits_t)`` (float64 by default);
* inner depth, one term per consecutive pair:
  ``d_t = sum_c | p_{t+1,c} * (log(p_{t+1,c} + 1e-8) - log(p_{t,c} + 1e-8)) |``;
* outer depth, one score per window start ``k = 0 .. T-W`` over the ``W-1`` terms
  ``d_k .. d_{k+W-2}``: ``s_k = || d - mean(d) ||_2`` (a scaled standard deviation);
* ``score = sum_k w_k s_k`` with ``w_k = decay * (1 - decay) ** (T - W - k)`` (the newest window
  weighs ``decay``).

Higher score = more important = keep first (the paper's direction; nothing is flipped).

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

from collections import deque
from typing import Any, Iterable, Optional

import numpy as np
import torch

from ..errors import ScoringError
from ._common import (EPS, EpochBlocks, NanGuard, NonFiniteError, blockable, check_labels, check_policy,
                      contiguous_epochs, dynamics_labels, finish_skipped, split_item)
from ._registry import register_method

__all__ = ["tdds", "tdds_from_epochs", "tdds_from_array", "TddsAccumulator", "window_weights", "auto_block_rows"]

INNERS = ("kl", "loss", "el2n")
AGGREGATES = ("ema", "mean")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
INPUTS = ("logits", "probs")

#: values per row block of the blocked path (rows = BLOCK_ELEMENTS // C): small enough to stay in cache
BLOCK_ELEMENTS = 1 << 17


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


def window_weights(T: int, W: int, decay: float = 0.9, aggregate: str = "ema") -> list[float]:
    """Weight of each window ``k = 0 .. T-W``: ``decay * (1-decay)**(T-W-k)`` ("ema") or 1 ("mean",
    divided by the number of windows at the end)."""
    K = T - W + 1
    if aggregate == "mean":
        return [1.0] * K
    return [float(decay) * (1.0 - float(decay)) ** (T - W - k) for k in range(K)]


def _window_score(D: np.ndarray) -> np.ndarray:
    """``[W-1, n]`` terms of one window (oldest first) -> L2 norm of their deviation from the mean."""
    m = D.sum(axis=0) / D.shape[0]
    dev = D - m
    return np.sqrt((dev * dev).sum(axis=0))


def _as_tensor(x: Any, cdtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(cdtype)
    arr = np.asarray(x)
    if not arr.flags.writeable or not arr.flags.c_contiguous or arr.dtype.byteorder not in ("=", "|"):
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C", copy=True)
    return torch.from_numpy(arr).to(cdtype)


class TddsAccumulator:
    """Streaming TDDS over one epoch at a time for a fixed set of ``n`` rows.

    Feed exactly ``T`` epochs with :meth:`update` (each ``[n, C]`` logits, or probabilities when
    ``inputs="probs"``), then read :meth:`result`. Memory: the previous epoch's per-class state and
    ``W-1`` terms per row, whatever ``T``.
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
        self._y: Optional[torch.Tensor] = None if self.labels is None else torch.from_numpy(self.labels.copy())
        self.guard = NanGuard(self.n, nan_policy)
        self.row_offset = int(row_offset)
        self.num_classes: Optional[int] = None
        self.seen = 0
        self._prev: Any = None
        self._ring: deque = deque(maxlen=self.W - 1)
        self._k = 0
        self._acc = np.zeros(self.n, dtype=np.float64)

    # -- per-epoch state and pair term -------------------------------------------------------
    def _state(self, xt: torch.Tensor) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        p = torch.softmax(xt, dim=1) if self.inputs == "logits" else xt
        if self.inner == "kl":
            return p, torch.log(p + EPS)
        assert self._y is not None
        if self.inner == "loss":
            py = p.gather(1, self._y.view(-1, 1)).squeeze(1)
            return None, torch.log(py + EPS)
        q = p.clone()
        q[torch.arange(self.n), self._y] -= 1.0
        return None, torch.sqrt((q * q).sum(dim=1))

    def _pair(self, prev: tuple, cur: tuple) -> np.ndarray:
        if self.inner == "kl":
            diff = cur[1] - prev[1]
            if not self.signed:
                diff.abs_()
            diff.mul_(cur[0])
            d = diff.sum(dim=1)
        elif self.inner == "loss":
            d = prev[1] - cur[1]  # CE_{t+1} - CE_t with CE = -log(p_y + 1e-8)
            if not self.signed:
                d = d.abs()
        else:
            d = cur[1]
        return d.to(torch.float64).numpy()

    # -- public ------------------------------------------------------------------------------
    def update(self, x: Any, *, epoch: Any = None) -> None:
        """Add the next epoch (``[n, C]``)."""
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
        xt = _as_tensor(x, self.cdtype)
        finite = torch.isfinite(xt.sum(dim=1, dtype=torch.float64))
        if not bool(finite.all()):
            rows = torch.nonzero(~finite).squeeze(1)
            finite[rows] = torch.isfinite(xt[rows]).all(dim=1)
        bad = self.guard.check(finite.numpy(), epoch, report_offset=self.row_offset) if not bool(finite.all()) else None
        if bad is not None:
            xt = xt.clone()
            xt[torch.from_numpy(bad)] = 0.0
        state = self._state(xt)
        if self._prev is not None:
            self._ring.append(self._pair(self._prev, state))
            if len(self._ring) == self.W - 1:
                s = _window_score(np.stack(self._ring))
                self._acc += self.weights[self._k] * s
                self._k += 1
        self._prev = state
        self.seen += 1

    @property
    def bad(self) -> np.ndarray:
        """Rows (of this accumulator) whose inputs had NaN/Inf under ``nan_policy="skip"``."""
        return self.guard.bad

    def result(self) -> np.ndarray:
        """float64 ``[n]`` scores (rows with skipped NaN/Inf inputs are not yet set to -inf)."""
        if self.seen < self.T:
            raise ScoringError(f"TDDS got {self.seen} epochs but T={self.T}; pass {self.T} epochs or lower T")
        out = self._acc.copy()
        if self.aggregate == "mean":
            out /= len(self.weights)
        return out


def tdds_from_epochs(epochs: Iterable[Any], labels: Optional[np.ndarray] = None, *, T: int, W: int = 10,
                     decay: float = 0.9, inner: str = "kl", signed: bool = False, aggregate: str = "ema",
                     dtype: str = "float64", inputs: str = "logits", nan_policy: str = "raise") -> np.ndarray:
    """TDDS from an iterable of epochs, streamed (the first ``T`` items are consumed).

    Parameters
    ----------
    epochs : iterable of array ``[N, C]`` or of ``(t, array)`` pairs
        Logits (any float dtype; converted to ``dtype`` before the softmax), or probabilities when
        ``inputs="probs"`` (rows need not sum to 1: the authors' per-index sums are used as given).
    labels : array ``(N,)`` of int, optional
        Needed for ``inner="loss"`` and ``inner="el2n"``; checked against N and C when given.
    T, W, decay, inner, signed, aggregate, dtype, nan_policy
        See the module docstring.

    Returns
    -------
    np.ndarray
        float64 ``(N,)``; higher = keep first. Samples with NaN/Inf inputs under
        ``nan_policy="skip"`` get ``-inf``.
    """
    acc: Optional[TddsAccumulator] = None
    it = iter(epochs)
    for i in range(int(T)):
        try:
            item = next(it)
        except StopIteration:
            raise ScoringError(f"TDDS needs T={T} epochs but the input held only {i}; lower T or record more epochs") from None
        t, arr = split_item(item, i)
        if acc is None:
            if len(getattr(arr, "shape", ())) != 2:
                raise ScoringError(f"epoch {t}: expected a 2-D [N, C] array, got shape {getattr(arr, 'shape', None)}")
            n, c = arr.shape
            y = None if labels is None else check_labels(labels, n, c)
            acc = TddsAccumulator(n, T=T, W=W, decay=decay, inner=inner, signed=signed, aggregate=aggregate,
                                  dtype=dtype, inputs=inputs, labels=y, nan_policy=nan_policy)
        acc.update(arr, epoch=t)
    if acc is None:  # T < 1 is rejected by the accumulator; keep the message for T == 0
        raise ScoringError(f"T must be an integer >= 2, got {T!r}")
    return finish_skipped(acc.result(), acc.bad, "tdds")


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
    states = []
    for t in range(T):  # the per-epoch state, computed exactly as the accumulator does
        xt = _as_tensor(x[t], acc.cdtype)
        finite = torch.isfinite(xt).all(dim=1).numpy()
        bad = acc.guard.check(finite, t)
        if bad is not None:
            xt = xt.clone()
            xt[torch.from_numpy(bad)] = 0.0
        states.append(acc._state(xt))
    D = np.stack([acc._pair(states[t], states[t + 1]) for t in range(T - 1)])  # [T-1, N]
    weights = window_weights(T, W, decay, aggregate)
    score = np.zeros(n, dtype=np.float64)
    for k, w in enumerate(weights):
        score += w * _window_score(D[k:k + W - 1])
    if aggregate == "mean":
        score /= len(weights)
    return finish_skipped(score, acc.bad, "tdds")


def auto_block_rows(num_samples: int, num_classes: int) -> int:
    return max(1, min(int(num_samples), BLOCK_ELEMENTS // max(1, int(num_classes))))


@register_method("tdds")
def tdds(dynamics: Any, *, T: int = 30, W: int = 10, decay: float = 0.9, start: Optional[int] = None,
         inner: str = "kl", signed: bool = False, aggregate: str = "ema", dtype: str = "float64",
         block_rows: Optional[int] = None, nan_policy: str = "raise") -> np.ndarray:
    """TDDS scores of every sample of ``dynamics`` (see the module docstring for the formula).

    Parameters
    ----------
    dynamics : Dynamics or ReferenceDynamics
        Per-epoch ``[N, C]`` logits. For the authors' layout (``ReferenceDynamics``) the per-epoch
        probability matrices are built as the authors do (softmax per visit, summed by sample index,
        zero rows for unvisited samples) and used directly.
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
        Rows per block for tdds folders (performance only; default about 131k values a block).
    nan_policy : {"raise", "skip"}

    Returns
    -------
    np.ndarray
        float64 ``(N,)``; higher = keep first.
    """
    _check_options(T, W, decay, inner, signed, aggregate, dtype, "logits")
    check_policy(nan_policy)
    if block_rows is not None and (isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1):
        raise ScoringError(f"block_rows must be a positive integer, got {block_rows!r}")
    ts = contiguous_epochs(dynamics, start, int(T), method="tdds", what="T")
    labels = dynamics_labels(dynamics, required=inner != "kl", method=f"tdds with inner={inner!r}")
    opts = dict(T=int(T), W=int(W), decay=float(decay), inner=inner, signed=bool(signed), aggregate=aggregate, dtype=dtype)

    iter_probs = getattr(dynamics, "iter_probs", None)
    if iter_probs is not None:  # the authors' layout: their per-index probability matrices
        return tdds_from_epochs(iter_probs(ts[0], ts[-1] + 1), labels, inputs="probs", nan_policy=nan_policy, **opts)
    if not blockable(dynamics):
        return tdds_from_epochs(dynamics.iter_epochs(ts[0], ts[-1] + 1), labels, nan_policy=nan_policy, **opts)

    src = EpochBlocks(dynamics, ts)
    n = src.num_samples
    rows = int(block_rows) if block_rows else auto_block_rows(n, src.num_classes)
    scores = np.empty(n, dtype=np.float64)
    bad = np.zeros(n, dtype=bool)
    for a in range(0, n, rows):
        b = min(n, a + rows)
        acc = TddsAccumulator(b - a, labels=None if labels is None else labels[a:b], nan_policy=nan_policy,
                              row_offset=a, **opts)
        for t in ts:
            try:
                acc.update(src.rows(t, a, b), epoch=t)
            except NonFiniteError as e:  # a damaged file first; else report the whole epoch, not one block
                src.check(t)
                count, first = src.count_nonfinite(t)
                raise NonFiniteError(t, count, first) from e
        scores[a:b] = acc.result()
        bad[a:b] = acc.bad
    src.finish()
    return finish_skipped(scores, bad, "tdds")
