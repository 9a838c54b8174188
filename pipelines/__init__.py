"""The tdds DAGs (:mod:`pipelines.prune`) and how to run them (:mod:`pipelines.run`): compile to
KFP YAML, run on this machine with ``kfp.local``, submit to or schedule on a KFP cluster.

The names below load :mod:`pipelines.prune` (and kfp) on first use, so ``tdds`` commands that do
not touch a pipeline (``tdds score``, registered through :mod:`pipelines.cli`) start without kfp."""
from __future__ import annotations

from typing import Any

__all__ = ["PRUNE_NAME", "REPRUNE_NAME", "build_prune_pipeline", "build_reprune_pipeline"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import prune

        return getattr(prune, name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
