"""The ``tdds-prune`` and ``tdds-reprune`` DAGs. They only wire plan items to components: every
registered stage (:mod:`tdds_core.stages`) in order, once or in a loop over its plan items
(:class:`tdds_core.plan.Plan`), each loop followed by its fan-in::

    close-run                 exit handler: the parent MLflow run ends FAILED if the pipeline stops early
    open-run                  not cached: dataset fingerprint, parent MLflow run
    train-full                GPU, retries: model + dynamics
    ParallelFor score items   score (one task per method setting)      -> collect-score
    ParallelFor rates         select (one task per pruning rate)      -> collect-select
    reprune                   tdds-reprune only, not cached: how each selection changed since the last version
    ParallelFor pairs         coreset (GPU; every seed of the pair)    -> collect-coreset
    ParallelFor eval items    evaluate (GPU; only when configured)    -> collect-evaluate
    report                    not cached: table, plot, MLflow; ends the parent run FINISHED

A stage's input is the state after the stage before it (a side stage's output does not continue
the chain). A fan-in runs ``.after`` its loop and reads each item's state from the store by the key
the plan gives (:func:`tdds_core.steps.part_key`): no ``dsl.Collected``, which the KFP 2.5 backend
cannot resolve (kubeflow/pipelines PR #11725 is in 2.14.0, not 2.5.0). On a cluster no task carries
a KFP retry policy: the 2.5 backend applies one only to tasks of the root DAG (PR #11908 is in 2.14.0,
not 2.5.0) and every task here sits in the exit handler's DAG or a loop's, so each task retries
itself (``TDDS_TASK_RETRIES``, :func:`tdds_core.steps.retrying`); docs/CLUSTER.md.
Built for a cluster (``cluster=True``, :func:`pipelines.run.compile_pipeline`), the tasks
also get what only Kubernetes uses (:func:`_for_cluster`) and the loops ``pipeline.parallelism``.
Why the DAG looks like this under kfp 2.17 and how its caching works: docs/ARCHITECTURE.md, "The KFP DAG".
"""

import json
from typing import Any, Mapping, Optional

from kfp import dsl

from components import Components, make_components
from tdds_core.config import Config, PipelineConfig
from tdds_core.plan import Plan
from tdds_core.names import STAGE_TRAIN_FULL
from tdds_core.stage_registry import chain
from tdds_core.steps import (ALLOW_UNSTAMPED_ENV, PIPELINE_INSTANCE_ENV, TASK_RETRIES_ENV, build_digest, code_stamp,
                             stage_config_json)

__all__ = ["build_prune_pipeline", "build_reprune_pipeline", "PRUNE_NAME", "REPRUNE_NAME", "RETRY_BACKOFF",
           "REQUIRE_CUDA_ENV", "TASK_RETRIES_ENV", "SHM_VOLUME"]

PRUNE_NAME = "tdds-prune"
REPRUNE_NAME = "tdds-reprune"
RETRY_BACKOFF = {"backoff_duration": "60s", "backoff_factor": 2.0, "backoff_max_duration": "1800s"}
REQUIRE_CUDA_ENV = "TDDS_REQUIRE_CUDA"   # the GPUs a cluster training task asked for (components.tasks.stage_task checks it)
SHM_VOLUME = "dshm"
# every pod of one pipeline run carries its Argo workflow's name: the task's pipeline instance
WORKFLOW_LABEL_PATH = "metadata.labels['workflows.argoproj.io/workflow']"


