"""How one training run is started beyond this process: in ``train.processes`` processes on this
machine (:func:`train_in_processes`: ``torchrun --standalone --nproc-per-node K -m tdds_core.launch``,
waited for) or over ``train.nodes`` pods (:func:`train_on_nodes`: a Kubeflow PyTorchJob,
:func:`pytorchjob_manifest`). The K processes train one run with DistributedDataParallel
(:func:`tdds_core.engine.train`) into the stage's folder, and rank 0 mirrors its checkpoints to the
S3 output (``_partial``) as a single process does (:mod:`tdds_core.launch`, the processes' entry).
The stage then reads the finished folder back (per-epoch metrics are logged to MLflow from its
history).

The PyTorchJob carries what the KFP task that launches it has (:func:`job_env`, :func:`kfp_pod`):
its non-secret environment, its secrets, its service account, and its pod as owner, so deleting
the run deletes the job; ``runPolicy.activeDeadlineSeconds`` bounds the job and ``pipeline.job_wait_s``
the wait (:func:`wait_for_job`), which also ends when the job is deleted or the task gets SIGTERM.

On CUDA each process takes the GPU of its ``LOCAL_RANK`` (a KFP task asks for K GPUs,
``pipelines.prune``); on a CPU the processes use gloo and share the cores.
"""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from ..config import Config
from ..errors import ConfigError, TrainingError
from ..names import SECRET_ENV
from .checkpoint import load_result
from .spec import TrainResult

__all__ = ["torchrun_command", "train_in_processes", "under_torchrun", "pytorchjob_manifest", "train_on_nodes",
           "job_env", "kfp_pod", "wait_for_job", "job_state", "CONFIG_ENV", "SHARED_VOLUME_NEEDED"]

#: a PyTorchJob's pods get the run's config in this variable (``--config-json env:TDDS_LAUNCH_CONFIG``)
CONFIG_ENV = "TDDS_LAUNCH_CONFIG"
SHARED_VOLUME_NEEDED = ("train.nodes > 1: the pods of a several-node run share their run folder; set "
                        "pipeline.shared_volume to a ReadWriteMany PVC ({pvc_name: ..., mount_path: /shared}), or train "
                        "on one node (train.nodes: 1, train.processes: the GPUs of one node)")
#: the Kubeflow Training Operator's API
PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL = "kubeflow.org", "v1", "pytorchjobs"
#: Kubeflow Trainer v2's API group (TrainJob), which replaces kubeflow.org/v1 on training-operator's master
TRAINER_V2_GROUP = "trainer.kubeflow.org"
#: what a job's pods get from the task's environment (:func:`job_env`), and what they never get
JOB_ENV_PREFIXES = ("AWS_", "MLFLOW_", "TDDS_")
PROXY_ENV = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"})
SECRET_NAME = SECRET_ENV   # the one pattern (tdds_core.names), as the cluster env uses it
JOB_ENV_DROP = frozenset({"AWS_ACCESS_KEY_ID", "AWS_CA_BUNDLE", "AWS_CONFIG_FILE", CONFIG_ENV})
PIPELINE_INSTANCE_ENV = "TDDS_PIPELINE_INSTANCE"   # as tdds_core.steps.PIPELINE_INSTANCE_ENV (a layer above)
INSTANCE_LABEL = "tdds.io/pipeline-instance"       # on the job: the KFP run (Argo workflow) that created it
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

#: torchrun's variables: a process started by torchrun has them; its own children must not inherit them
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
                "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE")


