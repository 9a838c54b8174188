"""Scoring methods: one file per method, each one function registered under its name (timm style).

>>> from tdds_core.scoring import compute_scores, list_methods
>>> scores = compute_scores("tdds", dyn, T=30, W=10, decay=0.9)   # float64 [N], higher = keep first

Every method reads the per-sample column view of a recording (:mod:`._view`: logits recordings and
statistics recordings alike) with its declared options and returns float64 ``(N,)`` scores in
sample order where a higher score means keep first. The registry (:mod:`._registry`) checks the
options, applies the NaN policy and lists the methods; each method module also has the array-level
functions it is built on (``tdds_from_epochs``, ``aum_from_epochs``, ...). A new method is one new
module with one ``@register_method`` function, imported below (or named in ``$TDDS_PLUGINS``).
How a method's source selects is its default selection strategy (:mod:`tdds_core.strategies`;
:func:`selection_strategy`); how many leading epochs it reads is :func:`epochs_read`.
"""
from __future__ import annotations

from . import aum, ccs, dual, dyn_unc, el2n, entropy, forgetting, moderate, random_, rs2, tdds
from ._registry import (MethodInfo, Option, StrategyChoice, check_recorded_inputs, compute_scores, default_strategy,
                        epochs_read, export, get_method, get_sampler, is_method, list_methods, list_modules,
                        method_options, method_per_epoch, method_reads_statistics, method_weighting,
                        register_method, registered,
                        resolve_params, selection_options, selection_strategy, strategy_context,
                        unregister_method)
from ._view import ColumnView, mean_target_probability
from .aum import AUM_SPACES, aum_from_epochs, margins, probability_margins
from .ccs import ccs_beta, ccs_sample
from .dual import dual_beta_pdf, dual_beta_sample, dual_beta_weights, dual_from_epochs
from .dyn_unc import dyn_unc_from_epochs
from .el2n import el2n_from_epochs
from .entropy import entropy_from_logits
from .forgetting import forgetting_from_epochs
from .moderate import class_distances, moderate_from_features, moderate_rank_score
from .random_ import random_scores
from .tdds import TddsAccumulator, tdds_from_array, tdds_from_epochs, tdds_from_statistics, window_weights

__all__ = [
    "MethodInfo", "Option", "ColumnView", "register_method", "unregister_method", "registered", "export", "get_method",
    "list_methods", "list_modules", "is_method", "method_options", "method_weighting", "resolve_params", "get_sampler",
    "compute_scores", "check_recorded_inputs", "method_reads_statistics", "StrategyChoice", "default_strategy",
    "selection_strategy", "selection_options", "strategy_context", "epochs_read", "method_per_epoch", "mean_target_probability",
    "margins", "probability_margins", "aum_from_epochs", "AUM_SPACES", "ccs_beta", "ccs_sample", "dual_from_epochs",
    "dual_beta_pdf", "dual_beta_weights", "dual_beta_sample", "dyn_unc_from_epochs", "el2n_from_epochs",
    "entropy_from_logits", "forgetting_from_epochs", "class_distances", "moderate_rank_score", "moderate_from_features",
    "random_scores", "window_weights", "TddsAccumulator", "tdds_from_epochs", "tdds_from_array", "tdds_from_statistics",
]
