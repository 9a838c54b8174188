"""Dyn-Unc: dynamic uncertainty (He et al., "Large-scale Dataset Pruning with Dynamic Uncertainty",
CVPR 2024 workshops, arXiv:2306.05175).

For every window of ``width`` consecutive recorded epochs (sliding by one), the standard deviation
(ddof = 1, as in the source) of the target-class probability ``softmax(logits)[y]`` (the
``p_target`` column); the score is the mean over all full windows. (The TDDS paper's appendix B
calls it a variance; the source uses the standard deviation, which ranks the same way within a
window.) Higher uncertainty = keep first, as in the source; nothing is flipped.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Optional

import numpy as np

from ..errors import ScoringError
from ._common import select_epochs
from ._registry import Option, check_option, register_method
from ._view import ColumnView, EpochStream

__all__ = ["dyn_unc_from_epochs", "dyn_unc"]


def _window_std(columns: Iterable[np.ndarray], width: int) -> np.ndarray:
    """Mean over sliding windows of ``width`` columns ``(N,)`` of their std (ddof 1)."""
    ring: deque = deque(maxlen=width)
    total, windows, epochs = 0.0, 0, 0
    for p in columns:
        ring.append(p)
        epochs += 1
        if len(ring) == width:
            total = total + np.stack(ring).std(axis=0, ddof=1)
            windows += 1
    if windows == 0:
        raise ScoringError(f"dyn_unc needs at least width={width} epochs but got {epochs}; lower width or record "
                           "more epochs")
    return total / windows


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
    width = int(check_option("dyn_unc", "width", width))
    view = EpochStream(epochs, labels, nan_policy=nan_policy, method="dyn_unc")
    return view.finish(_window_std(view.columns(None, "p_target"), width))


@register_method("dyn_unc", options={"width": Option(10, int, min=2, doc="window in epochs"),
                                     "start": Option(None, int, doc="first epoch"),
                                     "stop": Option(None, int, doc="epoch after the last")},
                 epochs_read=lambda p, epochs: epochs if p["stop"] is None else p["stop"])
def dyn_unc(view: ColumnView, *, width: int, start: Optional[int], stop: Optional[int]) -> np.ndarray:
    """Dynamic uncertainty over the recorded epochs ``start <= t < stop`` (default: all).

    Returns float64 ``(N,)``; higher = keep first."""
    ts = select_epochs(view, start, stop, method="dyn_unc", minimum=int(width))
    return _window_std(view.columns(ts, "p_target"), int(width))
