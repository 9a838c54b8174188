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

Beta sampling (option ``beta_sampling=True``, the authors' choice at high pruning rates): the
method's own selection sampler (:func:`dual_beta_sample`). With ``pred_mean(x)`` the mean of
``p_t(x)`` over the same epochs, ``anchor`` the mean ``pred_mean`` of the 10 highest-scored
samples, ``r = 1 - n_keep / N`` the pruning rate and ``c_d`` (default 4):
``b = 15 (1 - anchor) (1 - r ** c_d)``, ``a = 16 - b``; ``n_keep`` samples are drawn without
replacement with probability proportional to ``BetaPDF(pred_mean; a, b) * score``. Without it the
selection is the plain top-k by score.

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

import logging
import math
from collections import deque
from typing import Any, Callable, Iterable, Optional

import numpy as np

from ..errors import ScoringError
from ._common import recorded_range
from ._registry import Option, check_option, register_method
from ._view import ColumnView, EpochStream, open_view

__all__ = ["dual_from_epochs", "dual_beta_weights", "dual_beta_sample", "dual_beta_pdf", "dual"]

log = logging.getLogger("tdds.scoring")

#: the scale the authors put on the window std (does not change the ranking)
STD_SCALE = 10.0
#: how many of the highest-scored samples set the Beta anchor
ANCHOR_TOP = 10

OPTIONS = {
    "epochs": Option(30, int, min=2, doc="how many early epochs to use", hint="the authors use 30 (CIFAR) or 60 (ImageNet)"),
    "window": Option(10, int, min=2, doc="sliding window in epochs", hint="the authors use 10"),
    "start": Option(None, int, min=0, doc="first epoch"),
    "beta_sampling": Option(False, bool),
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
    recorded = view.epochs
    if not recorded:
        raise ScoringError("dual: the dynamics hold no recorded epochs")
    s = recorded[0] if start is None else int(start)
    have = set(recorded)
    ts: list[int] = []
    t = s
    while len(ts) < epochs and t in have:
        ts.append(t)
        t += 1
    if len(ts) < window:
        raise ScoringError(
            f"dual needs at least window={window} consecutive recorded epochs from epoch {s} but found {len(ts)}; "
            f"recorded epochs: {recorded_range(recorded)}. Lower window (CLI: --param window=...), choose start within "
            "the recorded range, or record more epochs."
        )
    if len(ts) < epochs:
        log.warning("dual: epochs=%d asked but only epochs %d..%d are recorded consecutively from %d; using those %d",
                    epochs, ts[0], ts[-1], s, len(ts))
    return ts


def _log_beta_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """log of the Beta(a, b) density at ``x`` in ``[0, 1]`` (``0 * log 0 = 0``)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(a == 1.0, 0.0, (a - 1.0) * np.log(x))
        hi = np.where(b == 1.0, 0.0, (b - 1.0) * np.log1p(-x))
    return lo + hi - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


def dual_beta_pdf(x: Any, a: float, b: float) -> np.ndarray:
    """The Beta(a, b) density at ``x`` in ``[0, 1]`` (float64, via ``math.lgamma``; ``a, b > 0``)."""
    if not (a > 0 and b > 0):
        raise ScoringError(f"Beta density needs a > 0 and b > 0, got a={a}, b={b}")
    return np.exp(_log_beta_pdf(x, float(a), float(b)))


def _beta_log_weights(scores: np.ndarray, pred_mean: np.ndarray, n_keep: int, c_d: float) -> tuple[np.ndarray, dict]:
    """``log(BetaPDF(pred_mean; a, b) * score)`` per sample (``-inf`` = never drawn) and the Beta
    parameters ``{"anchor", "a", "b", "r"}``."""
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(pred_mean, dtype=np.float64)
    n = len(s)
    if m.shape != s.shape:
        raise ScoringError(f"dual beta sampling: {len(m)} pred_mean values for {n} scores")
    if np.isnan(s).any():
        raise ScoringError("dual beta sampling: the scores hold NaN")
    if not (1 <= n_keep <= n):
        raise ScoringError(f"dual beta sampling: n_keep must be in 1..{n}, got {n_keep}")
    ok = np.isfinite(s) & np.isfinite(m)
    pos = np.flatnonzero(ok)
    if len(pos) == 0:
        raise ScoringError("dual beta sampling: no sample has a finite score and pred_mean")
    top = pos[np.lexsort((pos, -s[pos]))][:ANCHOR_TOP]  # highest scores, ties by position
    anchor = float(m[top].mean())
    r = 1.0 - n_keep / n
    b = 15.0 * (1.0 - anchor) * (1.0 - r ** float(c_d))
    a = 16.0 - b
    params = {"anchor": anchor, "a": a, "b": b, "r": r}
    if not (b > 0.0 and a > 0.0):
        raise ScoringError(
            f"dual beta sampling is degenerate here: anchor={anchor:.6g} (mean pred_mean of the {len(top)} highest-scored "
            f"samples) and r={r:.6g} give Beta(a={a:.6g}, b={b:.6g}); the top samples' target probability is 1, so the "
            "scores carry no signal. Turn beta_sampling off."
        )
    x = np.clip(m, np.nextafter(0.0, 1.0), np.nextafter(1.0, 0.0))
    logw = np.full(n, -np.inf)
    live = ok & (s > 0)
    with np.errstate(divide="ignore"):
        logw[live] = _log_beta_pdf(x[live], a, b) + np.log(s[live])
    return logw, params


def dual_beta_weights(scores: np.ndarray, pred_mean: np.ndarray, n_keep: int, *, c_d: float = 4.0) -> np.ndarray:
    """The first-draw probabilities of beta sampling: ``BetaPDF(pred_mean; a, b) * score``
    normalised to sum 1 (0 for samples never drawn). See the module docstring for ``a, b``."""
    logw, _ = _beta_log_weights(scores, pred_mean, int(n_keep), float(c_d))
    if not np.isfinite(logw).any():
        return np.zeros(len(logw))
    w = np.exp(logw - logw.max())
    return w / w.sum()


def dual_beta_sample(scores: np.ndarray, pred_mean: np.ndarray, n_keep: int, *, c_d: float = 4.0,
                     seed: int = 0) -> np.ndarray:
    """DUAL's beta sampling: ``n_keep`` positions drawn without replacement with probability
    proportional to ``BetaPDF(pred_mean; a, b) * score`` (sequential draws; Gumbel-top-k).

    Parameters
    ----------
    scores : array ``(N,)``
        DUAL scores (``-inf`` rows are never drawn).
    pred_mean : array ``(N,)``
        Mean target-class probability over the scored epochs (NaN rows are never drawn).
    n_keep : int
        Samples to keep; the pruning rate is ``r = 1 - n_keep / N``.
    c_d : float
        Exponent in ``b = 15 (1 - anchor) (1 - r ** c_d)``. Default 4.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    np.ndarray
        int64 ``(n_keep,)`` distinct positions, in draw order.
    """
    n_keep = int(n_keep)
    logw, _ = _beta_log_weights(scores, pred_mean, n_keep, float(c_d))
    live = int(np.isfinite(logw).sum())
    if live < n_keep:
        raise ScoringError(
            f"dual beta sampling: only {live} of {len(logw)} samples have a positive weight (score > 0, finite inputs) "
            f"but {n_keep} are to be kept; lower the pruning rate or turn beta_sampling off"
        )
    rng = np.random.default_rng(int(seed))
    keys = logw + rng.gumbel(size=len(logw))
    order = np.argsort(-keys, kind="stable")[:n_keep]
    return order.astype(np.int64)


def _make_sampler(params: dict, *, dynamics: Any = None) -> Optional[Callable[..., np.ndarray]]:
    """Selection sampler of ``dual``: None (plain top-k) unless ``beta_sampling``; then beta
    sampling with ``pred_mean`` read from ``dynamics`` (computed once, on the first call)."""
    epochs, window, start, c_d = params["epochs"], params["window"], params["start"], params["c_d"]
    if not params["beta_sampling"]:
        return None
    if dynamics is None:
        raise ScoringError(
            "dual with beta_sampling=True needs the training dynamics at selection time (each sample's mean target "
            "probability over the scored epochs); pass dynamics= to get_sampler (CLI: tdds select --dynamics DIR)"
        )
    cache: dict[str, np.ndarray] = {}

    def pred_mean() -> np.ndarray:
        if "m" not in cache:
            view = open_view(dynamics, nan_policy="skip", method="dual beta sampling")
            ts = _dual_epochs(view, start, int(epochs), int(window))
            _, m = _windows(view.columns(ts, "p_target"), int(window))
            m = np.array(m, dtype=np.float64, copy=True)
            m[view.bad | ~np.isfinite(m)] = np.nan  # those samples were refused or ranked last (-inf) at scoring
            cache["m"] = m
        return cache["m"]

    def sampler(scores: np.ndarray, n_keep: int, *, labels: Optional[np.ndarray] = None, seed: int = 0) -> np.ndarray:
        n = int(dynamics.num_samples)
        if len(scores) != n:
            raise ScoringError(
                f"dual beta sampling draws over the whole dataset ({n} samples, as the authors do) but got {len(scores)} "
                "scores; class-balanced selection is not supported with beta_sampling, drop one of the two"
            )
        return dual_beta_sample(scores, pred_mean(), n_keep, c_d=float(c_d), seed=seed)

    sampler.__name__ = f"dual_beta_sampler(c_d={float(c_d):g}, epochs={epochs}, window={window})"
    return sampler


@register_method("dual", options=OPTIONS, sampler=_make_sampler, check=_check)
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
    beta_sampling : bool
        Select with the authors' Beta sampling instead of plain top-k (a selection option; the
        scores are the same). Default False.
    c_d : float
        Beta sampling exponent ``c_D``. Default 4.

    Returns
    -------
    np.ndarray
        float64 ``(N,)`` >= 0; higher = keep first.
    """
    ts = _dual_epochs(view, start, int(epochs), int(window))
    return _windows(view.columns(ts, "p_target"), int(window))[0]