def under_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def torchrun_command(processes: int, args: list[str]) -> list[str]:
    """``torchrun --standalone`` with ``processes`` processes on this machine (several machines:
    the PyTorchJob of :func:`pytorchjob_manifest`, whose operator sets the rendezvous)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(processes)}",
            "-m", "tdds_core.launch", *args]


def train_in_processes(cfg: Config, work: Path, mirror: Optional[str] = None) -> Optional[TrainResult]:
    """Train ``cfg``'s full-data run in ``cfg.train.processes`` processes into ``work`` and return
    its :class:`~tdds_core.engine.TrainResult` (a finished folder is returned as it is)."""
    k = int(cfg.train.processes)
    work.mkdir(parents=True, exist_ok=True)
    args = ["--config-json", f"env:{CONFIG_ENV}", "--out", str(work)] + (["--mirror", mirror] if mirror else [])
    env = {k_: v for k_, v in os.environ.items() if k_ not in TORCHRUN_ENV}
    env[CONFIG_ENV] = cfg.model_dump_json()       # as a PyTorchJob's pods get it
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // k)))
    proc = subprocess.run(torchrun_command(k, args), env=env)
    if proc.returncode != 0:
        raise TrainingError(f"the {k}-process full-data run (torchrun) failed with exit code {proc.returncode}; its "
                            f"output is above. Rerun to resume from its last checkpoint, or set train.processes: 1.")
    return load_result(work)


def job_env(cfg: Config, environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The non-secret environment a PyTorchJob's pods get from the KFP task that launches them:
    every ``AWS_*``, ``MLFLOW_*`` and ``TDDS_*`` variable and the proxy settings of ``environ``
    (the S3 endpoint and region, the tracking URI, the code stamp ``TDDS_CODE_VERSION`` /
    ``TDDS_BUILD_SHA`` and ``TDDS_PIPELINE_INSTANCE`` that ``pipelines.prune`` gives every task), less
    secret-looking names (``*SECRET*``, ``*TOKEN*``, ..., as ``pipelines.run.SECRET_ENV``), the
    variables of ``pipeline.secrets`` (the pods get those from the secret itself) and paths into
    the task's own mounts (``AWS_CA_BUNDLE``, ``AWS_CONFIG_FILE``)."""
    environ = os.environ if environ is None else environ
    from_secrets = {v for sec in cfg.pipeline.secrets for v in sec.keys.values()}
    return {k: v for k, v in sorted(environ.items())
            if (k.startswith(JOB_ENV_PREFIXES) or k in PROXY_ENV) and v and not SECRET_NAME.search(k)
            and k not in from_secrets and k not in JOB_ENV_DROP}


def pytorchjob_manifest(cfg: Config, *, name: str, out: str, mirror: Optional[str], image: str,
                        env: Optional[Mapping[str, str]] = None, service_account: Optional[str] = None,
                        owner: Optional[dict] = None, labels: Optional[Mapping[str, str]] = None) -> dict:
    """The PyTorchJob (Kubeflow Training Operator, ``kubeflow.org/v1``) that trains ``cfg``'s
    full-data run on ``cfg.train.nodes`` pods (one Master, ``nodes - 1`` Workers) with
    ``cfg.train.processes`` GPUs and processes each. The operator sets torchrun's ``PET_*``
    variables (nodes, node rank, master address); every pod mounts ``pipeline.shared_volume``, whose
    folder ``out`` they share, and rank 0 mirrors the checkpoints to ``mirror`` (S3).

    ``env`` (:func:`job_env`), ``service_account`` and ``owner`` (an ownerReference, of the KFP
    pod: the garbage collector deletes the job with it) come from the launching task; the job fails
    ``pipeline.job_deadline_s`` after it started (``runPolicy.activeDeadlineSeconds``, read by the
    operator in ``pkg/core/job.go: PastActiveDeadline``, training-operator release-1.9)."""
    p, t = cfg.pipeline, cfg.train
    vol = p.shared_volume
    if vol is None:
        raise ConfigError(SHARED_VOLUME_NEEDED)
    args = ["--config-json", f"env:{CONFIG_ENV}", "--out", out] + (["--mirror", mirror] if mirror else [])
    variables = {**(env or {}), CONFIG_ENV: cfg.model_dump_json(), "OMP_NUM_THREADS": "1"}
    container = {
        "name": "pytorch",      # the container name the operator looks for (PyTorchJobDefaultContainerName)
        "image": image,
        "command": ["python", "-m", "torch.distributed.run", "-m", "tdds_core.launch"] + args,
        "env": [{"name": k, "value": v} for k, v in sorted(variables.items())]
        + [{"name": k, "valueFrom": {"secretKeyRef": {"name": sec.secret_name, "key": key}}}
           for sec in p.secrets for key, k in sorted(sec.keys.items())],
        "resources": {"requests": {"cpu": p.cpu_request, "memory": p.memory_request},
                      "limits": {p.accelerator_type: str(t.processes)} if p.gpus > 0 else {}},
        "volumeMounts": [{"name": "shared", "mountPath": vol.mount_path}, {"name": "dshm", "mountPath": "/dev/shm"}]
        + ([{"name": "data", "mountPath": p.data_volume.mount_path}] if p.data_volume else []),
    }
    pod_spec = {
        "containers": [container],
        "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": vol.pvc_name}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", **({"sizeLimit": p.shm_size} if p.shm_size else {})}}]
        + ([{"name": "data", "persistentVolumeClaim": {"claimName": p.data_volume.pvc_name}}] if p.data_volume else []),
        "tolerations": [x.model_dump(exclude_none=True) for x in p.tolerations],
        "nodeSelector": dict(p.node_selector),
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    pod = {"spec": pod_spec}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": pod}}
    if t.nodes > 1:
        replicas["Worker"] = {"replicas": t.nodes - 1, "restartPolicy": "OnFailure", "template": pod}
    meta: dict = {"name": name, "labels": {"app.kubernetes.io/part-of": "tdds", **(labels or {})}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}", "kind": "PyTorchJob", "metadata": meta,
            "spec": {"nprocPerNode": str(t.processes),
                     "runPolicy": {"backoffLimit": p.retries, "cleanPodPolicy": "Running",
                                   "activeDeadlineSeconds": int(p.job_deadline_s)},
                     "pytorchReplicaSpecs": replicas}}


