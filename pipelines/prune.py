"""The ``tdds-prune`` and ``tdds-reprune`` DAGs. They only wire components; what to loop over is
computed from the config when the pipeline is built (:func:`tdds_core.steps.pipeline_plan`).

``tdds-prune``::

    close-run                 exit handler: the parent MLflow run ends FAILED if the pipeline stops early
    open-run                  not cached: dataset fingerprint, parent MLflow run
    train-full                GPU, retries: model + dynamics, metrics
    ParallelFor methods       score (one task per method setting, in parallel)
    collect-scores            dsl.Collected(scores) -> one pointer to every setting's scores
    ParallelFor rates         materialize-subset (one task per pruning rate): the selection of every setting
    collect-selections        dsl.Collected(selections) -> one pointer to every (method, rate) selection
    ParallelFor pairs         train-coreset: ONE flat loop over the precomputed (method x rate) pairs
    ParallelFor eval items    evaluate-cross-arch: (evaluated pair x architecture), only when configured
    report                    not cached: dsl.Collected(metrics) -> table, plot, MLflow; ends the parent run

``tdds-reprune`` is the same DAG plus ``reprune-diff`` (not cached) after collect-selections: how each
coreset changed against the previous dataset version (:mod:`tdds_core.reprune`).

Why it looks like this (kfp 2.17.3, checked under ``kfp.local`` and the compiler):

* a nested ParallelFor over a pipeline parameter gives wrong items locally, so the pairs are one
  flat, precomputed list;
* the compiler refuses ``dsl.Collected`` of artifacts inside another loop, and a collected
  parameter list consumed inside another loop arrives with wrong values under ``kfp.local``; so
  each fan-in goes through a small collect task outside the loops, and each loop reads one
  upstream artifact;
* loop items that are dicts inside an exit handler compile into root inputs that do not exist, so
  items are JSON strings, parsed by the step;
* an upstream task's parameter output consumed inside a loop is replaced by the loop item under
  ``kfp.local`` (as are collected parameters), so inside loops there are only constants, the loop
  item and upstream artifacts;
* an exit task may not depend on other tasks, so close-run finds the parent run by the run id.

Caching: stage tasks are cached (``pipeline.caching``). Their inputs are the part of the config
the stage reads (:func:`tdds_core.steps.stage_config_json`, fixed when the pipeline is built, like
the loops; open-run refuses a ``config_json`` the pipeline was not built from), the
dataset fingerprint (so a new dataset version misses the cache) and upstream pointers, which hold
no run-specific values: an unchanged rerun is served from the cache, and a grown config (another
rate or method) re-runs only what depends on the change: with one more rate, training and scoring
and the other rates' materialize tasks are cache hits. KFP keys a task on where its upstream
artifacts are, so the tasks after a fan-in that changed (the coreset loop after
collect-selections) execute again; behind KFP's cache, every tdds stage reuses a finished artifact
with the same content key, and every tracked stage a finished MLflow run with the same key, so
they only look their result up.
"""

from typing import Any, Mapping, Optional

from kfp import dsl

from components import Components, make_components
from tdds_core.config import Config
from tdds_core.plan import STAGE_READS
from tdds_core.steps import PipelinePlan, build_digest, pipeline_plan, stage_config_json

__all__ = ["build_prune_pipeline", "build_reprune_pipeline", "PRUNE_NAME", "REPRUNE_NAME", "RETRY_BACKOFF"]

PRUNE_NAME = "tdds-prune"
REPRUNE_NAME = "tdds-reprune"
RETRY_BACKOFF = {"backoff_duration": "60s", "backoff_factor": 2.0, "backoff_max_duration": "1800s"}


def _env(task: Any, env: Mapping[str, str]) -> Any:
    for k, v in sorted(env.items()):
        task.set_env_variable(k, str(v))
    return task


def _training(task: Any, cfg: Config, env: Mapping[str, str]) -> Any:
    p = cfg.pipeline
    task.set_cpu_request(p.cpu_request).set_memory_request(p.memory_request)
    if p.gpus > 0:
        task.set_accelerator_type(p.accelerator_type).set_accelerator_limit(p.gpus)
    if p.retries > 0:
        task.set_retry(num_retries=p.retries, **RETRY_BACKOFF)
    task.set_caching_options(p.caching)
    return _env(task, env)


def _light(task: Any, cfg: Config, env: Mapping[str, str], *, cached: bool) -> Any:
    task.set_caching_options(cfg.pipeline.caching if cached else False)
    return _env(task, env)


