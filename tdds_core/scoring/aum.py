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
from ._common import dynamics_labels, finish_skipped, iter_selected, per_epoch_rows, select_epochs
from ._registry import export, register_method

__all__ = ["margins", "aum_from_epochs", "aum"]


@export
def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 ``(N,)``: ``logits[i, y_i] - max_{c != y_i} logits[i, c]`` (needs C >= 2)."""
    x = np.array(logits, dtype=np.float64, copy=True)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ScoringError(f"the margin needs [N, C] logits with C >= 2, got shape {x.shape}")
    rows = np.arange(x.shape[0])
    target = x[rows, labels].copy()
    x[rows, labels] = -np.inf
    return target - x.max(axis=1)


@export
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
    total, E = 0.0, 0
    for margin, guard in per_epoch_rows(epochs, labels, margins, nan_policy=nan_policy, method="aum"):
        total, E = total + margin, E + 1
    return finish_skipped(total / E, guard.bad, "aum")


@register_method("aum")
def aum(dynamics: Any, *, start: Optional[int] = None, stop: Optional[int] = None, nan_policy: str = "raise") -> np.ndarray:
    """AUM over the recorded epochs ``start <= t < stop`` (default: all).

    Returns float64 ``(N,)``; higher AUM = keep first."""
    ts = select_epochs(dynamics, start, stop, method="aum", minimum=1)
    labels = dynamics_labels(dynamics, required=True, method="aum")
    return aum_from_epochs(iter_selected(dynamics, ts), labels, nan_policy=nan_policy)
