"""RS2: Repeated Sampling of Random Subsets (Okanovic et al., "Repeated Random Sampling for
Minimizing the Time-to-Accuracy of Learning", ICLR 2024), the "without replacement" variant of their
Algorithm 1, as a coreset-training row.

RS2 keeps no fixed subset: every epoch trains on a fresh random subset of ``M = round((1 - rate) N)``
samples, drawn without replacement across epochs (:mod:`tdds_core.data.rs2_draws`), with as many
iterations as the static coreset of the same rate. Its score is constant, so its selection is M
samples in the selection's seeded tie-break order: the selection folder only fixes M and the
dataset fingerprint, and the coreset stage trains it with ``per_epoch = M`` over the whole training
set (``register_method(per_epoch=True)``; :func:`tdds_core.scoring.method_per_epoch`). Unweighted (its
loss weighting is ``none``); it reads no epoch of the dynamics run."""
from __future__ import annotations

import numpy as np

from ..names import METHOD_RS2
from ._registry import register_method
from ._view import ColumnView

__all__ = ["RS2", "rs2"]

#: The method's registered name.
RS2 = METHOD_RS2


@register_method(RS2, options={}, weighting="none", epochs_read=0, per_epoch=True)
def rs2(view: ColumnView) -> np.ndarray:
    """RS2: float64 ``(N,)`` zeros (reads no epochs, only N). The selection keeps M samples by its
    tie-break permutation; the coreset stage draws a fresh M every epoch instead (the scores do not
    rank anything: there is no direction)."""
    return np.zeros(view.num_samples, dtype=np.float64)