def _for_cluster(task: Any, p: PipelineConfig, *, gpu: bool, processes: int = 1) -> None:
    """What only a Kubernetes cluster uses: the pipeline instance (the Argo workflow's name, so a
    task finds its own run's parent MLflow run), the code version it was compiled from, requests and retries of the light tasks, the
    secrets and the data volume of every task, and the placement, /dev/shm and CUDA check of the
    training tasks."""
    from kfp import kubernetes


    kubernetes.use_field_path_as_env(task, env_name=PIPELINE_INSTANCE_ENV, field_path=WORKFLOW_LABEL_PATH)
    for k, v in code_stamp().items():   # the task refuses an image of other code (steps.check_code_version)
        task.set_env_variable(k, v)
    if p.allow_unstamped_image:
        task.set_env_variable(ALLOW_UNSTAMPED_ENV, "1")
    if p.retries > 0:   # the task's own retries: KFP 2.5 ignores a retry policy below the root DAG
        task.set_env_variable(TASK_RETRIES_ENV, str(p.retries))
    cpu_limit, memory_limit = (p.cpu_limit, p.memory_limit) if gpu else (p.light_cpu_limit, p.light_memory_limit)
    if not gpu:
        task.set_cpu_request(p.light_cpu_request).set_memory_request(p.light_memory_request)
    if cpu_limit:
        task.set_cpu_limit(cpu_limit)
    if memory_limit:
        task.set_memory_limit(memory_limit)
    if p.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, secret_names=list(p.image_pull_secrets))
    if p.image_pull_policy:
        kubernetes.set_image_pull_policy(task, p.image_pull_policy)
    for s in p.secrets:
        kubernetes.use_secret_as_env(task, secret_name=s.secret_name, secret_key_to_env=dict(s.keys))
    if p.data_volume:
        kubernetes.mount_pvc(task, pvc_name=p.data_volume.pvc_name, mount_path=p.data_volume.mount_path)
    if gpu:
        for t in p.tolerations:
            kubernetes.add_toleration(task, **t.model_dump(exclude_none=True))
        for key, value in sorted(p.node_selector.items()):
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        if p.shm_size:
            kubernetes.empty_dir_mount(task, volume_name=SHM_VOLUME, mount_path="/dev/shm", medium="Memory",
                                       size_limit=p.shm_size)
        if p.gpus > 0:
            task.set_env_variable(REQUIRE_CUDA_ENV, str(max(p.gpus, processes)))


def _configure(task: Any, cfg: Config, env: Mapping[str, str], *, gpu: bool = False, cached: bool = True,
               cluster: bool = False, processes: int = 1, shared: bool = False) -> Any:
    """Resources, retries and caching of a task (training stages get the GPU settings; ``cluster``:
    also :func:`_for_cluster`). ``processes``: the task trains one run in that many processes
    (``train.processes``, torchrun in its pod), one GPU each."""
    p = cfg.pipeline
    if gpu:
        task.set_cpu_request(p.cpu_request).set_memory_request(p.memory_request)
        if p.gpus > 0:
            task.set_accelerator_type(p.accelerator_type).set_accelerator_limit(max(p.gpus, processes))
        if p.retries > 0 and not cluster:   # kfp.local honours it; a cluster task retries itself (_for_cluster)
            task.set_retry(num_retries=p.retries, **RETRY_BACKOFF)
    task.set_caching_options(p.caching and cached)
    for k, v in sorted(env.items()):
        task.set_env_variable(k, str(v))
    if cluster:
        _for_cluster(task, p, gpu=gpu, processes=processes)
        if shared and p.shared_volume is not None:
            from kfp import kubernetes

            kubernetes.mount_pvc(task, pvc_name=p.shared_volume.pvc_name, mount_path=p.shared_volume.mount_path)
    return task


