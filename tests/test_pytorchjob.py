"""The several-node run's PyTorchJob against a Kubernetes API stand-in on 127.0.0.1 driven by the
real ``kubernetes`` client (loaded from a kubeconfig, as outside a pod): what the created job
carries (env, secrets, service account, ownerReference, deadline), a retry's 409 (a failed job is
deleted and recreated, a running one attached), the bounded wait (timeout, a deleted job, SIGTERM)
and a cluster with Kubeflow Trainer v2 instead of kubeflow.org/v1.

The stand-in answers what the code calls, shaped as the API server answers it: ``GET /apis``
(APIGroupList; the client asks ``/apis/``), the ``kubeflow.org/v1`` ``pytorchjobs`` collection (POST; 409 AlreadyExists /
404 NotFound as ``Status`` objects) and item (GET, merge PATCH, DELETE with a propagation policy)
and ``GET /api/v1/namespaces/NS/pods/NAME``. Its ``operator`` callback plays the Training
Operator: it sets a job's conditions as the job is read."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import parse_qs, urlparse

import pytest

from fixtures_http import send_json
from tdds_core.config import load_config
from tdds_core.engine.launch import job_env, train_on_nodes
from tdds_core.errors import TrainingError
from tdds_core.io import atomic_write_json, write_manifest

REPO = Path(__file__).resolve().parents[1]
NS = "team-a"
POD = "tdds-prune-x7k2p-train-full-1234"
POD_UID = "6d1c0d0e-0000-4000-8000-00000000abcd"
JOBS = f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs"


class K8sStandIn:
    """The API server's answers for pods, pytorchjobs and API discovery; records every request."""

    def __init__(self, *, groups=("kubeflow.org",), pod_readable: bool = True):
        self.jobs: dict[str, dict] = {}
        self.requests: list[tuple[str, str, Optional[dict]]] = []
        self.groups, self.pod_readable = list(groups), pod_readable
        self.operator: Callable[[dict, int], None] = lambda job, reads: None   # sets status on each GET
        self.reads: dict[str, int] = {}
        self.gone_after: dict[str, int] = {}      # a deleted job stays (foreground) for this many more GETs
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, obj):
                send_json(self, code, obj)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def _handle(self, method):
                url = urlparse(self.path)
                body = self._body()
                outer.requests.append((method, self.path, body))
                code, obj = outer.answer(method, url.path, parse_qs(url.query), body, self.headers)
                self._send(code, obj)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PATCH(self):
                self._handle("PATCH")

            def do_DELETE(self):
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def status(code: int, reason: str, message: str) -> tuple[int, dict]:
        return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code}

    def answer(self, method, path, query, body, headers):
        if path in ("/apis", "/apis/") and method == "GET":     # the client asks /apis/
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in self.groups]}
        if path == f"/api/v1/namespaces/{NS}/pods/{POD}" and method == "GET":
            if not self.pod_readable:
                return self.status(403, "Forbidden", f'pods "{POD}" is forbidden: cannot get resource "pods"')
            return 200, {"kind": "Pod", "apiVersion": "v1",
                         "metadata": {"name": POD, "namespace": NS, "uid": POD_UID},
                         "spec": {"serviceAccountName": "default-editor", "containers": [{"name": "main", "image": "x"}]}}
        if not path.startswith(JOBS) or "kubeflow.org" not in self.groups:
            return self.status(404, "NotFound", "the server could not find the requested resource")
        name = path[len(JOBS):].strip("/")
        if method == "POST" and not name:
            assert headers.get("Content-Type", "").startswith("application/json")
            n = body["metadata"]["name"]
            if n in self.jobs:
                return self.status(409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{n}" already exists')
            job = {**body, "metadata": {**body["metadata"], "namespace": NS, "uid": f"job-{len(self.requests)}"}}
            self.jobs[n] = job
            self.reads[n] = 0
            return 201, job
        if name not in self.jobs:
            return self.status(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
        job = self.jobs[name]
        if method == "GET":
            if name in self.gone_after:
                self.gone_after[name] -= 1
                if self.gone_after[name] < 0:
                    del self.jobs[name], self.gone_after[name]
                    return self.status(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
            else:
                self.reads[name] += 1
                self.operator(job, self.reads[name])
            return 200, job
        if method == "PATCH":
            assert headers["Content-Type"] == "application/merge-patch+json"
            job["metadata"].update(body["metadata"])
            return 200, job
        if method == "DELETE":
            assert query.get("propagationPolicy") == ["Foreground"]
            job["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            self.gone_after[name] = 1       # foreground: the object goes after its pods
            return 200, job
        return self.status(405, "MethodNotAllowed", method)

    def calls(self, method: str) -> list[tuple[str, str, Optional[dict]]]:
        return [r for r in self.requests if r[0] == method]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def condition(kind: str, message: str = "") -> dict:
    return {"status": {"conditions": [{"type": "Created", "status": "True"},
                                      {"type": kind, "status": "True", "message": message}]}}


@pytest.fixture()
def k8s(tmp_path, monkeypatch):
    """A stand-in API server and a kubeconfig pointing at it (namespace ``team-a``), as the code
    sees a cluster from outside a pod; this process is "the KFP pod" through ``KFP_POD_NAME``."""
    server = K8sStandIn()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server.url}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": NS}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield server
    server.close()


def cluster_cfg(*extra: str):
    return load_config(REPO / "configs" / "quickstart.yaml", [
        "output=s3://tdds-bucket/runs/q", "tracking.uri=http://mlflow.mlflow.svc:5000",
        "pipeline.gpu_image=registry.example.com/tdds-cuda:1", "train.nodes=2", "train.processes=4",
        "pipeline.shared_volume={pvc_name: tdds-shared, mount_path: /shared}",
        "pipeline.secrets=[{secret_name: tdds-s3, keys: {access-key: AWS_ACCESS_KEY_ID, secret-key: AWS_SECRET_ACCESS_KEY}},"
        " {secret_name: mlflow-auth, keys: {user: MLFLOW_TRACKING_USERNAME}}]", *extra])


# the KFP task's environment: what pipelines.prune gives it, what its pod and image have
TASK_ENV = {
    "AWS_ENDPOINT_URL": "http://minio.minio.svc:9000", "AWS_DEFAULT_REGION": "us-east-1",
    "MLFLOW_TRACKING_URI": "http://mlflow.mlflow.svc:5000", "MLFLOW_S3_ENDPOINT_URL": "http://minio.minio.svc:9000",
    "TDDS_CODE_VERSION": "0.1.0", "TDDS_BUILD_SHA": "0123456789abcdef", "TDDS_PIPELINE_INSTANCE": "tdds-prune-x7k2p",
    "HTTPS_PROXY": "http://proxy:3128", "KFP_POD_NAME": POD, "KFP_POD_UID": POD_UID, "HOSTNAME": POD,
    # never copied as values: credentials (from the secrets), the task's own files, unrelated variables
    "AWS_ACCESS_KEY_ID": "AKIAFAKE", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "MLFLOW_TRACKING_USERNAME": "me",
    "MLFLOW_TRACKING_TOKEN": "tok", "AWS_CA_BUNDLE": "/kfp/certs/ca.crt", "PATH": "/usr/bin",
    "TDDS_LAUNCH_CONFIG": "{}",
}


def finish(work: Path) -> None:
    """What the job's rank 0 leaves in the shared folder: a finished run."""
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "result.json", {"final_acc": 91.5, "best_acc": 92.0, "best_epoch": 3, "final_loss": 0.3,
                                             "per_class_acc": [90.0, 93.0], "epochs": 4, "iterations": 40,
                                             "num_train": 600, "wall_s": 12.0, "img_per_s": 200.0})
    write_manifest(work)


def test_the_created_job_carries_the_task_env_account_owner_and_deadline(k8s, tmp_path):
    work = tmp_path / "shared" / "train"

    def operator(job, reads):
        if reads == 2:
            finish(work)
            job.update(condition("Succeeded"))
    k8s.operator = operator
    cfg = cluster_cfg("pipeline.job_deadline_s=3600")
    res = train_on_nodes(cfg, work, "s3://tdds-bucket/runs/q/train/k", name="tdds-q-abc", image="img:1",
                         poll_s=0.01, environ=TASK_ENV)
    assert res is not None and res.final_acc == 91.5

    (post,) = k8s.calls("POST")
    assert post[1] == JOBS
    job = post[2]
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": POD, "uid": POD_UID}]
    assert job["metadata"]["labels"]["tdds.io/pipeline-instance"] == "tdds-prune-x7k2p"
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == 3600
    for role in ("Master", "Worker"):
        pod = job["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]
        assert pod["serviceAccountName"] == "default-editor"      # the KFP pod's, read from the API
        (c,) = pod["containers"]
        values = {e["name"]: e["value"] for e in c["env"] if "value" in e}
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
        for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL",
                  "TDDS_CODE_VERSION", "TDDS_BUILD_SHA", "TDDS_PIPELINE_INSTANCE", "HTTPS_PROXY"):
            assert values[k] == TASK_ENV[k], k
        assert refs == {"AWS_ACCESS_KEY_ID": {"name": "tdds-s3", "key": "access-key"},
                        "AWS_SECRET_ACCESS_KEY": {"name": "tdds-s3", "key": "secret-key"},
                        "MLFLOW_TRACKING_USERNAME": {"name": "mlflow-auth", "key": "user"}}
        for k in ("MLFLOW_TRACKING_TOKEN", "AWS_CA_BUNDLE", "PATH", "KFP_POD_NAME", "HOSTNAME"):
            assert k not in values, k
        assert json.loads(values["TDDS_LAUNCH_CONFIG"])["train"]["nodes"] == 2
    assert not [r for r in k8s.requests if r[0] in ("DELETE", "PATCH")]


def test_job_env_keeps_the_cluster_settings_of_the_compiled_tasks():
    """What pipelines.run copies into every task (CLUSTER_ENV_KEYS), the code stamp and the pipeline
    instance all reach the job's pods; the secret pattern is the compiler's."""
    from pipelines.run import CLUSTER_ENV_KEYS, SECRET_ENV
    from tdds_core import steps
    from tdds_core.engine import launch

    assert launch.SECRET_NAME.pattern == SECRET_ENV.pattern and launch.SECRET_NAME.flags == SECRET_ENV.flags
    assert launch.PIPELINE_INSTANCE_ENV == steps.PIPELINE_INSTANCE_ENV
    names = [*CLUSTER_ENV_KEYS, steps.CODE_VERSION_ENV, steps.BUILD_SHA_ENV, steps.PIPELINE_INSTANCE_ENV]
    env = job_env(cluster_cfg("pipeline.secrets=[]"), {k: "v" for k in names})
    assert sorted(env) == sorted(names)


def test_a_retry_that_finds_the_failed_job_deletes_and_recreates_it(k8s, tmp_path):
    work = tmp_path / "w"
    k8s.jobs["tdds-q-abc"] = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                              "metadata": {"name": "tdds-q-abc", "uid": "old"}, **condition("Failed", "OOMKilled")}
    k8s.reads["tdds-q-abc"] = 0

    def operator(job, reads):
        if job["metadata"]["uid"] != "old" and reads >= 1:
            finish(work)
            job.update(condition("Succeeded"))
    k8s.operator = operator
    res = train_on_nodes(cluster_cfg(), work, None, name="tdds-q-abc", image="img:1", poll_s=0.01, environ=TASK_ENV)
    assert res is not None
    methods = [r[0] for r in k8s.requests if r[1].startswith(JOBS)]
    assert methods[:3] == ["POST", "GET", "DELETE"] and methods.count("POST") == 2
    assert k8s.jobs["tdds-q-abc"]["metadata"]["uid"] != "old"      # a new job
    assert k8s.jobs["tdds-q-abc"]["metadata"]["ownerReferences"][0]["uid"] == POD_UID


def test_a_retry_that_finds_the_job_running_attaches_to_it(k8s, tmp_path):
    """A retried task (another pod) waits for the running job instead of starting another, and adds
    itself to the job's owners (the job goes when both pods are gone)."""
    work = tmp_path / "w"
    earlier = {"apiVersion": "v1", "kind": "Pod", "name": "earlier-attempt", "uid": "uid-earlier"}
    k8s.jobs["tdds-q-abc"] = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                              "metadata": {"name": "tdds-q-abc", "uid": "running", "ownerReferences": [earlier]},
                              **condition("Running")}
    k8s.reads["tdds-q-abc"] = 0

    def operator(job, reads):
        if reads >= 3:
            finish(work)
            job.update(condition("Succeeded"))
    k8s.operator = operator
    res = train_on_nodes(cluster_cfg(), work, None, name="tdds-q-abc", image="img:1", poll_s=0.01, environ=TASK_ENV)
    assert res is not None and res.iterations == 40
    assert len(k8s.calls("POST")) == 1 and not k8s.calls("DELETE")
    (patch,) = k8s.calls("PATCH")
    assert [r["uid"] for r in patch[2]["metadata"]["ownerReferences"]] == ["uid-earlier", POD_UID]
    assert k8s.jobs["tdds-q-abc"]["metadata"]["uid"] == "running"


