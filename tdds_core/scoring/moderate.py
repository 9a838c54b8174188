"""Moderate: moderate coreset, Moderate-DS (Xia et al., "Moderate Coreset: A Universal Method of
Data Selection for Real-world Data-efficient Deep Learning", ICLR 2023; code:
github.com/tmllab/2023_ICLR_Moderate-DS, ``selection.py``).

The source's definition, implemented as it is:

1. the class centre is the coordinate-wise MEDIAN of the class's features (``np.median(..., axis=0)``,
   not the mean);
2. ``d_i = ||f_i - median_{y_i}||_2``, the Euclidean distance of each sample's feature to the
   centre of its own class;
3. the distances of ALL samples are sorted together (one global ranking, no per-class quota) and
   the source keeps the rank band ``[round(N (0.5 - r/2)), round(N (0.5 + r/2)))`` around the
   median rank, ``r`` the fraction kept; it drops both the nearest ("easy") and the farthest
   ("hard") samples.

As a score (higher = keep first) this is the closeness of a sample's global distance rank to the
middle rank: with ``rank_i`` the 0-based position of ``d_i`` in the ascending sort (ties by sample
position) and ``m = (N - 1) / 2``, ``score_i = -|rank_i - m|``. The top-k of this score is the
contiguous rank band of width k centred on the median rank, the source's band. Two ranks equally
far from the middle tie (N - k odd); selection breaks that tie by sample position, where the
source's ``round`` decides it (and may keep one sample more or fewer than ``r N``). The score is a
rank, not a distance: it does not depend on the scale of the features (``class_distances`` gives
the distances). Rows with NaN/Inf features take no part in the ranking (``nan_policy``).

Features (option ``features``): ``"clean"`` (default) reads the penultimate features of the
full-data model's clean final pass (eval mode, no augmentation; ``features.npy`` in the dynamics).
DEVIATION: the source, and the TDDS appendix, take the features from a separately trained
extractor (the source trains a ResNet-50 on the full data and loads its best checkpoint); here
the extractor is the full-data run's own final model. For another extractor's features pass a
path to a ``.npy`` float array ``[N, D]`` in sample order, ``features="/path/feats.npy"``
(CLI: ``--param features=/path/feats.npy``).

Also different from the source in detail: the median and the distances are computed in float64
(the source keeps the median in the features' dtype); class ids need not be ``0..K-1``.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ArtifactError, ScoringError
from ..io import load_npy
from ._common import NanGuard, finish_skipped, finite_rows
from ._registry import Option, register_method
from ._view import ColumnView

__all__ = ["class_distances", "moderate_from_features", "moderate", "moderate_rank_score"]


def class_distances(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 ``(N,)``: Euclidean distance of each feature to the coordinate-wise median feature
    of its class (Moderate-DS's class centre)."""
    f = np.asarray(features)
    y = np.asarray(labels)
    out = np.empty(f.shape[0], dtype=np.float64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        fc = f[idx].astype(np.float64)
        centre = np.median(fc, axis=0)
        out[idx] = np.sqrt(((fc - centre) ** 2).sum(axis=1))
    return out


def moderate_rank_score(distances: np.ndarray) -> np.ndarray:
    """float64 ``(N,)`` <= 0: ``-|rank - (N-1)/2|`` with ``rank`` the 0-based position of each
    distance in the stable ascending sort (Moderate-DS's global ranking). The top-k are the k
    middle ranks."""
    d = np.asarray(distances, dtype=np.float64)
    n = d.shape[0]
    rank = np.empty(n, dtype=np.float64)
    rank[np.argsort(d, kind="stable")] = np.arange(n, dtype=np.float64)
    mid = (n - 1) / 2.0
    return -np.abs(rank - mid)


def _scores(f: np.ndarray, y: np.ndarray, guard: NanGuard) -> np.ndarray:
    """Moderate-DS scores of features ``f`` ``[N, D]`` with labels ``y``; rows with NaN/Inf features
    go to ``guard`` and take no part in the ranking."""
    bad = guard.check(finite_rows(f), "features", what="features")
    keep = np.ones(f.shape[0], dtype=bool) if bad is None else ~bad
    score = np.zeros(f.shape[0], dtype=np.float64)
    if keep.any():
        score[keep] = moderate_rank_score(class_distances(f[keep], y[keep]))
    return score


def moderate_from_features(features: np.ndarray, labels: np.ndarray, *, nan_policy: str = "raise") -> np.ndarray:
    """Moderate-DS scores from features (see the module docstring).

    Parameters
    ----------
    features : array ``[N, D]``
    labels : array ``(N,)`` of int

    Returns
    -------
    np.ndarray
        float64 ``(N,)`` <= 0: closeness of the global rank of the distance to the class median
        feature to the middle rank; higher (nearer the median distance) = keep first. Samples with
        NaN/Inf features get -inf under ``nan_policy="skip"``.
    """
    f = np.asarray(features)
    if f.ndim != 2:
        raise ScoringError(f"features must be [N, D], got shape {f.shape}")
    n = f.shape[0]
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ScoringError(f"labels have shape {y.shape} but the features have {n} rows")
    guard = NanGuard(n, nan_policy, what="features")
    return finish_skipped(_scores(f, y.astype(np.int64), guard), guard.bad, "moderate")


def _load_features(view: ColumnView, features: str) -> np.ndarray:
    if not isinstance(features, (str, os.PathLike)):
        raise ScoringError(f"moderate: features must be 'clean' or a path to a .npy [N, D] file, not {features!r}")
    if str(features) == "clean":
        if not view.has_features:
            raise ScoringError(
                f"moderate needs penultimate features but {getattr(view.source, 'folder', 'these dynamics')} has none; "
                "train with dynamics.save_features: true, or pass another extractor's features with "
                "features=/path/feats.npy (CLI: --param features=/path/feats.npy)"
            )
        return view.features()
    path = os.fspath(features)
    if not os.path.isfile(path):
        raise ArtifactError(f"moderate: feature file {path} does not exist; pass features='clean' or the path of a "
                            ".npy float [N, D] array in sample order")
    f = load_npy(path)
    n = view.num_samples
    if f.ndim != 2 or f.shape[0] != n or not np.issubdtype(f.dtype, np.number):
        raise ScoringError(f"moderate: {path} holds a {f.dtype} array of shape {f.shape}; expected numeric "
                           f"[{n}, D] features, row i = sample i")
    return f


@register_method("moderate", options={"features": Option("clean", doc="'clean' or a .npy path")},
                 epochs_read=lambda p, epochs: epochs if str(p["features"]) == "clean" else 0)
def moderate(view: ColumnView, *, features: str) -> np.ndarray:
    """Moderate-DS over penultimate features: by default the full-data model's clean final pass
    (``features.npy``), or ``features="/path/feats.npy"`` (float ``[N, D]``, sample order) from
    another extractor.

    Returns float64 ``(N,)``; higher = distance rank nearer the median = keep first."""
    f = _load_features(view, features)
    return _scores(f, view.labels, view.guard)
