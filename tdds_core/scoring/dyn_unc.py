"""Dyn-Unc: dynamic uncertainty (He et al., "Large-scale Dataset Pruning with Dynamic Uncertainty",
CVPR 2024 workshops, arXiv:2306.05175).

For every window of ``width`` consecutive recorded epochs (sliding by one), the standard deviation
(ddof = 1, as in the source) of the target-class probability ``softmax(logits)[y]``; the score is
the mean over all full windows. (The TDDS paper's appendix B calls it a variance; the source uses
the standard deviation, which ranks the same way within a window.) Higher uncertainty = keep
first, as in the source; nothing is flipped.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Optional

import numpy as np

from ..errors import ScoringError
from ._common import dynamics_labels, finish_skipped, iter_selected, per_epoch_rows, select_epochs, softmax64
from ._registry import export, register_method

__all__ = ["dyn_unc_from_epochs", "dyn_unc"]


def _check_width(width: Any) -> int:
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 2:
        raise ScoringError(f"dyn_unc: width (window in epochs) must be an integer >= 2, got {width!r}")
    return int(width)


def _true_class_probs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``softmax(x)[i, y_i]`` per row of float64 logits ``x`` ``[n, C]``."""
    return softmax64(x)[np.arange(len(y)), y]


@export
def dyn_unc_from_epochs(epochs: Iterable[Any], labels: np.ndarray, *, width: int = 10,
                        nan_policy: str = "raise") -> np.ndarray:
    """Mean over sliding windows of the std of the target-class probability.

    Parameters
    ----------
    epochs : iterable of ``[N, C]`` logits (or ``(t, logits)`` pairs), at least ``width`` of them
    labels : array ``(N,)`` of int
    width : int
        Window length in epochs (>= 2).

    Returns
    -------
    np.ndarray
        float64 ``(N,)`` >= 0; higher = keep first.
    """
    width = _check_width(width)
    ring: deque = deque(maxlen=width)
    total, K, E = 0.0, 0, 0
    for py, guard in per_epoch_rows(epochs, labels, _true_class_probs, nan_policy=nan_policy, method="dyn_unc"):
        ring.append(py)
        E += 1
        if len(ring) == width:
            total = total + np.stack(ring).std(axis=0, ddof=1)
            K += 1
    if K == 0:
        raise ScoringError(f"dyn_unc needs at least width={width} epochs but got {E}; lower width or record more epochs")
    return finish_skipped(total / K, guard.bad, "dyn_unc")


def _dyn_unc_stats(stats: Any, *, width: int = 10, start: Optional[int] = None, stop: Optional[int] = None,
                   nan_policy: str = "raise") -> np.ndarray:
    """Dyn-Unc from per-sample statistics (their ``p_target`` column; tdds_core.statistics)."""
    from ..statistics import column_over, finite_scores

    width = _check_width(width)
    ts = select_epochs(stats, start, stop, method="dyn_unc", minimum=width)
    ring: deque = deque(maxlen=width)
    total, K = 0.0, 0
    for py in column_over(stats, ts, "p_target"):
        ring.append(py)
        if len(ring) == width:
            total = total + np.stack(ring).std(axis=0, ddof=1)
            K += 1
    return finite_scores(total / K, nan_policy, "dyn_unc")


@register_method("dyn_unc", stats=_dyn_unc_stats)
def dyn_unc(dynamics: Any, *, width: int = 10, start: Optional[int] = None, stop: Optional[int] = None,
            nan_policy: str = "raise") -> np.ndarray:
    """Dynamic uncertainty over the recorded epochs ``start <= t < stop`` (default: all).

    Returns float64 ``(N,)``; higher = keep first."""
    width = _check_width(width)
    ts = select_epochs(dynamics, start, stop, method="dyn_unc", minimum=width)
    labels = dynamics_labels(dynamics, required=True, method="dyn_unc")
    return dyn_unc_from_epochs(iter_selected(dynamics, ts), labels, width=width, nan_policy=nan_policy)
