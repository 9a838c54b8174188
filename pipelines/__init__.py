"""The tdds DAGs (:mod:`pipelines.prune`) and how to run them (:mod:`pipelines.run`): compile to
KFP YAML, run on this machine with ``kfp.local``, submit to or schedule on a KFP cluster."""
from .prune import PRUNE_NAME, REPRUNE_NAME, build_prune_pipeline, build_reprune_pipeline

__all__ = ["PRUNE_NAME", "REPRUNE_NAME", "build_prune_pipeline", "build_reprune_pipeline"]
