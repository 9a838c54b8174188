"""Forgetting: count of forgetting events over training (Toneva et al., "An Empirical Study of
Example Forgetting during Deep Neural Network Learning", ICLR 2019; the TDDS paper's appendix B).

A forgetting event is a sample classified correctly (``argmax logits == label``) at recorded
epoch ``t`` and incorrectly at the next recorded epoch. Samples never classified correctly are
"unlearned"; like the source (which counts them as forgotten infinitely often) they rank as most
important, here with the finite score ``E + 1`` for ``E`` epochs used (more than any possible
count, which is at most ``E // 2``). More forgetting = keep first, as in the source (it removes
unforgettable samples); nothing is flipped.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from ._common import dynamics_labels, finish_skipped, iter_selected, per_epoch_rows, select_epochs
from ._registry import export, register_method

__all__ = ["forgetting_from_epochs", "forgetting"]


def _correct(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """bool per row: the arg-max of logits ``x`` ``[n, C]`` is the label."""
    return x.argmax(axis=1) == y


@export
def forgetting_from_epochs(epochs: Iterable[Any], labels: np.ndarray, *, nan_policy: str = "raise") -> np.ndarray:
    """Forgetting scores from consecutive epochs.

    Parameters
    ----------
    epochs : iterable of ``[N, C]`` logits (or ``(t, logits)`` pairs), in training order
    labels : array ``(N,)`` of int

    Returns
    -------
    np.ndarray
        float64 ``(N,)``: number of correct-to-incorrect transitions; ``E + 1`` for samples never
        classified correctly. Higher = keep first.
    """
    prev: Optional[np.ndarray] = None
    count, learned, E = 0, False, 0
    for correct, guard in per_epoch_rows(epochs, labels, _correct, nan_policy=nan_policy, method="forgetting",
                                         out_dtype=bool):
        learned = learned | correct
        if prev is not None:
            count = count + (prev & ~correct)
        prev = correct
        E += 1
    score = np.zeros(len(prev), dtype=np.float64) + count
    score[~learned] = E + 1
    return finish_skipped(score, guard.bad, "forgetting")


def _forgetting_stats(stats: Any, *, start: Optional[int] = None, stop: Optional[int] = None,
                      nan_policy: str = "raise") -> np.ndarray:
    """Forgetting from per-sample statistics (their ``correct`` column; tdds_core.statistics)."""
    from ..statistics import column_over, finite_scores

    ts = select_epochs(stats, start, stop, method="forgetting", minimum=1)
    prev: Optional[np.ndarray] = None
    count, learned = 0, False
    bad = np.zeros(stats.num_samples, dtype=bool)
    for c in column_over(stats, ts, "correct"):
        bad |= ~np.isfinite(c)
        correct = c > 0.5
        learned = learned | correct
        if prev is not None:
            count = count + (prev & ~correct)
        prev = correct
    score = np.zeros(stats.num_samples, dtype=np.float64) + count
    score[~learned] = len(ts) + 1
    score[bad] = np.nan
    return finite_scores(score, nan_policy, "forgetting")


@register_method("forgetting", stats=_forgetting_stats)
def forgetting(dynamics: Any, *, start: Optional[int] = None, stop: Optional[int] = None,
               nan_policy: str = "raise") -> np.ndarray:
    """Forgetting events over the recorded epochs ``start <= t < stop`` (default: all).

    Returns float64 ``(N,)``; more forgetting (and never learned) = keep first."""
    ts = select_epochs(dynamics, start, stop, method="forgetting", minimum=1)
    labels = dynamics_labels(dynamics, required=True, method="forgetting")
    return forgetting_from_epochs(iter_selected(dynamics, ts), labels, nan_policy=nan_policy)
