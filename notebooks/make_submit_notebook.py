"""Writes notebooks/submit.ipynb (run: python notebooks/make_submit_notebook.py). Edit the cells
here, not in the .ipynb, so the notebook stays reviewable; tests/test_notebook.py checks the
notebook matches this generator and runs it with papermill (its local mode, and its cluster mode
up to the compile step)."""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

#: the one cell a person edits; papermill (``-p NAME VALUE``) replaces it by its ``parameters`` tag
PARAMETERS = '''# --- Settings: edit this cell (papermill: -p NAME VALUE) ---
MODE = "local"               # "local": this machine (kfp.local); "cluster": a Kubeflow Pipelines server
QUICK = True                 # a tiny run (about a minute locally); False: the quickstart config as it is
WORKDIR = "../runs/notebook-files"  # local folder for the compiled YAML and the plot

# local mode
OUTPUT = "../runs/notebook"  # output root (cluster mode: an s3://bucket/prefix)

# cluster mode: what your Kubeflow admin gives you
HOST = "in-cluster"          # KFP API URL, e.g. http://localhost:8080; "in-cluster" from a Kubeflow notebook server
NAMESPACE = ""               # your Kubeflow profile namespace ("": the notebook server's own, or single-user KFP)
TRACKING_URI = ""            # MLflow server, e.g. http://mlflow.mlflow.svc:5000 ("": $MLFLOW_TRACKING_URI)
IMAGE = ""                   # the tdds image every task runs in, e.g. registry.example.com/tdds:0.1.0
GPU_IMAGE = ""               # its CUDA build for the training tasks ("": train on CPUs, pipeline.gpus=0)
DATA_PVC = ""                # PVC holding the dataset files ("": a dataset that needs none)
DATA_ROOT = ""               # the dataset's folder in it (mounted at its parent), e.g. /data/fashion-mnist
S3_SECRET = ""               # Kubernetes secret with keys AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY ("": pod identity)
SETS = []                    # more `--set` overrides, e.g. ["pipeline.gpus=2"]
REPRUNE = True               # also run the reprune pipeline (how the coreset changed since the last dataset version)
SCHEDULE_CRON = ""           # cluster: a cron for a recurring reprune, e.g. "0 3 * * 1" ("": none)
WAIT_TIMEOUT_S = 6 * 3600    # cluster: most seconds to wait for a run
COMPILE_ONLY = False         # cluster: stop after compiling (check the settings without submitting)'''

