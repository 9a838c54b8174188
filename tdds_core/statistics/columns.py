"""The columns of per-sample statistics (``tdds-stats/1``) and how one epoch's are computed from its
logits (numpy, float64).

Per epoch ``t`` and sample ``i``, from that epoch's logits ``z_t`` (float64), the columns of
:data:`COLUMNS`, each computed as the method that reads it computes it, so that a method scored
from statistics converted in float64 gives the numbers it gives from the same logits (to float64
rounding):

* ``kl``: the TDDS inner term of the pair ``(t-1, t)`` (the authors' semantics, tdds-facts.md):
  ``sum_c | p_{t,c} (log(p_{t,c} + 1e-8) - log(p_{t-1,c} + 1e-8)) |`` with TDDS's softmax
  ``p = exp(z - max) * (1 / sum)`` (:mod:`tdds_core.scoring.tdds`); NaN at the first recorded epoch;
* ``kl_signed``: the same without the absolute value (the paper's ablation);
* ``ce``: ``-log(p_{t,y} + 1e-8)`` (TDDS's loss ablation, ``inner="loss"``);
* ``el2n``: ``|| q_t - onehot(y) ||_2`` (EL2N, Paul et al. 2021; also TDDS's ``inner="el2n"``)
  with the baselines' softmax ``q = exp(z - max) / sum``;
* ``p_target``: ``q_{t,y}`` (Dyn-Unc, DUAL);
* ``margin_p`` / ``margin_logit``: target minus the largest other class, in probability (AUM as
  the TDDS paper and CCS compute it) and in logit (AUM of Pleiss et al. 2020);
* ``correct``: 1 when ``argmax_c z_t == y`` (Forgetting, Toneva et al. 2019);
* ``entropy``: ``-sum_c q_c log q_c`` through ``log q = z - logsumexp(z)`` (Entropy).

A row whose logits hold NaN/Inf is NaN in every column (the scorers' ``nan_policy`` sees it). Every
column is computed in float64 and stored as float64 (``8 * 9 = 72`` bytes a sample and epoch
whatever the number of classes; float16 logits: ``2 C`` bytes) or, with ``dynamics.stats_dtype:
float32``, as float32 (36 bytes; scores then agree with float64 ones to float32 precision).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["COLUMNS", "LABEL_FREE", "STATS_FORMAT", "EPS", "FINAL", "FEATURES", "DTYPES", "epoch_statistics",
           "is_statistics", "bytes_per_sample_epoch", "epoch_file", "last_file", "epoch_columns"]

STATS_FORMAT = "tdds-stats/1"
EPS = 1e-8    # the authors' log offset
COLUMNS = ("kl", "kl_signed", "ce", "el2n", "p_target", "margin_p", "margin_logit", "correct", "entropy")
#: the columns that do not depend on the labels
LABEL_FREE = ("kl", "kl_signed", "entropy")
FINAL = "final.npy"
DTYPES = ("float64", "float32")   # storage dtypes (computed in float64 either way)
FEATURES = "features.npy"   # optional: the clean final pass's penultimate features (Moderate)
_C = {c: i for i, c in enumerate(COLUMNS)}


def epoch_file(t: int) -> str:
    return f"epoch_{int(t):04d}.npy"


def last_file(t: int) -> str:
    """The side file of epoch ``t``'s logits a recording run keeps for a resume."""
    return f"_last_{int(t):04d}.npy"


def bytes_per_sample_epoch(num_classes: int, logits_dtype: str = "float16", stats_dtype: str = "float64") -> dict[str, int]:
    """Bytes one sample costs per recorded epoch: ``{"logits": C * itemsize, "stats": 72 (float64) or 36}``."""
    return {"logits": int(num_classes) * np.dtype(logits_dtype).itemsize,
            "stats": len(COLUMNS) * np.dtype(stats_dtype).itemsize}


def is_statistics(obj: Any) -> bool:
    """Whether ``obj`` is an opened statistics folder (its manifest's format is ``tdds-stats/1``)."""
    manifest = getattr(obj, "manifest", None)
    return isinstance(manifest, dict) and manifest.get("format") == STATS_FORMAT


