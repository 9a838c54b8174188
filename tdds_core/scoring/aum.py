"""AUM: area under the margin (Pleiss et al., "Identifying Mislabeled Data using the Area Under the
Margin Ranking", NeurIPS 2020), as the TDDS paper ran it (CVPR 2024, appendix B).

Definition used by default (``space="prob"``): with ``p_t = softmax(logits_t)`` at recorded epoch
``t``, the margin is ``p_t[y] - max_{c != y} p_t[c]`` (in ``[-1, 1]``) and AUM is its mean over the
recorded epochs ``start <= t < stop``.

Sources and where they differ:

* Pleiss et al. define the margin on LOGITS (assigned logit minus the largest other logit); that
  is ``space="logit"`` here (this module's default before the TDDS-faithful change).
* The TDDS paper's appendix B calls AUM "the probability gap between the target class and the
  next largest class across all training epochs", and the code of CCS (Zheng et al., ICLR 2023;
  ``haizhongzheng/Coverage-centric-coreset-selection``, ``generate_importance_score.py``,
  ``training_dynamics_metrics``), whose AUM the TDDS paper uses as CCS's base score, computes
  ``accumulated_margin`` from softmax PROBABILITIES: ``exp(log_softmax)`` of the training forward
  pass, target probability minus the largest other probability. That is the default here.
* CCS accumulates the SUM over every logged epoch; this is the MEAN. Same ranking, and the same
  CCS strata (CCS's equal-width bins are invariant to a positive scale), for any fixed epoch count.
* CCS stores the log-probabilities in float16 and sums in float32; this computes in float64 from the
  recorded logits. Scores agree to those precisions; near-ties may order differently.

Direction: the raw AUM is returned, not flipped: HIGHER AUM = easier = KEEP FIRST under the plain
top-k, as the TDDS paper's appendix B states ("selects samples with the highest area under the
margin ... A larger AUM suggests higher importance"). (Pleiss et al. flag LOW AUM as likely
mislabeled; the CCS repository's own plain AUM baseline, ``--data-score-descending 0``, keeps the
LOWEST AUM instead. The TDDS paper's direction is the one followed.) CCS uses the same orientation
as its base: its hard cutoff removes the LOWEST AUM samples (``tdds_core.scoring.ccs``).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

from ..errors import ScoringError
from ._common import column_mean, select_epochs, softmax64
from ._registry import Option, check_option, register_method
from ._view import ColumnView, EpochStream

__all__ = ["margins", "probability_margins", "aum_from_epochs", "aum", "AUM_SPACES"]

#: the margin spaces: "prob" (softmax probabilities, the TDDS/CCS default), "logit" (Pleiss et al.)
AUM_SPACES = ("prob", "logit")
#: the statistics column of each space
_COLUMN = {"prob": "margin_p", "logit": "margin_logit"}


def _target_minus_other(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``x[i, y_i] - max_{c != y_i} x[i, c]`` of a float64 ``[N, C]`` array (modified in place)."""
    rows = np.arange(x.shape[0])
    y = np.asarray(labels, dtype=np.int64)
    target = x[rows, y].copy()
    x[rows, y] = -np.inf
    return target - x.max(axis=1)


def _check_logits(logits: np.ndarray) -> np.ndarray:
    x = np.array(logits, dtype=np.float64, copy=True)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ScoringError(f"the margin needs [N, C] logits with C >= 2, got shape {x.shape}")
    return x


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Logit margin (Pleiss et al.) of one epoch: float64 ``(N,)``, ``logits[i, y_i] - max_{c != y_i}
    logits[i, c]`` (needs C >= 2; the ``margin_logit`` column)."""
    return _target_minus_other(_check_logits(logits), labels)


def probability_margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Probability margin (the TDDS paper's "probability gap", CCS's ``accumulated_margin`` term) of
    one epoch: float64 ``(N,)`` in ``[-1, 1]``, ``p[i, y_i] - max_{c != y_i} p[i, c]`` with
    ``p = softmax(logits)`` (needs C >= 2; the ``margin_p`` column)."""
    return _target_minus_other(softmax64(_check_logits(logits)), labels)


def aum_from_epochs(epochs: Iterable[Any], labels: np.ndarray, *, space: str = "prob",
                    nan_policy: str = "raise") -> np.ndarray:
    """Mean margin over the given epochs.

    Parameters
    ----------
    epochs : iterable of ``[N, C]`` logits (or ``(t, logits)`` pairs)
    labels : array ``(N,)`` of int
    space : {"prob", "logit"}
        "prob" (default): margins of softmax probabilities (TDDS appendix B, the CCS code);
        "logit": margins of the logits (Pleiss et al.).

    Returns
    -------
    np.ndarray
        float64 ``(N,)``; higher AUM = keep first (the TDDS paper's direction).
    """
    column = _COLUMN[check_option("aum", "space", space)]
    view = EpochStream(epochs, labels, nan_policy=nan_policy, method="aum")
    return view.finish(column_mean(view.columns(None, column)))


@register_method("aum", options={"space": Option("prob", choices=AUM_SPACES),
                                 "start": Option(None, int, doc="first epoch"),
                                 "stop": Option(None, int, doc="epoch after the last")},
                 epochs_read=lambda p, epochs: epochs if p["stop"] is None else p["stop"])
def aum(view: ColumnView, *, space: str, start: Optional[int], stop: Optional[int]) -> np.ndarray:
    """AUM over the recorded epochs ``start <= t < stop`` (default: all).

    ``space="prob"`` (default): mean of ``p[y] - max_{c != y} p[c]`` on softmax probabilities, as the
    TDDS paper (appendix B, "probability gap") and the CCS code compute it; ``space="logit"``: the
    logit margin of Pleiss et al.

    Returns float64 ``(N,)``; higher AUM = keep first (the raw AUM, not flipped)."""
    if view.num_classes < 2:
        raise ScoringError(f"the margin needs [N, C] logits with C >= 2, got C={view.num_classes}")
    ts = select_epochs(view, start, stop, method="aum", minimum=1)
    return column_mean(view.columns(ts, _COLUMN[space]))