def train_on_nodes(cfg: Config, work: Path, mirror: Optional[str], *, name: str, image: str,
                   namespace: Optional[str] = None, poll_s: float = 15.0, timeout_s: Optional[float] = None,
                   environ: Optional[Mapping[str, str]] = None) -> Optional[TrainResult]:
    """Create the PyTorchJob of :func:`pytorchjob_manifest` with the KFP task's environment,
    service account and pod as its owner (:func:`kfp_pod`), wait for it (:func:`wait_for_job`,
    at most ``timeout_s``, default ``pipeline.job_wait_s``) and return the run's result from the
    shared folder ``work``. A retried task that finds the job (409 on create) attaches to it while
    it runs or has succeeded, and deletes and recreates it when it failed or was suspended."""
    from kubernetes import client

    environ = os.environ if environ is None else environ
    api_client, ns = _connect(namespace)
    jobs, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    pod = kfp_pod(core, ns, environ)
    instance = environ.get(PIPELINE_INSTANCE_ENV, "")
    labels = {INSTANCE_LABEL: _label_value(instance)} if instance else {}
    body = pytorchjob_manifest(cfg, name=name, out=str(work), mirror=mirror, image=image, env=job_env(cfg, environ),
                               service_account=pod.get("service_account"), owner=pod.get("owner"), labels=labels)
    created = _create_or_attach(jobs, ns, body, pod.get("owner"))
    if timeout_s is None:
        timeout_s = cfg.pipeline.job_wait_s or cfg.pipeline.job_deadline_s + 900
    wait_for_job(jobs, ns, name, timeout_s=timeout_s, poll_s=poll_s,
                 delete_on_stop=created or bool(instance and _job_instance(jobs, ns, name) == _label_value(instance)))
    return load_result(work)


def kfp_pod(core: Any, namespace: str, environ: Mapping[str, str]) -> dict:
    """The launching KFP pod as ``{"name", "service_account", "owner"}`` (an empty dict outside a
    pod). Its name is ``$KFP_POD_NAME`` (the downward API variable every KFP v2 executor has:
    kubeflow/pipelines 2.5.0 ``backend/src/v2/compiler/argocompiler/common.go`` commonEnvs, used in
    ``container.go``), else ``$HOSTNAME``; its service account and uid are read from the pod
    (``GET /api/v1/namespaces/NS/pods/NAME``), or, where the role may not read pods, taken from
    ``$KFP_POD_UID`` and the service-account token's claims."""
    from kubernetes import client

    name = environ.get("KFP_POD_NAME") or environ.get("HOSTNAME")
    if not name:
        return {}
    uid, account = environ.get("KFP_POD_UID"), None
    try:
        pod = core.read_namespaced_pod(name, namespace)
        uid, account = pod.metadata.uid, pod.spec.service_account_name
    except client.ApiException as e:
        if e.status not in (401, 403, 404):
            raise TrainingError(f"could not read this task's pod {namespace}/{name} ({e.status} {e.reason}); "
                                "the PyTorchJob needs its service account and uid.") from e
        account = _token_claims().get("serviceaccount")
    if not uid:
        return {"name": name, "service_account": account} if account else {}
    owner = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}
    return {"name": name, "service_account": account, "owner": owner}


