"""Moderate: moderate coreset (Xia et al., "Moderate Coreset: A Universal Method of Data Selection
for Real-world Data-efficient Deep Learning", ICLR 2023).

Each sample's distance ``d_i = ||f_i - mu_{y_i}||_2`` from its class centre (the mean penultimate
feature of its class); the source keeps the samples whose distance is closest to the class's
median distance. The score is ``-|d_i - median_{class(i)}(d)|``: the source's "closeness to the
median" with the sign flipped so that higher = keep first.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ScoringError
from ._common import NanGuard, dynamics_labels, finish_skipped, finite_rows
from ._registry import export, register_method

__all__ = ["class_distances", "moderate_from_features", "moderate"]


@export
def class_distances(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 ``(N,)``: Euclidean distance of each feature to the mean feature of its class."""
    f = np.asarray(features)
    out = np.empty(f.shape[0], dtype=np.float64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        fc = f[idx].astype(np.float64)
        centre = fc.mean(axis=0)
        out[idx] = np.sqrt(((fc - centre) ** 2).sum(axis=1))
    return out


@export
def moderate_from_features(features: np.ndarray, labels: np.ndarray, *, nan_policy: str = "raise") -> np.ndarray:
    """Moderate scores from penultimate features.

    Parameters
    ----------
    features : array ``[N, D]``
    labels : array ``(N,)`` of int

    Returns
    -------
    np.ndarray
        float64 ``(N,)`` <= 0: ``-|d - median_class(d)|``; higher (nearer the median) = keep first.
    """
    f = np.asarray(features)
    if f.ndim != 2:
        raise ScoringError(f"features must be [N, D], got shape {f.shape}")
    n = f.shape[0]
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ScoringError(f"labels have shape {y.shape} but the features have {n} rows")
    y = y.astype(np.int64)
    guard = NanGuard(n, nan_policy, what="features")
    bad = guard.check(finite_rows(f), "features")
    keep = np.ones(n, dtype=bool) if bad is None else ~bad
    d = np.full(n, np.nan)
    d[keep] = class_distances(f[keep], y[keep])
    score = np.zeros(n, dtype=np.float64)
    for c in np.unique(y[keep]):
        idx = np.flatnonzero(keep & (y == c))
        score[idx] = -np.abs(d[idx] - np.median(d[idx]))
    return finish_skipped(score, guard.bad, "moderate")


@register_method("moderate")
def moderate(dynamics: Any, *, nan_policy: str = "raise") -> np.ndarray:
    """Moderate over the penultimate features saved with the dynamics (``features.npy``).

    Returns float64 ``(N,)``; higher = nearer the class median distance = keep first."""
    if not getattr(dynamics, "has_features", False):
        raise ScoringError(
            f"moderate needs penultimate features but {getattr(dynamics, 'folder', 'these dynamics')} has none; "
            "train with dynamics.save_features: true"
        )
    labels = dynamics_labels(dynamics, required=True, method="moderate")
    return moderate_from_features(dynamics.features(), labels, nan_policy=nan_policy)
