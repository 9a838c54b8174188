"""Scoring methods: one file per method, each registered under its name on import (timm style).

>>> from tdds_core.scoring import compute_scores, list_methods
>>> scores = compute_scores("tdds", dyn, T=30, W=10, decay=0.9)   # float64 [N], higher = keep first

Every method takes a dynamics object (``tdds_core.dynamics.Dynamics`` or
``tdds_core.dynamics_reference.ReferenceDynamics``) plus keyword-only options and returns float64
``(N,)`` scores in sample order where a higher score means keep first. Each method module also
exposes the pure array-level function it is built on (``tdds_from_epochs``, ``aum_from_epochs``, ...).
"""
from ._registry import (MethodInfo, compute_scores, get_method, get_sampler, is_method, list_methods, method_options,
                        register_method, resolve_params)
from . import aum, ccs, dyn_unc, el2n, entropy, forgetting, moderate, random_, tdds  # noqa: E402,F401  (register)
from .aum import aum_from_epochs, margins
from .ccs import ccs_sample
from .dyn_unc import dyn_unc_from_epochs
from .el2n import el2n_from_epochs
from .entropy import entropy_from_logits
from .forgetting import forgetting_from_epochs
from .moderate import class_distances, moderate_from_features
from .random_ import random_scores
from .tdds import TddsAccumulator, tdds_from_array, tdds_from_epochs, window_weights

__all__ = [
    "MethodInfo", "register_method", "get_method", "list_methods", "is_method", "method_options", "resolve_params",
    "get_sampler", "compute_scores",
    "tdds_from_epochs", "tdds_from_array", "TddsAccumulator", "window_weights",
    "random_scores", "entropy_from_logits", "forgetting_from_epochs", "el2n_from_epochs", "aum_from_epochs", "margins",
    "moderate_from_features", "class_distances", "ccs_sample", "dyn_unc_from_epochs",
]
