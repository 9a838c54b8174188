"""Random: uniform scores from a seeded generator (the paper's Random baseline, appendix B).

Keeping the top ``(1-p)N`` of i.i.d. uniform scores is a uniform random subset; the seed makes it
reproducible. There is no direction to flip.
"""
from __future__ import annotations

import numpy as np

from ..errors import ScoringError
from ._registry import Option, register_method
from ._view import ColumnView

__all__ = ["random_scores", "random_"]


def random_scores(num_samples: int, *, seed: int = 0) -> np.ndarray:
    """float64 ``(num_samples,)`` i.i.d. uniform in ``[0, 1)`` from ``numpy.random.default_rng(seed)``."""
    if isinstance(num_samples, bool) or int(num_samples) < 0:
        raise ScoringError(f"num_samples must be >= 0, got {num_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ScoringError(f"seed must be an integer, got {seed!r}")
    return np.random.default_rng(int(seed)).random(int(num_samples), dtype=np.float64)


@register_method("random", options={"seed": Option(0, int)}, epochs_read=0)
def random_(view: ColumnView, *, seed: int) -> np.ndarray:
    """Random baseline: uniform scores, reproducible by ``seed``. Reads no epochs (only N).

    Returns float64 ``(N,)``; higher = keep first (a uniform random subset)."""
    return random_scores(view.num_samples, seed=seed)
