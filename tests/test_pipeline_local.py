"""`tdds run` end to end on CPU: the tdds-prune pipeline through kfp.local on real Fashion-MNIST,
tracking and artifacts read back afterwards, a second run served from the caches, and a failing
task that ends the parent MLflow run FAILED through the exit handler."""
from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tdds_core.cli import main
from tdds_core.tracking import rows_from_mlflow
from tdds_core.selection import load_selection
from tdds_core.steps import read_state
from helpers import EXECUTED as _EXEC

REPO = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_tracking")]

TINY = ["data.train_subset=600", "data.test_subset=500", "train.epochs=2", "train.progress=false",
        "methods=[{name: random}, {name: tdds, params: {T: 2, W: 2}}]", "selection.rates=[0.5, 0.7]", "pipeline.retries=0"]


def _run(out: Path, capfd, *extra: str) -> tuple[int, str]:
    rc = main(["run", "--config", str(REPO / "configs" / "quickstart.yaml"), "--out", str(out),
               *[x for o in TINY + list(extra) for x in ("--set", o)]])
    cap = capfd.readouterr()
    return rc, cap.out + cap.err


def _runs(out: Path) -> list:
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tdds-fashion-mnist")
    return client.search_runs([exp.experiment_id], max_results=500)


def _stage_counts(runs) -> Counter:
    """Runs per stage; the summary runs each report adds (one per method) are checked by _assert_parent_picture."""
    return Counter(t for r in runs if (t := r.data.tags.get("tdds.stage")) != "summary")


def _mtimes(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _assert_parent_picture(client: MlflowClient, parent) -> None:
    """A pipeline parent holds the whole picture: summary metrics per method and rate, the table
    (MLflow table artifact), the report files with the plot, and a description naming its run."""
    m = parent.data.metrics     # issue #26: a few rounded figures; the cells are in results_table.json
    assert set(m) == {"full_acc", "best_test_acc", "best_diff_vs_random"} and all(v == round(v, 2) for v in m.values())
    summaries = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
                                   "and tags.`tdds.stage` = 'summary'")
    assert sorted(r.data.tags["tdds.label"] for r in summaries) == ["random", "tdds[T=2,W=2]"]
    for r in summaries:
        assert sorted(x.step for x in client.get_metric_history(r.info.run_id, "test_acc")) == [50, 70]
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/accuracy_vs_rate.png", "report/table.md", "report/table.csv", "report/rows.json"} <= arts
    with tempfile.TemporaryDirectory() as tmp:
        table = json.loads(Path(client.download_artifacts(parent.info.run_id, "results_table.json", tmp)).read_text())
    col = {c: i for i, c in enumerate(table["columns"])}
    assert sorted((row[col["method"]], row[col["rate"]] or 0) for row in table["data"]) == [
        ("full", 0), ("random", 0.5), ("random", 0.7), ("tdds[T=2,W=2]", 0.5), ("tdds[T=2,W=2]", 0.7)]
    note = parent.data.tags["mlflow.note.content"]
    assert parent.data.tags["tdds.pipeline_run_id"] in note and "| tdds[T=2,W=2]" in note
    assert parent.info.run_name.endswith("/" + parent.data.tags["tdds.pipeline_run_id"])


