"""Report: aggregation over seeds, CSV/Markdown, the accuracy-vs-rate plot, rows back from MLflow."""
from __future__ import annotations

import csv
import io
import math

import pytest

from tdds_core.cli import main as cli_main
from tdds_core.errors import TrackingError
from tdds_core.report import paired_differences, paired_markdown, build_table, plot_accuracy_vs_rate, to_csv, to_markdown
from tdds_core.names import (METRIC_BEST_ACC, METRIC_FINAL_ACC, METRIC_NOISY_KEPT, METRIC_NUM_TRAIN, STAGE_CORESET,
                             STAGE_PIPELINE, STAGE_SCORE, STAGE_TRAIN_FULL, TAG_ARCH, TAG_METHOD, TAG_RATE, TAG_SEED,
                             TAG_STAGE, format_rate, run_name)
from tdds_core.tracking import MlflowTracker, rows_from_mlflow


def rows_fixture():
    rows = []
    acc = {("random", 0.3): [80.0, 82.0], ("random", 0.7): [70.0, 71.0],
           ("tdds", 0.3): [85.0, 87.0, 86.0], ("tdds", 0.7): [75.5, 76.5]}
    for (m, r), vals in acc.items():
        for seed, a in enumerate(vals):
            rows.append({"method": m, "rate": r, "seed": seed, "arch": "resnet18", "final_acc": a,
                         "best_acc": a + 1, "num_train": int(1000 * (1 - r)), "iterations": 100, "wall_s": 2.0,
                         "noisy_kept": 0.1 if m == "tdds" else None})
    rows += [{"method": "full", "rate": None, "seed": s, "arch": "resnet18", "final_acc": a, "best_acc": a}
             for s, a in ((0, 90.0), (1, 92.0))]
    return rows


def test_build_table_mean_and_std_over_seeds():
    table = build_table(rows_fixture())
    by = {(t["method"], t["rate"]): t for t in table}
    assert len(table) == 5
    t = by[("tdds", 0.3)]
    assert t["n"] == 3 and t["seeds"] == [0, 1, 2]
    assert t["final_acc_mean"] == pytest.approx(86.0) and t["final_acc_std"] == pytest.approx(1.0)  # ddof=1
    assert t["best_acc_mean"] == pytest.approx(87.0)
    assert t["noisy_kept_mean"] == pytest.approx(0.1)
    r = by[("random", 0.3)]
    assert r["final_acc_mean"] == pytest.approx(81.0) and r["final_acc_std"] == pytest.approx(math.sqrt(2))
    assert r["noisy_kept_mean"] is None
    assert r["num_train"] == 700
    assert by[("full", None)]["final_acc_mean"] == pytest.approx(91.0)
    assert table[0]["method"] == "full"  # full data first, then methods by name and rate
    single = build_table([{"method": "el2n", "rate": 0.5, "seed": 1, "arch": "a", "final_acc": 60.0}])
    assert single[0]["final_acc_std"] == 0.0 and single[0]["n"] == 1


def test_csv_has_every_group():
    text = to_csv(build_table(rows_fixture()))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 5
    tdds = [r for r in rows if r["method"] == "tdds" and r["rate"] == "0.30"][0]
    assert float(tdds["final_acc_mean"]) == pytest.approx(86.0) and tdds["seeds"] == "0;1;2"
    assert [r for r in rows if r["method"] == "full"][0]["rate"] == ""


