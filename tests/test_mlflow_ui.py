"""Issue #26 acceptance: after a small `tdds run` (synthetic data) to a real `mlflow server`, MLflow
answers "which method at which pruning rate" at a glance and every name means one thing: one summary
run per method with the rates as steps, the parent's description opening on the table, one rate
spelling, filters by method name / label / rate, models named after their runs with their final
metrics, system metrics on training runs; `tdds report --pipeline-run` reports one run of a server
holding two configs; headless Chromium renders the parent run and the chart view."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fixtures_config import synthetic_settings
from tdds_core.cli import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.servers]
LABELS = ("random", "tdds[T=2,W=2]")
A = synthetic_settings("uia", "[{name: random}, {name: tdds, params: {T: 2, W: 2}}]") + ["selection.rates=[0.5, 0.7]"]
B = synthetic_settings("uib", "[{name: random}]") + ["selection.rates=[0.3]"]


@pytest.fixture(scope="module")
def runs(mlflow_server, tmp_path_factory):
    """Two configs' `tdds run` into one experiment of the session's mlflow server."""
    exp = f"tdds-ui-{uuid.uuid4().hex[:8]}"
    out = tmp_path_factory.mktemp("ui")
    for name, settings in (("a", A), ("b", B)):
        args = ["run", "--config", str(REPO / "configs" / "quickstart.yaml"), "--out", str(out / name)]
        for o in settings + [f"tracking.uri={mlflow_server}", f"tracking.experiment={exp}"]:
            args += ["--set", o]
        assert main(args) == 0
    client = MlflowClient(mlflow_server)
    exp_id = client.get_experiment_by_name(exp).experiment_id
    every = client.search_runs([exp_id], max_results=500)
    parent = {r.data.tags["tdds.config_name"]: r for r in every if r.data.tags.get("tdds.stage") == "pipeline"}
    return {"client": client, "exp": exp, "exp_id": exp_id, "runs": every, "parent": parent, "out": out,
            "server": mlflow_server}


def _children(runs, parent, stage):
    return [r for r in runs["runs"] if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
            and r.data.tags.get("tdds.stage") == stage]


def test_one_summary_run_per_method_with_the_rates_as_steps(runs):
    client, parent = runs["client"], runs["parent"]["uia"]
    summaries = _children(runs, parent, "summary")
    assert sorted(r.data.tags["tdds.label"] for r in summaries) == sorted(LABELS)
    assert sorted(r.info.run_name for r in summaries) == sorted(f"summary/{x}" for x in LABELS)
    for r in summaries:
        acc = client.get_metric_history(r.info.run_id, "test_acc")
        assert sorted(m.step for m in acc) == [50, 70]
        assert all(m.value == round(m.value, 2) for m in acc)
        diff = client.get_metric_history(r.info.run_id, "diff_vs_random")
        assert sorted(m.step for m in diff) == [50, 70]
        if r.data.tags["tdds.method"] == "random":
            assert {m.value for m in diff} == {0.0}
    # the parent keeps a few rounded figures; the cells are in the table artifact
    m = parent.data.metrics
    assert set(m) <= {"full_acc", "best_test_acc", "best_diff_vs_random"} and "full_acc" in m
    assert all(v == round(v, 2) for v in m.values())
    assert not [k for k in m if k.startswith(("final_acc/", "diff_vs_random/", "acc_vs_rate/"))]


def test_the_parent_opens_on_the_table_and_the_plot(runs):
    client, parent = runs["client"], runs["parent"]["uia"]
    note = parent.data.tags["mlflow.note.content"].splitlines()
    assert note[0].startswith("| method | p=0.50 | p=0.70 |")
    assert any(x.startswith("| tdds[T=2,W=2]") for x in note[2:4]) and note[5].startswith("**Test accuracy (%)")
    root = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert root[0] == "accuracy_vs_rate.png", root
    exp = client.get_experiment(runs["exp_id"])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_one_rate_spelling_in_params_tags_and_artifacts(runs):
    client, parent = runs["client"], runs["parent"]["uia"]
    coresets = _children(runs, parent, "coreset")
    assert sorted((r.data.tags["tdds.label"], r.data.tags["tdds.rate"]) for r in coresets) == sorted(
        (x, rate) for x in LABELS for rate in ("0.5", "0.7"))
    for r in coresets:
        assert r.data.params["rate"] == r.data.tags["tdds.rate"]
        assert r.info.run_name == f"{r.data.tags['tdds.label']} p{r.data.tags['tdds.rate']} s{r.data.tags['tdds.seed']}"
        assert (r.data.params["method"], r.data.params["label"]) == (r.data.tags["tdds.method"], r.data.tags["tdds.label"])
    with tempfile.TemporaryDirectory() as tmp:
        table = json.loads(Path(client.download_artifacts(parent.info.run_id, "results_table.json", tmp)).read_text())
        manifest = json.loads(Path(client.download_artifacts(coresets[0].info.run_id, "selection/manifest.json",
                                                             tmp)).read_text())
    col = {c: i for i, c in enumerate(table["columns"])}
    assert sorted({str(row[col["rate"]]) for row in table["data"] if row[col["rate"]] is not None}) == ["0.5", "0.7"]
    assert "diff_vs_random_mean" in col
    assert str(manifest["rate"]) == next(r.data.tags["tdds.rate"] for r in coresets
                                         if r.data.tags.get("tdds.selection_sha256")
                                         and r.info.run_id == coresets[0].info.run_id)


def test_filters_by_method_label_and_rate_find_the_right_runs(runs):
    client, exp_id = runs["client"], runs["exp_id"]
    tagged = "tags.`tdds.config_name` = 'uia'"

    def find(flt):
        return {(r.data.tags["tdds.stage"], r.data.tags.get("tdds.rate")) for r in
                client.search_runs([exp_id], filter_string=f"{flt} and {tagged}", max_results=200)}

    want = {("score", None), ("coreset", "0.5"), ("coreset", "0.7"), ("summary", None)}
    assert find("params.method = 'tdds'") == want
    assert find("tags.`tdds.method` = 'tdds'") == want
    assert find("tags.`tdds.label` = 'tdds[T=2,W=2]'") == want
    assert find("params.rate = '0.5'") == {("coreset", "0.5")}
    assert len(client.search_runs([exp_id], filter_string=f"params.rate = '0.5' and {tagged}")) == 2
    score = [r for r in runs["runs"] if r.data.tags.get("tdds.stage") == "score"][0]
    assert {"method", "label", "seed", "arch", "epochs", "lr", "weighting"} <= set(score.data.params)


def test_models_are_named_after_their_runs_with_final_metrics(runs):
    client, exp_id = runs["client"], runs["exp_id"]
    models = {m.name: m for m in client.search_logged_models([exp_id])}
    by_run = {r.info.run_id: r for r in runs["runs"]}
    assert "coreset-tdds-T-2-W-2-p50-s42" in models and "train-full-s42" in models, sorted(models)
    for m in models.values():
        run = by_run[m.source_run_id]
        got = {x.key: x.value for x in m.metrics}
        assert got["test_acc"] == pytest.approx(run.data.metrics["final_acc"])
        assert got["final_acc"] == pytest.approx(run.data.metrics["final_acc"])
        assert [x.key for x in m.metrics].count("img_per_s") == 1
    mv = client.get_model_version_by_alias("tdds-uia", "full-data")
    assert mv.run_id == next(r.info.run_id for r in runs["runs"] if r.data.tags.get("tdds.stage") == "train-full"
                             and r.data.tags.get("tdds.config_name") == "uia")


def test_training_runs_carry_system_metrics(runs):
    training = [r for r in runs["runs"] if r.data.tags.get("tdds.stage") in ("train-full", "coreset")]
    assert training
    for r in training:
        assert any(k.startswith("system/") for k in r.data.metrics), (r.info.run_name, sorted(r.data.metrics))


def test_report_of_one_pipeline_run_on_a_server_with_two_configs(runs, tmp_path, capsys):
    rid = runs["parent"]["uia"].data.tags["tdds.pipeline_run_id"]
    rc = main(["report", "--tracking-uri", runs["server"], "--experiment", runs["exp"], "--pipeline-run", rid,
               "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "| tdds[T=2,W=2]" in printed and "p=0.70" in printed and "p=0.30" not in printed
    assert (tmp_path / "table.md").read_text() in printed and (tmp_path / "table.csv").is_file()
    rid_b = runs["parent"]["uib"].data.tags["tdds.pipeline_run_id"]
    assert main(["report", "--tracking-uri", runs["server"], "--experiment", runs["exp"], "--pipeline-run", rid_b,
                 "--out", str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out
    assert "p=0.30" in printed and "tdds[" not in printed


def test_chromium_shows_the_table_and_one_line_per_method(runs, tmp_path):
    assert shutil.which("chromium"), "Debian's chromium is missing: ./scripts/setup.sh --dev (apt-get install chromium)"
    sys.path.insert(0, str(REPO / "scripts"))
    from mlflow_screenshots import render_views

    rid = runs["parent"]["uia"].data.tags["tdds.pipeline_run_id"]
    dom = render_views(runs["server"], runs["exp"], tmp_path, rid)
    assert "<table" in dom["parent"] and "tdds[T=2,W=2]" in dom["parent"] and "p=0.70" in dom["parent"]
    chart = dom["chart"]
    for label in LABELS:
        assert f"summary/{label}" in chart
    # only the summaries are listed, each drawn as a line (plotly's js-line) in the test_acc and diff charts
    assert f"<strong>{len(LABELS)}</strong> matching runs" in chart
    assert "test_acc" in chart and "diff_vs_random" in chart
    assert chart.count('class="js-line"') >= 2 * len(LABELS)
    assert (tmp_path / "mlflow_parent_run.png").stat().st_size > 10_000
