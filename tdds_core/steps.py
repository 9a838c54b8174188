"""The KFP pipeline's tasks as plain functions (nothing here imports kfp): the components in
``components/`` parse nothing and decide nothing; each makes one call here.

* :func:`open_run` (not cached): check the config, fingerprint the dataset, open the parent MLflow
  run ``pipeline/<name>`` (tagged with the pipeline run id and the *pipeline key*).
* :func:`run_task`: one item of one registered stage (:mod:`tdds_core.stages`), given the
  :class:`~tdds_core.stages.State` of the stages before it; returns what the item added.
* :func:`collect`: a loop's fan-in: the input state plus every item's part (kfp 2.17 cannot feed
  a collected artifact list into a task inside another loop, so each fan-in is one small task).
* :func:`close_run` (the exit handler): end the parent run FAILED if the report did not end it.

What flows between tasks: the config as one JSON parameter (each cached stage gets the part it
reads, :func:`tdds_core.plan.stage_config`, fixed when the pipeline is built), the loop item as
JSON (:mod:`tdds_core.plan` item models) and the state as a KFP artifact: a JSON file also
copied into the artifact's metadata. States hold no per-run values, so the cache keys of the
tasks downstream stay stable from run to run.

Cached tasks cannot take the per-run parent run id (it would change their cache keys), so a stage
finds its parent through its environment: ``$TDDS_PIPELINE_INSTANCE`` names the pipeline run the
process belongs to (``tdds run`` sets it to the local run id; on a cluster every pod gets its Argo
workflow's name through the downward API) and open-run tags the parent with it, so two concurrent
runs of one config never attach to each other's parent. Without it (an older compiled pipeline) the
parent is the newest RUNNING one for this config and dataset version (the pipeline key). A stage
whose finished MLflow run exists (same key) reuses it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from . import __version__
from . import plan as P
from .config import Config, config_digest, parse_config
from .data import create_dataset
from .errors import ArtifactError, ConfigError, PipelineError
from .io import atomic_write_json, json_safe
from .names import (STAGE_PIPELINE, TAG_CONFIG_NAME, TAG_DATASET, TAG_FINGERPRINT, TAG_PIPELINE_RUN, TAG_STAGE,
                    format_rate, run_name, slug)
from .plan import Plan, parse_item, stage_config
from .reprune import dataset_identity
from .scoring import check_recorded_inputs
from .stage_registry import Context, State, chain, get_stage
from . import tracking
from .tracking import ParentedTracker, make_tracker

__all__ = ["load_config_json", "stage_config_json", "build_digest", "pipeline_key", "effective_run_id",
           "find_parent_run", "open_run", "run_task", "collect", "close_run", "emit",
           "read_state", "missing_work", "TAG_PIPELINE_KEY", "TAG_PIPELINE_INSTANCE", "PIPELINE_INSTANCE_ENV",
           "pipeline_instance", "code_stamp", "check_code_version", "CODE_VERSION_ENV", "BUILD_SHA_ENV"]

TAG_PIPELINE_KEY = "tdds.pipeline_key"   # digest of (config, dataset fingerprint): the fallback way to the parent run
TAG_PIPELINE_INSTANCE = "tdds.pipeline_instance"   # the pipeline run's instance (PIPELINE_INSTANCE_ENV) on its parent
PIPELINE_INSTANCE_ENV = "TDDS_PIPELINE_INSTANCE"   # set in every task's environment: which pipeline run it belongs to
CODE_VERSION_ENV = "TDDS_CODE_VERSION"   # the tdds version a cluster pipeline was compiled from (every task)
BUILD_SHA_ENV = "TDDS_BUILD_SHA"         # ... and its git commit, when known


def code_stamp() -> dict[str, str]:
    """What a compiled cluster pipeline carries in every task's environment: the tdds version and
    git commit of the code that compiled it (:func:`check_code_version` compares them in the task)."""
    stamp = {CODE_VERSION_ENV: __version__}
    if tracking.git_sha():
        stamp[BUILD_SHA_ENV] = str(tracking.git_sha())
    return stamp


def check_code_version(environ: Optional[Mapping[str, str]] = None) -> None:
    """Refuse to run a task in an image of other code than the pipeline was compiled from: the
    stamp of :func:`code_stamp` against this installation's version and ``$TDDS_GIT_SHA`` (baked in
    by ``docker build --build-arg TDDS_GIT_SHA=...``). No stamp (a local run): nothing to check."""
    environ = os.environ if environ is None else environ
    want, want_sha = environ.get(CODE_VERSION_ENV), environ.get(BUILD_SHA_ENV)
    if not want:
        return
    have_sha = tracking.git_sha()
    if want != __version__ or (want_sha and have_sha and want_sha[:12] != have_sha[:12]):
        compiled = f"{want}" + (f" (commit {want_sha[:12]})" if want_sha else "")
        image = f"{__version__}" + (f" (commit {have_sha[:12]})" if have_sha else "")
        raise PipelineError(
            f"this pipeline was compiled from tdds {compiled} but its image holds tdds {image}; build and push the "
            "image from the same commit (docker build --build-arg TDDS_GIT_SHA=$(git rev-parse HEAD) ..., "
            "docs/CLUSTER.md) and set pipeline.image / gpu_image to it, or compile the pipeline from the image's code.")


def pipeline_instance() -> str:
    """The pipeline run this process belongs to, from ``$TDDS_PIPELINE_INSTANCE`` ("" when unset)."""
    value = os.environ.get(PIPELINE_INSTANCE_ENV, "").strip()
    return "" if value.startswith("{{") or any(c in value for c in "'\"\n") else value


# ------------------------------------------------------------------------------------------ config
def load_config_json(config_json: str) -> Config:
    """Validate the pipeline's ``config_json`` parameter into a :class:`Config`."""
    try:
        data = json.loads(config_json)
    except (TypeError, json.JSONDecodeError) as e:
        raise ConfigError(f"config_json is not valid JSON ({e}); pass Config.to_json() of a config "
                          "(tdds compile/submit/run do).") from None
    if not isinstance(data, dict):
        raise ConfigError("config_json must hold a JSON object (the config's sections), not "
                          f"{type(data).__name__}")
    return parse_config(data, source="(pipeline parameter config_json)")


