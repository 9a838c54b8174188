"""Random: uniform scores from a seeded generator (the paper's Random baseline, appendix B).

Keeping the top ``(1-p)N`` of i.i.d. uniform scores is a uniform random subset; the seed makes it
reproducible. There is no direction to flip.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ScoringError
from ._common import check_policy
from ._registry import export, register_method

__all__ = ["random_scores", "random_"]


@export
def random_scores(num_samples: int, *, seed: int = 0) -> np.ndarray:
    """float64 ``(num_samples,)`` i.i.d. uniform in ``[0, 1)`` from ``numpy.random.default_rng(seed)``."""
    if isinstance(num_samples, bool) or int(num_samples) < 0:
        raise ScoringError(f"num_samples must be >= 0, got {num_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ScoringError(f"seed must be an integer, got {seed!r}")
    return np.random.default_rng(int(seed)).random(int(num_samples), dtype=np.float64)


def _random_stats(stats: Any, *, seed: int = 0, nan_policy: str = "raise") -> np.ndarray:
    """Random from a statistics folder: the same uniform scores (only N is read)."""
    return random_(stats, seed=seed, nan_policy=nan_policy)


@register_method("random", stats=_random_stats)
def random_(dynamics: Any, *, seed: int = 0, nan_policy: str = "raise") -> np.ndarray:
    """Random baseline: uniform scores, reproducible by ``seed``. Reads no epochs, so
    ``nan_policy`` has nothing to check.

    Returns float64 ``(N,)``; higher = keep first (a uniform random subset)."""
    check_policy(nan_policy)
    return random_scores(int(dynamics.num_samples), seed=seed)