def test_markdown_methods_by_rates():
    md = to_markdown(build_table(rows_fixture()))
    lines = md.splitlines()
    header = [l for l in lines if l.startswith("| method")][0]
    assert header == "| method | p=0.30 | p=0.70 |"
    body = [l for l in lines if l.startswith("| ") and not l.startswith("| method")]
    assert body[0].startswith("| random (baseline) | 81.00 ± 1.41 | 70.50 ± 0.71 |")
    assert body[1] == "| tdds | **86.00 ± 1.00** | **76.00 ± 0.71** |"
    assert "Full data (no pruning): 91.00 ± 1.41" in md
    assert "Random baseline (random): p=0.30: 81.00 ± 1.41, p=0.70: 70.50 ± 0.71" in md
    assert "full |" not in md  # full data is a line, not a row
    md2 = to_markdown(build_table(rows_fixture()), full_acc=95.5, metric="best_acc")
    assert "Full data (no pruning): 95.50 (" in md2 and "| tdds | **87.00 ± 1.00** |" in md2


def test_markdown_one_table_per_arch_and_missing_cells():
    rows = rows_fixture() + [{"method": "tdds", "rate": 0.3, "seed": 0, "arch": "vgg16_bn", "final_acc": 60.0}]
    md = to_markdown(build_table(rows))
    assert "### resnet18" in md and "### vgg16_bn" in md
    vgg = md.split("### vgg16_bn")[1]
    # one seed: the mean alone, and the footnote says no spread was measured
    assert "| tdds | 60.00 |" in vgg and "Random baseline (random): not run" in vgg
    assert "one seed per cell (n = 1): no spread measured" in vgg
    assert "Full data (no pruning): not run" in vgg


def test_plot_written_as_png(tmp_path):
    path = plot_accuracy_vs_rate(rows_fixture(), tmp_path / "plots" / "acc.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    empty = plot_accuracy_vs_rate([], tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > len(empty.read_bytes())


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """The rows of rows_fixture() logged as MLflow runs the way the grid does (SQLite store)."""
    d = tmp_path_factory.mktemp("mlflow-report")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "tdds-report-test")
    with tracker.start_run("pipeline/report", tags={TAG_STAGE: STAGE_PIPELINE}):
        for row in rows_fixture():
            full = row["rate"] is None
            stage = STAGE_TRAIN_FULL if full else STAGE_CORESET
            name = run_name(stage, method=None if full else row["method"], rate=row["rate"], arch=row["arch"],
                            seed=row["seed"])
            tags = {TAG_STAGE: stage, TAG_ARCH: row["arch"], TAG_SEED: row["seed"]}
            if not full:
                tags.update({TAG_METHOD: row["method"], TAG_RATE: format_rate(row["rate"])})
            with tracker.start_run(name, tags=tags):
                metrics = {METRIC_FINAL_ACC: row["final_acc"], METRIC_BEST_ACC: row["best_acc"]}
                if row.get("noisy_kept") is not None:
                    metrics[METRIC_NOISY_KEPT] = row["noisy_kept"]
                if row.get("num_train") is not None:
                    metrics[METRIC_NUM_TRAIN] = row["num_train"]
                tracker.log_metrics(metrics)
        # runs the report must leave out: another stage, an unfinished run, a run without accuracy
        with tracker.start_run("score/tdds", tags={TAG_STAGE: STAGE_SCORE}):
            tracker.log_metrics({METRIC_FINAL_ACC: 1.0})
        with pytest.raises(RuntimeError):
            with tracker.start_run("coreset/tdds/p0.30/resnet18/s9", tags={
                    TAG_STAGE: STAGE_CORESET, TAG_METHOD: "tdds", TAG_RATE: "0.30", TAG_ARCH: "resnet18", TAG_SEED: 9}):
                tracker.log_metrics({METRIC_FINAL_ACC: 1.0})
                raise RuntimeError("crashed run")
        with tracker.start_run("coreset/tdds/p0.30/resnet18/s8", tags={
                TAG_STAGE: STAGE_CORESET, TAG_METHOD: "tdds", TAG_RATE: "0.30", TAG_ARCH: "resnet18", TAG_SEED: 8}):
            pass
    return uri, d


