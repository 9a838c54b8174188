"""The tdds tasks as KFP v2 lightweight Python components: thin typed functions, each one call
into :mod:`tdds_core.steps`. KFP copies a function's source into the task, so every import is
inside the function.

``stage_task`` is every registered stage's component (:func:`components.make_components` names
one per stage); ``context`` is part of KFP's cache key and otherwise unused: it names the store
and the tracker the task writes to (:func:`pipelines.run.cache_context`), so a run against another
store or MLflow never reuses a cached task whose artifacts and runs live elsewhere.
"""

from typing import NamedTuple, Optional

from kfp.dsl import Artifact, Input, Metrics, Output


def open_run(config_json: str, run_id: str, job_id: str, build: str, pipeline: str
             ) -> NamedTuple("Opened", [("parent_run_id", str), ("fingerprint", str)]):
    """Check the config, fingerprint the dataset and open the parent MLflow run (never cached)."""
    from collections import namedtuple

    from tdds_core import steps

    parent_run_id, fingerprint = steps.retrying(lambda: steps.open_run(
        config_json, run_id=run_id, job_id=job_id, build=build, pipeline=pipeline), what="open-run")
    return namedtuple("Opened", ["parent_run_id", "fingerprint"])(parent_run_id, fingerprint)


def stage_task(stage: str, config_json: str, context: str, item_json: str, result: Output[Artifact],
               metrics: Output[Metrics], state: Optional[Input[Artifact]] = None, fingerprint: str = "",
               parent_run_id: str = ""):
    """One item of one tdds stage, given the state of the stages before it. A cluster training task
    that asked for GPUs (``TDDS_REQUIRE_CUDA``: pipelines.prune.REQUIRE_CUDA_ENV) fails at once when
    the pod has fewer CUDA devices, instead of training on the CPU."""
    import os

    from tdds_core import steps

    wanted = int(os.environ.get("TDDS_REQUIRE_CUDA") or 0)
    if wanted:
        import torch

        if torch.cuda.device_count() < wanted:
            raise RuntimeError(
                f"the {stage} task asked for {wanted} GPU(s) (pipeline.gpus) but sees {torch.cuda.device_count()} CUDA "
                f"device(s) (torch {torch.__version__}, CUDA build {torch.version.cuda}); set pipeline.gpu_image to a "
                "CUDA image, check the node's NVIDIA driver and device plugin, or set pipeline.gpus: 0 to train on CPUs.")
    part = steps.run_item(stage, config_json, item_json, state=steps.read_state(state.path) if state else None,
                          fingerprint=fingerprint, parent_run_id=parent_run_id)
    steps.emit(part, artifact=result, metrics=metrics)


def collect_task(stage: str, config_json: str, context: str, items_json: str, state: Input[Artifact],
                 merged: Output[Artifact]):
    """Fan-in after a stage's loop: the input state plus every item's output, read from the store by
    the keys the plan gives (``items_json``: the loop's items), so no artifact list crosses the loop."""
    from tdds_core import steps

    merged_state = steps.retrying(lambda: steps.collect_items(stage, config_json, items_json,
                                                              steps.read_state(state.path)), what=f"collect-{stage}")
    steps.emit(merged_state, artifact=merged)


def close_run(config_json: str, run_id: str, job_id: str) -> str:
    """Exit handler: mark the parent MLflow run FAILED if the pipeline stopped early."""
    from tdds_core import steps

    return steps.retrying(lambda: steps.close_run(config_json, run_id=run_id, job_id=job_id), what="close-run")
