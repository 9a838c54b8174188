"""Compile, run locally, submit and schedule the tdds pipelines.

* :func:`compile_pipeline` writes the KFP v2 YAML of ``tdds-prune`` or ``tdds-reprune`` for a config,
  after :func:`check_cluster` refused what cannot work on a cluster (``submit`` and ``schedule``
  compile through it; local runs do not).
* :func:`run_local` runs the SAME pipeline function on this machine through ``kfp.local``'s
  ``SubprocessRunner(use_venv=False)``: each task is a subprocess of this Python, KFP's pipeline root
  under ``<output>/kfp`` (local cache in ``<output>/kfp/.kfp_cache``), artifacts in ``cfg.output``,
  MLflow in ``sqlite:///<output>/mlflow.db`` unless ``tracking.uri`` / ``MLFLOW_TRACKING_URI`` say
  otherwise. The environment of this process (MLflow and AWS settings) reaches every task.
* :func:`submit` / :func:`schedule` talk to a KFP API server (``kfp.Client``); an unreachable host or
  a rejected request is a :class:`~tdds_core.errors.PipelineError` naming the host and the fix.
"""
from __future__ import annotations

import builtins
import contextlib
import inspect
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from tdds_core.config import Config, config_digest
from tdds_core.data.base import get_dataset_fn
from tdds_core.errors import PipelineError
from tdds_core.plugins import load_plugins
from tdds_core.stage_registry import STATE_FORMAT
from tdds_core.steps import PIPELINE_INSTANCE_ENV, build_digest, find_parent_run, missing_work
from tdds_core.storage import Workspace, is_remote
from tdds_core.tracking import code_version, default_experiment, make_tracker, tracker_identity

from .console import log_tail, task_lines

__all__ = ["compile_pipeline", "check_cluster", "run_local", "submit", "schedule", "check_host", "LocalRunResult",
           "cluster_env", "normalize_cron", "register_pipeline_version", "version_name", "wait_for_run", "SECRET_ENV", "PIPELINES", "local_pipeline_root", "cache_context", "drop_stale_cache"]

PIPELINES = ("prune", "reprune")
# never baked into a compiled pipeline: these come from Kubernetes secrets (docs/CLUSTER.md)
SECRET_ENV = re.compile(r"(SECRET|PASSWORD|TOKEN|SESSION|CREDENTIAL|PRIVATE)", re.I)
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
                            f"in {p.image} (CPU torch) and train on the CPU; set pipeline.gpu_image to the CUDA image, "
                            "or pipeline.gpus: 0 to train on CPUs.")
    _check_data(cfg)


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
#: the oldest KFP backend that runs the compiled DAG (``dsl.Collected`` fan-ins; docs/CLUSTER.md)
MIN_BACKEND = (2, 5)
#: ``--host in-cluster``: the API service and service-account token a pod in a Kubeflow cluster uses
IN_CLUSTER_HOST = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
IN_CLUSTER_TOKEN = "/var/run/secrets/kubeflow/pipelines/token"


@dataclass(frozen=True)
class Access:
    """How to reach a KFP API: ``namespace`` (a Kubeflow profile; None: the server's default) and a
    bearer ``token`` (argument, ``$KF_PIPELINES_TOKEN``, or the file ``$KF_PIPELINES_SA_TOKEN_PATH``,
    which is also read in-cluster)."""

    namespace: Optional[str] = None
    token: Optional[str] = None

    @classmethod
    def resolve(cls, host: str, namespace: Optional[str] = None, token: Optional[str] = None,
                environ: Optional[Mapping[str, str]] = None) -> tuple[str, "Access"]:
        """``(host, access)`` with ``--host in-cluster`` and the token sources resolved."""
        environ = os.environ if environ is None else environ
        path = environ.get("KF_PIPELINES_SA_TOKEN_PATH") or (IN_CLUSTER_TOKEN if host == "in-cluster" else None)
        if host == "in-cluster":
            host = environ.get("KF_PIPELINES_ENDPOINT") or IN_CLUSTER_HOST
        token = token or environ.get("KF_PIPELINES_TOKEN")
        if not token and path:
            try:
                token = Path(path).read_text().strip()
            except OSError as e:
                raise PipelineError(f"cannot read the KFP token file {path} ({e.strerror}); mount the service-account "
                                    "token (Kubeflow notebooks: a PodDefault for pipelines access) or pass --token.") from None
        return host, cls(namespace or environ.get("KF_PIPELINES_NAMESPACE") or None, token or None)


