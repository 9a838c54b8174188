"""The compiled KFP YAML of tdds-prune / tdds-reprune (parsed, not snapshotted: the pipeline spec
and its Kubernetes platform spec), what compile refuses, the images, and the cluster commands'
errors against a closed port and a tiny HTTP server."""
from __future__ import annotations

import json
import re
import socket
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from fixtures_http import read_request, send_json
import tdds_core

from pipelines.prune import build_prune_pipeline
from pipelines.run import cache_context, cluster_env, compile_pipeline, normalize_cron, schedule, submit
from tdds_core.cli import main
from tdds_core.config import load_config
from tdds_core.errors import PipelineError
from tdds_core.plan import Plan
from tdds_core.stage_registry import get_stage
from tdds_core.steps import build_digest, load_config_json, open_run, stage_config_json

REPO = Path(__file__).resolve().parents[1]
IMAGE = "registry.example.com/ml/tdds:9.9.9"
GPU_IMAGE = "registry.example.com/ml/tdds-cuda:9.9.9"
STAGES = ("open-run", "train-full", "score", "collect-score", "select", "collect-select", "coreset", "collect-coreset",
          "evaluate", "collect-evaluate", "report", "close-run")
TRAINING = ("train-full", "coreset", "evaluate")
# what every cluster config needs: shared output and tracker, dataset files the pods can reach
CLUSTER = ["output=s3://tdds-bucket/runs/quickstart", "tracking.uri=http://mlflow.mlflow.svc:5000",
           "data.root=/datasets/fashion-mnist", "pipeline.data_volume={pvc_name: tdds-datasets, mount_path: /datasets}"]
SECRETS = {"tdds-s3": {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
           "tdds-mlflow": {"password": "MLFLOW_TRACKING_PASSWORD"}}
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture(autouse=True)
def _no_sqlite_tracking_env(monkeypatch):
    # submit/schedule copy MLFLOW_TRACKING_URI into the cluster tasks and refuse a SQLite one
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _cfg(*extra: str):
    secrets = [{"secret_name": k, "keys": v} for k, v in SECRETS.items()]
    return load_config(REPO / "configs" / "quickstart.yaml", [
        *CLUSTER, f"pipeline.image={IMAGE}", f"pipeline.gpu_image={GPU_IMAGE}", "pipeline.gpus=2",
        "pipeline.accelerator_type=nvidia.com/gpu", "pipeline.cpu_request='6'", "pipeline.memory_request=24G",
        "pipeline.light_cpu_request='2'", "pipeline.light_memory_request=3G", "pipeline.parallelism=3",
        "pipeline.retries=3", "pipeline.pipeline_root=s3://tdds-bucket/kfp-root", f"pipeline.secrets={json.dumps(secrets)}",
        f"pipeline.tolerations=[{json.dumps(TOLERATION)}]", "pipeline.node_selector={pool: a100}",
        "pipeline.shm_size=8Gi",
        "evaluate.rates=[0.5]", "evaluate.methods=[tdds, random]", "evaluate.archs=[small_cnn, resnet18]", *extra])


def _load(path: Path) -> dict:
    """The pipeline spec, with the ``platforms`` of the platform spec (the YAML's second document) added."""
    docs = list(yaml.safe_load_all(path.read_text()))
    return {**docs[0], **{k: v for d in docs[1:] for k, v in d.items()}}


def _compile(tmp_path: Path, cfg, kind: str = "prune", env=None) -> dict:
    return _load(compile_pipeline(cfg, tmp_path / f"{kind}.yaml", kind=kind, env=env))


def _k8s(spec: dict) -> dict[str, dict]:
    """The Kubernetes settings of each executor (``exec-<task>``)."""
    return spec.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def _tasks(spec: dict) -> dict[str, dict]:
    """Every task of every DAG (root, exit handler, loops), by task name, with the DAG it sits in."""
    out = {}
    dags = [("root", spec["root"])] + [(k, v) for k, v in spec["components"].items() if "dag" in v]
    for dag_name, comp in dags:
        for name, task in comp["dag"]["tasks"].items():
            out[name] = {**task, "_dag": dag_name}
    return out


def _producers(task: dict) -> set[str]:
    """Producer tasks named by a task's inputs (artifacts and parameters)."""
    found = set()
    for kind in ("artifacts", "parameters"):
        for spec in task.get("inputs", {}).get(kind, {}).values():
            for key in ("taskOutputArtifact", "taskOutputParameter"):
                if key in spec:
                    found.add(spec[key]["producerTask"])
    return found


def _dag_inputs(spec: dict, dag: str) -> dict:
    comp = spec["components"][dag]
    return {**comp.get("inputDefinitions", {}).get("artifacts", {}), **comp.get("inputDefinitions", {}).get("parameters", {})}


@pytest.fixture(scope="module")
def prune(tmp_path_factory) -> tuple:
    cfg = _cfg()
    spec = _compile(tmp_path_factory.mktemp("yaml"), cfg, env={"MLFLOW_TRACKING_URI": "http://mlflow.mlflow.svc:5000"})
    return cfg, spec, _tasks(spec)


@pytest.mark.slow
def test_every_stage_is_a_component_and_a_task(prune):
    cfg, spec, tasks = prune
    for stage in STAGES:
        assert f"comp-{stage}" in spec["components"], stage
        assert stage in tasks, stage
    assert spec["pipelineInfo"]["name"] == "tdds-prune"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"config_json", "run_id"}
    assert params["config_json"]["parameterType"] == "STRING"
    assert json.loads(params["config_json"]["defaultValue"]) == json.loads(cfg.to_json())
    assert spec["defaultPipelineRoot"] == "s3://tdds-bucket/kfp-root"


