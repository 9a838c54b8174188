"""Entropy: prediction entropy of the trained model (Coleman et al., "Selection via Proxy:
Efficient Data Selection for Deep Learning", ICLR 2020; the TDDS paper's appendix B).

``H_i = -sum_c p_{ic} log p_{ic}`` with ``p = softmax(logits)``, computed in float64 through
``log p = x - logsumexp(x)``. Higher entropy = more uncertain = keep first, as in the source;
nothing is flipped.

Which logits (option ``source``):

- ``"clean"`` (default, the source's definition): the final model's predictions in eval mode
  without augmentation, i.e. the clean final pass the full-data run records
  (``Dynamics.final_logits()``, ``final_logits.npy``). Dynamics without that pass (older tdds
  folders, the authors' layout) raise an :class:`~tdds_core.errors.ArtifactError` naming the fix.
- ``"last_epoch"``: the logits recorded for the last recorded epoch (or ``epoch``), i.e. the
  training forward pass (train mode, augmented) when ``dynamics.mode`` is "train". This was the
  only behaviour before the clean pass existed; it works on any dynamics.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import ScoringError
from ._common import NanGuard, finish_skipped, guarded_rows
from ._registry import export, register_method

__all__ = ["entropy_from_logits", "entropy", "SOURCES"]

#: the values of the ``source`` option
SOURCES = ("clean", "last_epoch")


def _entropy_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    z = x - m
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    logp = z - lse
    p = np.exp(logp)
    plogp = np.where(p > 0, p * logp, 0.0)
    return -plogp.sum(axis=1)


@export
def entropy_from_logits(logits: np.ndarray, *, nan_policy: str = "raise", epoch: Any = None) -> np.ndarray:
    """Entropy of ``softmax(logits)`` per row.

    Parameters
    ----------
    logits : array ``[N, C]``
        Logits of every sample (any float dtype).

    Returns
    -------
    np.ndarray
        float64 ``(N,)`` in ``[0, log C]``; higher = keep first.
    """
    x = np.asarray(logits)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ScoringError(f"expected [N, C] logits, got shape {x.shape}")
    guard = NanGuard(x.shape[0], nan_policy)
    out = guarded_rows(x, guard, lambda blk, a, b: _entropy_rows(blk), epoch=epoch)
    return finish_skipped(out, guard.bad, "entropy")


def _entropy_stats(stats: Any, *, source: str = "clean", epoch: Optional[int] = None,
                   nan_policy: str = "raise") -> np.ndarray:
    """Entropy from per-sample statistics: the ``entropy`` column of the clean final pass
    (``final.npy``) or of ``epoch`` (default: the last recorded one); tdds_core.statistics."""
    from ..statistics import finite_scores

    t = _check(stats, source, epoch)
    h = stats.final_column("entropy") if t is None else stats.column(t, "entropy")
    return finite_scores(h, nan_policy, "entropy")


def _check(dynamics: Any, source: str, epoch: Optional[int]) -> Optional[int]:
    """The epoch ``source``/``epoch`` name (None for the clean final pass); ScoringError otherwise."""
    if source not in SOURCES:
        raise ScoringError(f"entropy: source must be one of {', '.join(SOURCES)}, not {source!r}")
    if source == "clean":
        if epoch is not None:
            raise ScoringError("entropy: epoch only applies to source='last_epoch' (the clean pass is of the final "
                               "model); pass source='last_epoch' with it, or drop epoch")
        return None
    recorded = sorted(int(t) for t in dynamics.epochs)
    if not recorded:
        raise ScoringError("entropy: the dynamics hold no recorded epochs")
    t = recorded[-1] if epoch is None else int(epoch)
    if t not in recorded:
        raise ScoringError(f"entropy: epoch {t} was not recorded; recorded epochs: {recorded[0]}..{recorded[-1]}")
    return t


@register_method("entropy", stats=_entropy_stats)
def entropy(dynamics: Any, *, source: str = "clean", epoch: Optional[int] = None, nan_policy: str = "raise") -> np.ndarray:
    """Entropy of the trained model's prediction for every sample.

    ``source="clean"`` (default): the clean final pass (eval mode, no augmentation) of the final
    model, ``dynamics.final_logits()``. ``source="last_epoch"``: the logits recorded for
    ``epoch`` (default: the last recorded epoch). ``epoch`` only applies to "last_epoch".

    Returns float64 ``(N,)``; higher entropy = keep first."""
    t = _check(dynamics, source, epoch)
    if t is None:
        final = getattr(dynamics, "final_logits", None)
        if final is None:
            raise ScoringError("entropy: these dynamics offer no final_logits(); pass source='last_epoch'")
        return entropy_from_logits(final(), nan_policy=nan_policy, epoch="final (clean pass)")
    return entropy_from_logits(dynamics.epoch(t), nan_policy=nan_policy, epoch=t)