def test_the_wait_ends_on_timeout_and_deletes_its_own_job(k8s, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(TrainingError, match=r"did not finish within 0.3 s \(pipeline.job_wait_s\); it was deleted"):
        train_on_nodes(cluster_cfg("pipeline.job_wait_s=1"), tmp_path / "w", None, name="tdds-q-abc", image="i",
                       poll_s=0.05, timeout_s=0.3, environ=TASK_ENV)
    assert time.monotonic() - t0 < 5
    assert "tdds-q-abc" not in k8s.jobs and len(k8s.calls("DELETE")) == 1


def test_the_wait_ends_when_the_job_is_deleted_or_fails(k8s, tmp_path):
    """Deleting the KFP run deletes its pods and, through the ownerReference, the job: the wait
    sees 404 and ends. A failed job ends it with the operator's message."""
    def gc(job, reads):
        if reads == 2:
            k8s.gone_after[job["metadata"]["name"]] = 0
    k8s.operator = gc
    with pytest.raises(TrainingError, match="was deleted while this task waited"):
        train_on_nodes(cluster_cfg(), tmp_path / "w", None, name="tdds-a", image="i", poll_s=0.01, environ=TASK_ENV)
    k8s.operator = lambda job, reads: job.update(condition("Failed", "Job tdds-b has failed because it was active "
                                                                     "longer than specified deadline"))
    with pytest.raises(TrainingError, match="tdds-b failed: .*longer than specified deadline"):
        train_on_nodes(cluster_cfg(), tmp_path / "w", None, name="tdds-b", image="i", poll_s=0.01, environ=TASK_ENV)


def test_sigterm_of_a_cancelled_run_ends_the_wait_and_deletes_the_job(k8s, tmp_path):
    """KFP cancelling the run stops the task's pod with SIGTERM: the wait ends and the job its run
    created is deleted (freeing the nodes' GPUs), and the earlier SIGTERM handler is back."""
    before = signal.getsignal(signal.SIGTERM)

    def operator(job, reads):
        if reads == 3:
            threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGTERM)).start()
    k8s.operator = operator
    with pytest.raises(TrainingError, match="SIGTERM: the KFP run was cancelled.*the job was deleted"):
        train_on_nodes(cluster_cfg(), tmp_path / "w", None, name="tdds-c", image="i", poll_s=0.05, environ=TASK_ENV)
    assert "tdds-c" not in k8s.jobs and len(k8s.calls("DELETE")) == 1
    assert signal.getsignal(signal.SIGTERM) is before


