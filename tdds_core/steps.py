"""The KFP pipeline's tasks as plain functions (nothing here imports kfp): the components in
``components/`` parse nothing and decide nothing; each makes one call here.

* :func:`open_run` (not cached): check the config, fingerprint the dataset, open the parent MLflow
  run ``pipeline/<name>`` (tagged with the pipeline run id and the *pipeline key*).
* :func:`run_task`: one item of one registered stage (:mod:`tdds_core.stages`), given the
  :class:`~tdds_core.stages.State` of the stages before it; returns what the item added.
* :func:`collect`: a loop's fan-in: the input state plus every item's part. The parts are read
  from the store by key (:func:`part_key`, :func:`save_part`, :func:`load_parts`), not collected
  as KFP artifacts: ``dsl.Collected`` needs KFP backend 2.14 (kubeflow/pipelines PR #11725, not in
  2.5.0), and the plan is fixed when the pipeline is built, so the fan-in knows every item's key.
* :func:`retrying`: a cluster task's own retries (``$TDDS_TASK_RETRIES``): KFP 2.5 applies a
  retry policy only to tasks of the root DAG (PR #11908 is not in 2.5.0), and every tdds task sits
  in the exit handler's DAG or a loop's.
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
import subprocess
import time
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
from .plan import Plan, check_plan, parse_item, stage_config
from .reprune import dataset_identity
from .stage_registry import Context, State, chain, get_stage
from .storage import Workspace
from .tracking import ParentedTracker, make_tracker

__all__ = ["load_config_json", "stage_config_json", "build_digest", "pipeline_key", "effective_run_id",
           "find_parent_run", "open_run", "run_task", "run_item", "collect", "collect_items", "close_run", "emit",
           "read_state", "missing_work", "TAG_PIPELINE_KEY", "TAG_PIPELINE_INSTANCE", "PIPELINE_INSTANCE_ENV",
           "pipeline_instance", "code_stamp", "check_code_version", "CODE_VERSION_ENV", "BUILD_SHA_ENV",
           "ALLOW_UNSTAMPED_ENV", "build_sha", "part_key", "save_part", "load_parts", "retrying", "TASK_RETRIES_ENV",
           "PARTS_PREFIX"]

TAG_PIPELINE_KEY = "tdds.pipeline_key"   # digest of (config, dataset fingerprint): the fallback way to the parent run
TAG_PIPELINE_INSTANCE = "tdds.pipeline_instance"   # the pipeline run's instance (PIPELINE_INSTANCE_ENV) on its parent
PIPELINE_INSTANCE_ENV = "TDDS_PIPELINE_INSTANCE"   # set in every task's environment: which pipeline run it belongs to
CODE_VERSION_ENV = "TDDS_CODE_VERSION"   # the tdds version a cluster pipeline was compiled from (every task)
BUILD_SHA_ENV = "TDDS_BUILD_SHA"         # ... and its git commit, when known
ALLOW_UNSTAMPED_ENV = "TDDS_ALLOW_UNSTAMPED_IMAGE"   # "1": an image without TDDS_GIT_SHA runs a stamped pipeline
TASK_RETRIES_ENV = "TDDS_TASK_RETRIES"   # a cluster task's own retries (pipelines.prune sets it; retrying())
PARTS_PREFIX = "kfp/parts"               # store prefix of the loop items' states (part_key)


def _is_tdds_checkout(top: Path) -> bool:
    """``top`` is a checkout of tdds itself: it holds ``tdds_core/`` and a pyproject.toml naming tdds."""
    try:
        text = (top / "pyproject.toml").read_text()
    except OSError:
        return False
    return (top / "tdds_core").is_dir() and any(line.replace(" ", "") in ('name="tdds"', "name='tdds'")
                                                 for line in text.splitlines())


def build_sha(environ: Optional[Mapping[str, str]] = None, *, root: Optional[Path] = None) -> Optional[str]:
    """The commit of this installation's code: ``$TDDS_GIT_SHA`` (an image's build argument), else
    ``git rev-parse HEAD`` only where this package sits at the top of a checkout of tdds itself; a
    tdds installed inside another repository (a vendored copy, a site-packages in a project's tree)
    never takes that repository's commit. ``root``: the folder holding ``tdds_core/`` (default:
    this package's). None when unknown."""
    environ = os.environ if environ is None else environ
    if environ.get("TDDS_GIT_SHA"):
        return environ["TDDS_GIT_SHA"]
    here = (root or Path(__file__).parent.parent).resolve()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True, timeout=5)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != here or not _is_tdds_checkout(here):
            return None
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) >= 7 else None


def code_stamp() -> dict[str, str]:
    """What a compiled cluster pipeline carries in every task's environment: the tdds version and
    git commit of the code that compiled it (:func:`check_code_version` compares them in the task)."""
    stamp = {CODE_VERSION_ENV: __version__}
    sha = build_sha()
    if sha:
        stamp[BUILD_SHA_ENV] = sha
    return stamp


