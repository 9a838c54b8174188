"""The per-sample column view every scoring method reads: the columns of
:data:`tdds_core.statistics.COLUMNS` (``el2n``, ``p_target``, ``margin_p``, ``correct``, ...) of any
recorded epoch, float64 ``(N,)``, whichever layout holds the recording.

* a statistics recording (``tdds-stats/1``): the columns are read from its files;
* a logits recording (``tdds-dynamics/1``, the authors' layout): they are computed from that
  epoch's logits in row blocks with :func:`tdds_core.statistics.epoch_statistics`, as ``tdds
  stats`` does, so both layouts give the same numbers (to float64 rounding);
* an iterable of logits arrays (:class:`EpochStream`, the array-level functions
  ``el2n_from_epochs``, ...): the same, epoch after epoch.

The view also hands out what some methods read beyond the epochs (the clean final pass's columns,
its penultimate features, the labels) and the recording itself (``source``: TDDS's blocked path
reads the logits directly). It applies the ``nan_policy``: a row with NaN/Inf inputs is a
:class:`~tdds_core.scoring._common.NonFiniteError` naming the epoch under "raise", and under
"skip" it is remembered and scored lowest by :meth:`ColumnView.finish`.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from ..errors import ScoringError
from ..statistics import COLUMNS, LABEL_FREE, epoch_columns, is_statistics
from ._common import NanGuard, check_labels, dynamics_labels, finish_skipped, leading_epochs, row_chunks, stream_chunks

__all__ = ["ColumnView", "EpochStream", "open_view", "logit_column", "mean_target_probability"]

_INDEX = {c: i for i, c in enumerate(COLUMNS)}


def _index(name: str) -> int:
    if name not in _INDEX:
        raise ScoringError(f"no column {name!r}; the columns are {', '.join(COLUMNS)}")
    return _INDEX[name]


def logit_column(logits: np.ndarray, labels: np.ndarray, name: str, prev: Optional[np.ndarray] = None) -> np.ndarray:
    """float64 ``(N,)``: the statistics column ``name`` of one epoch from its logits ``[N, C]`` (any
    float dtype), computed in row blocks as :func:`~tdds_core.statistics.epoch_statistics` does;
    ``prev``: the previous epoch's logits (``kl``; None: NaN)."""
    x = np.asarray(logits)
    n, c = x.shape
    _index(name)
    out = np.empty(n, dtype=np.float64)
    for a, b in row_chunks(n, c):
        pp = None if prev is None else epoch_columns(prev[a:b], labels[a:b], columns=("ce",))[1]
        out[a:b] = epoch_columns(x[a:b], labels[a:b], pp, columns=(name,))[0][name]
    return out


