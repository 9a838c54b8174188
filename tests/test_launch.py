"""The full-data run in several processes from the stage (``train.processes``: torchrun started by
the train-full stage, gloo on the CPU) and on several nodes (``train.nodes``: a Kubeflow PyTorchJob,
its manifest and its compiled train-full task checked; no cluster here)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from fixtures_config import synthetic_config
from tdds_core.config import load_config, parse_config
from tdds_core.data import create_dataset
from tdds_core.dynamics import open_dynamics
from tdds_core.engine import full_data_spec, train
from tdds_core.errors import ConfigError
from tdds_core.io import read_json
from tdds_core.engine.launch import pytorchjob_manifest, torchrun_command, train_on_nodes
from tdds_core.plan import train_key

REPO = Path(__file__).resolve().parents[1]
# 100 samples in batches of 15 (as tests/test_distributed.py): both ranks train every step
SYN = synthetic_config(100, 40, 12, batch_size=15, dynamics={"record": "both", "dtype": "float32"},
                       tracking={"enabled": False})
SHARED = "pipeline.shared_volume={pvc_name: tdds-shared, mount_path: /shared}"


@pytest.mark.slow
def test_the_stage_trains_in_two_processes_like_one(tmp_path, monkeypatch):
    """train.processes: 2 -> the stage starts torchrun; the run records the one-process dynamics
    within float tolerance, says world_size 2, gets its own key, and on_epoch sees every epoch."""
    from tdds_core.stages.train_full import train_full

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cfg = parse_config({**SYN, "output": str(tmp_path / "two")}, ["train.processes=2"])
    epochs: list[int] = []
    out = train_full(cfg, on_epoch=lambda rec: epochs.append(rec["epoch"]))
    assert epochs == [0, 1, 2] and out.result.epochs == 3
    assert read_json(out.local / "run.json")["world_size"] == 2
    assert open_dynamics(out.local / "dynamics").manifest["world_size"] == 2
    one_cfg = parse_config({**SYN, "output": str(tmp_path / "one")})
    assert train_key(cfg, "fp") != train_key(one_cfg, "fp")
    splits = create_dataset(one_cfg.data)
    one = train(splits, full_data_spec(one_cfg, splits.num_classes), tmp_path / "one")
    a, b = open_dynamics(out.local / "dynamics"), open_dynamics(tmp_path / "one" / "dynamics")
    for t in range(3):
        np.testing.assert_allclose(a.epoch(t), b.epoch(t), rtol=1e-3, atol=1e-3)
    assert abs(out.result.final_acc - one.final_acc) <= 10.0
    # a finished run is read back, not trained again
    again = train_full(cfg)
    assert again.reused and again.result.iterations == out.result.iterations


def test_torchrun_command():
    one = torchrun_command(4, ["--out", "x"])
    assert one[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=4" in one and "--standalone" in one
    assert one[-4:] == ["-m", "tdds_core.launch", "--out", "x"]


def _cluster_cfg(*extra: str):
    return load_config(REPO / "configs" / "quickstart.yaml", [
        "output=s3://tdds-bucket/runs/q", "tracking.uri=http://mlflow.mlflow.svc:5000",
        "data.root=/datasets/fashion-mnist", "pipeline.data_volume={pvc_name: tdds-datasets, mount_path: /datasets}",
        "pipeline.image=registry.example.com/tdds:1", "pipeline.gpu_image=registry.example.com/tdds-cuda:1",
        "pipeline.shm_size=8Gi",
        'pipeline.secrets=[{secret_name: tdds-s3, keys: {AWS_ACCESS_KEY_ID: AWS_ACCESS_KEY_ID}}]', *extra])


def test_several_nodes_need_a_shared_volume(tmp_path):
    from pipelines.run import compile_pipeline
    from tdds_core.errors import PipelineError

    cfg = _cluster_cfg("train.nodes=2")
    with pytest.raises(PipelineError, match="pipeline.shared_volume"):
        compile_pipeline(cfg, tmp_path / "p.yaml")
    with pytest.raises(ConfigError, match="pipeline.shared_volume"):
        pytorchjob_manifest(cfg, name="x", out="/o", mirror=None, image="i")
    # the train-full task gets the pipeline settings it launches the job with; no other task does
    from tdds_core.plan import stage_config

    shared = _cluster_cfg("train.nodes=2", SHARED)
    assert stage_config(shared, "train-full").pipeline.shared_volume is not None
    assert stage_config(shared, "coreset").pipeline.shared_volume is None


def test_the_pytorchjob_manifest():
    cfg = _cluster_cfg("train.nodes=3", "train.processes=4", SHARED)
    job = pytorchjob_manifest(cfg, name="tdds-q-1", out="/shared/tdds/k/train", mirror="s3://b/p/train/k",
                              image="registry.example.com/tdds-cuda:1")
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    spec = job["spec"]
    assert spec["nprocPerNode"] == "4"
    reps = spec["pytorchReplicaSpecs"]
    assert reps["Master"]["replicas"] == 1 and reps["Worker"]["replicas"] == 2
    pod = reps["Worker"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["name"] == "pytorch" and c["image"] == "registry.example.com/tdds-cuda:1"
    assert c["command"][:5] == ["python", "-m", "torch.distributed.run", "-m", "tdds_core.launch"]
    assert c["command"][5:] == ["--config-json", "env:TDDS_LAUNCH_CONFIG", "--out", "/shared/tdds/k/train",
                                "--mirror", "s3://b/p/train/k"]
    env = {e["name"]: e for e in c["env"]}
    assert json.loads(env["TDDS_LAUNCH_CONFIG"]["value"])["train"]["nodes"] == 3
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "tdds-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"shared": "/shared", "dshm": "/dev/shm", "data": "/datasets"}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["shared"]["persistentVolumeClaim"]["claimName"] == "tdds-shared"
    assert vols["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    # the config the pods read back is the run's, and its key counts every process
    assert train_key(cfg, "fp") != train_key(_cluster_cfg("train.processes=4", SHARED), "fp")


def test_without_a_cluster_the_launch_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cfg = _cluster_cfg("train.nodes=2", SHARED)
    with pytest.raises(ConfigError, match="no Kubernetes cluster is reachable"):
        train_on_nodes(cfg, tmp_path / "w", None, name="tdds-x", image="i")


@pytest.mark.slow
def test_compiled_train_full_asks_for_its_processes_or_launches_the_job(tmp_path):
    from pipelines.run import compile_pipeline

    def train_full_task(*extra):
        path = compile_pipeline(_cluster_cfg("pipeline.gpus=1", *extra), tmp_path / "p.yaml", kind="prune")
        docs = list(yaml.safe_load_all(path.read_text()))
        container = docs[0]["deploymentSpec"]["executors"]["exec-train-full"]["container"]
        k8s = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-full"]
        coreset = docs[0]["deploymentSpec"]["executors"]["exec-coreset"]["container"]
        return container, k8s, coreset

    container, k8s, coreset = train_full_task("train.processes=4")
    assert container["resources"]["accelerator"]["resourceCount"] == "4"
    assert {e["name"]: e["value"] for e in container["env"]}["TDDS_REQUIRE_CUDA"] == "4"
    assert coreset["resources"]["accelerator"]["resourceCount"] == "1"      # one process per coreset training
    container, k8s, _ = train_full_task("train.nodes=2", "train.processes=4", SHARED)
    assert "accelerator" not in container["resources"]       # the job's pods hold the GPUs
    assert ("tdds-shared", "/shared") in [(m["pvcNameParameter"]["runtimeValue"]["constant"], m["mountPath"])
                                          for m in k8s["pvcMount"]]