def _version(tag: str) -> Optional[tuple[int, int]]:
    m = re.match(r"v?(\d+)\.(\d+)", tag or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_host(host: str, *, timeout: float = 5.0, access: Access = Access()) -> str:
    """Check that ``host`` answers like a KFP v2 API server (``GET /apis/v2beta1/healthz``, with the
    token of ``access``) of at least :data:`MIN_BACKEND`, and that a multi-user server gets a namespace;
    returns the normalised host URL or raises PipelineError naming the host and the fix."""
    if not re.match(r"^https?://[^/\s]+", host or ""):
        raise PipelineError(f"--host {host!r} is not an http(s) URL; pass the KFP API endpoint, e.g. "
                            "--host http://localhost:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`.")
    host = host.rstrip("/")
    url = f"{host}/apis/v2beta1/healthz"
    fix_reach = ("check the URL, that the cluster is up and that you can reach it (e.g. `kubectl port-forward -n kubeflow "
                 "svc/ml-pipeline-ui 8080:80` and --host http://localhost:8080)")
    try:
        headers = {"Authorization": f"Bearer {access.token}"} if access.token else {}
        with urllib.request.urlopen(urllib.request.Request(url, method="GET", headers=headers), timeout=timeout) as r:
            body = r.read(4096)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise PipelineError(f"the KFP API at {host} refused the request (HTTP {e.code}); authenticate: pass a "
                                "token (KF_PIPELINES_SA_TOKEN_PATH) or a session cookie, or use the in-cluster endpoint.") from None
        raise PipelineError(f"{host} answered HTTP {e.code} on /apis/v2beta1/healthz: not a reachable Kubeflow "
                            f"Pipelines v2 API; {fix_reach}.") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise PipelineError(f"cannot reach the Kubeflow Pipelines API at {host} ({reason}); {fix_reach}.") from None
    try:
        health = json.loads(body or b"{}")
    except json.JSONDecodeError:
        raise PipelineError(f"{host} answered /apis/v2beta1/healthz with something other than JSON (a login page?); "
                            f"pass the KFP API endpoint itself, or authenticate; {fix_reach}.") from None
    version = _version(str(health.get("tag_name") or ""))
    if version is not None and version < MIN_BACKEND:
        raise PipelineError(f"the KFP backend at {host} is {health.get('tag_name')}; tdds pipelines collect loop outputs "
                            f"(dsl.Collected), which needs KFP {MIN_BACKEND[0]}.{MIN_BACKEND[1]} or newer (Kubeflow 1.9/1.10 "
                            "ship 2.2-2.4): upgrade Kubeflow Pipelines (docs/CLUSTER.md).")
    if health.get("multi_user") and not access.namespace:
        raise PipelineError(f"the KFP at {host} is multi-user; pass --namespace <your Kubeflow profile> "
                            "(or set KF_PIPELINES_NAMESPACE).")
    return host


def _api_error(host: str, what: str, e: BaseException) -> PipelineError:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", None) or type(e).__name__
    body = getattr(e, "body", None)
    detail = ""
    if body:
        try:
            parsed = json.loads(body)
            detail = parsed.get("message") or parsed.get("error") or str(parsed)[:300]
        except (TypeError, ValueError):
            detail = str(body)[:300]
    if status is not None and 400 <= int(status) < 500:
        fix = ("the server rejected the request: check the pipeline (tdds compile --config ... and inspect the YAML), "
               "the experiment name and your permissions")
    elif status is not None:
        fix = "the KFP API server failed; check its logs (kubectl logs -n kubeflow deploy/ml-pipeline) and retry"
    else:
        fix = "check the host and your connection"
    code = f"HTTP {status} {reason}" if status is not None else str(reason)
    return PipelineError(f"{what} at {host} failed ({code}{': ' + detail if detail else ''}); {fix}.")


def _client(host: str, access: Access):
    import kfp

    host = check_host(host, access=access)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # "only works with KFP v2.0.0-beta.2 and later"
            kw = {"namespace": access.namespace} if access.namespace else {}
            return host, kfp.Client(host=host, existing_token=access.token, **kw)
    except Exception as e:  # noqa: BLE001
        raise _api_error(host, "connecting to Kubeflow Pipelines", e) from None


def submit(cfg: Config, host: str, *, experiment: Optional[str] = None, kind: str = "prune",
           env: Optional[Mapping[str, str]] = None, run_name: Optional[str] = None,
           namespace: Optional[str] = None, token: Optional[str] = None) -> str:
    """Compile the ``kind`` pipeline for ``cfg`` and start one run on the KFP at ``host``
    (``in-cluster`` from a pod; ``namespace``/``token``: :class:`Access`). Returns the KFP run id."""
    env = cluster_env(cfg, env)
    host, access = Access.resolve(host, namespace, token)
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_pipeline(cfg, Path(tmp) / f"tdds-{kind}.yaml", kind=kind, env=env)
        host, client = _client(host, access)
        try:
            result = client.create_run_from_pipeline_package(
                str(path), arguments={"config_json": cfg.to_json()}, run_name=run_name or f"{cfg.name}-{kind}",
                experiment_name=experiment or f"tdds-{cfg.name}", namespace=access.namespace,
                enable_caching=cfg.pipeline.caching, pipeline_root=cfg.pipeline.pipeline_root)
        except Exception as e:  # noqa: BLE001 - ApiException, urllib3 errors
            raise _api_error(host, f"submitting tdds-{kind}", e) from None
    return str(result.run_id)


def wait_for_run(host: str, run_id: str, *, timeout_s: int = 6 * 3600, namespace: Optional[str] = None,
                 token: Optional[str] = None, poll_s: int = 15) -> str:
    """Wait until the KFP run ``run_id`` ends (``host``: as :func:`submit`, ``in-cluster`` from a
    pod); returns its final state, PipelineError unless it SUCCEEDED or when ``timeout_s`` passes."""
    host, access = Access.resolve(host, namespace, token)
    host, client = _client(host, access)
    try:
        run = client.wait_for_run_completion(run_id, timeout=timeout_s, sleep_duration=poll_s)
    except TimeoutError:
        raise PipelineError(f"KFP run {run_id} at {host} did not finish within {timeout_s} s; it goes on running: "
                            "wait again, or look at it in the KFP UI.") from None
    except Exception as e:  # noqa: BLE001
        raise _api_error(host, f"waiting for run {run_id}", e) from None
    state = str(getattr(run, "state", "") or "")
    if state != "SUCCEEDED":
        raise PipelineError(f"KFP run {run_id} at {host} ended {state or 'without a state'}; open it in the KFP UI "
                            "for the failing task's log, fix the cause and submit again (finished stages are reused).")
    return state


def normalize_cron(expr: str) -> str:
    """A KFP cron expression (6 fields, seconds first) from 5 standard fields (``0`` seconds
    prepended) or 6 fields as they are."""
    parts = (expr or "").split()
    if len(parts) == 5:
        return "0 " + " ".join(parts)
    if len(parts) == 6:
        return " ".join(parts)
    raise PipelineError(f"--cron {expr!r}: use 5 cron fields (minute hour day month weekday, e.g. '0 3 * * *' = "
                        "daily at 03:00) or KFP's 6 (seconds first).")


def _by_name(name: str) -> str:
    """A KFP API filter (JSON) for ``display_name == name``."""
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def version_name(cfg: Config, kind: str) -> str:
    """The pipeline version a compiled config registers as: the code version and the build digest
    (the plan and every stage's settings), so the same code and config give the same version."""
    return f"{code_version()}-{build_digest(cfg, kind)[:12]}"


def register_pipeline_version(client: Any, path: str | os.PathLike, cfg: Config, kind: str,
                              namespace: Optional[str] = None) -> tuple[str, str]:
    """Register the compiled pipeline at ``path`` as pipeline ``tdds-<kind>-<config name>`` (uploaded
    on first use) in version :func:`version_name` (uploaded unless that version exists already).
    Returns ``(pipeline_id, version_id)``."""
    name, version = f"tdds-{kind}-{cfg.name}", version_name(cfg, kind)
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        created = client.upload_pipeline(str(path), pipeline_name=name, namespace=namespace,
                                         description=f"tdds {kind} pipeline of config {cfg.name!r} ({cfg.data.name})")
        pipeline_id = created.pipeline_id
    found = client.list_pipeline_versions(pipeline_id, filter=_by_name(version), page_size=1).pipeline_versions or []
    if found:
        return pipeline_id, found[0].pipeline_version_id
    created = client.upload_pipeline_version(str(path), pipeline_version_name=version, pipeline_id=pipeline_id,
                                             description=f"tdds {version}")
    return pipeline_id, created.pipeline_version_id


def schedule(cfg: Config, host: str, cron: str, *, experiment: Optional[str] = None,
             env: Optional[Mapping[str, str]] = None, name: Optional[str] = None,
             namespace: Optional[str] = None, token: Optional[str] = None) -> str:
    """A recurring run of ``tdds-reprune`` for ``cfg`` on the KFP at ``host`` (as :func:`submit`),
    pointing at a registered pipeline version (:func:`register_pipeline_version`): the schedule names
    the code and config it runs, and the KFP UI lists it under the pipeline. Returns its id."""
    cron6 = normalize_cron(cron)
    env = cluster_env(cfg, env)
    host, access = Access.resolve(host, namespace, token)
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_pipeline(cfg, Path(tmp) / "tdds-reprune.yaml", kind="reprune", env=env)
        host, client = _client(host, access)
        try:
            pipeline_id, version_id = register_pipeline_version(client, path, cfg, "reprune", access.namespace)
            exp = client.create_experiment(experiment or f"tdds-{cfg.name}", namespace=access.namespace)
            job = client.create_recurring_run(
                experiment_id=exp.experiment_id, job_name=name or f"{cfg.name}-reprune", cron_expression=cron6,
                params={"config_json": cfg.to_json()}, pipeline_id=pipeline_id, version_id=version_id,
                max_concurrency=1, no_catchup=True, enable_caching=cfg.pipeline.caching,
                pipeline_root=cfg.pipeline.pipeline_root)
        except Exception as e:  # noqa: BLE001
            raise _api_error(host, "scheduling tdds-reprune", e) from None
    return str(job.recurring_run_id)