def stage_config_json(cfg: Config, stage: str) -> str:
    """``cfg`` as the JSON a cached stage task gets (:func:`tdds_core.plan.stage_config`)."""
    try:
        return stage_config(cfg, stage).to_json()
    except ConfigError as e:
        raise PipelineError(str(e)) from None


def build_digest(cfg: Config, pipeline: str = "prune") -> str:
    """Digest of what a pipeline built from ``cfg`` bakes in: the plan and every cached stage's config."""
    return config_digest({"plan": Plan.from_config(cfg).digest(),
                          "stages": {s.name: stage_config_json(cfg, s.name) for s in chain(pipeline) if s.cached}}, 16)


def pipeline_key(cfg: Config, fingerprint: str) -> str:
    """How a stage finds the open parent run: the experiment (name, output root) and the dataset version."""
    return config_digest({"name": cfg.name, "output": cfg.output, "fingerprint": fingerprint}, 20)


def effective_run_id(run_id: str, job_id: str) -> str:
    """The pipeline run's id: the ``run_id`` parameter when given (``tdds run`` sets one), else
    KFP's job id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``)."""
    rid = (run_id or "").strip() or (job_id or "").strip()
    if not rid or rid.startswith("{{"):
        raise PipelineError("no pipeline run id: pass run_id, or run on a KFP backend that fills "
                            "dsl.PIPELINE_JOB_ID_PLACEHOLDER")
    return rid