def check_code_version(environ: Optional[Mapping[str, str]] = None) -> None:
    """Refuse to run a task in an image of other code than the pipeline was compiled from: the
    stamp of :func:`code_stamp` against this installation's version and ``$TDDS_GIT_SHA`` (baked in
    by ``docker build --build-arg TDDS_GIT_SHA=...``). No stamp (a local run): nothing to check. A
    pipeline stamped with a commit refuses an image that knows none, unless
    ``$TDDS_ALLOW_UNSTAMPED_IMAGE=1`` (``pipeline.allow_unstamped_image``)."""
    environ = os.environ if environ is None else environ
    want, want_sha = environ.get(CODE_VERSION_ENV), environ.get(BUILD_SHA_ENV)
    if not want:
        return
    have_sha = build_sha(environ)
    if want_sha and not have_sha and environ.get(ALLOW_UNSTAMPED_ENV) != "1":
        raise PipelineError(
            f"this pipeline was compiled from tdds {want} (commit {want_sha[:12]}) but its image was built without "
            "TDDS_GIT_SHA, so nothing shows it holds that code; build the image with docker build --build-arg "
            "TDDS_GIT_SHA=$(git rev-parse HEAD) ... (docs/CLUSTER.md), or set pipeline.allow_unstamped_image: true "
            "to run it anyway.")
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

    check_plan(cfg)
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


def run_item(stage: str, config_json: str, item_json: str = "{}", *, state: Optional[State] = None,
             fingerprint: str = "", parent_run_id: str = "") -> State:
    """What a KFP stage task does: :func:`run_task` under :func:`retrying`, and for a stage that
    loops, its part saved for the fan-in (:func:`save_part`). Returns the part."""
    part = retrying(lambda: run_task(stage, config_json, item_json, state=state, fingerprint=fingerprint,
                                     parent_run_id=parent_run_id), what=f"{stage} task")
    if get_stage(stage).loop != "once":
        save_part(stage, config_json, item_json, state, part)
    return part


def collect_items(stage: str, config_json: str, items_json: str, state: State) -> State:
    """What a KFP fan-in task does: ``state`` plus the part of every item of ``items_json`` (a JSON
    list of the loop's item strings, as the loop iterated them), read from the store."""
    return collect(state, load_parts(stage, config_json, json.loads(items_json), state))


def collect(state: State, parts: Sequence[State]) -> State:
    """A loop's fan-in: ``state`` plus every item's part."""
    return state.merge(parts)


def _state_digest(state: Optional[State]) -> str:
    return "" if state is None else config_digest(json_safe(state.model_dump(mode="json")), 16)


def part_key(stage: str, config_json: str, item_json: str, state: Optional[State]) -> str:
    """Store key of one loop item's output state: ``kfp/parts/<stage>/<digest>.json``, the digest
    of what the item's task takes that can change its output (the stage config's identity fields as
    configured, the item, the input state; not where it is tracked). The loop task and its fan-in
    derive it from the same plan, so no artifact crosses the loop's edge."""
    ident = P.configured_identity(load_config_json(config_json))
    digest = config_digest({"stage": stage, "config": ident, "item": item_json, "state": _state_digest(state)}, 24)
    return f"{PARTS_PREFIX}/{slug(stage)}/{digest}.json"


def _store_of(config_json: str) -> Any:
    return Workspace.of(load_config_json(config_json)).store


def save_part(stage: str, config_json: str, item_json: str, state: Optional[State], part: State) -> str:
    """Write a loop item's output ``part`` under :func:`part_key` in the config's store; returns the key."""
    key = part_key(stage, config_json, item_json, state)
    data = json.dumps(json_safe(part.model_dump(mode="json")), sort_keys=True).encode()
    _store_of(config_json).put_bytes(key, data)
    return key


def load_parts(stage: str, config_json: str, items_json: Sequence[str], state: Optional[State]) -> list[State]:
    """Every item's part of a loop (:func:`save_part`), in plan order; ArtifactError naming the
    missing ones and the fix."""
    store = _store_of(config_json)
    parts, missing = [], []
    for item in items_json:
        key = part_key(stage, config_json, item, state)
        if store.exists(key):
            parts.append(read_state(json.loads(store.get_bytes(key))))
        else:
            missing.append(key)
    if missing:
        raise ArtifactError(f"{len(missing)} of {len(items_json)} {stage} item(s) left no state in the store "
                            f"(first: {missing[0]}); a {stage} task was taken from KFP's cache after the output's "
                            f"{PARTS_PREFIX}/ was deleted: rerun with pipeline.caching: false once.")
    return parts


def retrying(fn: Any, *, retries: Optional[int] = None, backoff_s: float = 60.0, factor: float = 2.0,
             max_backoff_s: float = 1800.0, what: str = "task") -> Any:
    """``fn()``, called again up to ``retries`` times (default ``$TDDS_TASK_RETRIES``, else 0) after
    an exception, waiting ``backoff_s`` x ``factor``^n (at most ``max_backoff_s``) between tries:
    the backoff KFP's own retry policy would use (pipelines.prune.RETRY_BACKOFF)."""
    retries = int(os.environ.get(TASK_RETRIES_ENV) or 0) if retries is None else retries
    for attempt in range(retries + 1):
        try:
            return fn()
        except (ConfigError, KeyboardInterrupt):
            raise                                            # a bad config fails the same way every time
        except Exception as e:  # noqa: BLE001 - any failure of the step is retried
            if attempt == retries:
                raise
            wait = min(max_backoff_s, backoff_s * factor ** attempt)
            print(f"tdds: {what} failed ({type(e).__name__}: {e}); retry {attempt + 1} of {retries} in {wait:.0f} s",
                  flush=True)
            time.sleep(wait)


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
