"""The pipeline stages: one module per stage, each registering a :class:`Stage` on import
(``train_full``, ``score``, ``select``, ``reprune``, ``coreset``, ``evaluate``, ``report``), plus
what they share (:mod:`._artifacts`: where artifacts live and how they are written, found and
fetched; :mod:`._registry`: the registry, the state passed between stages, plugins).

Adding a stage is one module here (or a plugin module named in ``$TDDS_PLUGINS``) that calls
:func:`register_stage`; ``tdds grid`` and the KFP pipeline both run every registered stage in order.

Every stage writes its artifacts under the run's output root (a local folder or ``s3://...``) at a
key derived from content and config (:mod:`tdds_core.plan`), completely or not at all (manifest
last); a stage whose artifact exists returns it without redoing the work.
"""
from __future__ import annotations

import importlib
import pkgutil

from ._artifacts import StageOutput, claim_output, existing, fetch, load_scores, publish, uri_of, work_dir
from ._registry import (STATE_FORMAT, Context, Ref, Stage, State, chain, get_stage, list_stages, load_plugins, register_stage,
                        unregister_stage)

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

from .coreset import train_coreset, tracked_coreset  # noqa: E402
from .evaluate import evaluate_cross_arch  # noqa: E402
from .score import score, tracked_score  # noqa: E402
from .select import select  # noqa: E402
from .train_full import train_full, tracked_train_full  # noqa: E402

__all__ = ["STATE_FORMAT", "Stage", "State", "Ref", "Context", "register_stage", "unregister_stage", "get_stage", "list_stages",
           "chain", "load_plugins", "StageOutput", "claim_output", "fetch", "load_scores", "existing", "publish", "uri_of",
           "work_dir", "train_full",
           "tracked_train_full", "score", "tracked_score", "select", "train_coreset", "tracked_coreset",
           "evaluate_cross_arch"]
