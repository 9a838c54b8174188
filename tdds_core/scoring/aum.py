"""AUM: area under the margin (Pleiss et al., "Identifying Mislabeled Data using the Area Under the
Margin Ranking", NeurIPS 2020).

Margin at epoch t: the target logit minus the largest other logit; AUM is its mean over the
recorded epochs. Pleiss et al. use LOW AUM to flag mislabeled samples; the TDDS paper (appendix B)
selects the samples with the HIGHEST AUM, and this implementation follows the paper: higher AUM =
keep first (the raw AUM is returned, not flipped).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from ..errors import ScoringError
from ._common import (NanGuard, check_labels, dynamics_labels, finish_skipped, finite_rows, iter_selected, row_chunks,
                      select_epochs, stream_chunks)
from ._registry import register_method

__all__ = ["margins", "aum_from_epochs", "aum"]


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 ``(N,)``: ``logits[i, y_i] - max_{c != y_i} logits[i, c]`` (needs C >= 2)."""
    x = np.array(logits, dtype=np.float64, copy=True)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ScoringError(f"the margin needs [N, C] logits with C >= 2, got shape {x.shape}")
    rows = np.arange(x.shape[0])
    target = x[rows, labels].copy()
    x[rows, labels] = -np.inf
    return target - x.max(axis=1)


def aum_from_epochs(epochs: Iterable[Any], labels: np.ndarray, *, nan_policy: str = "raise") -> np.ndarray:
    """Mean margin over the given epochs.

    Parameters
    ----------
    epochs : iterable of ``[N, C]`` logits (or ``(t, logits)`` pairs)
    labels : array ``(N,)`` of int

    Returns
    -------
    np.ndarray
        float64 ``(N,)``; higher AUM = keep first (the TDDS paper's direction).
    """
    y = guard = total = None
    E = 0
    for t, x in stream_chunks(epochs):
        n, c = x.shape
        if y is None:
            y = check_labels(labels, n, c)
            guard = NanGuard(n, nan_policy)
            total = np.zeros(n, dtype=np.float64)
        for a, b in row_chunks(n, c):
            blk = np.asarray(x[a:b], dtype=np.float64)
            bad = guard.check(finite_rows(blk), t, at=a)
            if bad is not None:
                blk = blk.copy()
                blk[bad] = 0.0
            total[a:b] += margins(blk, y[a:b])
        E += 1
    if y is None:
        raise ScoringError("aum needs at least one epoch of logits")
    return finish_skipped(total / E, guard.bad, "aum")


@register_method("aum")
def aum(dynamics: Any, *, start: Optional[int] = None, stop: Optional[int] = None, nan_policy: str = "raise") -> np.ndarray:
    """AUM over the recorded epochs ``start <= t < stop`` (default: all).

    Returns float64 ``(N,)``; higher AUM = keep first."""
    ts = select_epochs(dynamics, start, stop, method="aum", minimum=1)
    labels = dynamics_labels(dynamics, required=True, method="aum")
    return aum_from_epochs(iter_selected(dynamics, ts), labels, nan_policy=nan_policy)
