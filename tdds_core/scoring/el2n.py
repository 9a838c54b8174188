"""EL2N: error L2 norm (Paul et al., "Deep Learning on a Data Diet: Finding Important Examples
Early in Training", NeurIPS 2021), as the TDDS paper runs it (appendix B): the error vector score
``||softmax(logits) - onehot(y)||_2`` averaged over the first ``k`` recorded epochs of one run.

Higher EL2N = harder = keep first, as in the source; nothing is flipped.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from ..errors import ScoringError
from ._common import dynamics_labels, finish_skipped, iter_selected, per_epoch_rows, select_epochs, softmax64
from ._registry import export, register_method

__all__ = ["el2n_from_epochs", "el2n"]


def _error_norms(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``||softmax(x) - onehot(y)||_2`` per row of float64 logits ``x`` ``[n, C]``."""
    p = softmax64(x)
    p[np.arange(len(y)), y] -= 1.0
    return np.sqrt((p * p).sum(axis=1))


@export
def el2n_from_epochs(epochs: Iterable[Any], labels: np.ndarray, *, nan_policy: str = "raise") -> np.ndarray:
    """Mean over the given epochs of ``||softmax(logits) - onehot(y)||_2``.

    Parameters
    ----------
    epochs : iterable of ``[N, C]`` logits (or ``(t, logits)`` pairs)
    labels : array ``(N,)`` of int

    Returns
    -------
    np.ndarray
        float64 ``(N,)`` in ``[0, sqrt(2)]``; higher = keep first.
    """
    total, E = 0.0, 0
    for err, guard in per_epoch_rows(epochs, labels, _error_norms, nan_policy=nan_policy, method="el2n"):
        total, E = total + err, E + 1
    return finish_skipped(total / E, guard.bad, "el2n")


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ScoringError(f"el2n: k (epochs averaged) must be a positive integer, got {k!r}")


def _el2n_stats(stats: Any, *, k: int = 10, start: Optional[int] = None, nan_policy: str = "raise") -> np.ndarray:
    """EL2N from per-sample statistics (their ``el2n`` column; tdds_core.statistics)."""
    from ..statistics import column_over, finite_scores

    _check_k(k)
    ts = select_epochs(stats, start, None, method="el2n", minimum=1)[: int(k)]
    return finite_scores(sum(column_over(stats, ts, "el2n")) / len(ts), nan_policy, "el2n")


@register_method("el2n", stats=_el2n_stats)
def el2n(dynamics: Any, *, k: int = 10, start: Optional[int] = None, nan_policy: str = "raise") -> np.ndarray:
    """EL2N averaged over the first ``k`` recorded epochs from ``start`` (all of them if fewer).

    Returns float64 ``(N,)``; higher = keep first."""
    _check_k(k)
    ts = select_epochs(dynamics, start, None, method="el2n", minimum=1)[: int(k)]
    labels = dynamics_labels(dynamics, required=True, method="el2n")
    return el2n_from_epochs(iter_selected(dynamics, ts), labels, nan_policy=nan_policy)
