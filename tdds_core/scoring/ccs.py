"""CCS: coverage-centric coreset selection (Zheng et al., "Coverage-centric Coreset Selection for
High Pruning Rates", ICLR 2023).

CCS is a selection rule over a base difficulty score (AUM here, as in the TDDS paper's appendix B):

1. drop the ``floor(beta * n)`` hardest samples (hard cutoff; they are mostly mislabeled);
2. split the range of the remaining scores into ``strata`` bins of equal width;
3. with budget ``m = n_keep``, visit the non-visited strata from the smallest up: take
   ``min(|B|, floor(m / #strata left))`` samples at random from it, subtract that from ``m``.

The scoring function returns the base score unchanged (higher = keep first for every base, so for
AUM the hardest samples are the LOWEST scores: ``hard_end`` defaults to "low" for aum and moderate
and to "high" for the others). The sampler (:func:`ccs_sample`) is what selection uses for CCS.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from ..errors import ScoringError
from ._common import check_policy
from ._registry import compute_scores, export, register_method, resolve_params

__all__ = ["ccs_sample", "ccs", "HARD_END"]

#: which end of a base score (in tdds's higher-keeps direction) holds the hardest samples
HARD_END = {"aum": "low", "moderate": "low"}


def _check(beta: Any, strata: Any, hard_end: Any) -> None:
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating)) or not (0.0 <= float(beta) < 1.0):
        raise ScoringError(f"ccs: beta (hard cutoff ratio) must be in [0, 1), got {beta!r}")
    if isinstance(strata, bool) or not isinstance(strata, (int, np.integer)) or strata < 1:
        raise ScoringError(f"ccs: strata must be a positive integer, got {strata!r}")
    if hard_end not in (None, "low", "high"):
        raise ScoringError(f"ccs: hard_end must be 'low' or 'high', got {hard_end!r}")


@export
def ccs_sample(scores: np.ndarray, n_keep: int, *, beta: float = 0.0, strata: int = 50, hard_end: str = "low",
               seed: int = 0) -> np.ndarray:
    """Coverage-centric stratified sample of ``n_keep`` positions.

    Parameters
    ----------
    scores : array ``(N,)``
        Base scores; non-finite entries (NaN/Inf inputs skipped at scoring) are never chosen.
    n_keep : int
        Samples to choose.
    beta : float
        Hard cutoff ratio in ``[0, 1)``: ``floor(beta * n)`` hardest finite-score samples are dropped first.
    strata : int
        Number of equal-width score ranges.
    hard_end : {"low", "high"}
        Which end of ``scores`` is hardest.
    seed : int
        Seed of the random draw inside each stratum.

    Returns
    -------
    np.ndarray
        int64 ``(n_keep,)`` positions, ascending.
    """
    _check(beta, strata, hard_end)
    s = np.asarray(scores, dtype=np.float64)
    n_keep = int(n_keep)
    pos = np.flatnonzero(np.isfinite(s))
    n = len(pos)
    # hardest first, ties by position
    hard_order = np.lexsort((pos, s[pos] if hard_end == "low" else -s[pos]))
    n_cut = int(np.floor(float(beta) * n))
    remaining = np.sort(pos[hard_order[n_cut:]])
    if n_keep > len(remaining):
        raise ScoringError(
            f"ccs: keeping {n_keep} samples needs that many after the hard cutoff, but beta={beta} leaves "
            f"{len(remaining)} of {len(s)}; lower beta"
        )
    if n_keep <= 0:
        return np.zeros(0, dtype=np.int64)
    v = s[remaining]
    lo, hi = float(v.min()), float(v.max())
    k = int(strata)
    if hi > lo:
        bins = np.floor((v - lo) / (hi - lo) * k).astype(np.int64)
        np.clip(bins, 0, k - 1, out=bins)
    else:
        bins = np.zeros(len(v), dtype=np.int64)
    members = [remaining[bins == i] for i in range(k)]
    order = sorted(range(k), key=lambda i: (len(members[i]), i))
    rng = np.random.default_rng(int(seed))
    chosen = []
    m = n_keep
    for j, i in enumerate(order):
        left = k - j
        take = min(len(members[i]), m // left)
        if take:
            chosen.append(rng.choice(members[i], size=take, replace=False))
        m -= take
    out = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    assert len(out) == n_keep, (len(out), n_keep)
    return out.astype(np.int64)


def _make_sampler(params: dict) -> Callable[..., np.ndarray]:
    base = params["base"]
    hard_end = params["hard_end"] or HARD_END.get(base, "high")
    beta, strata = params["beta"], params["strata"]
    _check(beta, strata, hard_end)

    def sampler(scores: np.ndarray, n_keep: int, *, labels: Optional[np.ndarray] = None, seed: int = 0) -> np.ndarray:
        return ccs_sample(scores, n_keep, beta=beta, strata=strata, hard_end=hard_end, seed=seed)

    sampler.__name__ = f"ccs_sampler(base={base}, beta={beta}, strata={strata}, hard_end={hard_end})"
    return sampler


@register_method("ccs", sampler=_make_sampler)
def ccs(dynamics: Any, *, base: str = "aum", base_params: Optional[dict] = None, beta: float = 0.0, strata: int = 50,
        hard_end: Optional[str] = None, nan_policy: str = "raise") -> np.ndarray:
    """Base difficulty scores for CCS (default AUM); ``beta``, ``strata`` and ``hard_end`` configure
    the sampler that selection builds from these same options (:func:`ccs_sample`).

    Returns float64 ``(N,)``: the base method's scores (higher = keep first under top-k; CCS's
    selection instead samples across their whole range)."""
    check_policy(nan_policy)
    _check(beta, strata, hard_end)
    if base == "ccs":
        raise ScoringError("ccs: base may not be 'ccs' itself; use e.g. base='aum'")
    if base_params is not None and not isinstance(base_params, dict):
        raise ScoringError(f"ccs: base_params must be a mapping of the base method's options, got {base_params!r}")
    resolve_params(base, **(base_params or {}))
    return compute_scores(base, dynamics, nan_policy=nan_policy, **(base_params or {}))