def test_without_pod_read_access_the_owner_and_account_come_from_the_downward_api_and_token(k8s, tmp_path,
                                                                                           monkeypatch):
    import base64
    from tdds_core.engine import launch

    k8s.pod_readable = False
    sa = tmp_path / "sa"
    sa.mkdir()
    claims = base64.urlsafe_b64encode(json.dumps({"sub": f"system:serviceaccount:{NS}:pipeline-runner"}).encode())
    (sa / "token").write_text("e30." + claims.decode().rstrip("=") + ".sig")
    monkeypatch.setattr(launch, "SA_DIR", sa)
    k8s.operator = lambda job, reads: job.update(condition("Failed", "x"))
    with pytest.raises(TrainingError):
        train_on_nodes(cluster_cfg(), tmp_path / "w", None, name="tdds-d", image="i", poll_s=0.01, environ=TASK_ENV)
    job = k8s.calls("POST")[0][2]
    assert job["metadata"]["ownerReferences"][0]["uid"] == POD_UID
    assert job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["serviceAccountName"] == "pipeline-runner"


@pytest.mark.parametrize("groups, says", [
    (("trainer.kubeflow.org",), "Kubeflow Trainer v2 \\(TrainJob, trainer.kubeflow.org\\) but not the Training Operator"),
    ((), "the Kubeflow Training Operator is not installed"),
])
def test_a_cluster_without_pytorchjobs_names_what_it_has_and_the_fix(k8s, tmp_path, groups, says):
    k8s.groups = list(groups)
    with pytest.raises(TrainingError, match=says) as e:
        train_on_nodes(cluster_cfg(), tmp_path / "w", None, name="tdds-e", image="i", poll_s=0.01, environ=TASK_ENV)
    assert "training-operator" in str(e.value) and "train.nodes: 1" in str(e.value)
