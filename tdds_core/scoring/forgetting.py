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

from ..errors import ScoringError
from ._common import (NanGuard, check_labels, dynamics_labels, finish_skipped, finite_rows, iter_selected, row_chunks,
                      select_epochs, stream_chunks)
from ._registry import register_method

__all__ = ["forgetting_from_epochs", "forgetting"]


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
    y: Optional[np.ndarray] = None
    guard: Optional[NanGuard] = None
    prev: Optional[np.ndarray] = None
    count = learned = None
    E = 0
    for t, x in stream_chunks(epochs):
        n, c = x.shape
        if y is None:
            y = check_labels(labels, n, c)
            guard = NanGuard(n, nan_policy)
            count = np.zeros(n, dtype=np.int64)
            learned = np.zeros(n, dtype=bool)
        correct = np.empty(n, dtype=bool)
        for a, b in row_chunks(n, c):
            blk = np.asarray(x[a:b])
            bad = guard.check(finite_rows(blk), t, at=a)
            if bad is not None:
                blk = np.where(bad[:, None], 0, blk)
            correct[a:b] = blk.argmax(axis=1) == y[a:b]
        learned |= correct
        if prev is not None:
            count += prev & ~correct
        prev = correct
        E += 1
    if y is None:
        raise ScoringError("forgetting needs at least one epoch of logits")
    score = count.astype(np.float64)
    score[~learned] = E + 1
    return finish_skipped(score, guard.bad, "forgetting")


@register_method("forgetting")
def forgetting(dynamics: Any, *, start: Optional[int] = None, stop: Optional[int] = None,
               nan_policy: str = "raise") -> np.ndarray:
    """Forgetting events over the recorded epochs ``start <= t < stop`` (default: all).

    Returns float64 ``(N,)``; more forgetting (and never learned) = keep first."""
    ts = select_epochs(dynamics, start, stop, method="forgetting", minimum=1)
    labels = dynamics_labels(dynamics, required=True, method="forgetting")
    return forgetting_from_epochs(iter_selected(dynamics, ts), labels, nan_policy=nan_policy)