CELLS = [
    new_markdown_cell("""# tdds: build, compile, run or submit, read the results

This notebook drives the `tdds-prune` and `tdds-reprune` Kubeflow pipelines from Python:

1. build a config (the quickstart config, reduced further when `QUICK`, so a local run takes about a minute),
2. compile the pipelines to KFP v2 YAML (cluster mode),
3. run them **locally** through `kfp.local` (what `tdds run` runs) or **submit** them to a Kubeflow
   Pipelines server and wait,
4. read the run's results table back from MLflow and plot accuracy against the pruning rate,
5. re-prune (the coreset of the newest dataset version against the last one) and, on a cluster,
   schedule the re-prune as a recurring run.

Edit the settings cell below and run all cells. Cluster mode needs only what a Kubeflow user has: the
KFP host (or `in-cluster` from a Kubeflow notebook server), the namespace, an `s3://` output, the MLflow
tracking URI (or `$MLFLOW_TRACKING_URI`), the images, and the dataset volume and S3 secret your admin
created (docs/CLUSTER.md). `COMPILE_ONLY = True` checks them without submitting anything."""),
    nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
    new_markdown_cell("## 1. The config\nThe quickstart config plus the settings above as overrides (the `--set` syntax)."),
    new_code_cell("""import os
from pathlib import Path

from tdds_core.config import load_config

REPO = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "configs" / "quickstart.yaml").is_file())
work = Path(WORKDIR).resolve()
work.mkdir(parents=True, exist_ok=True)
overrides = [f"output={OUTPUT}", "train.progress=false"]
if MODE == "cluster":
    overrides += [f"pipeline.image={IMAGE}"] if IMAGE else []
    overrides += [f"pipeline.gpu_image={GPU_IMAGE}"] if GPU_IMAGE else ["pipeline.gpus=0"]
    overrides += [f"tracking.uri={TRACKING_URI}"] if TRACKING_URI else []
    overrides += [f"pipeline.data_volume={{pvc_name: {DATA_PVC}, mount_path: {Path(DATA_ROOT).parent}}}",
                  f"data.root={DATA_ROOT}"] if DATA_PVC else []
    overrides += ["pipeline.secrets=[{secret_name: %s, keys: {AWS_ACCESS_KEY_ID: AWS_ACCESS_KEY_ID, "
                  "AWS_SECRET_ACCESS_KEY: AWS_SECRET_ACCESS_KEY}}]" % S3_SECRET] if S3_SECRET else []
if QUICK:
    overrides += ["data.train_subset=600", "data.test_subset=500", "train.epochs=2",
                  "methods=[{name: random}, {name: tdds, params: {T: 2, W: 2}}]", "selection.rates=[0.5]"]
cfg = load_config(REPO / "configs" / "quickstart.yaml", overrides + list(SETS))
print(MODE, cfg.output)"""),
    new_markdown_cell("## 2. Compile (cluster mode)\nThe tasks get this environment's S3 endpoint, region and MLflow URI "
                      "(`cluster_env`: `tracking.uri`, else `$MLFLOW_TRACKING_URI`). Compiling refuses what pods cannot "
                      "reach (a local output, a SQLite tracking URI, local dataset files outside a volume; docs/CLUSTER.md). "
                      "Upload the YAML in the KFP UI, or let the next cells submit it. Local mode skips this step: "
                      "`kfp.local` runs the pipeline function itself."),
    new_code_cell("""from pipelines.run import cluster_env, compile_pipeline

if MODE == "cluster":
    env = cluster_env(cfg)           # the non-secret settings every task gets
    for kind in ("prune", "reprune"):
        print("compiled", compile_pipeline(cfg, work / f"tdds-{kind}.yaml", kind=kind, env=env))
else:
    print("local mode: not compiled (a cluster needs an s3:// output and an MLflow server)")
SUBMIT = MODE == "cluster" and not COMPILE_ONLY"""),
    new_markdown_cell("## 3. Run locally, or submit to the cluster and wait"),
    new_code_cell("""from pipelines.run import run_local, submit, wait_for_run
from tdds_core.tracking import default_experiment

ns = NAMESPACE or None
run_id = None
if MODE == "local":
    result = run_local(cfg)
    run_id, tracking_uri, experiment = result.run_id, result.tracking_uri, result.experiment
    print("local run", run_id, "parent MLflow run", result.parent_run_id)
elif SUBMIT:
    run_id = submit(cfg, HOST, env=env, namespace=ns)
    print("submitted: KFP run", run_id, "- waiting for it (the KFP UI shows its progress)")
    print("finished:", wait_for_run(HOST, run_id, namespace=ns, timeout_s=WAIT_TIMEOUT_S))
    tracking_uri, experiment = cfg.tracking.uri or os.environ["MLFLOW_TRACKING_URI"], default_experiment(cfg)
else:
    print("compile only: nothing submitted")"""),
    new_markdown_cell("## 4. Results from MLflow\nThis run's rows only (its parent MLflow run holds them, also for stages "
                      "reused from the cache): one per trained model (full data, and each method x pruning rate); the "
                      "table aggregates over seeds. The plot is written to the local `WORKDIR`."),
    new_code_cell("""from IPython.display import Image, Markdown, display
from tdds_core.report import build_table, plot_accuracy_vs_rate, to_markdown
from tdds_core.tracking import rows_from_pipeline_run

if run_id is not None:
    rows = rows_from_pipeline_run(tracking_uri, experiment, run_id)
    display(Markdown(to_markdown(build_table(rows))))
    plot = plot_accuracy_vs_rate(rows, work / "accuracy_vs_rate.png", title=cfg.name)
    display(Image(filename=str(plot)))
    print(len(rows), "rows; plot", plot)"""),
    new_markdown_cell("## 5. Re-prune, and schedule it\nThe reprune pipeline reuses the trainings above (same keys) and "
                      "records how the coreset differs from the one of the previous dataset version (none yet on a "
                      "first run). On a cluster, `SCHEDULE_CRON` makes it a recurring run of a registered pipeline version."),
    new_code_cell("""from pipelines.run import schedule

if REPRUNE and MODE == "local":
    again = run_local(cfg, kind="reprune")
    print("local reprune run", again.run_id, again.tasks)
elif REPRUNE and SUBMIT:
    reprune_id = submit(cfg, HOST, kind="reprune", env=env, namespace=ns)
    print("reprune: KFP run", reprune_id, wait_for_run(HOST, reprune_id, namespace=ns, timeout_s=WAIT_TIMEOUT_S))
if SCHEDULE_CRON and SUBMIT:
    print("scheduled: recurring run", schedule(cfg, HOST, SCHEDULE_CRON, env=env, namespace=ns))
elif SCHEDULE_CRON:
    print("schedules need a cluster (MODE = \\"cluster\\", COMPILE_ONLY = False)")"""),
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