def _wire(cfg: Config, plan: PipelinePlan, c: Components, config_json: Any, run_id: Any,
          env: Mapping[str, str], *, reprune: bool, context: str) -> None:
    job_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    stage_cfg = {stage: stage_config_json(cfg, stage) for stage in STAGE_READS}
    closer = _light(c.close_run(config_json=config_json, run_id=run_id, job_id=job_id), cfg, env, cached=False)
    with dsl.ExitHandler(closer, name="tdds-run"):
        opened = _light(c.open_run(config_json=config_json, run_id=run_id, job_id=job_id, build=build_digest(cfg)),
                        cfg, env, cached=False)
        full = _training(c.train_full(config_json=stage_cfg["train-full"], context=context, fingerprint=opened.outputs["fingerprint"]),
                         cfg, env)
        with dsl.ParallelFor(plan.score_items, name="score-methods") as method:
            scored = _light(c.score(config_json=stage_cfg["score"], context=context, method_json=method, train=full.outputs["model"]),
                            cfg, env, cached=True)
        score_set = _light(c.collect_scores(scores=dsl.Collected(scored.outputs["scores"])), cfg, env, cached=True)
        with dsl.ParallelFor(plan.rate_items, name="pruning-rates") as rate:
            chosen = _light(c.materialize_subset(config_json=stage_cfg["select"], context=context, rate_json=rate,
                                                 train=full.outputs["model"], score_set=score_set.outputs["score_set"]),
                            cfg, env, cached=True)
        merged = _light(c.collect_selections(selections=dsl.Collected(chosen.outputs["selections"])), cfg, env,
                        cached=True)
        selections = merged.outputs["merged"]
        with dsl.ParallelFor(plan.pair_items, name="method-rate-pairs") as pair:
            coreset = _training(c.train_coreset(config_json=stage_cfg["coreset"], context=context, pair_json=pair, selections=selections),
                                cfg, env)
        evaluation = {}
        if plan.evals:
            with dsl.ParallelFor(plan.eval_items, name="cross-arch") as item:
                evaluated = _training(c.evaluate_cross_arch(config_json=stage_cfg["coreset"], context=context, item_json=item,
                                                            selections=selections), cfg, env)
            evaluation = {"evaluation": dsl.Collected(evaluated.outputs["metrics"])}
        if reprune:
            _light(c.reprune_diff(config_json=config_json, parent_run_id=opened.outputs["parent_run_id"],
                                  selections=selections), cfg, env, cached=False)
        _light(c.report(config_json=config_json, parent_run_id=opened.outputs["parent_run_id"],
                        full=full.outputs["metrics"], coreset=dsl.Collected(coreset.outputs["metrics"]), **evaluation),
               cfg, env, cached=False)


def _build(cfg: Config, name: str, description: str, env: Optional[Mapping[str, str]], reprune: bool,
           context: str):
    plan = pipeline_plan(cfg)
    comps = make_components(cfg.pipeline.image, cfg.pipeline.gpu_image)
    env = dict(env or {})

    @dsl.pipeline(name=name, description=description, pipeline_root=cfg.pipeline.pipeline_root)
    def pipeline(config_json: str = cfg.to_json(), run_id: str = ""):
        _wire(cfg, plan, comps, config_json, run_id, env, reprune=reprune, context=context)

    return pipeline


def build_prune_pipeline(cfg: Config, *, env: Optional[Mapping[str, str]] = None, context: str = ""):
    """``tdds-prune`` for ``cfg``: parameters ``config_json`` (default: ``cfg.to_json()``) and
    ``run_id`` (default "": KFP's job id). ``env``: non-secret environment variables every task
    gets (e.g. MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL); secrets come from Kubernetes secrets.
    ``context``: the store and tracker the tasks write to (:func:`pipelines.run.cache_context`), part
    of every cached task's key."""
    return _build(cfg, PRUNE_NAME, "TDDS dataset pruning: train-full -> score -> select -> train-coreset -> report",
                  env, reprune=False, context=context)


def build_reprune_pipeline(cfg: Config, *, env: Optional[Mapping[str, str]] = None, context: str = ""):
    """``tdds-reprune`` for ``cfg``: ``tdds-prune`` on the dataset's newest version plus the
    comparison of every coreset with the previous version's (recorded in MLflow)."""
    return _build(cfg, REPRUNE_NAME, "TDDS re-pruning of a growing dataset: prune its newest version and record "
                  "how each coreset changed (kept, dropped, new ids, Jaccard)", env, reprune=True, context=context)