def _wire(cfg: Config, plan: Plan, c: Components, config_json: Any, run_id: Any, env: Mapping[str, str], *,
          pipeline: str, context: str, cluster: bool) -> None:
    job_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    parallelism = cfg.pipeline.parallelism if cluster else 0
    closer = c.close_run(config_json=config_json, run_id=run_id, job_id=job_id)
    _configure(closer, cfg, env, cached=False, cluster=cluster)
    with dsl.ExitHandler(closer, name="tdds-run"):
        opened = c.open_run(config_json=config_json, run_id=run_id, job_id=job_id, build=build_digest(cfg, pipeline),
                            pipeline=pipeline)
        _configure(opened, cfg, env, cached=False, cluster=cluster)
        state = None
        for stage in chain(pipeline):
            items = plan.items_json(stage.loop)
            if not items:
                continue
            args = {"stage": stage.name, "context": context,
                    "config_json": stage_config_json(cfg, stage.name) if stage.cached else config_json}
            if not stage.cached:
                args["parent_run_id"] = opened.outputs["parent_run_id"]
            if state is None:
                args["fingerprint"] = opened.outputs["fingerprint"]
            else:
                args["state"] = state
            if stage.loop == "once":
                task = c.stages[stage.name](item_json=items[0], **args)
                if stage.name == STAGE_TRAIN_FULL and cfg.train.nodes > 1:
                    # it launches a PyTorchJob (tdds_core.launch) and waits: no GPU of its own, the shared folder
                    out = _configure(task, cfg, env, cached=stage.cached, cluster=cluster, shared=True).outputs["result"]
                else:
                    k = cfg.train.processes if stage.name == STAGE_TRAIN_FULL else 1
                    out = _configure(task, cfg, env, gpu=stage.gpu, cached=stage.cached, cluster=cluster,
                                     processes=k).outputs["result"]
            else:
                with dsl.ParallelFor(items, name=f"{stage.name}-items", parallelism=parallelism) as item:
                    task = _configure(c.stages[stage.name](item_json=item, **args), cfg, env, gpu=stage.gpu,
                                      cached=stage.cached, cluster=cluster)
                # reads each item's state from the store by key (steps.part_key): no dsl.Collected (KFP 2.14+)
                fan_in = c.collects[stage.name](stage=stage.name, config_json=args["config_json"], context=context,
                                                items_json=json.dumps(items), state=state).after(task)
                out = _configure(fan_in, cfg, env, cached=stage.cached, cluster=cluster).outputs["merged"]
            if not stage.side:
                state = out


def _build(cfg: Config, name: str, description: str, env: Optional[Mapping[str, str]], pipeline: str,
           context: str, cluster: bool):
    plan = Plan.from_config(cfg)
    comps = make_components(cfg.pipeline.image, cfg.pipeline.gpu_image)
    env = dict(env or {})

    @dsl.pipeline(name=name, description=description, pipeline_root=cfg.pipeline.pipeline_root)
    def run(config_json: str = cfg.to_json(), run_id: str = ""):
        _wire(cfg, plan, comps, config_json, run_id, env, pipeline=pipeline, context=context, cluster=cluster)

    return run


def build_prune_pipeline(cfg: Config, *, env: Optional[Mapping[str, str]] = None, context: str = "",
                         cluster: bool = False):
    """``tdds-prune`` for ``cfg``: parameters ``config_json`` (default: ``cfg.to_json()``) and
    ``run_id`` (default "": KFP's job id). ``env``: non-secret environment variables every task
    gets (e.g. MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL); secrets come from Kubernetes secrets
    (``pipeline.secrets``). ``context``: the store and tracker the tasks write to
    (:func:`pipelines.run.cache_context`), part of every cached task's key. ``cluster``: add the
    Kubernetes settings of ``pipeline.*`` (False for kfp.local)."""
    return _build(cfg, PRUNE_NAME, "TDDS dataset pruning: train-full -> score -> select -> coreset -> report",
                  env, "prune", context, cluster)


def build_reprune_pipeline(cfg: Config, *, env: Optional[Mapping[str, str]] = None, context: str = "",
                           cluster: bool = False):
    """``tdds-reprune`` for ``cfg``: ``tdds-prune`` on the dataset's newest version plus the
    comparison of every selection with the previous version's (recorded in MLflow)."""
    return _build(cfg, REPRUNE_NAME, "TDDS re-pruning of a growing dataset: prune its newest version and record "
                  "how each coreset changed (kept, dropped, new ids, Jaccard)", env, "reprune", context, cluster)