# ------------------------------------------------------------------------------------------ MLflow glue
def find_parent_run(tracker: Any, *, pipeline_key_value: Optional[str] = None, run_id: Optional[str] = None,
                    instance: Optional[str] = None, status: Optional[str] = "RUNNING") -> Optional[Any]:
    """The newest pipeline parent run (a :class:`~tdds_core.tracking.RunRecord`) with the given
    pipeline key, pipeline run id or pipeline instance and ``status`` (None: any), or None."""
    if not tracker.enabled:
        return None
    tags = {TAG_STAGE: STAGE_PIPELINE}
    if pipeline_key_value:
        tags[TAG_PIPELINE_KEY] = pipeline_key_value
    if run_id:
        if "'" in run_id:
            raise PipelineError(f"pipeline run id {run_id!r} contains a quote")
        tags[TAG_PIPELINE_RUN] = run_id
    if instance:
        tags[TAG_PIPELINE_INSTANCE] = instance
    runs = tracker.find_runs(tags=tags, status=status, max_results=1)
    return runs[0] if runs else None


def _stage_tracker(cfg: Config, fingerprint: str, parent_run_id: str = "") -> Any:
    """The tracker a task logs with: children of ``parent_run_id``, else of this pipeline run's
    parent (:func:`pipeline_instance`), else of the one open for this config and dataset version
    (none found: top-level runs)."""
    tracker = make_tracker(cfg, cfg.output)
    if not tracker.enabled:
        return tracker
    instance = pipeline_instance()
    if parent_run_id:
        parent = tracker.get_run(parent_run_id)
    elif instance:
        parent = find_parent_run(tracker, instance=instance, status=None)
    else:
        parent = find_parent_run(tracker, pipeline_key_value=pipeline_key(cfg, fingerprint))
    if parent is None:
        return tracker
    rid = parent.tags.get(TAG_PIPELINE_RUN)
    if rid:
        tracker.default_tags[TAG_PIPELINE_RUN] = rid
    return ParentedTracker(tracker, parent.id)


# ------------------------------------------------------------------------------------------ states
def read_state(source: str | os.PathLike | Mapping) -> State:
    """A :class:`State` from an artifact file, a JSON string or a dict."""
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ArtifactError(f"pipeline artifact {path} is missing; the upstream task did not write it.")
        data = json.loads(path.read_text())
    try:
        return State.model_validate(data)
    except ValueError:
        raise ArtifactError(f"not a tdds state ({str(data)[:120]}); the input must come from a tdds task.") from None



def _row_metrics(rows: Sequence[dict]) -> dict[str, float]:
    """Scalar metrics of result rows for the KFP UI: ``<method>@p<rate>/<arch>/s<seed>.<field>``."""
    out = {}
    for r in rows:
        tag = slug("/".join(str(x) for x in (r.get("method"), r.get("rate") is not None and f"p{format_rate(r['rate'])}",
                                             r.get("arch"), r.get("seed") is not None and f"s{r['seed']}") if x))
        for k, v in r.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("rate", "seed") \
                    and not (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
                out[f"{tag}.{k}"] = float(v)
    return out


def emit(state: State, *, artifact: Any = None, metrics: Any = None) -> None:
    """Write a task's state into KFP output artifacts (duck-typed: ``.path``, ``.metadata``,
    ``.log_metric``): the state as JSON into ``artifact.path`` and its metadata; the rows'
    scalars into ``metrics``."""
    data = json_safe(state.model_dump(mode="json"))
    if artifact is not None:
        Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(artifact.path), data)
        artifact.metadata.update(data)
    if metrics is not None:   # the file must exist (kfp.local treats a missing artifact file as a cache miss)
        Path(metrics.path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(metrics.path), {"rows": data["rows"]})
        for k, v in _row_metrics(state.rows).items():
            metrics.log_metric(k, v)


