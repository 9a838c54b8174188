"""Screenshots of the MLflow UI a tdds user opens first, rendered by headless Chromium (Debian's
``chromium``): the pipeline's parent run (its description opens on the results table) and the chart
view of its ``summary/<method>`` runs (one line per method, accuracy against the pruning rate).

    python scripts/mlflow_screenshots.py --tracking-uri http://127.0.0.1:5000 --experiment tdds-synthetic \\
        [--pipeline-run ID] [--out docs/img]

writes ``mlflow_parent_run.png`` and ``mlflow_chart_view.png`` (and the rendered DOM beside them as
``.html``, which tests read). ``tests/test_mlflow_ui.py`` drives :func:`render_views` against a real
``mlflow server`` after a small ``tdds run``; the docs images come from the same function.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from mlflow import MlflowClient

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
SUMMARY_FILTER = "tags.`tdds.stage` = 'summary' and tags.`tdds.pipeline_run_id` = '{}'"


def chromium() -> str:
    """Path of the Chromium binary; a clear error when none is installed."""
    for name in CHROMIUM:
        if path := shutil.which(name):
            return path
    raise SystemExit("no chromium on PATH: sudo apt-get install -y chromium (scripts/setup.sh --dev installs it)")


def render(url: str, png: Path, *, size: str = "1600,1000", budget_ms: int = 20000) -> str:
    """Render ``url`` in headless Chromium into ``png`` (``size`` = width,height) and return the DOM
    after ``budget_ms`` of virtual time (the page's fetches and scripts ran)."""
    png.parent.mkdir(parents=True, exist_ok=True)
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--window-size={size}", f"--virtual-time-budget={budget_ms}", "--run-all-compositor-stages-before-draw"]
    subprocess.run(base + [f"--screenshot={png}", url], check=True, capture_output=True, timeout=180)
    dom = subprocess.run(base + ["--dump-dom", url], check=True, capture_output=True, text=True, timeout=180).stdout
    png.with_suffix(".html").write_text(dom)
    return dom


# MLflow 3.17's UI picks GenAI or model-training mode from the URL's workflowType (else the browser's
# last choice, GenAI at first): mlflow/server/js/src/common/contexts/WorkflowTypeContext.tsx
MODEL_TRAINING = "workflowType=machine_learning"


def parent_url(server: str, experiment_id: str, run_id: str) -> str:
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING}"


def chart_url(server: str, experiment_id: str, pipeline_run: str) -> str:
    """The experiment's chart view showing the summary runs of one pipeline run (one line per method). Sorted by
    name, not by date: the UI nests child runs under their parent only when sorted by date or
    unfiltered, so the summaries (children of the pipeline's run) show as lines of their own."""
    return (f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING}&compareRunsMode=CHART"
            f"&searchFilter={quote(SUMMARY_FILTER.format(pipeline_run))}&orderByKey={quote('tags.`mlflow.runName`')}&orderByAsc=true")


def find_parent(client: MlflowClient, experiment_id: str, pipeline_run: str | None):
    """The parent run (an ``mlflow.entities.Run``) of the pipeline run ``pipeline_run`` (the newest finished one when None)."""
    flt = "tags.`tdds.stage` = 'pipeline' and attributes.status = 'FINISHED'"
    if pipeline_run:
        flt += f" and tags.`tdds.pipeline_run_id` = '{pipeline_run}'"
    runs = client.search_runs([experiment_id], filter_string=flt, order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit(f"no finished pipeline run {pipeline_run or ''} in experiment {experiment_id}: run `tdds run` first")
    return runs[0]


def render_views(server: str, experiment: str, out: Path, pipeline_run: str | None = None) -> dict[str, str]:
    """Render the parent run and the chart view into ``out``; returns ``{"parent": dom, "chart": dom}``."""
    client = MlflowClient(server)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"experiment {experiment!r} not found at {server}")
    parent = find_parent(client, exp.experiment_id, pipeline_run)
    # tall enough that the description (below the run's details, opening on the table) is on screen
    rid = parent.data.tags["tdds.pipeline_run_id"]
    return {"parent": render(parent_url(server, exp.experiment_id, parent.info.run_id), out / "mlflow_parent_run.png",
                             size="1600,1700"),
            "chart": render(chart_url(server, exp.experiment_id, rid), out / "mlflow_chart_view.png")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", required=True, help="URL of a running `mlflow server` (the UI is rendered from it).")
    p.add_argument("--experiment", required=True, help="Experiment name, e.g. tdds-synthetic.")
    p.add_argument("--pipeline-run", default=None, help="Pipeline run id (default: the newest finished one).")
    p.add_argument("--out", default="docs/img", help="Folder for the PNGs (default docs/img).")
    a = p.parse_args(argv)
    render_views(a.tracking_uri, a.experiment, Path(a.out), a.pipeline_run)
    print(f"wrote {Path(a.out) / 'mlflow_parent_run.png'} and {Path(a.out) / 'mlflow_chart_view.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
