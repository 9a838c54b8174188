"""Compile, run locally, submit and schedule the tdds pipelines.

* :func:`compile_pipeline` writes the KFP v2 YAML of ``tdds-prune`` or ``tdds-reprune`` for a config,
  after :func:`check_cluster` refused what cannot work on a cluster (``submit`` and ``schedule``
  compile through it; local runs do not).
* :func:`run_local` runs the SAME pipeline function on this machine through ``kfp.local``'s
  ``SubprocessRunner(use_venv=False)``: each task is a subprocess of this Python, KFP's pipeline root
  under ``<output>/kfp`` (local cache in ``<output>/kfp/.kfp_cache``), artifacts in ``cfg.output``,
  MLflow in ``sqlite:///<output>/mlflow.db`` unless ``tracking.uri`` / ``MLFLOW_TRACKING_URI`` say
  otherwise. The environment of this process (MLflow and AWS settings) reaches every task.
* :func:`submit` / :func:`schedule` (idempotent per name; :func:`schedules`, :func:`unschedule`)
  talk to a KFP API server through :mod:`pipelines.client` (``kfp.Client``, re-exported here); an
  unreachable host or a rejected request is a :class:`~tdds_core.errors.PipelineError` naming the
  host and the fix.
"""
from __future__ import annotations

import builtins
import contextlib
import inspect
import json
import os
import re
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from tdds_core.config import Config, PipelineConfig, config_digest
from tdds_core.data.base import get_dataset_fn
from tdds_core.errors import PipelineError
from tdds_core.names import SECRET_ENV
from tdds_core.plugins import load_plugins
from tdds_core.stage_registry import STATE_FORMAT
from tdds_core.steps import PIPELINE_INSTANCE_ENV, find_parent_run, missing_work
from tdds_core.storage import Workspace, is_remote
from tdds_core.tracking import default_experiment, make_tracker, tracker_identity

from .client import (IN_CLUSTER_HOST, IN_CLUSTER_TOKEN, MIN_BACKEND, Access, api_error, check_host, connect,
                     delete_schedules, list_schedules, normalize_cron, register_pipeline_version, version_name,
                     wait_for_run)
from .console import log_tail, task_lines

__all__ = ["compile_pipeline", "check_cluster", "run_local", "submit", "schedule", "schedules", "unschedule",
           "check_host", "LocalRunResult", "Access", "MIN_BACKEND", "IN_CLUSTER_HOST", "IN_CLUSTER_TOKEN",
           "cluster_env", "normalize_cron", "register_pipeline_version", "version_name", "wait_for_run", "api_error",
           "connect", "delete_schedules", "list_schedules", "SECRET_ENV", "PIPELINES", "local_pipeline_root", "cache_context", "drop_stale_cache"]

PIPELINES = ("prune", "reprune")
# never baked into a compiled pipeline: these come from Kubernetes secrets (docs/CLUSTER.md)
# non-secret settings copied from this environment into the compiled tasks by cluster_env()
CLUSTER_ENV_KEYS = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL",
                    "AWS_DEFAULT_REGION", "AWS_REGION", "TDDS_S3_RETRIES")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _builder(kind: str):
    if kind not in PIPELINES:
        raise PipelineError(f"unknown pipeline {kind!r}; choose one of {', '.join(PIPELINES)}")
    from .prune import build_prune_pipeline, build_reprune_pipeline   # kfp: loaded when a pipeline is built

    return build_prune_pipeline if kind == "prune" else build_reprune_pipeline


