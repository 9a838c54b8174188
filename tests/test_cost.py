"""The whole cost of each row (issue #27): the dynamics share a method setting reads, the scoring time
the score artifact records, and, from a tiny real `tdds grid` run tracked to SQLite, the cost fields
of its rows, the cost table, the time-to-accuracy plot and the cost metrics on the coreset runs."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fixtures_config import synthetic_config
from tdds_core.config import parse_config
from tdds_core.cost import dynamics_share, elapsed_of, with_costs
from tdds_core.grid import run_grid
from tdds_core.io import read_json, read_manifest, write_manifest
from tdds_core.names import (COST_METRICS, ELAPSED_S, METRIC_COST_DYNAMICS_S, METRIC_COST_DYNAMICS_SHARE,
                             METRIC_COST_SCORING_S, METRIC_COST_SELECTION_S, METRIC_COST_TOTAL_S, METRIC_COST_TRAIN_S,
                             STAGE_CORESET, STAGE_SCORE, STAGE_SELECT, STAGE_TRAIN_FULL, TAG_LABEL, TAG_RATE, TAG_SEED, TAG_STAGE)
from tdds_core.plan import Plan
from tdds_core.report import build_table
from tdds_core.report_cost import cost_cells, cost_markdown, plot_time_to_accuracy
from tdds_core.scoring import epochs_read
from tdds_core.stages.score import score
from tdds_core.tracking import MlflowTracker, default_experiment, rows_from_mlflow

# the tests on the grid are slow: it trains 13 small models (about 35 s on 2 shared cores)
TDDS = "tdds[T=3,W=2,start=0]"
SHARE = {"random": 0.0, TDDS: 0.3, "aum": 1.0}      # of a 10-epoch full-data run


def test_the_dynamics_share_of_tdds_is_the_leading_epochs_its_window_reads():
    assert epochs_read("tdds", {"T": 3, "W": 2, "start": 0}, 10) == 3
    assert dynamics_share("tdds", {"T": 3, "W": 2, "start": 0}, 10) == pytest.approx(0.3)
    assert dynamics_share("tdds", {"T": 3, "W": 2, "start": 2}, 10) == pytest.approx(0.5)    # epochs 2, 3, 4


def test_a_method_reading_every_epoch_costs_the_whole_run_and_random_none():
    assert dynamics_share("aum", {}, 10) == 1.0
    assert dynamics_share("forgetting", {}, 7) == 1.0
    assert dynamics_share("random", {}, 10) == 0.0


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("cost") / "out"
    cfg = parse_config({**synthetic_config(
        160, 80, 12, name="cost", batch_size=32, epochs=10,
        methods=[{"name": "random"}, {"name": "tdds", "params": {"T": 3, "W": 2, "start": 0}}, {"name": "aum"}],
        selection={"rates": [0.5, 0.7]}, coreset={"batch_size": 16, "epochs": 2, "seeds": [0, 1]},
        tracking={"uri": f"sqlite:///{out / 'mlflow.db'}", "log_models": "none"}), "output": str(out)})
    res = run_grid(cfg)
    return cfg, res, json.loads((res.report_dir / "rows.json").read_text())


@pytest.mark.slow
def test_scoring_records_its_wall_time_and_it_is_read_back(grid):
    cfg, res, _ = grid
    plan = {s.key: s for s in Plan.from_config(cfg).scores}
    assert set(res.outputs[STAGE_SCORE]) == set(plan)
    for key, uri in res.outputs[STAGE_SCORE].items():
        info = read_json(Path(uri) / "score.json")
        assert isinstance(info[ELAPSED_S], float) and info[ELAPSED_S] > 0
        assert read_manifest(uri)[ELAPSED_S] == info[ELAPSED_S] == elapsed_of(uri)
        item = plan[key]     # scored again: the stored artifact and its time come back
        again = score(cfg, res.outputs[STAGE_TRAIN_FULL][""], item.method, item.params)
        assert again.reused and again.info[ELAPSED_S] == info[ELAPSED_S]


@pytest.mark.slow
def test_every_row_carries_its_whole_cost(grid):
    cfg, res, rows = grid
    full = next(r for r in rows if r["rate"] is None)
    assert full[METRIC_COST_TRAIN_S] == full[METRIC_COST_TOTAL_S] == full["wall_s"] > 0
    coresets = [r for r in rows if r["rate"] is not None]
    assert {(r["method"], r["rate"], r["seed"]) for r in coresets} == {
        (m, p, s) for m in SHARE for p in (0.5, 0.7) for s in (0, 1)}
    plan = {(p.score.label, p.rate): p for p in Plan.from_config(cfg).pairs}
    for r in coresets:
        pair = plan[(r["method"], r["rate"])]
        assert r[METRIC_COST_DYNAMICS_SHARE] == pytest.approx(SHARE[r["method"]])
        assert r[METRIC_COST_DYNAMICS_S] == pytest.approx(SHARE[r["method"]] * full["wall_s"])  # it ran every epoch
        assert r[METRIC_COST_SCORING_S] == elapsed_of(res.outputs[STAGE_SCORE][pair.score.key]) > 0
        assert r[METRIC_COST_SELECTION_S] == elapsed_of(res.outputs[STAGE_SELECT][pair.key]) > 0
        assert r[METRIC_COST_TRAIN_S] == r["wall_s"] > 0
        parts = [r[m] for m in (METRIC_COST_DYNAMICS_S, METRIC_COST_SCORING_S, METRIC_COST_SELECTION_S,
                                METRIC_COST_TRAIN_S) if r[m] is not None]
        assert r[METRIC_COST_TOTAL_S] == pytest.approx(sum(parts))
    # a full-data run that stopped early (dynamics.stop_training; its row says how many epochs it trained):
    # the dynamics cost its seconds per epoch x the epochs read
    stopped = with_costs(cfg, [dict(r, epochs=5) if r["rate"] is None else r for r in res.rows], res.outputs)
    tdds = next(r for r in stopped if r["method"] == TDDS)
    assert tdds[METRIC_COST_DYNAMICS_SHARE] == pytest.approx(0.3)
    assert tdds[METRIC_COST_DYNAMICS_S] == pytest.approx(3 * full["wall_s"] / 5)
    # what a benchmark calls on the grid's own rows and outputs: the rows of the report
    again = with_costs(cfg, res.rows, res.outputs)
    assert [{m: r.get(m) for m in COST_METRICS} for r in again] == [{m: r.get(m) for m in COST_METRICS} for r in rows]
    # the grid's own rows carry the same costs as the report's rows.json
    assert [{m: r.get(m) for m in COST_METRICS} for r in res.rows] == [{m: r.get(m) for m in COST_METRICS} for r in rows]


def _cells(md: str) -> dict[str, list[str]]:
    return {c[0]: c[1:] for c in ([x.strip() for x in line.strip("|").split("|")] for line in md.splitlines()
                                  if line.startswith("| ") and not line.startswith("| method"))}


@pytest.mark.slow
def test_the_cost_table_from_the_grid_rows(grid):
    cfg, res, rows = grid
    md = cost_markdown(rows)
    assert (res.report_dir / "cost.md").read_text() == md
    cells = _cells(md)
    assert list(cells) == ["random (baseline)", "aum", TDDS]
    by_cell = {(c["method"], c["rate"]): c for c in cost_cells(rows)}
    for name, method in (("random (baseline)", "random"), ("aum", "aum"), (TDDS, TDDS)):
        row = cells[name]
        assert len(row) == 8                    # two rates x (dynamics, score+select s, train s, total s)
        assert row[0] == row[4] == f"{SHARE[method]:.2f}"
        for i, rate in ((0, 0.5), (4, 0.7)):
            c = by_cell[(method, rate)]
            assert c["n"] == 2 and c[METRIC_COST_TRAIN_S] == pytest.approx(
                sum(r["wall_s"] for r in rows if (r["method"], r["rate"]) == (method, rate)) / 2)
            assert "–" not in row[i + 1] + row[i + 2] + row[i + 3]     # every time recorded
    full = next(r for r in rows if r["rate"] is None)
    assert f"Full-data run: {full['wall_s']:.2f} s" in md or f"Full-data run: {full['wall_s']:.1f} s" in md


@pytest.mark.slow
def test_scores_stored_before_their_time_was_recorded_show_a_dash(grid, tmp_path):
    cfg, res, rows = grid
    pair = next(p for p in Plan.from_config(cfg).pairs if p.score.label == TDDS)
    old = tmp_path / "old-score"
    shutil.copytree(res.outputs[STAGE_SCORE][pair.score.key], old)
    info = read_json(old / "score.json")
    (old / "score.json").write_text(json.dumps({k: v for k, v in info.items() if k != ELAPSED_S}))
    meta = {k: v for k, v in read_manifest(old).items() if k not in ("files", ELAPSED_S)}
    write_manifest(old, ["scores.npy", "score.json"], **meta)
    outputs = {**res.outputs, STAGE_SCORE: {**res.outputs[STAGE_SCORE], pair.score.key: str(old)}}
    assert elapsed_of(str(old)) is None
    costed = with_costs(cfg, res.rows, outputs)
    tdds = [r for r in costed if r["method"] == TDDS]
    assert tdds and all(r[METRIC_COST_SCORING_S] is None for r in tdds)
    for r in tdds:
        known = [r[m] for m in (METRIC_COST_DYNAMICS_S, METRIC_COST_SELECTION_S, METRIC_COST_TRAIN_S) if r[m] is not None]
        assert r[METRIC_COST_TOTAL_S] == pytest.approx(sum(known))
    row = _cells(cost_markdown(costed))[TDDS]
    at = 1 if pair.rate == 0.5 else 5
    assert row[at].startswith("– + ") and "–" not in row[at][4:]          # scoring not recorded, selection was
    assert _cells(cost_markdown(rows))[TDDS][at] != row[at]


@pytest.mark.slow
def test_time_to_accuracy_plot_from_the_grid_rows(grid, tmp_path):
    cfg, res, rows = grid
    written = (res.report_dir / "time_to_accuracy.png").read_bytes()
    assert written[:8] == b"\x89PNG\r\n\x1a\n"
    cells = [c for c in cost_cells(rows) if c["rate"] is not None]
    assert len(cells) == 6 and all(c["n"] == 2 for c in cells)        # one point per (method, rate), mean of 2 seeds
    acc = {(t["method"], t["rate"]): t["final_acc_mean"] for t in build_table(rows)}
    for c in cells:
        assert c["acc_mean"] == pytest.approx(acc[(c["method"], c["rate"])])
        totals = [r[METRIC_COST_TOTAL_S] for r in rows if (r["method"], r["rate"]) == (c["method"], c["rate"])]
        assert c[METRIC_COST_TOTAL_S] == pytest.approx(sum(totals) / 2) and c["cost_total_s_std"] > 0
    full_only = plot_time_to_accuracy([r for r in rows if r["rate"] is None], tmp_path / "full.png")
    assert len(written) > len(full_only.read_bytes()) + 5_000


@pytest.mark.slow
def test_coreset_runs_hold_their_cost_metrics_logged_once(grid):
    cfg, res, rows = grid
    uri, experiment = cfg.tracking.uri, default_experiment(cfg)
    tracker = MlflowTracker(uri, experiment)
    row = {(r["method"], r["rate"], r["seed"]): r for r in rows if r["rate"] is not None}
    runs = tracker.find_runs(tags={TAG_STAGE: STAGE_CORESET}, status="FINISHED")
    assert len(runs) == len(row) == 12
    for run in runs:
        r = row[(run.tags[TAG_LABEL], float(run.tags[TAG_RATE]), int(run.tags[TAG_SEED]))]
        assert {m: run.metrics.get(m) for m in COST_METRICS} == {m: r[m] for m in COST_METRICS if r[m] is not None} \
            | {m: None for m in COST_METRICS if r[m] is None}
    # read back from MLflow (`tdds report --tracking-uri`): the rows carry the same cost
    back = {(r["method"], r["rate"], r["seed"]): r for r in rows_from_mlflow(uri, experiment) if r["rate"] is not None}
    assert {k: {m: r.get(m) for m in COST_METRICS} for k, r in back.items()} == {
        k: {m: r[m] for m in COST_METRICS} for k, r in row.items()}
    run_grid(cfg)          # everything reused: no second value of any cost metric
    client = MlflowClient(uri)
    for run in runs:
        for m in COST_METRICS:
            if run.metrics.get(m) is not None:
                assert len(client.get_metric_history(run.id, m)) == 1
    # the report's table on the parent run carries the cost of every cell
    parent = client.get_run(res.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        table = json.loads(Path(client.download_artifacts(parent.info.run_id, "results_table.json", tmp)).read_text())
    col = {c: i for i, c in enumerate(table["columns"])}
    cells = {(d[col["method"]], d[col["rate"]]): d for d in table["data"]}
    for c in cost_cells(rows):
        assert cells[(c["method"], c["rate"])][col[METRIC_COST_TOTAL_S]] == pytest.approx(c[METRIC_COST_TOTAL_S])
        if c["rate"] is not None:
            assert cells[(c["method"], c["rate"])][col[METRIC_COST_DYNAMICS_SHARE]] == pytest.approx(SHARE[c["method"]])
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"accuracy_vs_rate.png", "time_to_accuracy.png"} <= arts