def epoch_statistics(logits: np.ndarray, labels: np.ndarray,
                     prev_probs: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's statistics (numpy, float64).

    Parameters
    ----------
    logits : array ``[N, C]`` (any float dtype), rows in sample-id order
    labels : array ``(N,)`` of int
    prev_probs : array ``[N, C]``, optional
        The previous epoch's probabilities as this function returned them (None at the first
        recorded epoch: the ``kl`` columns are NaN).

    Returns
    -------
    (stats, probs)
        float64 ``[N, len(COLUMNS)]`` and this epoch's TDDS probabilities ``[N, C]`` (the next
        epoch's ``prev_probs``).
    """
    cols, p = epoch_columns(logits, labels, prev_probs)
    return np.stack([cols[c] for c in COLUMNS], axis=1), p


def epoch_columns(logits: np.ndarray, labels: np.ndarray, prev_probs: Optional[np.ndarray] = None, *,
                  columns: Sequence[str] = COLUMNS) -> tuple[dict[str, np.ndarray], Optional[np.ndarray]]:
    """:func:`epoch_statistics` as ``{column: float64 (N,)}`` for ``columns`` only (the dict may hold
    more), and the TDDS probabilities (None when no column of TDDS's softmax was asked for)."""
    want = set(columns)
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n = len(z)
    rows = np.arange(n)
    out: dict[str, np.ndarray] = {}
    p = None
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if want & {"kl", "kl_signed", "ce", "el2n", "p_target", "margin_p", "entropy"}:
            m = z.max(axis=1, keepdims=True) if z.size else np.zeros((n, 1))
            if "entropy" in want:
                zm = z - m
                e = np.exp(zm)
            else:       # (the same numbers, in place)
                e = np.subtract(z, m)
                np.exp(e, out=e)
            s = e.sum(axis=1, keepdims=True)
        if want & {"kl", "kl_signed", "ce"}:
            # TDDS (scoring.tdds._softmax_, _log_eps, _kl_term_): p = e * (1 / s), L = log(p + 1e-8)
            p = e * np.reciprocal(s)
            L = np.log(p + EPS)
            if prev_probs is None:
                out["kl"] = np.full(n, np.nan)
                out["kl_signed"] = np.full(n, np.nan)
            elif want & {"kl", "kl_signed"}:
                term = p * (L - np.log(np.asarray(prev_probs, dtype=np.float64) + EPS))
                out["kl_signed"] = term.sum(axis=1)
                out["kl"] = np.abs(term, out=term).sum(axis=1)
            out["ce"] = -np.log(p[rows, y] + EPS)
        if want & {"el2n", "p_target", "margin_p"}:
            # the baselines' softmax: q = e / s (e is not read after this)
            q = np.divide(e, s, out=e)
            q_y = q[rows, y].copy()
            out["p_target"] = q_y
            if "el2n" in want:
                err = q.copy()
                err[rows, y] -= 1.0
                out["el2n"] = np.sqrt((err * err).sum(axis=1))
            if "margin_p" in want:
                q[rows, y] = -np.inf
                out["margin_p"] = q_y - q.max(axis=1)
        if "margin_logit" in want:
            other = z.copy()
            other[rows, y] = -np.inf
            out["margin_logit"] = z[rows, y] - other.max(axis=1)
        if "correct" in want:
            out["correct"] = (z.argmax(axis=1) == y).astype(np.float64)
        if "entropy" in want:
            # entropy: log q = (z - max) - log(sum)
            logq = zm - np.log(s)
            pq = np.exp(logq)
            out["entropy"] = -np.where(pq > 0, pq * logq, 0.0).sum(axis=1)
        bad = ~np.isfinite(z.sum(axis=1))       # NaN/Inf in a row; an overflowing sum is checked exactly
    if bad.any():
        rows = np.flatnonzero(bad)
        bad[rows] = ~np.isfinite(z[rows]).all(axis=1)
        for col in out.values():
            col[bad] = np.nan
    return out, p
