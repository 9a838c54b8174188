"""How one training run is started beyond this process: in ``train.processes`` processes on this
machine (:func:`train_in_processes`: ``torchrun --standalone --nproc-per-node K -m tdds_core.launch``,
waited for) or over ``train.nodes`` pods (:func:`train_on_nodes`: a Kubeflow PyTorchJob,
:func:`pytorchjob_manifest`). The K processes train one run with DistributedDataParallel
(:func:`tdds_core.engine.train`) into the stage's folder, and rank 0 mirrors its checkpoints to the
S3 output (``_partial``) as a single process does (:mod:`tdds_core.launch`, the processes' entry).
The stage then reads the finished folder back (per-epoch metrics are logged to MLflow from its
history).

On CUDA each process takes the GPU of its ``LOCAL_RANK`` (a KFP task asks for K GPUs,
``pipelines.prune``); on a CPU the processes use gloo and share the cores.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from ..config import Config
from ..errors import ConfigError, TrainingError
from .checkpoint import load_result
from .spec import TrainResult

__all__ = ["torchrun_command", "train_in_processes", "under_torchrun", "pytorchjob_manifest", "train_on_nodes",
           "CONFIG_ENV", "SHARED_VOLUME_NEEDED"]

#: a PyTorchJob's pods get the run's config in this variable (``--config-json env:TDDS_LAUNCH_CONFIG``)
CONFIG_ENV = "TDDS_LAUNCH_CONFIG"
SHARED_VOLUME_NEEDED = ("train.nodes > 1: the pods of a several-node run share their run folder; set "
                        "pipeline.shared_volume to a ReadWriteMany PVC ({pvc_name: ..., mount_path: /shared}), or train "
                        "on one node (train.nodes: 1, train.processes: the GPUs of one node)")
#: the Kubeflow Training Operator's API
PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL = "kubeflow.org", "v1", "pytorchjobs"

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


def pytorchjob_manifest(cfg: Config, *, name: str, out: str, mirror: Optional[str], image: str,
                        env: Optional[dict[str, str]] = None) -> dict:
    """The PyTorchJob (Kubeflow Training Operator, ``kubeflow.org/v1``) that trains ``cfg``'s
    full-data run on ``cfg.train.nodes`` pods (one Master, ``nodes - 1`` Workers) with
    ``cfg.train.processes`` GPUs and processes each. The operator sets torchrun's ``PET_*``
    variables (nodes, node rank, master address); every pod mounts ``pipeline.shared_volume``, whose
    folder ``out`` they share, and rank 0 mirrors the checkpoints to ``mirror`` (S3)."""
    p, t = cfg.pipeline, cfg.train
    vol = p.shared_volume
    if vol is None:
        raise ConfigError(SHARED_VOLUME_NEEDED)
    args = ["--config-json", f"env:{CONFIG_ENV}", "--out", out] + (["--mirror", mirror] if mirror else [])
    variables = {**(env or {}), CONFIG_ENV: cfg.model_dump_json(), "OMP_NUM_THREADS": "1"}
    container = {
        "name": "pytorch",      # the container name the operator looks for
        "image": image,
        "command": ["python", "-m", "torch.distributed.run", "-m", "tdds_core.launch"] + args,
        "env": [{"name": k, "value": v} for k, v in sorted(variables.items())]
        + [{"name": k, "valueFrom": {"secretKeyRef": {"name": sec.secret_name, "key": key}}}
           for sec in p.secrets for k, key in sorted(sec.keys.items())],
        "resources": {"requests": {"cpu": p.cpu_request, "memory": p.memory_request},
                      "limits": {p.accelerator_type: str(t.processes)} if p.gpus > 0 else {}},
        "volumeMounts": [{"name": "shared", "mountPath": vol.mount_path}, {"name": "dshm", "mountPath": "/dev/shm"}]
        + ([{"name": "data", "mountPath": p.data_volume.mount_path}] if p.data_volume else []),
    }
    pod = {"spec": {
        "containers": [container],
        "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": vol.pvc_name}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", **({"sizeLimit": p.shm_size} if p.shm_size else {})}}]
        + ([{"name": "data", "persistentVolumeClaim": {"claimName": p.data_volume.pvc_name}}] if p.data_volume else []),
        "tolerations": [x.model_dump(exclude_none=True) for x in p.tolerations],
        "nodeSelector": dict(p.node_selector),
    }}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": pod}}
    if t.nodes > 1:
        replicas["Worker"] = {"replicas": t.nodes - 1, "restartPolicy": "OnFailure", "template": pod}
    return {"apiVersion": f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}", "kind": "PyTorchJob",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "tdds"}},
            "spec": {"nprocPerNode": str(t.processes), "runPolicy": {"backoffLimit": p.retries, "cleanPodPolicy": "Running"},
                     "pytorchReplicaSpecs": replicas}}


def train_on_nodes(cfg: Config, work: Path, mirror: Optional[str], *, name: str, image: str,
                   namespace: Optional[str] = None, poll_s: float = 15.0) -> Optional[TrainResult]:
    """Create the PyTorchJob of :func:`pytorchjob_manifest` (or find it, when a retried task asks
    again), wait for it and return the run's result from the shared folder ``work``."""
    try:
        from kubernetes import client, config as kconfig
    except ImportError as e:   # pragma: no cover - kfp brings it
        raise ConfigError("train.nodes > 1 needs the kubernetes package (pip install kubernetes)") from e
    try:
        kconfig.load_incluster_config()
    except Exception:  # noqa: BLE001 - outside a cluster: the local kubeconfig, if any
        try:
            kconfig.load_kube_config()
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"train.nodes > 1 launches a Kubeflow PyTorchJob, but no Kubernetes cluster is reachable "
                              f"from here ({e}); run it as a KFP pipeline on the cluster (tdds submit), or train on "
                              "one node (train.nodes: 1)") from None
    ns = namespace or _namespace()
    api = client.CustomObjectsApi()
    body = pytorchjob_manifest(cfg, name=name, out=str(work), mirror=mirror, image=image)
    try:
        api.create_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, ns, PYTORCHJOB_PLURAL, body)
    except client.ApiException as e:
        if e.status != 409:     # 409: a retried task finds the job it started
            raise TrainingError(f"could not create PyTorchJob {name} in {ns} ({e.reason}); is the Kubeflow Training "
                                "Operator installed (kubectl get crd pytorchjobs.kubeflow.org)?") from e
    while True:
        job = api.get_namespaced_custom_object(PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, ns, PYTORCHJOB_PLURAL, name)
        conditions = {c.get("type"): c for c in job.get("status", {}).get("conditions", []) if c.get("status") == "True"}
        if "Succeeded" in conditions:
            return load_result(work)
        if "Failed" in conditions:
            raise TrainingError(f"PyTorchJob {ns}/{name} failed: {conditions['Failed'].get('message', '')}; see "
                                f"kubectl logs -n {ns} -l training.kubeflow.org/job-name={name}. Delete the job to "
                                "retry (the run resumes from its last checkpoint).")
        time.sleep(poll_s)


def _namespace() -> str:
    p = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return p.read_text().strip() if p.is_file() else "default"