def missing_work(state: State | Mapping, output: str, store: Any, tracker: Any) -> list[str]:
    """What a state (a cached task's output) names that is gone: artifacts not complete in ``store``
    and runs with no finished run in ``tracker``. A cache entry naming missing work must not be trusted."""
    state = state if isinstance(state, State) else State.model_validate(state)
    missing = []
    for items in state.refs.values():
        for ref in items.values():
            if not store.is_complete(ref.key):
                missing.append(ref.uri)
            elif ref.run_stage and tracker.enabled and \
                    tracker.find_finished_run(P.run_key_of(ref.run_stage, output, ref.key)) is None:
                missing.append(f"{ref.run_stage} run of {ref.uri}")
    return missing


# ------------------------------------------------------------------------------------------ tasks
def open_run(config_json: str, *, run_id: str = "", job_id: str = "", build: str = "",
             pipeline: str = "prune") -> tuple[str, str]:
    """Check that the config is the one the pipeline was built from (``build`` =
    :func:`build_digest`), fingerprint the dataset and open the parent MLflow run. Returns
    ``(parent_run_id or "", fingerprint)``."""
    check_code_version()
    cfg = load_config_json(config_json)
    if build and build_digest(cfg, pipeline) != build:
        raise PipelineError("config_json differs from the config the pipeline was built from (its loops and stage "
                            "settings are fixed when it is built); compile the pipeline again from this config "
                            "(tdds compile --config ...) instead of changing the parameter.")

    check_recorded_inputs([item.method.name for item in Plan.from_config(cfg).scores], cfg.dynamics.record)
    fp = create_dataset(cfg.data).fingerprint
    rid = effective_run_id(run_id, job_id)
    tracker = make_tracker(cfg, cfg.output, pipeline_run_id=rid)
    if not tracker.enabled:
        return "", fp
    existing = find_parent_run(tracker, run_id=rid)   # a retried open-run: keep the same parent
    if existing is not None:
        return existing.id, fp
    tags = {TAG_STAGE: STAGE_PIPELINE, TAG_PIPELINE_KEY: pipeline_key(cfg, fp), TAG_FINGERPRINT: fp,
            TAG_DATASET: dataset_identity(cfg.data), TAG_CONFIG_NAME: cfg.name,
            TAG_PIPELINE_INSTANCE: pipeline_instance() or None}
    parent = tracker.create_run(f"{run_name(STAGE_PIPELINE, method=cfg.name)}/{rid}", tags=tags)
    with tracker.attach(parent):
        tracker.log_params(cfg.flat())
        tracker.log_dict(cfg.model_dump(mode="json"), "config.json")
    return parent, fp


def run_task(stage: str, config_json: str, item_json: str = "{}", *, state: Optional[State] = None,
             fingerprint: str = "", parent_run_id: str = "") -> State:
    """Run one item of a registered stage: ``state`` is the output of the stages before it (the
    first stage starts from ``fingerprint``). Returns what the item added."""
    check_code_version()
    cfg = load_config_json(config_json)
    st = get_stage(stage)
    state = state if state is not None else State(fingerprint=fingerprint)
    if not state.fingerprint:
        raise PipelineError(f"stage {stage!r} got neither an input state nor a dataset fingerprint; check the wiring.")
    item = parse_item(st.loop, item_json)
    ctx = Context(cfg, state.fingerprint, _stage_tracker(cfg, state.fingerprint, parent_run_id),
                  parent_run_id=parent_run_id or None, finish_parent=True)
    return st.run(ctx, item, state)


def collect(state: State, parts: Sequence[State]) -> State:
    """A loop's fan-in: ``state`` plus every item's part."""
    return state.merge(parts)


def close_run(config_json: str, *, run_id: str = "", job_id: str = "") -> str:
    """Exit handler: end the pipeline's parent run FAILED if it is still RUNNING (the report ends it
    FINISHED on success). Returns the parent's final status ("" without tracking)."""
    cfg = load_config_json(config_json)
    rid = effective_run_id(run_id, job_id)
    tracker = make_tracker(cfg, cfg.output)
    if not tracker.enabled:
        return ""
    parent = find_parent_run(tracker, run_id=rid)
    if parent is None:
        return "FINISHED"
    tracker.terminate(parent.id, "FAILED")
    return "FAILED"