def wait_for_job(jobs: Any, namespace: str, name: str, *, timeout_s: float, poll_s: float = 15.0,
                 delete_on_stop: bool = False) -> dict:
    """Poll the PyTorchJob ``namespace/name`` until it succeeds (returns it) and raise
    :class:`TrainingError` when it fails or is suspended (the operator's ``Failed`` / ``Suspended``
    conditions, ``JobConditionType`` in ``pkg/apis/kubeflow.org/v1/common_types.go``, release-1.9),
    is deleted (404: the KFP run was deleted and the garbage collector took its pods' jobs, or
    someone deleted it), after ``timeout_s`` seconds, or when this process gets SIGTERM (KFP
    cancelling the run stops its pods). On a timeout or SIGTERM the job is deleted when
    ``delete_on_stop`` (this task's run created it)."""
    from kubernetes import client

    deadline = time.monotonic() + timeout_s
    previous = _on_sigterm()
    try:
        while True:
            try:
                job = jobs.get_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, namespace,
                                                        PYTORCHJOB_PLURAL, name)
            except client.ApiException as e:
                if e.status == 404:
                    raise TrainingError(f"PyTorchJob {namespace}/{name} was deleted while this task waited for it (its "
                                        "KFP run was cancelled or deleted, or someone deleted the job); rerun the "
                                        "pipeline to train again (the run resumes from its last checkpoint).") from None
                raise
            state, message = job_state(job)
            if state == "Succeeded":
                return job
            if state in ("Failed", "Suspended"):
                raise TrainingError(f"PyTorchJob {namespace}/{name} {state.lower()}: {message}; see kubectl logs -n "
                                    f"{namespace} -l training.kubeflow.org/job-name={name}. Rerun the pipeline to "
                                    "retry (the job is recreated; the run resumes from its last checkpoint).")
            left = deadline - time.monotonic()
            if left <= 0:
                if delete_on_stop:
                    _delete(jobs, namespace, name)
                raise TrainingError(f"PyTorchJob {namespace}/{name} did not finish within {timeout_s:g} s "
                                    f"(pipeline.job_wait_s){'; it was deleted' if delete_on_stop else ''}. Raise "
                                    "pipeline.job_wait_s and pipeline.job_deadline_s, or check why its pods do not "
                                    f"run: kubectl describe pytorchjob -n {namespace} {name}.")
            time.sleep(min(poll_s, left))
    except _Stopped:
        if delete_on_stop:
            _delete(jobs, namespace, name)
        raise TrainingError(f"stopped (SIGTERM: the KFP run was cancelled) while waiting for PyTorchJob "
                            f"{namespace}/{name}{'; the job was deleted' if delete_on_stop else ''}.") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def job_state(job: Mapping) -> tuple[str, str]:
    """``(type, message)`` of a PyTorchJob's deciding condition whose status is True: Succeeded,
    Failed or Suspended first, else the newest one (Created, Running, Restarting); ``("", "")``
    before the operator has set any."""
    true = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    for kind in ("Succeeded", "Failed", "Suspended"):
        for c in true:
            if c.get("type") == kind:
                return kind, c.get("message", "")
    return (true[-1].get("type", ""), true[-1].get("message", "")) if true else ("", "")


class _Stopped(Exception):
    """SIGTERM arrived during :func:`wait_for_job`."""


