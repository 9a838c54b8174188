"""notebooks/submit.ipynb: it matches its generator (notebooks/make_submit_notebook.py), keeps its
settings in one cell tagged ``parameters``, and runs under papermill (a kernel running this
interpreter): its local mode end to end (config, local run through kfp.local, results table and
plot read back from MLflow, a local reprune run), and its cluster mode up to compiling both
pipelines with only the documented settings, the MLflow URI coming from the environment."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "submit.ipynb"


def _generator():
    spec = importlib.util.spec_from_file_location("make_submit_notebook", REPO / "notebooks" / "make_submit_notebook.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_notebook_matches_its_generator():
    committed = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(committed)
    built = _generator().build()
    assert [(c.cell_type, c.source, c.metadata.get("tags")) for c in committed.cells] == \
        [(c.cell_type, c.source, c.metadata.get("tags")) for c in built.cells], \
        "notebooks/submit.ipynb is stale: run python notebooks/make_submit_notebook.py"
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code"), "commit the notebook without outputs"


def test_the_settings_sit_in_one_parameters_cell_and_nothing_reads_the_environment_for_them():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    names = {line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line and not line.startswith("#")}
    assert {"MODE", "HOST", "NAMESPACE", "OUTPUT", "TRACKING_URI", "IMAGE", "GPU_IMAGE", "COMPILE_ONLY"} <= names
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "TDDS_NOTEBOOK" not in code and "os.environ.get(" not in code


@pytest.fixture()
def venv_kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec that starts ipykernel with this interpreter (the project's venv), found through
    JUPYTER_PATH, so the notebook sees the installed tdds whatever other kernels the machine has."""
    kdir = tmp_path / "jupyter" / "kernels" / "tdds-venv"
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tdds (.venv)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "tdds-venv"


def _papermill(tmp_path, kernel: str, **parameters):
    """Execute the notebook with papermill in notebooks/ (as a person opening it there); the
    executed copy's cells."""
    import papermill as pm

    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters=parameters, kernel_name=kernel,
                        cwd=str(REPO / "notebooks"), progress_bar=False, execution_timeout=900)
    return nbformat.read(out, as_version=4).cells


def _outputs(cells):
    return [o for c in cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.slow
def test_the_cluster_cells_compile_with_only_the_documented_settings(tmp_path, monkeypatch, venv_kernel):
    """Cluster mode with COMPILE_ONLY: the MLflow URI only in the environment (a Kubeflow notebook
    server's PodDefault) reaches every compiled task; nothing is submitted."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.mlflow.svc:5000")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.minio.svc:9000")
    work = tmp_path / "work"
    cells = _papermill(tmp_path, venv_kernel, MODE="cluster", COMPILE_ONLY=True, WORKDIR=str(work),
                       HOST="http://127.0.0.1:9", NAMESPACE="team-a", OUTPUT="s3://tdds-bucket/notebook",
                       IMAGE="registry.example.com/tdds:0.1.0", GPU_IMAGE="registry.example.com/tdds-cuda:0.1.0",
                       DATA_PVC="tdds-datasets", DATA_ROOT="/data/fashion-mnist", S3_SECRET="tdds-s3")
    text = "".join(o.get("text", "") for o in _outputs(cells) if o.output_type == "stream")
    assert "compile only: nothing submitted" in text
    for kind in ("prune", "reprune"):
        docs = list(yaml.safe_load_all((work / f"tdds-{kind}.yaml").read_text()))
        executors = docs[0]["deploymentSpec"]["executors"]
        envs = [{e["name"]: e["value"] for e in ex["container"].get("env", [])} for ex in executors.values()]
        assert envs and all(e.get("MLFLOW_TRACKING_URI") == "http://mlflow.mlflow.svc:5000" for e in envs)
        assert all(e.get("AWS_ENDPOINT_URL") == "http://minio.minio.svc:9000" for e in envs)
        images = {ex["container"]["image"] for ex in executors.values()}
        assert images == {"registry.example.com/tdds:0.1.0", "registry.example.com/tdds-cuda:0.1.0"}
        k8s = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        assert all(any(s["secretName"] == "tdds-s3" for s in x.get("secretAsEnv", [])) for x in k8s.values())
        assert all([m["mountPath"] for m in x["pvcMount"]] == ["/data"] for x in k8s.values())


@pytest.mark.slow
def test_notebook_runs_locally(tmp_path, venv_kernel, local_tracking):
    out, work = tmp_path / "out", tmp_path / "work"
    cells = _papermill(tmp_path, venv_kernel, MODE="local", OUTPUT=str(out), WORKDIR=str(work), QUICK=True)
    outputs = _outputs(cells)
    assert not [o for o in outputs if o.output_type == "error"]
    markdown = [o["data"]["text/markdown"] for o in outputs if o.output_type == "display_data" and "text/markdown" in o["data"]]
    assert len(markdown) == 1 and "| random (baseline) |" in markdown[0] and "tdds[T=2,W=2]" in markdown[0]
    assert any(o.output_type == "display_data" and "image/png" in o["data"] for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "3 rows" in text and "local run local-" in text and "local reprune run local-" in text
    assert "local mode: not compiled" in text and not list(work.glob("*.yaml"))
    assert (work / "accuracy_vs_rate.png").is_file() and not (out / "accuracy_vs_rate.png").exists()
    assert (out / "mlflow.db").is_file() and (out / "report" / "table.md").is_file()
