"""The KFP API client side of ``tdds submit`` / ``tdds schedule`` / waiting for a run.

* :class:`Access` says how to reach a KFP API: a namespace (Kubeflow profile) and a bearer token,
  either given once or read from a token file on every request (kfp's
  ``ServiceAccountTokenVolumeCredentials``: Kubeflow's projected token lives 7,200 s and is
  renewed in place, so a 6-hour wait must not hold the first value).
* :func:`check_host` refuses what is no KFP v2 API, a backend older than :data:`MIN_BACKEND` and a
  multi-user server without a namespace, before anything is uploaded.
* :func:`connect` builds the real ``kfp.Client``; :func:`register_pipeline_version`,
  :func:`list_schedules`, :func:`delete_schedules` and :func:`wait_for_run` use it. Every look-up
  of a pipeline is namespaced (a multi-user server keeps one pipeline of a name per profile).
Every failure is a :class:`~tdds_core.errors.PipelineError` naming the host and the fix.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from tdds_core.config import Config
from tdds_core.errors import PipelineError
from tdds_core.steps import build_digest
from tdds_core.tracking import code_version

__all__ = ["MIN_BACKEND", "IN_CLUSTER_HOST", "IN_CLUSTER_TOKEN", "Access", "check_host", "connect", "wait_for_run",
           "normalize_cron", "version_name", "register_pipeline_version", "find_pipeline", "list_schedules",
           "delete_schedules", "api_error", "ENDED_STATES"]

#: The oldest KFP backend that runs the compiled pipeline (docs/CLUSTER.md, "Backend versions"):
#: no fan-in through dsl.Collected (kubeflow/pipelines PR #11725, first in 2.14.0) and no retry
#: policy below the root DAG (PR #11908, first in 2.14.0); what is left, a parameter loop over a
#: raw JSON list, .after() on a loop and an exit handler, the 2.5.0 backend compiles
#: (backend/src/v2/compiler/argocompiler/dag.go at tag 2.5.0).
MIN_BACKEND = (2, 5)
#: ``--host in-cluster``: the API service and service-account token a pod in a Kubeflow cluster uses
IN_CLUSTER_HOST = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
IN_CLUSTER_TOKEN = "/var/run/secrets/kubeflow/pipelines/token"
#: run states after which nothing more happens (kfp's own wait_for_run_completion waits on through
#: CANCELING / CANCELED until its timeout)
ENDED_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "CANCELING")


@dataclass(frozen=True)
class Access:
    """How to reach a KFP API: ``namespace`` (a Kubeflow profile; None: the server's default) and a
    bearer ``token`` given once (``--token``, ``$KF_PIPELINES_TOKEN``) or ``token_path``, a file read
    again on every request (``$KF_PIPELINES_SA_TOKEN_PATH``; in-cluster the pod's pipelines token)."""

    namespace: Optional[str] = None
    token: Optional[str] = None
    token_path: Optional[str] = None

    @classmethod
    def resolve(cls, host: str, namespace: Optional[str] = None, token: Optional[str] = None,
                environ: Optional[Mapping[str, str]] = None) -> tuple[str, "Access"]:
        """``(host, access)`` with ``--host in-cluster`` and the token sources resolved; a token
        file that cannot be read is refused here, naming the fix."""
        environ = os.environ if environ is None else environ
        path = environ.get("KF_PIPELINES_SA_TOKEN_PATH") or (IN_CLUSTER_TOKEN if host == "in-cluster" else None)
        if host == "in-cluster":
            host = environ.get("KF_PIPELINES_ENDPOINT") or IN_CLUSTER_HOST
        namespace = namespace or environ.get("KF_PIPELINES_NAMESPACE") or None
        token = token or environ.get("KF_PIPELINES_TOKEN")
        if token:
            return host, cls(namespace, token, None)
        if path:
            try:
                Path(path).read_text()
            except OSError as e:
                raise PipelineError(f"cannot read the KFP token file {path} ({e.strerror}); mount the service-account "
                                    "token (Kubeflow notebooks: a PodDefault for pipelines access) or pass --token.") from None
            return host, cls(namespace, None, path)
        return host, cls(namespace, None, None)

    def bearer(self) -> Optional[str]:
        """The token to send now (the file's current content when ``token_path``)."""
        if self.token_path:
            return Path(self.token_path).read_text().strip() or None
        return self.token


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
        bearer = access.bearer()
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
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
        raise PipelineError(f"the KFP backend at {host} is {health.get('tag_name')}; the tdds pipelines (loops, "
                            f"exit handler, Kubernetes settings) needs KFP {MIN_BACKEND[0]}.{MIN_BACKEND[1]} or newer "
                            "(Kubeflow 1.10 ships 2.5): upgrade Kubeflow Pipelines (docs/CLUSTER.md).")
    if health.get("multi_user") and not access.namespace:
        raise PipelineError(f"the KFP at {host} is multi-user; pass --namespace <your Kubeflow profile> "
                            "(or set KF_PIPELINES_NAMESPACE).")
    return host


def api_error(host: str, what: str, e: BaseException) -> PipelineError:
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


def connect(host: str, access: Access) -> tuple[str, Any]:
    """``(host, kfp.Client)`` after :func:`check_host`: the token file of ``access`` through kfp's
    ``ServiceAccountTokenVolumeCredentials`` (read again on every request), a given token as
    ``existing_token``."""
    import kfp
    from kfp.client import set_volume_credentials

    host = check_host(host, access=access)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # "only works with KFP v2.0.0-beta.2 and later"
            kw: dict[str, Any] = {"namespace": access.namespace} if access.namespace else {}
            if access.token_path:
                kw["credentials"] = set_volume_credentials.ServiceAccountTokenVolumeCredentials(path=access.token_path)
            elif access.token:
                kw["existing_token"] = access.token
            return host, kfp.Client(host=host, **kw)
    except Exception as e:  # noqa: BLE001
        raise api_error(host, "connecting to Kubeflow Pipelines", e) from None


def wait_for_run(host: str, run_id: str, *, timeout_s: int = 6 * 3600, namespace: Optional[str] = None,
                 token: Optional[str] = None, poll_s: float = 15) -> str:
    """Wait until the KFP run ``run_id`` ends (``host``: as ``tdds submit``, ``in-cluster`` from a
    pod); returns ``SUCCEEDED``. A run that ends otherwise, is cancelled (CANCELING counts: kfp's own
    wait would poll on until its timeout) or outlives ``timeout_s`` is a PipelineError."""
    host, access = Access.resolve(host, namespace, token)
    host, client = connect(host, access)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = str(getattr(client.get_run(run_id), "state", "") or "")
        except Exception as e:  # noqa: BLE001
            raise api_error(host, f"waiting for run {run_id}", e) from None
        if state in ENDED_STATES:
            break
        if time.monotonic() >= deadline:
            raise PipelineError(f"KFP run {run_id} at {host} did not finish within {timeout_s} s (state {state}); it "
                                "goes on running: wait again, or look at it in the KFP UI.")
        time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
    if state in ("CANCELED", "CANCELING"):
        raise PipelineError(f"KFP run {run_id} at {host} was cancelled ({state}); submit it again to rerun it "
                            "(finished stages are reused).")
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
    pipeline_id = find_pipeline(client, name, namespace)
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


def find_pipeline(client: Any, name: str, namespace: Optional[str] = None) -> Optional[str]:
    """The id of the pipeline ``name`` in ``namespace`` (None: the server's shared pipelines), or
    None. kfp's own ``get_pipeline_id`` looks outside the namespace, so on a multi-user server the
    second upload of a name would conflict."""
    found = client.list_pipelines(filter=_by_name(name), page_size=2, namespace=namespace).pipelines or []
    if len(found) > 1:
        raise PipelineError(f"two pipelines named {name!r} in namespace {namespace or '(shared)'}; delete one in the KFP UI.")
    return found[0].pipeline_id if found else None


def _schedules(client: Any, namespace: Optional[str], name: Optional[str]) -> list[Any]:
    out, token = [], ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, namespace=namespace,
                                          filter=_by_name(name) if name else None)
        out += [r for r in (page.recurring_runs or []) if name is None or r.display_name == name]
        token = page.next_page_token or ""
        if not token:
            return out


def list_schedules(client: Any, namespace: Optional[str] = None, name: Optional[str] = None) -> list[dict]:
    """The recurring runs of ``namespace`` (all, or those named ``name``) as dicts: ``id``, ``name``,
    ``cron``, ``status``, ``pipeline_version_id``."""
    rows = []
    for r in _schedules(client, namespace, name):
        cron = getattr(getattr(getattr(r, "trigger", None), "cron_schedule", None), "cron", None)
        ref = getattr(r, "pipeline_version_reference", None)
        rows.append({"id": r.recurring_run_id, "name": r.display_name, "cron": cron, "status": getattr(r, "status", None),
                     "pipeline_version_id": getattr(ref, "pipeline_version_id", None)})
    return rows


def delete_schedules(client: Any, name: str, namespace: Optional[str] = None, *, keep: Optional[str] = None) -> list[str]:
    """Delete every recurring run named ``name`` in ``namespace`` but ``keep``; returns their ids."""
    gone = []
    for r in _schedules(client, namespace, name):
        if r.recurring_run_id != keep:
            client.delete_recurring_run(r.recurring_run_id)
            gone.append(r.recurring_run_id)
    return gone