def _on_sigterm():
    """Turn SIGTERM into :class:`_Stopped` for the wait; returns the previous handler (None off the
    main thread, where Python cannot set one)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise _Stopped()
    return signal.signal(signal.SIGTERM, stop)


def _connect(namespace: Optional[str]) -> tuple[Any, str]:
    """An ApiClient (in-cluster, else the local kubeconfig) and the namespace: ``namespace``, the
    pod's own (the service-account folder), the kubeconfig context's, or ``default``."""
    from kubernetes import client, config as kconfig

    ctx_ns = None
    try:
        kconfig.load_incluster_config()
    except Exception:  # noqa: BLE001 - outside a cluster: the local kubeconfig, if any
        try:
            path = os.environ.get("KUBECONFIG")     # read now: the client reads it once, at import
            kconfig.load_kube_config(config_file=path)
            ctx_ns = kconfig.list_kube_config_contexts(config_file=path)[1].get("context", {}).get("namespace")
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"train.nodes > 1 launches a Kubeflow PyTorchJob, but no Kubernetes cluster is reachable "
                              f"from here ({e}); run it as a KFP pipeline on the cluster (tdds submit), or train on "
                              "one node (train.nodes: 1)") from None
    sa_ns = SA_DIR / "namespace"
    ns = namespace or (sa_ns.read_text().strip() if sa_ns.is_file() else None) or ctx_ns or "default"
    return client.ApiClient(), ns


def _create_or_attach(jobs: Any, ns: str, body: dict, owner: Optional[dict]) -> bool:
    """Create the job; True when this call created it. On 409 (a retried task, or another run of
    the same config): a failed or suspended job is deleted and created again, a running or
    finished one is attached to (this pod added to its owners). 404: the CRD is missing."""
    from kubernetes import client

    name = body["metadata"]["name"]
    for _ in range(3):
        try:
            jobs.create_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, ns, PYTORCHJOB_PLURAL, body)
            return True
        except client.ApiException as e:
            if e.status == 404:
                raise TrainingError(_missing_operator(jobs.api_client, ns)) from None
            if e.status != 409:
                raise TrainingError(f"could not create PyTorchJob {ns}/{name} ({e.status} {e.reason}); the task's "
                                    "service account needs create/get/delete on pytorchjobs.kubeflow.org (Kubeflow's "
                                    "kubeflow-edit role grants them).") from e
        try:
            job = jobs.get_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, ns, PYTORCHJOB_PLURAL, name)
        except client.ApiException as e:
            if e.status == 404:     # deleted between the two calls: create again
                continue
            raise
        state, _ = job_state(job)
        if job["metadata"].get("deletionTimestamp") is None and state not in ("Failed", "Suspended"):
            refs = list(job["metadata"].get("ownerReferences") or [])
            if owner and all(r.get("uid") != owner["uid"] for r in refs):
                jobs.patch_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, ns, PYTORCHJOB_PLURAL, name,
                                                    {"metadata": {"ownerReferences": refs + [owner]}})
            return False
        _delete(jobs, ns, name)
    raise TrainingError(f"PyTorchJob {ns}/{name} exists and could not be replaced; delete it "
                        f"(kubectl delete pytorchjob -n {ns} {name}) and rerun.")


def _delete(jobs: Any, ns: str, name: str, wait_s: float = 300.0, poll_s: float = 1.0) -> None:
    """Delete the job with its pods (foreground propagation: the object goes last) and wait until it is gone."""
    from kubernetes import client

    try:
        jobs.delete_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, ns, PYTORCHJOB_PLURAL, name,
                                             propagation_policy="Foreground")
    except client.ApiException as e:
        if e.status != 404:
            raise
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            jobs.get_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, ns, PYTORCHJOB_PLURAL, name)
        except client.ApiException as e:
            if e.status == 404:
                return
            raise
        time.sleep(poll_s)
    raise TrainingError(f"PyTorchJob {ns}/{name} was deleted but is still there after {wait_s:g} s (its pods are "
                        f"terminating); kubectl get pytorchjob -n {ns} {name}, then rerun.")


def _job_instance(jobs: Any, ns: str, name: str) -> str:
    """The pipeline-instance label of the job (which KFP run created it)."""
    job = jobs.get_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, ns, PYTORCHJOB_PLURAL, name)
    return (job.get("metadata", {}).get("labels") or {}).get(INSTANCE_LABEL, "")


def _missing_operator(api_client: Any, ns: str) -> str:
    """The error for a cluster without ``pytorchjobs.kubeflow.org``: Kubeflow Trainer v2 (TrainJob,
    ``trainer.kubeflow.org``, what kubeflow/training-operator's master branch became) or nothing."""
    from kubernetes import client

    try:
        groups = {g.name for g in client.ApisApi(api_client).get_api_versions().groups}
    except client.ApiException:
        groups = set()
    fix = ("install the Training Operator v1.9 (kubectl apply --server-side -k \"github.com/kubeflow/training-operator."
           "git/manifests/overlays/standalone?ref=v1.9.0\"), or train on one node (train.nodes: 1, train.processes: "
           "the GPUs of one node); docs/CLUSTER.md, 'Several nodes'")
    if TRAINER_V2_GROUP in groups:
        return (f"this cluster has Kubeflow Trainer v2 (TrainJob, {TRAINER_V2_GROUP}) but not the Training Operator's "
                f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION} PyTorchJob that train.nodes > 1 launches (namespace {ns}); "
                f"tdds does not launch TrainJobs yet: {fix}.")
    return (f"the cluster has no {PYTORCHJOB_PLURAL}.{PYTORCHJOB_GROUP} resource (namespace {ns}): the Kubeflow "
            f"Training Operator is not installed; {fix}.")


def _token_claims() -> dict:
    """``{"namespace", "serviceaccount"}`` from the pod's service-account token (a JWT whose ``sub``
    is ``system:serviceaccount:NS:NAME``); empty when unreadable."""
    try:
        payload = (SA_DIR / "token").read_text().split(".")[1]
        sub = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
        _, _, ns, account = sub.split(":", 3)
        return {"namespace": ns, "serviceaccount": account}
    except (OSError, IndexError, KeyError, ValueError):
        return {}


def _label_value(s: str) -> str:
    """A Kubernetes label value (63 characters of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", s)[:63].strip("-._")