def test_tdds_run_end_to_end_then_cached_rerun(tmp_path, capfd):
    assert FMNIST.is_dir(), "Fashion-MNIST files missing: run ./scripts/setup.sh"
    out = tmp_path / "out"
    rc, log = _run(out, capfd)
    assert rc == 0, log[-3000:]
    executed = _EXEC.findall(log)
    assert Counter(executed) == Counter({"open-run": 1, "train-full": 1, "score": 2, "collect-score": 1,
                                         "select": 2, "collect-select": 1, "coreset": 4, "collect-coreset": 1,
                                         "report": 1, "close-run": 1})
    assert "| random (baseline) |" in log and "tdds[T=2,W=2]" in log
    assert f"mlflow ui --backend-store-uri sqlite:///{out / 'mlflow.db'}" in log

    # MLflow: one parent per pipeline run, one child per stage, metrics on the training runs
    runs = _runs(out)
    assert _stage_counts(runs) == Counter({"pipeline": 1, "train-full": 1, "score": 2, "coreset": 4})
    assert "Executing task" not in log and '"parameterValues"' not in log, "kfp.local's output belongs in the log file"
    parent = next(r for r in runs if r.data.tags["tdds.stage"] == "pipeline")
    assert parent.info.status == "FINISHED"
    run_id = parent.data.tags["tdds.pipeline_run_id"]
    assert run_id.startswith("local-") and run_id in log
    for r in runs:
        if r is not parent:
            assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id, r.info.run_name
            assert r.data.tags["tdds.pipeline_run_id"] == run_id
            assert r.info.status == "FINISHED"
    coreset = [r for r in runs if r.data.tags["tdds.stage"] == "coreset"]
    assert sorted((r.data.tags["tdds.label"], r.data.tags["tdds.rate"]) for r in coreset) == [
        ("random", "0.5"), ("random", "0.7"), ("tdds[T=2,W=2]", "0.5"), ("tdds[T=2,W=2]", "0.7")]
    for r in coreset:
        assert 0 <= r.data.metrics["final_acc"] <= 100
        assert r.data.metrics["num_train"] == {"0.5": 300, "0.7": 180}[r.data.tags["tdds.rate"]]
    # consistent params: one filter on params.method finds a method's runs at every stage
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("tdds-fashion-mnist").experiment_id
    tdds_runs = client.search_runs([exp_id], "params.method = 'tdds'")
    assert Counter(r.data.tags["tdds.stage"] for r in tdds_runs) == Counter({"score": 1, "coreset": 2, "summary": 1})
    for r in tdds_runs:
        assert r.data.tags["tdds.stage"] == "summary" or (r.data.params["method.T"], r.data.params["method.W"]) == ("2", "2")
        assert r.data.params["label"] == "tdds[T=2,W=2]"
    for r in coreset:
        p = r.data.params
        assert p["rate"] == r.data.tags["tdds.rate"] and {"seed", "arch", "epochs", "lr", "weighting"} <= set(p)
        assert (p["epochs"], p["lr"]) == ("2", "0.05")
        assert not any(k.startswith("class_acc") for k in r.data.metrics) and "lr" not in r.data.metrics
        arts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"per_class_acc.json", "selection"} <= arts
        assert r.data.tags["tdds.artifact_uri"].startswith("file://")
        assert not Path(r.data.tags["tdds.artifact_key"]).is_absolute()
    models = client.search_logged_models([exp_id])
    train_run = next(r for r in runs if r.data.tags["tdds.stage"] == "train-full")
    assert {m.source_run_id for m in models} == {r.info.run_id for r in coreset} | {train_run.info.run_id}
    _assert_parent_picture(client, parent)
    from tdds_core.errors import TrackingError
    from tdds_core.tracking import rows_from_pipeline_run

    mine = rows_from_pipeline_run(f"sqlite:///{out / 'mlflow.db'}", "tdds-fashion-mnist", run_id)
    assert sorted((r["method"], r["rate"] or 0) for r in mine) == [
        ("full", 0), ("random", 0.5), ("random", 0.7), ("tdds[T=2,W=2]", 0.5), ("tdds[T=2,W=2]", 0.7)]
    with pytest.raises(TrackingError, match="no pipeline run 'local-nope'"):
        rows_from_pipeline_run(f"sqlite:///{out / 'mlflow.db'}", "tdds-fashion-mnist", "local-nope")
    log_file = re.search(r"task logs:\s+(\S+)", log).group(1)
    assert '"parameterValues"' in Path(log_file).read_text(), "the executor JSON goes to the log file"
    rows = rows_from_mlflow(f"sqlite:///{out / 'mlflow.db'}", "tdds-fashion-mnist")
    assert sorted((r["method"], r["rate"] or 0) for r in rows) == [
        ("full", 0), ("random", 0.5), ("random", 0.7), ("tdds[T=2,W=2]", 0.5), ("tdds[T=2,W=2]", 0.7)]
    full_acc = next(r for r in rows if r["method"] == "full")["final_acc"]
    assert full_acc > 20, "two epochs on 600 Fashion-MNIST images should beat chance (10%)"

    # artifacts: one state per rate from the select tasks (each task got its own loop item),
    # merged by the fan-in into one that names verified selection folders in the store
    per_rate = [read_state(p) for p in (out / "kfp").rglob("select/result")]
    assert sorted(sorted({r.rate for r in p.refs["select"].values()}) for p in per_rate) == [[0.5], [0.7]]
    assert all(len(p.refs["select"]) == 2 for p in per_rate)
    merged = [read_state(p) for p in (out / "kfp").rglob("collect-select/merged")]
    assert len(merged) == 1
    assert merged[0].refs["select"] == {k: v for p in per_rate for k, v in p.refs["select"].items()}
    assert set(merged[0].refs) == {"train-full", "score", "select"}
    fingerprint = parent.data.tags["tdds.fingerprint"]
    assert merged[0].fingerprint == fingerprint
    for ref in merged[0].refs["select"].values():
        folder = Path(ref.uri)
        assert folder.parent == out / "selections"
        sel = load_selection(folder, expected_fingerprint=fingerprint)
        assert sel.num_selected == {0.5: 300, 0.7: 180}[ref.rate] == len(set(sel.ids))
    for name in ("table.md", "table.csv", "accuracy_vs_rate.png", "rows.json"):
        assert (out / "report" / name).is_file(), name
    # the cache lives in a folder named by the store and the tracker it is valid for
    assert len(list((out / "kfp").glob("*/.kfp_cache/*.json"))) > 0, "no KFP cache entries"
    before = _mtimes(out / "coreset") | _mtimes(out / "train")

    # a second run: every stage is a KFP cache hit; only the per-run tasks execute
    rc, log2 = _run(out, capfd)
    assert rc == 0, log2[-3000:]
    assert sorted(_EXEC.findall(log2)) == ["close-run", "open-run", "report"]
    runs2 = _runs(out)
    assert _stage_counts(runs2) == Counter({"pipeline": 2, "train-full": 1, "score": 2, "coreset": 4})
    parents = [r for r in runs2 if r.data.tags["tdds.stage"] == "pipeline"]
    assert all(p.info.status == "FINISHED" for p in parents)
    assert re.search(r"^  coreset\s+cached$", log2, re.M) and "tasks: 3 ran" in log2
    new_parent = client.get_run(next(p.info.run_id for p in parents if p.info.run_id != parent.info.run_id))
    _assert_parent_picture(client, new_parent)   # every stage came from the cache: the report still fills it
    assert _mtimes(out / "coreset") | _mtimes(out / "train") == before, "a cached rerun rewrote training artifacts"

    # a third run with one more pruning rate: the other rates' materialize tasks stay cached; the
    # coreset tasks run again after the new fan-in but reuse every finished coreset (no new MLflow run)
    rc, log3 = _run(out, capfd, "selection.rates=[0.5, 0.7, 0.9]")
    assert rc == 0, log3[-3000:]
    assert Counter(_EXEC.findall(log3)) == Counter({"open-run": 1, "select": 1, "collect-select": 1,
                                                    "coreset": 6, "collect-coreset": 1, "report": 1, "close-run": 1})
    runs3 = _runs(out)
    assert _stage_counts(runs3) == Counter({"pipeline": 3, "train-full": 1, "score": 2, "coreset": 6})
    after = _mtimes(out / "coreset") | _mtimes(out / "train")
    assert {k: v for k, v in after.items() if k in before} == before
    assert len(after) > len(before)

    # runtime settings (progress bars, loader workers, eval batch size) change a stage's config, so
    # its KFP task runs, but every artifact and MLflow run is reused
    rc, log4 = _run(out, capfd, "selection.rates=[0.5, 0.7, 0.9]", "train.progress=true", "data.num_workers=0",
                    "train.eval_batch_size=250")
    assert rc == 0, log4[-3000:]
    assert "train-full" in _EXEC.findall(log4)
    assert _stage_counts(_runs(out)) == Counter({"pipeline": 4, "train-full": 1, "score": 2, "coreset": 6})
    assert _mtimes(out / "coreset") | _mtimes(out / "train") == after
    # an identity setting of the coreset stage: new coreset artifacts and runs, training and scores reused
    rc, log5 = _run(out, capfd, "selection.rates=[0.5, 0.7, 0.9]", "coreset.batch_size=32")
    assert rc == 0, log5[-3000:]
    assert Counter(_EXEC.findall(log5))["coreset"] == 6 and "train-full" not in _EXEC.findall(log5)
    assert _stage_counts(_runs(out)) == Counter({"pipeline": 5, "train-full": 1, "score": 2, "coreset": 12})
    grown = _mtimes(out / "coreset") | _mtimes(out / "train")
    assert {k: v for k, v in grown.items() if k in after} == after and len(grown) > len(after)


def test_failing_task_fails_the_run_and_the_parent(tmp_path, capfd):
    out = tmp_path / "out"
    rc, log = _run(out, capfd, "model.arch=no_such_arch")
    assert rc == 2
    assert "tdds: error: the local prune pipeline failed" in log and "train-full" in log.split("tdds: error:")[-1]
    executed = _EXEC.findall(log)
    assert executed == ["open-run", "train-full", "close-run"]
    runs = _runs(out)
    parent = next(r for r in runs if r.data.tags["tdds.stage"] == "pipeline")
    assert parent.info.status == "FAILED"
