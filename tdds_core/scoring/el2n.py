"""EL2N: error L2 norm (Paul et al., "Deep Learning on a Data Diet: Finding Important Examples
Early in Training", NeurIPS 2021), as the TDDS paper runs it (appendix B): the error vector score
``||softmax(logits) - onehot(y)||_2`` (the ``el2n`` column) averaged over the first ``k`` recorded
epochs of one run.

Higher EL2N = harder = keep first, as in the source; nothing is flipped.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from ._common import column_mean, select_epochs
from ._registry import Option, register_method
from ._view import ColumnView, EpochStream

__all__ = ["el2n_from_epochs", "el2n"]


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
    view = EpochStream(epochs, labels, nan_policy=nan_policy, method="el2n")
    return view.finish(column_mean(view.columns(None, "el2n")))


@register_method("el2n", options={"k": Option(10, int, min=1, doc="epochs averaged"),
                                  "start": Option(None, int, doc="first epoch")},
                 epochs_read=lambda p, epochs: (p["start"] or 0) + p["k"])
def el2n(view: ColumnView, *, k: int, start: Optional[int]) -> np.ndarray:
    """EL2N averaged over the first ``k`` recorded epochs from ``start`` (all of them if fewer).

    Returns float64 ``(N,)``; higher = keep first."""
    ts = select_epochs(view, start, None, method="el2n", minimum=1)[: int(k)]
    return column_mean(view.columns(ts, "el2n"))