def test_rows_from_mlflow_round_trip(logged):
    uri, _ = logged
    rows = rows_from_mlflow(uri, "tdds-report-test")
    assert len(rows) == len(rows_fixture())
    want = build_table(rows_fixture())
    got = build_table(rows)
    keys = ("method", "rate", "arch", "n", "seeds", "final_acc_mean", "final_acc_std", "best_acc_mean",
            "noisy_kept_mean", "num_train")
    assert [{k: t[k] for k in keys} for t in got] == [{k: t[k] for k in keys} for t in want]
    assert all(r["run_id"] for r in rows)
    assert {r["stage"] for r in rows} == {STAGE_CORESET, STAGE_TRAIN_FULL}
    with pytest.raises(TrackingError, match=r"experiment 'nope' not found .*tdds-report-test"):
        rows_from_mlflow(uri, "nope")
    with pytest.raises(TrackingError, match="no MLflow database"):
        rows_from_mlflow(f"sqlite:///{logged[1] / 'missing.db'}", "x")


def test_cli_report(logged, tmp_path, capsys):
    uri, _ = logged
    out = tmp_path / "report"
    rc = cli_main(["report", "--tracking-uri", uri, "--experiment", "tdds-report-test", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| tdds | **86.00 ± 1.00** | **76.00 ± 0.71** |" in printed
    assert "Full data (no pruning): 91.00 ± 1.41" in printed
    assert (out / "table.md").read_text() in printed
    assert "tdds,0.30,resnet18,3" in (out / "table.csv").read_text()
    assert (out / "accuracy_vs_rate.png").read_bytes()[:4] == b"\x89PNG"
    rc = cli_main(["report", "--tracking-uri", uri, "--experiment", "missing-exp", "--out", str(out)])
    assert rc == 2
    assert "not found" in capsys.readouterr().err


def test_paired_differences_against_random_by_seed():
    rows = rows_fixture() + [{"method": "el2n", "rate": 0.7, "seed": s, "arch": "resnet18", "final_acc": a}
                             for s, a in ((0, 69.0), (1, 72.0), (7, 99.0))]
    diffs = {(d["method"], d["rate"]): d for d in paired_differences(rows)}
    rand = {r["seed"]: r["final_acc"] for r in rows if r["method"] == "random" and r["rate"] == 0.7}
    el2n = diffs[("el2n", 0.7)]
    assert el2n["n"] == 2                       # seed 7 has no random run to pair with
    want = [69.0 - rand[0], 72.0 - rand[1]]
    assert el2n["mean"] == pytest.approx(sum(want) / 2) and el2n["wins"] == sum(d > 0 for d in want)
    assert ("random", 0.7) not in diffs and ("full", None) not in diffs
    md = paired_markdown(list(diffs.values()))
    assert "| el2n |" in md and f"({el2n['wins']}/2)" in md
    assert ("el2n at p=0.70" in md) == (el2n["mean"] < 0)


def test_scale_note_says_what_a_toy_table_cannot_show():
    from tdds_core.report import scale_note

    note = scale_note(2400, 6, 1)
    assert "2,400 training samples" in note and "6 epochs" in note and "one seed" in note
    assert "docs/RESULTS.md" in note
    assert scale_note(20000, 10, 3) == ""
    assert "one seed" in scale_note(20000, 10, 1) and "samples" not in scale_note(20000, 10, 1).split(":")[0]


def test_markdown_names_the_weighted_rates_when_weighting_varies_by_rate():
    rows = [{"method": "tdds", "rate": r, "seed": 0, "arch": "a", "final_acc": 80.0, "weighting": w}
            for r, w in ((0.3, "none"), (0.8, "batch"), (0.9, "batch"))]
    rows += [{"method": "el2n", "rate": r, "seed": 0, "arch": "a", "final_acc": 70.0, "weighting": "batch"} for r in (0.3, 0.8)]
    md = to_markdown(build_table(rows))
    assert "| tdds [loss weighting: batch at p=0.80, batch at p=0.90] |" in md
    assert "| el2n [loss weighting: batch] |" in md