@pytest.mark.slow
def test_edges(prune):
    cfg, spec, tasks = prune
    assert _producers(tasks["train-full"]) == {"open-run"}
    # each cached stage gets the part of the config it reads, fixed at build time, and the cache context
    for stage in ("train-full", "score", "select", "coreset", "evaluate"):
        params = tasks[stage]["inputs"]["parameters"]
        assert params["config_json"]["runtimeValue"]["constant"] == stage_config_json(cfg, stage), stage
        assert params["stage"]["runtimeValue"]["constant"] == stage
        assert params["context"]["runtimeValue"]["constant"] == cache_context(cfg, {
            "MLFLOW_TRACKING_URI": "http://mlflow.mlflow.svc:5000"}), stage
    for stage in ("open-run", "report", "close-run"):
        assert tasks[stage]["inputs"]["parameters"]["config_json"]["componentInputParameter"].endswith("config_json")
    assert tasks["train-full"]["inputs"]["parameters"]["fingerprint"]["taskOutputParameter"]["outputParameterKey"] == "fingerprint"
    assert "state" not in tasks["train-full"]["inputs"].get("artifacts", {})
    # each looping stage sits in its own loop, reads the state after the stage before it (passed
    # into the loop's DAG), and is fanned in by collect-<stage> next to the loops
    before = {"score": "train-full", "select": "collect-score", "coreset": "collect-select",
              "evaluate": "collect-coreset"}
    dags = set()
    for stage, upstream in before.items():
        dag = tasks[stage]["_dag"]
        assert dag not in ("root", tasks["train-full"]["_dag"]) and dag not in dags, stage
        dags.add(dag)
        loop_task = next(t for t in tasks.values() if t["componentRef"]["name"] == dag)
        assert _producers(loop_task) == {upstream}, stage
        fan_in = tasks[f"collect-{stage}"]
        assert fan_in["_dag"] == tasks["train-full"]["_dag"]
        # the fan-in runs after its loop and reads the parts from the store by the plan's keys
        assert set(fan_in["dependentTasks"]) == {dag.removeprefix("comp-"), upstream}, stage
        assert set(fan_in["inputs"]["artifacts"]) == {"state"}, stage
        params = fan_in["inputs"]["parameters"]
        assert json.loads(params["items_json"]["runtimeValue"]["constant"]) == Plan.from_config(cfg).items_json(
            get_stage(stage).loop), stage
        assert params["stage"]["runtimeValue"]["constant"] == stage
        assert fan_in["inputs"]["artifacts"]["state"]["taskOutputArtifact"]["producerTask"] == upstream
    # the report reads the final state and the parent run id
    rep = tasks["report"]["inputs"]
    assert rep["artifacts"]["state"]["taskOutputArtifact"]["producerTask"] == "collect-evaluate"
    assert rep["parameters"]["parent_run_id"]["taskOutputParameter"]["producerTask"] == "open-run"
    # close-run is the exit handler: it runs after everything, whatever happened
    close = spec["root"]["dag"]["tasks"]["close-run"]
    assert close["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert close["dependentTasks"] == [tasks["open-run"]["_dag"].removeprefix("comp-")]


@pytest.mark.slow
def test_loops_iterate_over_the_precomputed_plan(prune):
    cfg, spec, tasks = prune
    plan = Plan.from_config(cfg)
    loops = {t["componentRef"]["name"]: t for t in tasks.values() if "parameterIterator" in t}
    items_of = {dag: [json.loads(x) for x in json.loads(t["parameterIterator"]["items"]["raw"])] for dag, t in loops.items()}
    score_items = items_of[tasks["score"]["_dag"]]
    pair_items = items_of[tasks["coreset"]["_dag"]]
    eval_items = items_of[tasks["evaluate"]["_dag"]]
    rate_items = items_of[tasks["select"]["_dag"]]
    # ONE select task per pruning rate, naming the pairs it selects
    assert [r["rate"] for r in rate_items] == sorted(cfg.selection.rates)
    assert sorted(p["key"] for r in rate_items for p in r["pairs"]) == sorted(p["key"] for p in pair_items)
    assert all(p["rate"] == r["rate"] and p in pair_items for r in rate_items for p in r["pairs"])
    assert [x["label"] for x in score_items] == ["random", "rs2", "el2n[k=3]", "forgetting", "tdds[T=3,W=3,decay=0.9]"]
    # ONE flat loop over method x rate pairs (no nested loops)
    assert len(pair_items) == len(cfg.methods) * len(cfg.selection.rates) == 10
    assert {(p["score"]["label"], p["rate"]) for p in pair_items} == {
        (s["label"], r) for s in score_items for r in cfg.selection.rates}
    for dag in items_of:
        inner = spec["components"][dag]["dag"]["tasks"]
        assert not any("parameterIterator" in t for t in inner.values()), "nested loop"
    # the model's own architecture (small_cnn) is not trained again: its row is the coreset row
    assert sorted((e["pair"]["score"]["method"]["name"], e["arch"]) for e in eval_items) == [
        ("random", "resnet18"), ("tdds", "resnet18")]
    assert all(e["pair"]["rate"] == 0.5 for e in eval_items)
    assert [json.loads(x) for x in plan.items_json("pairs")] == pair_items


@pytest.mark.slow
def test_every_task_requests_resources_and_retries(prune):
    cfg, spec, tasks = prune
    execs = spec["deploymentSpec"]["executors"]
    for stage in STAGES:
        container = execs[f"exec-{stage}"]["container"]
        res = container.get("resources", {})
        env = {e["name"]: e["value"] for e in container["env"]}
        if stage in TRAINING:
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert res["accelerator"]["resourceCount"] == "2"
            assert res["resourceCpuRequest"] == "6" and res["resourceMemoryRequest"] == "24G"
            assert env["TDDS_REQUIRE_CUDA"] == "2", stage        # fails at once in a pod without the GPUs
        else:
            assert "accelerator" not in res, stage
            assert res["resourceCpuRequest"] == "2" and res["resourceMemoryRequest"] == "3G", stage
            assert "TDDS_REQUIRE_CUDA" not in env, stage
        # KFP 2.5 drops a retry policy below the root DAG (PR #11908): each task retries itself
        assert "retryPolicy" not in tasks[stage], stage
        assert env["TDDS_TASK_RETRIES"] == "3", stage


@pytest.mark.slow
def test_every_loop_has_its_parallelism(prune):
    cfg, spec, tasks = prune
    loops = [t for t in tasks.values() if "parameterIterator" in t]
    assert {t["componentRef"]["name"] for t in loops} == {tasks[s]["_dag"] for s in ("score", "select", "coreset", "evaluate")}
    assert all(t["iteratorPolicy"]["parallelismLimit"] == 3 for t in loops)


@pytest.mark.slow
def test_kubernetes_platform_spec(prune):
    cfg, spec, tasks = prune
    k8s = _k8s(spec)
    assert set(k8s) == {f"exec-{s}" for s in STAGES}
    for stage in STAGES:
        ex = k8s[f"exec-{stage}"]
        # every task: the secrets as environment variables, the dataset volume
        assert {s["secretName"]: {k["secretKey"]: k["envVar"] for k in s["keyToEnv"]} for s in ex["secretAsEnv"]} == SECRETS
        assert [(m["pvcNameParameter"]["runtimeValue"]["constant"], m["mountPath"]) for m in ex["pvcMount"]] == [
            ("tdds-datasets", "/datasets")]
        # every task: its pipeline instance (the Argo workflow's name) to find its own run's parent MLflow run
        assert ex["fieldPathAsEnv"] == [{"name": "TDDS_PIPELINE_INSTANCE",
                                         "fieldPath": "metadata.labels['workflows.argoproj.io/workflow']"}], stage
        if stage in TRAINING:   # placement on the GPU pool and an in-memory /dev/shm
            assert ex["tolerations"] == [TOLERATION], stage
            assert ex["nodeSelector"]["labels"] == {"pool": "a100"}, stage
            assert [(m["mountPath"], m["medium"], m["sizeLimit"]) for m in ex["emptyDirMounts"]] == [
                ("/dev/shm", "Memory", "8Gi")]
        else:
            assert not {"tolerations", "nodeSelector", "emptyDirMounts"} & set(ex), stage


@pytest.mark.slow
def test_images_and_caching_and_env(prune):
    cfg, spec, tasks = prune
    execs = spec["deploymentSpec"]["executors"]
    for stage in STAGES:
        c = execs[f"exec-{stage}"]["container"]
        assert c["image"] == (GPU_IMAGE if stage in TRAINING else IMAGE), stage
        # the image holds kfp and tdds: no pip install at task start
        assert "pip install" not in " ".join(c["command"]), stage
        assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.mlflow.svc:5000"} in c["env"], stage
        # the code version it was compiled from: the task refuses an image of other code
        assert {"name": "TDDS_CODE_VERSION", "value": tdds_core.__version__} in c["env"], stage
    for stage in ("train-full", "score", "collect-score", "select", "collect-select", "coreset", "collect-coreset",
                  "evaluate", "collect-evaluate"):
        assert tasks[stage]["cachingOptions"].get("enableCache") is True, stage
    for stage in ("open-run", "report", "close-run"):
        assert not tasks[stage].get("cachingOptions", {}).get("enableCache"), stage


@pytest.mark.slow
def test_cache_context_names_the_store_and_the_tracker(tmp_path):
    cfg = _cfg("output=s3://bucket/x", "tracking.uri=null")    # the tracker of the environment
    a = cache_context(cfg, {"AWS_ENDPOINT_URL": "http://minio-a:9000", "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert a == cache_context(cfg, {"AWS_ENDPOINT_URL": "http://minio-a:9000", "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert a != cache_context(cfg, {"AWS_ENDPOINT_URL": "http://minio-b:9000", "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert a != cache_context(cfg, {"AWS_ENDPOINT_URL": "http://minio-a:9000", "MLFLOW_TRACKING_URI": "http://other:5000"})
    assert a != cache_context(_cfg("output=s3://bucket/y", "tracking.uri=null"), {"AWS_ENDPOINT_URL": "http://minio-a:9000",
                                                           "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    spec = _compile(tmp_path, cfg, env={"AWS_ENDPOINT_URL": "http://minio-b:9000", "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    given = _tasks(spec)["train-full"]["inputs"]["parameters"]["context"]["runtimeValue"]["constant"]
    assert given == cache_context(cfg, {"AWS_ENDPOINT_URL": "http://minio-b:9000", "MLFLOW_TRACKING_URI": "http://mlflow:5000"})


@pytest.mark.slow
def test_caching_off_by_config_and_single_image(tmp_path):
    cfg = load_config(REPO / "configs" / "quickstart.yaml", [
        *CLUSTER, "pipeline.caching=false", "pipeline.gpus=0", "pipeline.retries=0", f"pipeline.image={IMAGE}",
        "pipeline.parallelism=0", "pipeline.shm_size=null"])
    spec = _compile(tmp_path, cfg)
    tasks = _tasks(spec)
    assert all(not t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())
    assert not any("retryPolicy" in t or "iteratorPolicy" in t for t in tasks.values())
    execs = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in execs.values()} == {IMAGE}
    assert all("accelerator" not in e["container"].get("resources", {}) for e in execs.values())
    assert all("TDDS_REQUIRE_CUDA" not in {v["name"] for v in e["container"].get("env", [])} for e in execs.values())
    assert all(set(ex) == {"pvcMount", "fieldPathAsEnv"} for ex in _k8s(spec).values())
    assert "evaluate" not in tasks and "collect-evaluate" not in tasks
    assert tasks["report"]["inputs"]["artifacts"]["state"]["taskOutputArtifact"]["producerTask"] == "collect-coreset"
    assert "defaultPipelineRoot" not in spec


@pytest.mark.slow
def test_reprune_pipeline_adds_the_comparison(tmp_path):
    cfg = _cfg()
    spec = _compile(tmp_path, cfg, kind="reprune")
    tasks = _tasks(spec)
    assert spec["pipelineInfo"]["name"] == "tdds-reprune"
    diff = tasks["reprune"]
    assert diff["inputs"]["artifacts"]["state"]["taskOutputArtifact"]["producerTask"] == "collect-select"
    assert diff["inputs"]["parameters"]["parent_run_id"]["taskOutputParameter"]["producerTask"] == "open-run"
    assert not diff.get("cachingOptions", {}).get("enableCache")
    assert set(STAGES) <= set(tasks)
    # a side stage: the coreset loop still reads the selections' state, not the comparison's
    loop_task = next(t for t in tasks.values() if t["componentRef"]["name"] == tasks["coreset"]["_dag"])
    assert _producers(loop_task) == {"collect-select"}


def test_per_rate_params_make_separate_score_tasks():
    cfg = load_config(REPO / "configs" / "quickstart.yaml", [
        "methods=[{name: tdds, params: {T: 6, W: 3}, per_rate: {0.9: {T: 3, W: 2}}}, {name: random}]"])
    plan = Plan.from_config(cfg)
    # one score task per distinct (method, params): TDDS has two settings under one row label
    assert sorted(s.label for s in plan.scores) == ["random", "tdds[T=6,W=3]", "tdds[T=6,W=3]"]
    tdds_params = sorted((s.params["T"], s.params["W"]) for s in plan.scores if s.method.name == "tdds")
    assert tdds_params == [(3, 2), (6, 3)]
    assert len(plan.pairs) == 4 and len({p.score.key for p in plan.pairs}) == 3
    by_rate = {p.rate: p.score.key for p in plan.pairs if p.score.label.startswith("tdds")}
    assert by_rate[0.5] != by_rate[0.9]


def test_stage_configs_change_only_with_what_the_stage_reads():
    base = _cfg()
    grown = _cfg("selection.rates=[0.3, 0.5, 0.9]", "methods=[{name: random}]", "coreset.seeds=[1, 2]",
                 "evaluate.archs=[vgg16_bn]", "pipeline.retries=0")
    assert stage_config_json(base, "train-full") == stage_config_json(grown, "train-full")
    assert stage_config_json(base, "score") == stage_config_json(grown, "score")
    assert stage_config_json(base, "select") == stage_config_json(grown, "select")   # the rate items name the pairs
    assert stage_config_json(base, "select") != stage_config_json(_cfg("selection.class_balanced=true"), "select")
    assert stage_config_json(base, "coreset") != stage_config_json(grown, "coreset")
    assert stage_config_json(base, "coreset") == stage_config_json(_cfg("selection.rates=[0.3]"), "coreset")
    retrained = _cfg("train.epochs=3")
    assert all(stage_config_json(base, s) != stage_config_json(retrained, s) for s in ("train-full", "score", "select", "coreset"))
    # a projection is a valid config with the stage's sections as configured
    c = load_config_json(stage_config_json(grown, "coreset"))
    assert c.coreset.seeds == [1, 2] and c.train == grown.train and c.output == grown.output


def test_open_run_refuses_a_config_the_pipeline_was_not_built_for():
    built = build_digest(_cfg())
    for other in (_cfg("selection.rates=[0.3]"), _cfg("coreset.seeds=[7]"), _cfg("train.lr=0.2")):
        with pytest.raises(PipelineError, match="compile the pipeline again"):
            open_run(other.to_json(), run_id="r1", build=built)


def test_cluster_env_refuses_secrets():
    cfg = _cfg("tracking.uri=null")
    env = cluster_env(cfg, {"AWS_ENDPOINT_URL": "http://minio.minio.svc:9000"},
                      environ={"MLFLOW_TRACKING_URI": "http://mlflow:5000", "AWS_SECRET_ACCESS_KEY": "x", "HOME": "/root"})
    assert env == {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "AWS_ENDPOINT_URL": "http://minio.minio.svc:9000"}
    for bad in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        with pytest.raises(PipelineError, match="Kubernetes secret"):
            cluster_env(cfg, {bad: "x"}, environ={})


@pytest.mark.parametrize("overrides, env, setting", [
    (["output=runs/quickstart"], None, "set output to an s3://"),
    (["tracking.uri=sqlite:///tmp/mlflow.db"], None, "set tracking.uri"),
    (["tracking.uri=./mlruns"], None, "set tracking.uri"),
    (["tracking.uri=null"], None, "set tracking.uri"),
    (["tracking.uri=null"], {"MLFLOW_TRACKING_URI": "sqlite:///tmp/mlflow.db"}, "set tracking.uri"),
    (["pipeline.gpu_image=null"], None, "set pipeline.gpu_image"),
    (["pipeline.data_volume=null"], None, "pipeline.data_volume"),
    (["pipeline.data_volume=null", "data.root=null"], None, "pipeline.data_volume"),
    (["data.root=/mnt/fashion-mnist"], None, "pipeline.data_volume.mount_path"),
    (["pipeline.pipeline_root=kfp-root"], None, "pipeline.pipeline_root"),
])
def test_compile_refuses_what_cannot_work_on_a_cluster(tmp_path, overrides, env, setting):
    with pytest.raises(PipelineError, match=re.escape(setting)):
        compile_pipeline(_cfg(*overrides), tmp_path / "p.yaml", env=env)
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("overrides, env", [
    (["tracking.uri=null"], {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}),
    (["tracking.uri=null", "pipeline.secrets=[{secret_name: m, keys: {uri: MLFLOW_TRACKING_URI}}]"], None),
    (["tracking.uri=null", "tracking.enabled=false"], None),
    (["pipeline.gpu_image=null", "pipeline.gpus=0"], None),
    (["pipeline.data_volume=null", "data.root=null", "data.name=synthetic"], None),       # reads no files
    (["pipeline.data_volume=null", "data.name=manifest", "data.root=s3://pets/manifests/"], None),
])
@pytest.mark.slow
def test_compile_accepts_the_fixes(tmp_path, overrides, env):
    assert compile_pipeline(_cfg(*overrides), tmp_path / "p.yaml", env=env).is_file()


@pytest.mark.slow
def test_local_pipeline_has_no_cluster_settings(tmp_path):
    # tdds run builds without cluster=True: no checks, and none of the Kubernetes-only settings
    from kfp import compiler

    cfg = load_config(REPO / "configs" / "quickstart.yaml", ["pipeline.parallelism=1", "pipeline.node_selector={a: b}"])
    compiler.Compiler().compile(build_prune_pipeline(cfg), str(tmp_path / "local.yaml"))
    spec = _load(tmp_path / "local.yaml")
    tasks = _tasks(spec)
    assert "platforms" not in spec and not any("iteratorPolicy" in t for t in tasks.values())
    assert {s for s in STAGES if s in tasks and "retryPolicy" in tasks[s]} == {"train-full", "coreset"}
    for name, e in spec["deploymentSpec"]["executors"].items():
        assert not {"TDDS_REQUIRE_CUDA", "TDDS_CODE_VERSION"} & {v["name"] for v in e["container"].get("env", [])}, name


def test_a_training_task_without_the_gpus_it_asked_for_fails(monkeypatch):
    import torch

    from components import tasks

    monkeypatch.setenv("TDDS_REQUIRE_CUDA", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(RuntimeError, match=r"asked for 1 GPU.*sees 0 CUDA.*pipeline\.gpu_image"):
        tasks.stage_task("train-full", "{}", "", "{}", result=None, metrics=None)


@pytest.mark.slow
def test_cli_compile(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    sets = [x for o in [*CLUSTER, f"pipeline.image={IMAGE}", f"pipeline.gpu_image={GPU_IMAGE}"] for x in ("--set", o)]
    assert main(["compile", "--config", str(REPO / "configs" / "quickstart.yaml"), *sets,
                 "--out", str(out), "--pipeline", "reprune", "--env", "TDDS_S3_RETRIES=5"]) == 0
    spec = _load(out)
    assert spec["pipelineInfo"]["name"] == "tdds-reprune"
    assert {"name": "TDDS_S3_RETRIES", "value": "5"} in spec["deploymentSpec"]["executors"]["exec-score"]["container"]["env"]
    assert main(["compile", "--config", str(REPO / "configs" / "quickstart.yaml"), *sets, "--out", str(out),
                 "--env", "AWS_SECRET_ACCESS_KEY=abc"]) == 2
    assert "Kubernetes secret" in capsys.readouterr().err
    assert main(["compile", "--config", str(REPO / "configs" / "quickstart.yaml"), *sets, "--set", "output=runs/q",
                 "--out", str(out)]) == 2
    assert "set output to an s3://" in capsys.readouterr().err


def test_normalize_cron():
    assert normalize_cron("0 3 * * *") == "0 0 3 * * *"
    assert normalize_cron("0 0 3 * * 1-5") == "0 0 3 * * 1-5"
    with pytest.raises(PipelineError, match="cron fields"):
        normalize_cron("3 * *")


# ------------------------------------------------------------------------------------------ images
def _pyproject_deps() -> dict[str, Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {Requirement(d).name.lower(): Requirement(d) for d in data["project"]["dependencies"]}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "docker" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned requirement {line!r}"
            pins[name.strip().lower()] = version.strip()
    return pins


def test_a_task_refuses_an_image_of_other_code(monkeypatch):
    from tdds_core import steps

    monkeypatch.setenv("TDDS_GIT_SHA", "a" * 40)    # the image's $TDDS_GIT_SHA
    steps.check_code_version({})                                        # a local run: no stamp
    steps.check_code_version({"TDDS_CODE_VERSION": tdds_core.__version__, "TDDS_BUILD_SHA": "a" * 40,
                              "TDDS_GIT_SHA": "a" * 40})
    for stamp, words in (({"TDDS_CODE_VERSION": "0.0.1"}, "compiled from tdds 0.0.1"),
                         ({"TDDS_CODE_VERSION": tdds_core.__version__, "TDDS_BUILD_SHA": "b" * 40},
                          f"commit {'b' * 12}.* image holds tdds {tdds_core.__version__} \\(commit {'a' * 12}\\)")):
        with pytest.raises(PipelineError, match=words) as e:
            steps.check_code_version({**stamp, "TDDS_GIT_SHA": "a" * 40})
        assert "TDDS_GIT_SHA=$(git rev-parse HEAD)" in str(e.value)
    # and the task entry points check it before any work
    monkeypatch.setenv("TDDS_CODE_VERSION", "0.0.1")
    with pytest.raises(PipelineError, match="compiled from tdds 0.0.1"):
        steps.run_task("report", _cfg().to_json(), "{}", fingerprint="fp")


def test_an_unstamped_image_is_refused_unless_allowed(monkeypatch):
    from tdds_core import steps

    monkeypatch.delenv("TDDS_GIT_SHA", raising=False)
    monkeypatch.setattr(steps, "build_sha", lambda environ=None, root=None: (environ or {}).get("TDDS_GIT_SHA"))
    stamp = {"TDDS_CODE_VERSION": tdds_core.__version__, "TDDS_BUILD_SHA": "c" * 40}
    with pytest.raises(PipelineError, match=r"built without TDDS_GIT_SHA.*allow_unstamped_image"):
        steps.check_code_version(stamp)
    steps.check_code_version({**stamp, "TDDS_ALLOW_UNSTAMPED_IMAGE": "1"})
    steps.check_code_version({"TDDS_CODE_VERSION": tdds_core.__version__})     # compiled without a commit


def _git(cwd: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_build_sha_never_reads_an_enclosing_repository(tmp_path):
    from tdds_core.steps import build_sha

    def tree(top: Path, name: str) -> Path:
        (top / "tdds_core").mkdir(parents=True)
        (top / "tdds_core" / "__init__.py").write_text("")
        (top / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
        return top

    outer = tmp_path / "project"
    vendored = tree(outer / "vendor" / "tdds", "tdds")            # tdds inside another repository
    _git(outer, "init", "-q")
    _git(outer, "add", ".")
    _git(outer, "commit", "-q", "-m", "x")
    assert build_sha({}, root=vendored) is None
    own = tree(tmp_path / "tdds", "tdds")                          # a checkout of tdds itself
    _git(own, "init", "-q")
    _git(own, "add", ".")
    _git(own, "commit", "-q", "-m", "x")
    assert build_sha({}, root=own) == _git(own, "rev-parse", "HEAD")
    other = tree(tmp_path / "other", "not-tdds")                   # another package's checkout
    _git(other, "init", "-q")
    _git(other, "add", ".")
    _git(other, "commit", "-q", "-m", "x")
    assert build_sha({}, root=other) is None
    assert build_sha({"TDDS_GIT_SHA": "f" * 40}, root=vendored) == "f" * 40


def test_image_installs_exactly_pyprojects_dependencies_pinned():
    deps, pins = _pyproject_deps(), _pins()
    assert set(pins) == set(deps)
    for name, version in pins.items():
        assert deps[name].specifier.contains(version, prereleases=True), f"{name}=={version} violates {deps[name]}"
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in dockerfile   # locks: tests/test_docker_image.py
    assert "ARG TDDS_GIT_SHA" in dockerfile and "TDDS_GIT_SHA=${TDDS_GIT_SHA}" in dockerfile
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pkg in packages:
        assert f"COPY {pkg.rstrip('*')} {pkg.rstrip('*')}" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ".venv" in ignored and "runs" in ignored and ".git" in ignored


# ------------------------------------------------------------------------------------------ cluster errors
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _FakeKfp(BaseHTTPRequestHandler):
    """healthz answers like KFP (or with ``healthz_code``); every other call answers ``code``."""

    code = 500
    healthz_code = 200
    health = {"commit_sha": "x", "tag_name": "2.5.0", "multi_user": False}
    seen: list
    calls: list

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else b""
        self.seen.append((self.command, self.path.split("?")[0]))
        self.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": data.decode(errors="replace")})
        if self.path.startswith("/apis/v2beta1/healthz"):
            code, body = self.healthz_code, self.health
        else:
            code, body = self.code, {"error_message": "invalid pipeline spec", "message": "invalid pipeline spec"}
        send_json(self, code, body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake_kfp():
    servers = []

    def start(code: int, healthz_code: int = 200, health: dict | None = None, calls: list | None = None) -> tuple[str, list]:
        seen: list = []
        handler = type("H", (_FakeKfp,), {"code": code, "healthz_code": healthz_code, "seen": seen,
                                          "calls": [] if calls is None else calls,
                                          "health": health or _FakeKfp.health})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}", seen

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.slow
def test_submit_to_a_closed_port_names_host_and_fix():
    host = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(PipelineError) as e:
        submit(_cfg(), host)
    assert host in str(e.value) and "port-forward" in str(e.value) and "cannot reach" in str(e.value)
    with pytest.raises(PipelineError, match="cannot reach"):
        schedule(_cfg(), host, "0 3 * * *")
    # a config that cannot work on a cluster is refused before any host is contacted
    for call in (lambda c: submit(c, host), lambda c: schedule(c, host, "0 3 * * *")):
        with pytest.raises(PipelineError, match="set output to an s3://"):
            call(_cfg("output=runs/quickstart"))


@pytest.mark.parametrize("code,words", [(400, "rejected the request"), (403, "rejected the request"),
                                        (500, "check its logs")])
@pytest.mark.slow
def test_submit_rejected_by_the_server(fake_kfp, code, words):
    host, seen = fake_kfp(code)
    with pytest.raises(PipelineError) as e:
        submit(_cfg(), host, experiment="exp")
    msg = str(e.value)
    assert host in msg and f"HTTP {code}" in msg and words in msg and "invalid pipeline spec" in msg
    assert ("GET", "/apis/v2beta1/healthz") in seen and any(p.startswith("/apis/v2beta1/experiments") for _, p in seen)


@pytest.mark.slow
def test_schedule_rejected_and_not_a_kfp_host(fake_kfp):
    host, _ = fake_kfp(400)
    with pytest.raises(PipelineError, match=r"scheduling tdds-reprune at .*HTTP 400"):
        schedule(_cfg(), host, "0 3 * * *")
    other, _ = fake_kfp(404, healthz_code=404)
    with pytest.raises(PipelineError, match="not a reachable Kubeflow Pipelines v2 API"):
        submit(_cfg(), other)
    auth, _ = fake_kfp(401, healthz_code=401)
    with pytest.raises(PipelineError, match="authenticate"):
        submit(_cfg(), auth)


@pytest.mark.slow
def test_cli_submit_error_exit_code(capsys):
    host = f"http://127.0.0.1:{_closed_port()}"
    sets = [x for o in [*CLUSTER, f"pipeline.image={IMAGE}", f"pipeline.gpu_image={GPU_IMAGE}"] for x in ("--set", o)]
    assert main(["submit", "--config", str(REPO / "configs" / "quickstart.yaml"), *sets, "--host", host]) == 2
    err = capsys.readouterr().err
    assert host in err and "Traceback" not in err


@pytest.mark.slow
def test_namespace_and_token_reach_the_kfp_api(fake_kfp):
    calls: list = []
    host, _ = fake_kfp(400, health={"tag_name": "2.5.0", "multi_user": True}, calls=calls)
    with pytest.raises(PipelineError, match="HTTP 400"):
        submit(_cfg(), host, experiment="exp", namespace="team-a", token="t0k")
    assert calls and all(c["auth"] == "Bearer t0k" for c in calls)
    assert any("team-a" in c["body"] or "team-a" in c["path"] for c in calls if "experiments" in c["path"])
    # a multi-user server without a namespace, and an old backend, are refused before any request but healthz
    for health, words in (({"tag_name": "2.5.0", "multi_user": True}, "--namespace"),
                          ({"tag_name": "2.3.0", "multi_user": False}, "needs KFP 2.5 or newer")):
        seen_calls: list = []
        other, _ = fake_kfp(200, health=health, calls=seen_calls)
        with pytest.raises(PipelineError, match=words):
            submit(_cfg(), other)
        assert [c["path"].split("?")[0] for c in seen_calls] == ["/apis/v2beta1/healthz"]


def test_in_cluster_access_reads_the_pod_token(tmp_path):
    from pipelines.run import IN_CLUSTER_HOST, Access

    token = tmp_path / "token"
    token.write_text("pod-token\n")
    host, access = Access.resolve("in-cluster", environ={"KF_PIPELINES_SA_TOKEN_PATH": str(token),
                                                          "KF_PIPELINES_NAMESPACE": "team-b"})
    # the file is kept, not its content: kfp's ServiceAccountTokenVolumeCredentials reads it per request
    assert host == IN_CLUSTER_HOST and access == Access("team-b", None, str(token)) and access.bearer() == "pod-token"
    token.write_text("renewed\n")
    assert access.bearer() == "renewed"
    assert Access.resolve("http://h:8080", "ns", "tok", environ={})[1] == Access("ns", "tok")
    with pytest.raises(PipelineError, match="token file"):
        Access.resolve("in-cluster", environ={"KF_PIPELINES_SA_TOKEN_PATH": str(tmp_path / "missing")})


class _KfpRegistry(BaseHTTPRequestHandler):
    """Just enough of the KFP v2beta1 API over HTTP for scheduling: healthz, pipelines and their
    versions (list by name, upload), experiments and recurring runs; every call is recorded."""

    state: dict

    def _reply(self, body: dict, code: int = 200) -> None:
        send_json(self, code, body)

    def _handle(self):
        body, url, q = read_request(self)
        st = self.state
        st["calls"].append((self.command, url.path))
        wanted = json.loads(q["filter"])["predicates"][0]["stringValue"] if "filter" in q else None
        if url.path == "/apis/v2beta1/healthz":
            return self._reply({"tag_name": "2.5.0", "multi_user": False})
        if url.path == "/apis/v2beta1/pipelines" and self.command == "GET":
            return self._reply({"pipelines": [p for p in st["pipelines"] if p["display_name"] == wanted]})
        if url.path == "/apis/v2beta1/pipelines/upload":
            p = {"pipeline_id": f"p{len(st['pipelines']) + 1}", "display_name": q["name"]}
            st["pipelines"].append(p)
            st["versions"].append({"pipeline_id": p["pipeline_id"], "pipeline_version_id": f"v{len(st['versions']) + 1}",
                                   "display_name": q["name"]})
            return self._reply(p)
        if url.path.startswith("/apis/v2beta1/pipelines/") and url.path.endswith("/versions"):
            pid = url.path.split("/")[4]
            return self._reply({"pipeline_versions": [v for v in st["versions"] if v["pipeline_id"] == pid
                                                      and v["display_name"] == wanted]})
        if url.path == "/apis/v2beta1/pipelines/upload_version":
            assert b"pipelineSpec" in body or b"pipeline_spec" in body or b"deploymentSpec" in body
            v = {"pipeline_id": q["pipelineid"], "pipeline_version_id": f"v{len(st['versions']) + 1}",
                 "display_name": q["name"]}
            st["versions"].append(v)
            return self._reply(v)
        if url.path == "/apis/v2beta1/experiments":
            if self.command == "GET":
                return self._reply({"experiments": [{"experiment_id": "e1", "display_name": wanted}]})
            return self._reply({"experiment_id": "e1", "display_name": json.loads(body)["display_name"]})
        if url.path.startswith("/apis/v2beta1/runs/") and self.command == "GET":
            rid = url.path.rsplit("/", 1)[1]
            return self._reply({"run_id": rid, "state": st["runs"][rid]})
        if url.path == "/apis/v2beta1/recurringruns" and self.command == "GET":
            return self._reply({"recurringRuns": []})        # no schedule of that name yet (tests/test_kfp_client.py)
        if url.path == "/apis/v2beta1/recurringruns" and self.command == "POST":
            st["recurring"].append(json.loads(body))
            return self._reply({"recurring_run_id": f"r{len(st['recurring'])}"})
        return self._reply({"message": f"unexpected {self.command} {url.path}"}, 404)

    do_GET = do_POST = _handle

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_schedules_point_at_a_registered_pipeline_version():
    state = {"calls": [], "pipelines": [], "versions": [], "recurring": []}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), type("R", (_KfpRegistry,), {"state": state}))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        assert schedule(_cfg(), host, "0 3 * * *") == "r1"
        assert schedule(_cfg(), host, "0 4 * * *") == "r2"                      # same code and config: same version
        assert schedule(_cfg("selection.rates=[0.5, 0.7]"), host, "0 5 * * *") == "r3"   # another config: a new version
    finally:
        srv.shutdown()
        srv.server_close()
    uploads = [p for m, p in state["calls"] if m == "POST" and p.startswith("/apis/v2beta1/pipelines/upload")]
    assert uploads == ["/apis/v2beta1/pipelines/upload", "/apis/v2beta1/pipelines/upload_version",
                       "/apis/v2beta1/pipelines/upload_version"]
    assert [p["display_name"] for p in state["pipelines"]] == ["tdds-reprune-quickstart"]
    ours = [v for v in state["versions"] if v["display_name"] != "tdds-reprune-quickstart"]
    assert len(ours) == 2 and all(v["display_name"].startswith(tdds_core.__version__) for v in ours)
    refs = [r["pipeline_version_reference"] for r in state["recurring"]]
    assert refs == [{"pipeline_id": "p1", "pipeline_version_id": ours[0]["pipeline_version_id"]}] * 2 + \
        [{"pipeline_id": "p1", "pipeline_version_id": ours[1]["pipeline_version_id"]}]
    assert all("pipeline_spec" not in r for r in state["recurring"]), "a schedule must not embed the package"
    assert state["recurring"][0]["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"


def test_wait_for_run_returns_success_and_names_a_failure():
    from pipelines.run import wait_for_run

    state = {"calls": [], "pipelines": [], "versions": [], "recurring": [], "runs": {"ok": "SUCCEEDED", "bad": "FAILED"}}
    srv = ThreadingHTTPServer(("127.0.0.1", 0), type("R", (_KfpRegistry,), {"state": state}))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        assert wait_for_run(host, "ok", poll_s=0) == "SUCCEEDED"
        with pytest.raises(PipelineError, match="KFP run bad at .* ended FAILED; open it in the KFP UI"):
            wait_for_run(host, "bad", poll_s=0)
    finally:
        srv.shutdown()
        srv.server_close()
    assert ("GET", "/apis/v2beta1/runs/ok") in state["calls"]


# ------------------------------------------------------------------------------------------ KFP 2.5
def _collected_anywhere(spec: dict) -> list[str]:
    """What the compiled YAML fans in with ``dsl.Collected``: an artifact list input
    (``isArtifactList``) or a DAG output gathered from a loop (``artifactSelectors`` /
    ``parameterSelectors`` of a ``for-loop`` component). The 2.5 driver resolves neither
    (kubeflow/pipelines PR #11725, first in 2.14.0)."""
    found = []
    for name, comp in [("root", spec["root"]), *spec["components"].items()]:
        for inp, d in comp.get("inputDefinitions", {}).get("artifacts", {}).items():
            if d.get("isArtifactList"):
                found.append(f"{name}.{inp}")
        outs = comp.get("dag", {}).get("outputs", {})
        for kind in ("artifacts", "parameters"):
            for out, d in outs.get(kind, {}).items():
                if name.startswith("comp-for-loop") or "valueFromParameter" not in d:
                    found.append(f"{name}.{out}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["prune", "reprune"])
def test_the_compiled_pipeline_needs_no_more_than_kfp_2_5(tmp_path, kind):
    """MIN_BACKEND 2.5 (docs/CLUSTER.md): no fan-in through dsl.Collected (PR #11725 is not in 2.5.0)
    and no retry policy on a task below the root DAG (2.5.0's argocompiler/container.go
    getTaskRetryPolicySpec reads only root tasks; PR #11908 is not in 2.5.0)."""
    from pipelines.run import MIN_BACKEND

    assert MIN_BACKEND == (2, 5)
    spec = _compile(tmp_path, _cfg(), kind=kind)
    assert _collected_anywhere(spec) == []
    text = (tmp_path / f"{kind}.yaml").read_text()
    assert "isArtifactList" not in text and "artifactSelectors" not in text and "parameterSelectors" not in text
    below_root = {n: t["_dag"] for n, t in _tasks(spec).items() if t["_dag"] != "root" and "retryPolicy" in t}
    assert below_root == {}
    # the fan-ins wait for their loops by dependency alone
    loops = {t["componentRef"]["name"].removeprefix("comp-") for t in _tasks(spec).values() if "parameterIterator" in t}
    assert {d for n, t in _tasks(spec).items() if n.startswith("collect-") for d in t["dependentTasks"]} >= loops


def test_check_on_the_collector_itself(tmp_path):
    """_collected_anywhere finds a dsl.Collected fan-in in a pipeline that has one."""
    import importlib.util

    from kfp import compiler

    src = tmp_path / "collected_pipeline.py"   # kfp reads a component's source (and this module's annotations are strings)
    src.write_text("""from kfp import dsl

@dsl.component(base_image="python:3.11")
def make(x: int, out: dsl.Output[dsl.Artifact]):
    open(out.path, "w").write(str(x))

@dsl.component(base_image="python:3.11")
def gather(parts: dsl.Input[list[dsl.Artifact]]):
    pass

@dsl.pipeline(name="p")
def p():
    with dsl.ParallelFor([1, 2]) as x:
        t = make(x=x)
    gather(parts=dsl.Collected(t.outputs["out"]))
""")
    spec_ = importlib.util.spec_from_file_location("collected_pipeline", src)
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    compiler.Compiler().compile(mod.p, str(tmp_path / "p.yaml"))
    assert _collected_anywhere(_load(tmp_path / "p.yaml"))


@pytest.mark.parametrize("field", ["image", "gpu_image"])
def test_compile_refuses_the_placeholder_image(tmp_path, field):
    from tdds_core.config import PipelineConfig

    placeholder = PipelineConfig.model_fields["image"].default
    with pytest.raises(PipelineError, match=rf"pipeline\.{field} is the placeholder .*docker build .*set pipeline\.{field}"):
        compile_pipeline(_cfg(f"pipeline.{field}={placeholder}"), tmp_path / "p.yaml")
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.slow
def test_pull_secrets_pull_policy_and_limits(tmp_path):
    spec = _compile(tmp_path, _cfg("pipeline.image_pull_secrets=[regcred, mirror]", "pipeline.image_pull_policy=Always",
                                   "pipeline.cpu_limit='8'", "pipeline.memory_limit=32G",
                                   "pipeline.light_cpu_limit='2'", "pipeline.light_memory_limit=6G"))
    execs, k8s = spec["deploymentSpec"]["executors"], _k8s(spec)
    for stage in STAGES:
        res = execs[f"exec-{stage}"]["container"]["resources"]
        want = ("8", "32G") if stage in TRAINING else ("2", "6G")
        assert (res["resourceCpuLimit"], res["resourceMemoryLimit"]) == want, stage
        ex = k8s[f"exec-{stage}"]
        assert [s["secretName"] for s in ex["imagePullSecret"]] == ["regcred", "mirror"], stage
        assert ex["imagePullPolicy"] == "Always", stage
    with pytest.raises(Exception, match="image_pull_policy"):
        _cfg("pipeline.image_pull_policy=Sometimes")
