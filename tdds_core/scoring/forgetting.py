"""Forgetting: count of forgetting events over training (Toneva et al., "An Empirical Study of
Example Forgetting during Deep Neural Network Learning", ICLR 2019; the TDDS paper's appendix B).

A forgetting event is a sample classified correctly (``argmax logits == label``, the ``correct``
column) at recorded epoch ``t`` and incorrectly at the next recorded epoch. Samples never classified
correctly are "unlearned"; like the source (which counts them as forgotten infinitely often) they
rank as most important, here with the finite score ``E + 1`` for ``E`` epochs used (more than any
possible count, which is at most ``E // 2``). More forgetting = keep first, as in the source (it
removes unforgettable samples); nothing is flipped.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from ._common import select_epochs
from ._registry import Option, register_method
from ._view import ColumnView, EpochStream

__all__ = ["forgetting_from_epochs", "forgetting"]


def _events(columns: Iterable[np.ndarray]) -> np.ndarray:
    """Forgetting scores from the ``correct`` columns ``(N,)`` of consecutive epochs."""
    prev: Optional[np.ndarray] = None
    count, learned, epochs = 0, False, 0
    for col in columns:
        correct = col > 0.5
        learned = learned | correct
        if prev is not None:
            count = count + (prev & ~correct)
        prev = correct
        epochs += 1
    score = np.zeros(len(prev), dtype=np.float64) + count
    score[~learned] = epochs + 1
    return score


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
    view = EpochStream(epochs, labels, nan_policy=nan_policy, method="forgetting")
    return view.finish(_events(view.columns(None, "correct")))


@register_method("forgetting", options={"start": Option(None, int, doc="first epoch"),
                                        "stop": Option(None, int, doc="epoch after the last")},
                 epochs_read=lambda p, epochs: epochs if p["stop"] is None else p["stop"])
def forgetting(view: ColumnView, *, start: Optional[int], stop: Optional[int]) -> np.ndarray:
    """Forgetting events over the recorded epochs ``start <= t < stop`` (default: all).

    Returns float64 ``(N,)``; more forgetting (and never learned) = keep first."""
    ts = select_epochs(view, start, stop, method="forgetting", minimum=1)
    return _events(view.columns(ts, "correct"))
