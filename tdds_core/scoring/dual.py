"""DUAL: difficulty times uncertainty over the early epochs (Cho, Shin, Kang, Yun, "Lightweight Dataset
Pruning without Full Training via Example Difficulty and Prediction Uncertainty", ICML 2025,
arXiv:2502.06905; the authors' code: ``behaapyy/dual-pruning``, ``exp_cifar/importance_evaluation.py``
function ``dual`` and ``exp_cifar/data_subset.py`` function ``beta_sampling``).

Input: the target-class probability ``p_t(x) = softmax(logits_t(x))[y]`` of every sample for the
first ``epochs`` recorded epochs of the full-data run (default 30, the authors' CIFAR setting; they
use 60 for ImageNet), from the same train-mode logits TDDS uses. Labels are needed.

Score: over sliding windows of ``window`` consecutive epochs (default 10, stride 1), window
``k`` scores ``10 * std_k * (1 - mean_k)`` with ``std_k`` the standard deviation of ``p`` over the
window (ddof = 1, torch's default) and ``mean_k`` its mean; the score is the mean over the windows.
Prediction uncertainty (std) times difficulty (1 - mean). Higher = keep first (the authors sort
ascending and keep the tail); nothing is flipped. Dyn-Unc is the same without the ``(1 - mean)``
factor.

Beta sampling (the selection strategy ``dual_beta``, :mod:`tdds_core.strategies`): with
``pred_mean(x)`` the mean of ``p_t(x)`` over the same epochs, ``anchor`` the mean ``pred_mean`` of the
10 highest-scored samples, ``r = 1 - n_keep / N`` the pruning rate and ``c_d`` (default 4):
``b = 15 (1 - anchor) (1 - r ** c_d)``, ``a = 16 - b``; ``n_keep`` samples are drawn without
replacement with probability proportional to ``BetaPDF(pred_mean; a, b) * score``. Without it the
selection is the plain top-k by score. DUAL's default strategy follows its option ``beta_sampling``:
``False`` (default) top-k at every rate, ``True`` Beta sampling at every rate, ``"auto"`` Beta
sampling at pruning rates >= :data:`BETA_FROM_RATE` (0.8) and top-k below. The 0.8 is this project's
choice, because the authors' code sets no rule: their CIFAR script selects top-k unless
``--sample beta`` is passed (``exp_cifar/train_subset.py`` line 49, default None;
``exp_cifar/data_subset.py`` lines 42-45), their CIFAR README's example passes ``--sample beta`` at
``--subset_rate 0.3``, i.e. 70% pruning (``exp_cifar/README.md`` lines 56-69), and their ImageNet
README shows "DUAL" and "DUAL+Beta Sampling" both at ``--coreset-ratio 0.1``, i.e. 90% pruning
(``exp_imagenet/README.md`` lines 46-85); ``behaapyy/dual-pruning`` at commit 4ab525d. The paper's
abstract motivates the sampling by the accuracy drop at extreme pruning ratios.

Streaming: one epoch of logits is read at a time; memory is a ring of ``window`` float64 ``[N]``
probability vectors plus the running sums (never ``N x C`` of more than one epoch).

Differences from the authors' code, all documented choices:

* float64 throughout (their probabilities and std are float32 torch tensors): scores agree to
  float32 precision, ties may order differently.
* epochs: the first ``epochs`` consecutive recorded epochs from ``start`` (default: the first
  recorded one, as they do). When fewer are recorded (but at least ``window``) all of them are used
  and a warning is logged (their ``target_probs[:30]`` also silently takes what there is).
* the authors' layout (``ReferenceDynamics``): the logits of an epoch come from ``iter_epochs``
  (sample order). For an epoch that visits every sample once this is exactly their input; their
  code sums the logits of a repeated index before the softmax and soft-maxes zeros for an unvisited
  one, whereas here a repeated index gets the mean of its visits and an unvisited one is reported as
  NaN/Inf input under ``nan_policy``.
* beta sampling: ``r`` is ``1 - n_keep / N`` (selection gives the sampler ``n_keep =
  round((1 - rate) N)``, theirs ``int((1 - rate) N)`` with ``r`` the rate itself: the same up to
  rounding of one sample). The draw is the Gumbel-top-k form of sequential sampling without
  replacement (the same distribution as ``numpy.random.choice(replace=False, p=...)``, which they
  call; seeded with ``numpy.random.default_rng(seed)`` instead of the global RNG). ``pred_mean``
  exactly 0 or 1 is moved one float64 step inside ``(0, 1)`` so the density stays finite. Samples
  whose weight is 0 (score 0, or ``-inf`` from ``nan_policy="skip"``) are never drawn; fewer such
  candidates than ``n_keep`` is a :class:`ScoringError` (their ``np.random.choice`` fails too).
  The Beta density is computed with ``math.lgamma`` (no scipy dependency).
* beta sampling draws over the whole dataset, as theirs does: it refuses class-balanced selection.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Optional

import numpy as np

from ..errors import ScoringError
from ..strategies import dual_beta_pdf, dual_beta_sample, dual_beta_weights
from ._common import leading_epochs
from ._registry import Option, check_option, register_method
from ._view import ColumnView, EpochStream

__all__ = ["dual_from_epochs", "dual_beta_weights", "dual_beta_sample", "dual_beta_pdf", "dual", "BETA_FROM_RATE"]

#: the scale the authors put on the window std (does not change the ranking)
STD_SCALE = 10.0
#: the pruning rate from which ``beta_sampling="auto"`` selects with Beta sampling (module docstring: the
#: authors' code sets no rule, so this is this project's choice)
BETA_FROM_RATE = 0.8
_RATE_TOL = 1e-9

OPTIONS = {
    "epochs": Option(30, int, min=2, doc="how many early epochs to use", hint="the authors use 30 (CIFAR) or 60 (ImageNet)"),
    "window": Option(10, int, min=2, doc="sliding window in epochs", hint="the authors use 10"),
    "start": Option(None, int, min=0, doc="first epoch"),
    "beta_sampling": Option(False, choices=(False, True, "auto"), doc="select with Beta sampling",
                            hint="'auto': at pruning rates >= 0.8 only"),
    "c_d": Option(4.0, float, min=0, min_open=True, doc="Beta sampling exponent", hint="the authors use 4"),
}


def _check(opts: dict) -> None:
    if opts["window"] > opts["epochs"]:
        raise ScoringError(f"dual: window={opts['window']} is longer than epochs={opts['epochs']}; use window <= epochs "
                           "(e.g. epochs=30, window=10)")


def _windows(probs: Iterable[np.ndarray], window: int) -> tuple[np.ndarray, np.ndarray]:
    """``(summed window scores / K, pred_mean)`` over the target probabilities ``(N,)`` of each
    epoch (the ``p_target`` column).

    Memory: ``window`` probability vectors and two accumulators."""
    ring: deque = deque(maxlen=window)
    total: Any = 0.0
    psum: Any = 0.0
    K = E = 0
    for p in probs:
        ring.append(p)
        psum = psum + p
        E += 1
        if len(ring) == window:
            P = np.stack(ring)  # [window, N], oldest first
            total = total + STD_SCALE * P.std(axis=0, ddof=1) * (1.0 - P.mean(axis=0))
            K += 1
    if K == 0:
        raise ScoringError(f"dual needs at least window={window} epochs but got {E}; lower window "
                           "(CLI: --param window=...) or record more epochs")
    return total / K, psum / E


def dual_from_epochs(epochs: Iterable[Any], labels: np.ndarray, *, window: int = 10, nan_policy: str = "raise",
                     return_pred_mean: bool = False) -> Any:
    """DUAL scores from an iterable of epochs (every item is used; pass the first 30).

    Parameters
    ----------
    epochs : iterable of ``[N, C]`` logits (or ``(t, logits)`` pairs), at least ``window`` of them
    labels : array ``(N,)`` of int
    window : int
        Sliding-window width in epochs (>= 2), stride 1. Default 10.
    nan_policy : {"raise", "skip"}
    return_pred_mean : bool
        Also return ``pred_mean`` (the mean target probability over the epochs; NaN for skipped rows).

    Returns
    -------
    np.ndarray or (np.ndarray, np.ndarray)
        float64 ``(N,)`` scores >= 0 (``-inf`` for skipped rows); higher = keep first.
    """
    window = int(check_option("dual", "window", window))
    view = EpochStream(epochs, labels, nan_policy=nan_policy, method="dual")
    scores, pred_mean = _windows(view.columns(None, "p_target"), window)
    scores = view.finish(scores)
    if not return_pred_mean:
        return scores
    pred_mean = np.array(pred_mean, dtype=np.float64, copy=True)
    pred_mean[view.bad] = np.nan
    return scores, pred_mean


def _dual_epochs(view: ColumnView, start: Optional[int], epochs: int, window: int) -> list[int]:
    """The first ``epochs`` consecutive recorded epochs from ``start`` (at least ``window``)."""
    return leading_epochs(view, start, epochs, minimum=window, method="dual", what="window=",
                          fix="Lower window (CLI: --param window=...), choose start within the recorded range, or "
                              "record more epochs.")


def _strategy(params: dict, rate: Optional[float]) -> tuple[str, dict]:
    """DUAL's own selection at ``rate`` (``beta_sampling``: False top-k, True Beta sampling, "auto" Beta
    sampling from :data:`BETA_FROM_RATE`); Beta sampling reads ``pred_mean`` over DUAL's own epochs."""
    beta = params["beta_sampling"]
    if beta == "auto":
        if rate is None:
            raise ScoringError("dual: beta_sampling='auto' chooses Beta sampling by the pruning rate (from "
                               f"{BETA_FROM_RATE:g}) and no rate was given; pass rate= (get_sampler(..., rate=r)) or set "
                               "beta_sampling to true or false")
        beta = float(rate) >= BETA_FROM_RATE - _RATE_TOL
    if not beta:
        return "topk", {}
    return "dual_beta", {"c_d": float(params["c_d"]), "epochs": int(params["epochs"]), "start": params["start"]}