def cluster_env(cfg: Config, extra: Optional[Mapping[str, str]] = None, *,
                environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Non-secret environment variables for every cluster task: ``MLFLOW_TRACKING_URI``
    (``tracking.uri`` or this environment's), the S3 endpoint and region of this environment, then
    ``extra`` (``--env KEY=VALUE``). A secret-looking name (``*SECRET*``, ``*PASSWORD*``,
    ``*TOKEN*``, ...) is refused: mount secrets from a Kubernetes secret instead."""
    environ = os.environ if environ is None else environ
    env = {k: environ[k] for k in CLUSTER_ENV_KEYS if environ.get(k)}
    if cfg.tracking.uri:
        env["MLFLOW_TRACKING_URI"] = cfg.tracking.uri
    env.update(extra or {})
    for k in env:
        if SECRET_ENV.search(k) or k in ("AWS_ACCESS_KEY_ID",):
            raise PipelineError(
                f"--env {k}: credentials are not written into a compiled pipeline; create a Kubernetes secret and "
                "mount it as environment variables (pipeline.secrets; docs/CLUSTER.md, 'Secrets')."
            )
    return env


def check_cluster(cfg: Config, env: Optional[Mapping[str, str]] = None) -> None:
    """Refuse a config whose pipeline cannot work on a cluster, naming the setting to fix: a local
    ``output``, a missing or local tracking URI (``tracking.uri`` or ``MLFLOW_TRACKING_URI`` of
    ``env`` or of a secret in ``pipeline.secrets``), a local ``pipeline.pipeline_root``, GPU tasks
    without ``pipeline.gpu_image``, and dataset files the pods cannot reach (a local ``data.root``
    outside ``pipeline.data_volume``)."""
    p, env = cfg.pipeline, env or {}
    if not is_remote(cfg.output):
        raise PipelineError(f"output {cfg.output!r} is a local folder, which every cluster pod sees as its own disk; "
                            "set output to an s3://bucket/prefix.")
    if p.pipeline_root and "://" not in p.pipeline_root:
        raise PipelineError(f"pipeline.pipeline_root {p.pipeline_root!r} is a local path; set it to an "
                            "s3://bucket/prefix, or leave it unset for the cluster's default.")
    if cfg.tracking.enabled:
        uri = cfg.tracking.uri or env.get("MLFLOW_TRACKING_URI")
        from_secret = any("MLFLOW_TRACKING_URI" in s.keys.values() for s in p.secrets)
        if not uri and not from_secret:
            raise PipelineError("no MLflow tracking URI for the cluster tasks; set tracking.uri (or MLFLOW_TRACKING_URI, "
                                "--env MLFLOW_TRACKING_URI=http://mlflow.mlflow.svc:5000) to an MLflow server, or "
                                "tracking.enabled: false.")
        if uri and (uri.startswith(("sqlite:", "file:")) or "://" not in uri):
            raise PipelineError(f"the tracking URI {uri!r} is a local {'SQLite file' if uri.startswith('sqlite:') else 'path'}, "
                                "which cluster pods cannot share; set tracking.uri (or --env "
                                "MLFLOW_TRACKING_URI=http://mlflow.mlflow.svc:5000) to an MLflow server.")
    if cfg.train.nodes > 1 and p.shared_volume is None:
        from tdds_core.engine.launch import SHARED_VOLUME_NEEDED   # the launcher (torch) is not needed otherwise

        raise PipelineError(SHARED_VOLUME_NEEDED)
    if p.gpus > 0 and not p.gpu_image:
        raise PipelineError(f"pipeline.gpus is {p.gpus} but pipeline.gpu_image is unset: the training tasks would run "
                            f"in {p.image} and train on the CPU; set pipeline.gpu_image to the CUDA image, "
                            "or pipeline.gpus: 0 to train on CPUs.")
    _check_data(cfg)
    placeholder = PipelineConfig.model_fields["image"].default
    for field in ("image", "gpu_image"):
        if getattr(p, field) == placeholder:
            raise PipelineError(f"pipeline.{field} is the placeholder {placeholder}, which no registry serves; build and "
                                "push the image (docker build -f docker/Dockerfile --build-arg TDDS_GIT_SHA=$(git rev-parse "
                                f"HEAD) -t <registry>/tdds:<tag> ., docs/CLUSTER.md) and set pipeline.{field} to it.")


def _check_data(cfg: Config) -> None:
    """A dataset read from local files needs them in the pods: ``data.root`` under ``pipeline.data_volume``."""
    root, volume = cfg.data.root, cfg.pipeline.data_volume
    if root and is_remote(root):
        return
    load_plugins()
    if root is None and "root" not in inspect.signature(get_dataset_fn(cfg.data.name)).parameters:
        return          # a dataset that reads no files (synthetic)
    if volume is None:
        where = f"data.root {root!r} is a local path" if root else "data.root is unset: the dataset's default folder is local"
        raise PipelineError(f"{where}, which the cluster pods cannot reach; mount the files with "
                            "pipeline.data_volume (an existing PVC: {pvc_name: ..., mount_path: /data}) and set "
                            "data.root under it, or use an s3:// data.root where the dataset type reads S3 "
                            "(data.name: manifest).")
    mount = volume.mount_path.rstrip("/") + "/"
    if not root or not (root.rstrip("/") + "/").startswith(mount):
        raise PipelineError(f"data.root {root!r} is not under pipeline.data_volume.mount_path {volume.mount_path!r}; "
                            f"set data.root to the dataset's folder inside the volume, e.g. {mount}{cfg.data.name}.")


def compile_pipeline(cfg: Config, path: str | os.PathLike, *, kind: str = "prune",
                     env: Optional[Mapping[str, str]] = None) -> Path:
    """Write the KFP v2 YAML of the ``kind`` pipeline for ``cfg`` to ``path``, for a cluster:
    :func:`check_cluster` first, then the Kubernetes settings of ``pipeline.*`` on every task."""
    from kfp import compiler

    check_cluster(cfg, env)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = _builder(kind)(cfg, env=env, context=cache_context(cfg, {**os.environ, **(env or {})}), cluster=True)
    try:
        compiler.Compiler().compile(pipeline, str(path))
    except Exception as e:  # noqa: BLE001 - kfp raises many types
        raise PipelineError(f"compiling the {kind} pipeline failed: {type(e).__name__}: {e}") from e
    return path


# ------------------------------------------------------------------------------------------ local
@dataclass
class LocalRunResult:
    run_id: str
    output: str
    pipeline_root: str
    tracking_uri: Optional[str]
    experiment: Optional[str]
    report_md: str
    parent_run_id: Optional[str] = None
    log_path: Optional[str] = None      # kfp.local's full output of the run (executor JSON, task logs)
    tasks: Optional[dict] = None        # how many tasks ran ("done"), came from the cache ("cached"), failed


def cache_context(cfg: Config, environ: Optional[Mapping[str, str]] = None) -> str:
    """Where a run's tasks write, as one digest: the store's identity (``output`` and the S3
    endpoint of ``environ``) and the tracker's (tracking URI and experiment). Every cached task takes
    it as an input and the local cache folder is named by it, so a cached result is reused only
    against the store and tracker that hold its artifacts and runs."""
    ws = Workspace.of(cfg, environ=os.environ if environ is None else environ)
    tracker = tracker_identity(ws.tracking_uri, default_experiment(cfg)) if cfg.tracking.enabled else "none"
    return config_digest({"store": ws.identity, "tracker": tracker}, 16)


def local_pipeline_root(cfg: Config, context: Optional[str] = None) -> Path:
    """``<output>/kfp/<context>`` for a local output, ``$TDDS_CACHE/kfp/<name>-<context>`` for an S3
    output (``context``: :func:`cache_context`); kfp.local keeps its cache in ``.kfp_cache`` there."""
    return Workspace.of(cfg).pipeline_root(cfg.name, context or cache_context(cfg))


def drop_stale_cache(cfg: Config, root: Path) -> list[str]:
    """Remove the entries of the local KFP cache under ``root`` whose outputs name work that the
    configured store or tracker no longer holds (a deleted or expired prefix, a new tracking
    store): the task runs again and recreates it instead of reporting it done. Returns the removed
    entries' files."""
    cache = root / ".kfp_cache"
    entries = sorted(cache.glob("*.json")) if cache.is_dir() else []
    if not entries:
        return []
    store, tracker = Workspace.of(cfg).store, make_tracker(cfg, cfg.output)
    dropped = []
    for entry in entries:
        try:
            outputs = json.loads(entry.read_text())
        except (OSError, json.JSONDecodeError):
            outputs = None
        states = [v.get("metadata") or {} for v in (outputs or {}).values() if isinstance(v, dict)]
        if outputs is None or any(s.get("format") == STATE_FORMAT and missing_work(s, cfg.output, store, tracker)
                                  for s in states):
            entry.unlink(missing_ok=True)
            dropped.append(str(entry))
    return dropped


def _absolute_output(cfg: Config) -> Config:
    root = Workspace.of(cfg).root
    return cfg if root == cfg.output else cfg.model_copy(update={"output": root})


def run_local(cfg: Config, *, kind: str = "prune", run_id: Optional[str] = None, verbose: bool = False) -> LocalRunResult:
    """Run the ``kind`` pipeline for ``cfg`` on this machine (``kfp.local``, subprocess runner
    without a venv: the tasks use this Python and its packages). Returns where everything is.

    Prints one line per task (state, seconds, cache hit); kfp.local's own output (executor JSON,
    every task's log) goes to ``<pipeline root>/logs/<run id>.log`` (``verbose``: to the terminal as
    well). A failure names the task and shows the end of that log."""
    from kfp import local



    cfg = _absolute_output(cfg)
    context = cache_context(cfg)
    root = local_pipeline_root(cfg, context)
    root.mkdir(parents=True, exist_ok=True)
    if cfg.pipeline.caching:
        drop_stale_cache(cfg, root)
    run_id = run_id or f"local-{uuid.uuid4().hex[:12]}"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               enable_caching=cfg.pipeline.caching, raise_on_error=True)
    pipeline = _builder(kind)(cfg, context=context)
    log_path = root / "logs" / f"{run_id}.log"
    counts = None
    with warnings.catch_warnings(), _local_runner_fixes(), _set_env(PIPELINE_INSTANCE_ENV, run_id), \
            (contextlib.nullcontext() if verbose else task_lines(log_path)) as lines:
        # the cluster image name has no "python" in it, and GPU/cpu/memory requests do not apply here
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            pipeline(config_json=cfg.to_json(), run_id=run_id)
        except RuntimeError as e:
            msg = _ANSI.sub("", str(e))
            failed = lines.failed[0] if lines is not None and lines.failed else None
            where = "above" if verbose else f"in {log_path}; its last lines:\n{log_tail(log_path, task=failed)}\n"
            raise PipelineError(f"the local {kind} pipeline failed: {msg}. The failing task's log is {where}"
                                "Fix the cause and run again (finished stages are reused).") from None
        counts = dict(lines.counts) if lines is not None else None
    try:
        md = Workspace.of(cfg).store.get_bytes("report/table.md").decode()
    except Exception:  # noqa: BLE001 - a report is not essential to the result object
        md = ""
    tracking_uri = experiment = parent = None
    if cfg.tracking.enabled:
        tracking_uri = Workspace.of(cfg).tracking_uri
        experiment = default_experiment(cfg)
        parent = _parent_run(cfg, run_id)
    return LocalRunResult(run_id, cfg.output, str(root), tracking_uri, experiment, md, parent,
                          None if verbose else str(log_path), counts)


@contextlib.contextmanager
def _set_env(name: str, value: str):
    """``os.environ[name] = value`` for the block (the task subprocesses inherit it)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _local_runner_fixes():
    """Two gaps of kfp.local's subprocess runner, closed for the duration of a local run:

    * it runs two loop iterations at once, each a process whose torch uses every core by default:
      on a small machine the two fight (OpenMP threads spinning), so each task gets
      ``cpu_count // 2`` threads (``OMP_NUM_THREADS``, unless you set it);
    * it indents task logs by swapping ``builtins.print`` per task, which concurrent tasks leave
      swapped: the original is put back afterwards.
    """
    saved_print = builtins.print
    set_threads = "OMP_NUM_THREADS" not in os.environ
    if set_threads:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // 2))
    try:
        yield
    finally:
        builtins.print = saved_print
        if set_threads:
            os.environ.pop("OMP_NUM_THREADS", None)


def _parent_run(cfg: Config, run_id: str) -> Optional[str]:
    tracker = make_tracker(cfg, cfg.output)
    for status in ("FINISHED", "FAILED", "RUNNING"):
        run = find_parent_run(tracker, run_id=run_id, status=status)
        if run is not None:
            return run.id
    return None


# ------------------------------------------------------------------------------------------ cluster
def submit(cfg: Config, host: str, *, experiment: Optional[str] = None, kind: str = "prune",
           env: Optional[Mapping[str, str]] = None, run_name: Optional[str] = None,
           namespace: Optional[str] = None, token: Optional[str] = None) -> str:
    """Compile the ``kind`` pipeline for ``cfg`` and start one run on the KFP at ``host``
    (``in-cluster`` from a pod; ``namespace``/``token``: :class:`Access`). Returns the KFP run id."""
    env = cluster_env(cfg, env)
    host, access = Access.resolve(host, namespace, token)
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_pipeline(cfg, Path(tmp) / f"tdds-{kind}.yaml", kind=kind, env=env)
        host, client = connect(host, access)
        try:
            result = client.create_run_from_pipeline_package(
                str(path), arguments={"config_json": cfg.to_json()}, run_name=run_name or f"{cfg.name}-{kind}",
                experiment_name=experiment or f"tdds-{cfg.name}", namespace=access.namespace,
                enable_caching=cfg.pipeline.caching, pipeline_root=cfg.pipeline.pipeline_root)
        except Exception as e:  # noqa: BLE001 - ApiException, urllib3 errors
            raise api_error(host, f"submitting tdds-{kind}", e) from None
    return str(result.run_id)



def schedule(cfg: Config, host: str, cron: str, *, experiment: Optional[str] = None,
             env: Optional[Mapping[str, str]] = None, name: Optional[str] = None,
             namespace: Optional[str] = None, token: Optional[str] = None) -> str:
    """The recurring run ``name`` (default ``<config name>-reprune``) of ``tdds-reprune`` for
    ``cfg`` on the KFP at ``host`` (as :func:`submit`), pointing at a registered pipeline version
    (:func:`~pipelines.client.register_pipeline_version`). Idempotent per name and namespace: an
    existing recurring run of that name is replaced (the new one is created first, then the old
    ones are deleted). Returns the new recurring run's id."""
    cron6 = normalize_cron(cron)
    env = cluster_env(cfg, env)
    name = name or f"{cfg.name}-reprune"
    host, access = Access.resolve(host, namespace, token)
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_pipeline(cfg, Path(tmp) / "tdds-reprune.yaml", kind="reprune", env=env)
        host, client = connect(host, access)
        try:
            pipeline_id, version_id = register_pipeline_version(client, path, cfg, "reprune", access.namespace)
            exp = client.create_experiment(experiment or f"tdds-{cfg.name}", namespace=access.namespace)
            job = client.create_recurring_run(
                experiment_id=exp.experiment_id, job_name=name, cron_expression=cron6,
                params={"config_json": cfg.to_json()}, pipeline_id=pipeline_id, version_id=version_id,
                max_concurrency=1, no_catchup=True, enable_caching=cfg.pipeline.caching,
                pipeline_root=cfg.pipeline.pipeline_root)
            delete_schedules(client, name, access.namespace, keep=str(job.recurring_run_id))
        except PipelineError:
            raise
        except Exception as e:  # noqa: BLE001
            raise api_error(host, "scheduling tdds-reprune", e) from None
    return str(job.recurring_run_id)


def schedules(host: str, *, name: Optional[str] = None, namespace: Optional[str] = None,
              token: Optional[str] = None) -> list[dict]:
    """``tdds schedule --list``: the recurring runs of the namespace (or those named ``name``)."""
    host, access = Access.resolve(host, namespace, token)
    host, client = connect(host, access)
    try:
        return list_schedules(client, access.namespace, name)
    except Exception as e:  # noqa: BLE001
        raise api_error(host, "listing recurring runs", e) from None


def unschedule(host: str, name: str, *, namespace: Optional[str] = None, token: Optional[str] = None) -> list[str]:
    """``tdds schedule --delete NAME``: delete the recurring runs named ``name``; returns their ids
    (PipelineError when there is none, naming --list)."""
    host, access = Access.resolve(host, namespace, token)
    host, client = connect(host, access)
    try:
        gone = delete_schedules(client, name, access.namespace)
    except Exception as e:  # noqa: BLE001
        raise api_error(host, f"deleting recurring run {name!r}", e) from None
    if not gone:
        raise PipelineError(f"no recurring run named {name!r} at {host}{' in ' + access.namespace if access.namespace else ''}; "
                            "tdds schedule --list shows the names.")
    return gone
