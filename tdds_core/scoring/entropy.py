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
from ._registry import Option, register_method
from ._view import ColumnView, EpochStream

__all__ = ["entropy_from_logits", "entropy", "SOURCES"]

#: the values of the ``source`` option
SOURCES = ("clean", "last_epoch")


def entropy_from_logits(logits: np.ndarray, *, nan_policy: str = "raise", epoch: Any = None) -> np.ndarray:
    """Entropy of ``softmax(logits)`` per row (the ``entropy`` column of one epoch).

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
    view = EpochStream([(epoch, x)], nan_policy=nan_policy, method="entropy")
    return view.finish(next(view.columns(None, "entropy")))


def _check(opts: dict) -> None:
    if opts["source"] == "clean" and opts["epoch"] is not None:
        raise ScoringError("entropy: epoch only applies to source='last_epoch' (the clean pass is of the final "
                           "model); pass source='last_epoch' with it, or drop epoch")


@register_method("entropy", options={"source": Option("clean", choices=SOURCES),
                                     "epoch": Option(None, int, doc="recorded epoch (source='last_epoch')")},
                 check=_check, epochs_read=lambda p, epochs: epochs if p["epoch"] is None else p["epoch"] + 1)
def entropy(view: ColumnView, *, source: str, epoch: Optional[int]) -> np.ndarray:
    """Entropy of the trained model's prediction for every sample.

    ``source="clean"`` (default): the clean final pass (eval mode, no augmentation) of the final
    model (``final_logits.npy``, or ``final.npy`` of statistics). ``source="last_epoch"``: the
    epoch ``epoch`` (default: the last recorded epoch). ``epoch`` only applies to "last_epoch".

    Returns float64 ``(N,)``; higher entropy = keep first."""
    if source == "clean":
        return view.final_column("entropy")
    recorded = view.epochs
    if not recorded:
        raise ScoringError("entropy: the dynamics hold no recorded epochs")
    t = recorded[-1] if epoch is None else int(epoch)
    if t not in recorded:
        raise ScoringError(f"entropy: epoch {t} was not recorded; recorded epochs: {recorded[0]}..{recorded[-1]}")
    return view.column(t, "entropy")
