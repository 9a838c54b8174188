"""Training dynamics as per-sample statistics (``tdds-stats/1``): a few numbers per sample and epoch
instead of its C logits (issue 17; the TDDS paper's section 4.3 is about the memory the logits cost).

* :mod:`.columns`: the columns (:data:`COLUMNS`) and :func:`epoch_statistics`, one epoch's columns
  from its logits (numpy, float64);
* :mod:`.reader`: :func:`open_statistics` -> :class:`Statistics`, read one column of one epoch at a time;
* :mod:`.writer`: :class:`StatsWriter` (the folder while a run records it) and :func:`write_statistics`
  (``tdds stats``: convert a logits dynamics folder).

The statistics are recorded in training by :class:`tdds_core.recorder.StatsRecorder` (torch); every
dynamics-based method of :mod:`tdds_core.scoring` scores from them through its column view, and TDDS
scores any ``(T, W, decay, start)`` after training without the logits. Nothing here imports torch.
"""
from __future__ import annotations

from .columns import (COLUMNS, DTYPES, EPS, FEATURES, FINAL, LABEL_FREE, STATS_FORMAT, bytes_per_sample_epoch,
                      epoch_columns, epoch_statistics, is_statistics)
from .reader import Statistics, open_statistics
from .writer import StatsWriter, load_last, write_statistics

__all__ = ["COLUMNS", "DTYPES", "EPS", "FEATURES", "FINAL", "LABEL_FREE", "STATS_FORMAT", "bytes_per_sample_epoch",
           "epoch_columns", "epoch_statistics", "is_statistics", "Statistics", "open_statistics", "StatsWriter", "load_last",
           "write_statistics"]
