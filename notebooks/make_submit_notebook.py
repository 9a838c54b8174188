"""Writes notebooks/submit.ipynb (run: python notebooks/make_submit_notebook.py). Edit the cells
here, not in the .ipynb, so the notebook stays reviewable; tests/test_notebook.py executes it."""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell("""# tdds: build, compile, run or submit, read the results

This notebook drives the `tdds-prune` Kubeflow pipeline from Python:

1. build a config (the quickstart config, here reduced further so a local run takes about a minute),
2. compile the pipeline to KFP v2 YAML,
3. run it **locally** through `kfp.local` (the same pipeline `tdds run` runs) or **submit** it to a
   Kubeflow Pipelines cluster and wait for it,
4. read that run's results table back from MLflow and plot accuracy against the pruning rate.

Settings come from environment variables so the same notebook runs in CI and against a cluster:
`TDDS_NOTEBOOK_MODE` (`local` or `cluster`), `TDDS_KFP_HOST` (cluster mode; default `in-cluster`: the
KFP API and service-account token of a Kubeflow notebook server with pipelines access),
`TDDS_NOTEBOOK_OUTPUT` (output root; an `s3://bucket/prefix` in cluster mode),
`TDDS_NOTEBOOK_QUICK` (`1`: tiny run; `0`: the full quickstart config). In cluster mode the config
also needs the cluster settings of docs/CLUSTER.md section 4 (images, MLflow server, dataset
volume, secrets): put them in `TDDS_NOTEBOOK_SETS` (`;`-separated `key=value`)."""),
    new_code_cell("""import os
from pathlib import Path

MODE = os.environ.get("TDDS_NOTEBOOK_MODE", "local")        # "local" or "cluster"
HOST = os.environ.get("TDDS_KFP_HOST", "in-cluster")        # KFP API endpoint, cluster mode
OUTPUT = os.environ.get("TDDS_NOTEBOOK_OUTPUT", "../runs/notebook")
QUICK = os.environ.get("TDDS_NOTEBOOK_QUICK", "1") == "1"
REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
print(MODE, OUTPUT, QUICK)"""),
    new_markdown_cell("## 1. The config\nThe quickstart config plus overrides (the same `key=value` syntax as `--set`)."),
    new_code_cell("""from tdds_core.config import load_config

overrides = [f"output={OUTPUT}", "train.progress=false"]
overrides += [s for s in os.environ.get("TDDS_NOTEBOOK_SETS", "").split(";") if s.strip()]
if QUICK:
    overrides += ["data.train_subset=600", "data.test_subset=500", "train.epochs=2",
                  "methods=[{name: random}, {name: tdds, params: {T: 2, W: 2}}]", "selection.rates=[0.5]"]
cfg = load_config(REPO / "configs" / "quickstart.yaml", overrides)
print(cfg.to_yaml())"""),
    new_markdown_cell("## 2. Compile (cluster mode)\nThe YAML names the images of `pipeline.image` / `pipeline.gpu_image`; upload it in the KFP UI or let step 3 submit it. Compiling refuses what pods cannot reach (a local output or a SQLite tracking URI; docs/CLUSTER.md), so local mode skips it: `kfp.local` runs the pipeline function itself."),
    new_code_cell("""from pipelines.run import compile_pipeline

if MODE == "cluster":
    yaml_path = compile_pipeline(cfg, Path("tdds-prune.yaml"))
    print("compiled", yaml_path)
else:
    print("local mode: not compiled (a cluster needs an s3:// output and an MLflow server)")"""),
    new_markdown_cell("## 3. Run locally, or submit to a cluster and wait"),
    new_code_cell("""from pipelines.run import run_local, submit, wait_for_run
from tdds_core.tracking import default_experiment

if MODE == "local":
    result = run_local(cfg)
    run_id, tracking_uri, experiment = result.run_id, result.tracking_uri, result.experiment
    print("local run", run_id, "parent MLflow run", result.parent_run_id)
else:
    run_id = submit(cfg, HOST)
    print("submitted: KFP run", run_id, "- waiting for it to finish (the KFP UI shows its progress)")
    print("finished:", wait_for_run(HOST, run_id))
    tracking_uri = cfg.tracking.uri or os.environ["MLFLOW_TRACKING_URI"]
    experiment = default_experiment(cfg)"""),
    new_markdown_cell("## 4. Results from MLflow\nThis run's rows only (its parent MLflow run holds them, also for stages reused from the cache): one per trained model (full data, and each method x pruning rate); the table aggregates over seeds."),
    new_code_cell("""from IPython.display import Image, Markdown, display
from tdds_core.report import build_table, plot_accuracy_vs_rate, to_markdown
from tdds_core.tracking import rows_from_pipeline_run

rows = rows_from_pipeline_run(tracking_uri, experiment, run_id)
table = build_table(rows)
display(Markdown(to_markdown(table)))
plot = plot_accuracy_vs_rate(rows, Path(cfg.output) / "notebook_accuracy_vs_rate.png", title=cfg.name)
display(Image(filename=str(plot)))
print(len(rows), "rows")"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (tdds .venv)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    out = Path(__file__).with_name("submit.ipynb")
    nbformat.write(build(), out)
    print(f"wrote {out}")
