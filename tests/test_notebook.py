"""notebooks/submit.ipynb executes in local mode (nbclient, a kernel running this interpreter):
config, compile, local run through kfp.local, results table and plot read back from MLflow."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

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
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in built.cells], \
        "notebooks/submit.ipynb is stale: run python notebooks/make_submit_notebook.py"
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code"), "commit the notebook without outputs"


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


@pytest.mark.slow
def test_notebook_runs_locally(tmp_path, monkeypatch, venv_kernel, local_tracking):
    out = tmp_path / "out"
    monkeypatch.setenv("TDDS_NOTEBOOK_MODE", "local")
    monkeypatch.setenv("TDDS_NOTEBOOK_OUTPUT", str(out))
    monkeypatch.setenv("TDDS_NOTEBOOK_QUICK", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name=venv_kernel,
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    markdown = [o["data"]["text/markdown"] for o in outputs if o.output_type == "display_data" and "text/markdown" in o["data"]]
    assert len(markdown) == 1 and "| random (baseline) |" in markdown[0] and "tdds[T=2,W=2]" in markdown[0]
    assert any(o.output_type == "display_data" and "image/png" in o["data"] for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "3 rows" in text and "local run local-" in text
    assert "local mode: not compiled" in text and not (out / "tdds-prune.yaml").exists()
    assert (out / "notebook_accuracy_vs_rate.png").is_file()
    assert (out / "mlflow.db").is_file() and (out / "report" / "table.md").is_file()