class ColumnView:
    """The columns of one recording (``source``: a ``Dynamics``, ``ReferenceDynamics`` or
    ``Statistics``) for method ``method`` under ``nan_policy``."""

    def __init__(self, source: Any, *, nan_policy: str = "raise", method: str = "scoring"):
        self.source = source
        self.nan_policy = nan_policy
        self.method = method
        self.is_statistics = is_statistics(source)
        self._guard: Optional[NanGuard] = None
        self._labels: Optional[np.ndarray] = None

    # -- the recording ------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return int(self.source.num_samples)

    @property
    def num_classes(self) -> int:
        return int(self.source.num_classes)

    @property
    def epochs(self) -> list[int]:
        """The recorded epochs, sorted."""
        return sorted(int(t) for t in self.source.epochs)

    @property
    def has_labels(self) -> bool:
        return getattr(self.source, "has_labels", True) is not False

    @property
    def labels(self) -> np.ndarray:
        """int64 ``(N,)`` training labels, checked against N and C (ScoringError naming
        ``--labels`` when the recording has none)."""
        if self._labels is None:
            self._labels = dynamics_labels(self.source, required=True, method=self.method)
        return self._labels

    @property
    def has_features(self) -> bool:
        return bool(getattr(self.source, "has_features", False))

    def features(self) -> np.ndarray:
        """``[N, D]`` penultimate features of the clean final pass (Moderate)."""
        return self.source.features()

    # -- columns ------------------------------------------------------------------------------
    def column(self, t: int, name: str) -> np.ndarray:
        """Column ``name`` of epoch ``t``, float64 ``(N,)`` (its NaN/Inf rows checked)."""
        if self.is_statistics:
            col = self.source.column(t, name)
            return self._checked(col, t, "statistics")
        _index(name)
        if name not in LABEL_FREE:
            self.labels      # (the error naming --labels when the recording has none)
        y = self.labels if self.has_labels else np.zeros(self.num_samples, dtype=np.int64)
        prev = self.source.epoch(t - 1) if name in ("kl", "kl_signed") else None
        return self._checked(logit_column(self.source.epoch(t), y, name, prev), t, "logits")

    def columns(self, ts: Sequence[int], name: str) -> Iterator[np.ndarray]:
        """Column ``name`` of each epoch of ``ts``, in order, one epoch in memory at a time."""
        for t in ts:
            yield self.column(t, name)

    def final_column(self, name: str) -> np.ndarray:
        """Column ``name`` of the clean final pass (the final model in eval mode without
        augmentation), float64 ``(N,)``; ArtifactError naming the fix when it was not recorded."""
        where = "final (clean pass)"
        if self.is_statistics:
            return self._checked(self.source.final_column(name), where, "statistics")
        final = getattr(self.source, "final_logits", None)
        if final is None:
            raise ScoringError(f"{self.method}: these dynamics offer no final_logits(); pass source='last_epoch'")
        y = self.labels if name not in LABEL_FREE else np.zeros(self.num_samples, dtype=np.int64)
        return self._checked(logit_column(final(), y, name), where, "logits")

    # -- NaN/Inf ------------------------------------------------------------------------------
    @property
    def guard(self) -> NanGuard:
        """The rows with NaN/Inf inputs (raises under "raise", remembers them under "skip")."""
        if self._guard is None:
            self._guard = NanGuard(self.num_samples, self.nan_policy)
        return self._guard

    def _checked(self, col: np.ndarray, epoch: Any, what: str) -> np.ndarray:
        self.guard.check(np.isfinite(col), epoch, what=what)
        return col

    def mark_bad(self, bad: np.ndarray) -> None:
        """Rows a method found NaN/Inf inputs in by itself (TDDS's blocked path)."""
        self.guard.bad |= np.asarray(bad, dtype=bool)

    @property
    def bad(self) -> np.ndarray:
        return self.guard.bad

    def finish(self, scores: np.ndarray) -> np.ndarray:
        """``scores`` with the rows of NaN/Inf inputs set to -inf (and a warning saying how many)."""
        if self._guard is None:
            return scores
        return finish_skipped(scores, self._guard.bad, self.method)


class EpochStream(ColumnView):
    """The columns of an iterable of ``[N, C]`` logits arrays (or ``(t, array)`` pairs), one epoch
    after the other (:meth:`columns` with ``ts=None``); ``labels`` int ``(N,)`` or None."""

    def __init__(self, epochs: Iterable[Any], labels: Any = None, *, nan_policy: str = "raise", method: str):
        super().__init__(None, nan_policy=nan_policy, method=method)
        self._epochs = epochs
        self._given = labels
        self._n = 0

    @property
    def num_samples(self) -> int:
        return self._n

    def columns(self, ts: Optional[Sequence[int]], name: str) -> Iterator[np.ndarray]:
        """Column ``name`` of every epoch of the stream, in order (``ts`` is not used: pass None)."""
        _index(name)
        seen = False
        for t, x in stream_chunks(self._epochs):
            if not seen:
                self._n, c = x.shape
                y = (np.zeros(self._n, dtype=np.int64) if self._given is None
                     else check_labels(self._given, self._n, c))
                seen = True
            yield self._checked(logit_column(x, y, name), t, "logits")
        if not seen:
            raise ScoringError(f"{self.method} needs at least one epoch of logits")


def open_view(dynamics: Any, *, nan_policy: str = "raise", method: str = "scoring") -> ColumnView:
    """The column view of ``dynamics`` (itself when it is one already)."""
    if isinstance(dynamics, ColumnView):
        return dynamics
    return ColumnView(dynamics, nan_policy=nan_policy, method=method)


def mean_target_probability(dynamics: Any, epochs: int, start: Optional[int] = None, *,
                            method: str = "dual_beta") -> np.ndarray:
    """float64 ``[N]``: each sample's mean target-class probability (``p_target``) over the first
    ``epochs`` consecutive recorded epochs from ``start`` (default: the first recorded; fewer when
    fewer are recorded, with a warning), NaN where an input is NaN/Inf: DUAL's ``pred_mean``, the input
    of its Beta sampling (``target_probs[:30].mean(0)`` in the authors' ``beta_sampling``)."""
    view = open_view(dynamics, nan_policy="skip", method=method)
    ts = leading_epochs(view, start, int(epochs), minimum=1, method=method,
                        fix="Choose start within the recorded range.")
    total: Any = 0.0
    for p in view.columns(ts, "p_target"):
        total = total + p
    m = np.array(total / len(ts), dtype=np.float64, copy=True)
    m[view.bad | ~np.isfinite(m)] = np.nan  # those samples were refused or ranked last (-inf) at scoring
    return m