@register_method("dual", options=OPTIONS, check=_check, strategy=_strategy,
                 epochs_read=lambda p, epochs: (p["start"] or 0) + p["epochs"])
def dual(view: ColumnView, *, epochs: int, window: int, start: Optional[int], beta_sampling: bool,
         c_d: float) -> np.ndarray:
    """DUAL scores (Cho et al., ICML 2025): mean over sliding windows of ``10 * std * (1 - mean)`` of
    the target-class probability over the first ``epochs`` epochs (see the module docstring).

    Parameters
    ----------
    view : ColumnView
        The recording's columns (its ``p_target`` column of each epoch; labels needed, ``--labels``
        for the authors' layout).
    epochs : int
        How many early epochs: ``start .. start+epochs-1`` (fewer when fewer are recorded, at least
        ``window``). Default 30 (the authors' CIFAR setting; 60 for ImageNet).
    window : int
        Sliding-window width in epochs, stride 1, ``2 <= window <= epochs``. Default 10.
    start : int, optional
        First epoch (default: the first recorded epoch).
    beta_sampling : bool or "auto"
        Select with the authors' Beta sampling (strategy ``dual_beta``) instead of plain top-k: True at
        every rate, "auto" at pruning rates >= 0.8 (a selection option; the scores are the same).
        Default False.
    c_d : float
        Beta sampling exponent ``c_D``. Default 4.

    Returns
    -------
    np.ndarray
        float64 ``(N,)`` >= 0; higher = keep first.
    """
    ts = _dual_epochs(view, start, int(epochs), int(window))
    return _windows(view.columns(ts, "p_target"), int(window))[0]
