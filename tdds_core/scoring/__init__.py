"""Scoring methods: one file per method, each registered under its name on import (timm style).

>>> from tdds_core.scoring import compute_scores, list_methods
>>> scores = compute_scores("tdds", dyn, T=30, W=10, decay=0.9)   # float64 [N], higher = keep first

Every method takes a dynamics object (``tdds_core.dynamics.Dynamics`` or
``tdds_core.dynamics_reference.ReferenceDynamics``) plus keyword-only options and returns float64
``(N,)`` scores in sample order where a higher score means keep first. Each method module also
exposes the pure array-level function it is built on (``tdds_from_epochs``, ``aum_from_epochs``, ...),
marked ``@export`` in its module and so importable from here.

Every non-underscore module of this folder is imported below: ``@register_method`` registers its
methods and ``@export`` adds its public functions to this namespace and ``__all__``, so a new
method is one new file and nothing here changes.
"""
from __future__ import annotations

import importlib
import pkgutil

from . import _registry
from ._registry import (MethodInfo, check_recorded_inputs, compute_scores, export, get_method, get_sampler, is_method,
                        list_methods, list_modules, method_options, method_reads_statistics, method_weighting,
                        register_method, registered, resolve_params, unregister_method)

# the registry API; @export appends each exported name while the modules below are imported
__all__ = [n for n in _registry.__all__ if n != "NAN_POLICIES"]


def _discover() -> list[str]:
    """Import every non-underscore module of this package (as ``tdds_core.cli`` does); returns their names."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    for name, (_, obj) in _registry._EXPORTS.items():  # modules imported earlier (a reload) export nothing anew
        globals()[name] = obj
        if name not in __all__:
            __all__.append(name)
    return names


_discover()
