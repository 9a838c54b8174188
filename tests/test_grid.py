"""The methods x rates experiment on CPU: reuse of finished work, noise reporting, real data."""
import numpy as np
import pytest

from fixtures_config import synthetic_config
from tdds_core.config import parse_config
from tdds_core.errors import ArtifactError
from tdds_core.grid import run_grid
from tdds_core.stages.train_full import train_full

SYN = synthetic_config(160, 80, 12, name="g", batch_size=32,
                       methods=[{"name": "random"}, {"name": "tdds", "params": {"T": 3, "W": 2}}],
                       selection={"rates": [0.5]}, coreset={"batch_size": 16}, tracking={"enabled": False})


def _cfg(tmp_path, **extra):
    d = {**SYN, "output": str(tmp_path / "out"), **extra}
    return parse_config(d)


@pytest.mark.slow
def test_grid_resumes_without_redoing_finished_runs(tmp_path):
    cfg = _cfg(tmp_path)
    first = run_grid(cfg)
    assert [(r["method"], r["rate"]) for r in first.rows] == [("full", None), ("random", 0.5), ("tdds[T=3,W=2]", 0.5)]
    out = tmp_path / "out"
    models = sorted(out.rglob("model.pt"))
    assert len(models) == 3
    stamps = {p: p.stat().st_mtime_ns for p in models}
    # grow the grid: one more rate; finished runs are reused, only the new ones train
    cfg2 = _cfg(tmp_path, selection={"rates": [0.5, 0.75]})
    second = run_grid(cfg2)
    assert len(second.rows) == 5
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert len(sorted(out.rglob("model.pt"))) == 5
    same = {(r["method"], r["rate"]): r["final_acc"] for r in first.rows}
    for r in second.rows:
        if (r["method"], r["rate"]) in same:
            assert r["final_acc"] == same[(r["method"], r["rate"])]
    table = (second.report_dir / "table.csv").read_text()
    assert "tdds[T=3,W=2]" in table and "0.75" in table
    assert (second.report_dir / "accuracy_vs_rate.png").stat().st_size > 1000


@pytest.mark.slow
def test_output_root_refuses_another_experiment(tmp_path):
    cfg = _cfg(tmp_path)
    train_full(cfg)
    other = _cfg(tmp_path, train={**SYN["train"], "lr": 0.2})
    with pytest.raises(ArtifactError, match="refusing to mix runs"):
        train_full(other)


@pytest.mark.slow
def test_noise_fraction_kept_is_reported(tmp_path):
    cfg = _cfg(tmp_path, data={**SYN["data"], "noise": {"label_noise": 0.25, "seed": 3}},
               methods=[{"name": "random"}])
    res = run_grid(cfg)
    row = [r for r in res.rows if r["method"] == "random"][0]
    assert 0.0 <= row["noisy_kept"] <= 1.0
    # random keeps about half of everything, the noisy samples included
    assert 0.2 <= row["noisy_kept"] <= 0.8
    assert "noisy_kept_mean" in (res.report_dir / "table.csv").read_text()


@pytest.mark.slow
def test_coreset_on_real_fashion_mnist_beats_chance(tmp_path):
    cfg = parse_config({"name": "real", "output": str(tmp_path / "out"),
                        "data": {"name": "fashion-mnist", "train_subset": 1200, "test_subset": 500},
                        "model": {"arch": "small_cnn"}, "train": {"epochs": 3, "lr": 0.05, "progress": False},
                        "methods": [{"name": "tdds", "params": {"T": 3, "W": 2}}], "selection": {"rates": [0.5]},
                        "coreset": {"batch_size": 32}, "tracking": {"enabled": False}})
    res = run_grid(cfg)
    core = [r for r in res.rows if r["rate"] == 0.5][0]
    assert core["num_train"] == 600
    assert core["final_acc"] > 40.0  # chance is 10%


def _store_files(out) -> dict:
    """Every artifact file of the store (not the MLflow database, reports or caches) -> mtime."""
    skip = ("mlflow.db", "mlartifacts", "report", "kfp")
    return {p: p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and not any(part in skip for part in p.relative_to(out).parts[:1])}


def _runs(db) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=1000)]


@pytest.mark.slow
def test_runtime_fields_reuse_every_artifact_and_run_identity_fields_make_new_ones(tmp_path):
    out = tmp_path / "out"
    base = {**SYN, "output": str(out), "tracking": {"enabled": True}}
    first = run_grid(parse_config(base))
    files, runs = _store_files(out), _runs(out / "mlflow.db")
    # parent (which holds the report), train-full, 2 score runs, 2 coreset runs, 2 summary runs (one per method, #26)
    assert len(runs) == 1 + 1 + 2 + 2 + 2
    # runtime settings: progress bars, eval batch size, loader workers, residency, numerics that a CPU does not apply
    runtime = {**base, "train": {**SYN["train"], "progress": True, "eval_batch_size": 7, "amp": "off",
                                 "compile": True},
               "data": {**SYN["data"], "num_workers": 0, "resident": "never"}}
    second = run_grid(parse_config(runtime))
    assert _store_files(out) == files, "a runtime setting rewrote an artifact"
    assert len(_runs(out / "mlflow.db")) == len(runs), "a runtime setting opened new MLflow runs"
    assert [r["final_acc"] for r in second.rows] == [r["final_acc"] for r in first.rows]
    # an identity setting of the coreset stage: new coreset artifacts and runs, the rest reused
    ident = {**base, "coreset": {"batch_size": 8}}
    run_grid(parse_config(ident))
    now = _store_files(out)
    assert all(now[p] == t for p, t in files.items())
    new = [p for p in now if p not in files]
    assert new and all(p.relative_to(out).parts[0] == "coreset" for p in new)
    grown = _runs(out / "mlflow.db")
    added = {r.data.tags["tdds.stage"] for r in grown if r.info.run_id not in {x.info.run_id for x in runs}}
    assert added == {"pipeline", "coreset", "summary"}     # issue #26: the new report's summary runs


@pytest.mark.slow
def test_each_method_trains_with_its_own_weighting_and_the_table_says_so(tmp_path):
    out = tmp_path / "out"
    cfg = _cfg(tmp_path, tracking={"enabled": True},
               methods=[{"name": "random"}, {"name": "tdds", "params": {"T": 3, "W": 3}},
                        {"name": "tdds", "params": {"T": 3, "W": 3}, "label": "tdds-mean1", "weighting": "mean1"}])
    res = run_grid(cfg)   # (W=3: with W=2 every TDDS score is 0, one difference per window)
    rows = {r["method"]: r for r in res.rows if r["rate"] is not None}
    assert rows["random"]["weighting"] == "none" and rows["random"]["mean_weight"] == 1.0      # baselines: unweighted
    assert rows["tdds[T=3,W=3]"]["weighting"] == "batch" and rows["tdds[T=3,W=3]"]["mean_weight"] < 1.0
    assert rows["tdds-mean1"]["weighting"] == "mean1" and abs(rows["tdds-mean1"]["mean_weight"] - 1.0) < 1e-9
    # the same selection, another weighting: another coreset run
    assert rows["tdds-mean1"]["uri"] != rows["tdds[T=3,W=3]"]["uri"]
    assert "tdds[T=3,W=3] [loss weighting: batch]" in res.table_md and "| random (baseline) |" in res.table_md
    assert "weighting" in (res.report_dir / "table.csv").read_text().splitlines()[0]
    coreset = [r for r in _runs(out / "mlflow.db") if r.data.tags.get("tdds.stage") == "coreset"]
    assert sorted((r.data.tags["tdds.label"], r.data.params["weighting"]) for r in coreset) == [
        ("random", "none"), ("tdds-mean1", "mean1"), ("tdds[T=3,W=3]", "batch")]
    assert all("mean_weight" in r.data.metrics for r in coreset)


def test_only_methods_keeps_the_named_rows_and_refuses_unknown_ones():
    from tdds_core.errors import ConfigError
    from tdds_core.grid import only_methods, split_names

    cfg = parse_config({"methods": [{"name": "random"}, {"name": "dual", "params": {"epochs": 3, "window": 3}},
                                    {"name": "tdds", "label": "tdds-rule"}]})
    assert split_names("random, dual[epochs=3,window=3]") == ["random", "dual[epochs=3,window=3]"]
    kept = only_methods(cfg, split_names("random,dual[epochs=3,window=3]"))
    assert [m.name for m in kept.methods] == ["random", "dual"] and len(cfg.methods) == 3
    assert [m.label for m in only_methods(cfg, ["tdds-rule"]).methods] == ["tdds-rule"]
    with pytest.raises(ConfigError, match="el2n"):
        only_methods(cfg, ["el2n"])


@pytest.mark.slow
def test_concurrent_coreset_runs_match_sequential_ones(tmp_path, monkeypatch):
    """coreset.concurrent_runs: the coreset trainings of a grid as two spawned processes give the same
    accuracies as one after another, and log their MLflow runs under the grid's parent."""
    import torch
    from mlflow import MlflowClient

    from tdds_core import concurrent

    spawned = []
    real_spawn = concurrent._spawn
    monkeypatch.setattr(concurrent, "_spawn", lambda job: spawned.append(job["item_json"]) or real_spawn(job))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # the same torch threads in both runs (a worker gets threads // 2, at least 1)
    try:
        base = {**SYN, "selection": {"rates": [0.5, 0.7]},
                "tracking": {"enabled": True, "log_models": "none", "system_metrics": False}}
        seq = run_grid(parse_config({**base, "output": str(tmp_path / "seq")}))
        par = run_grid(parse_config({**base, "output": str(tmp_path / "par"), "coreset": {**SYN["coreset"], "concurrent_runs": 2}}))
    finally:
        torch.set_num_threads(threads)
    acc = lambda res: sorted((r["method"], r["rate"] or 0, r["final_acc"], r["num_train"]) for r in res.rows)  # noqa: E731
    assert len(par.rows) == 5 and acc(par) == acc(seq)
    assert len(spawned) == 4, "each coreset training runs in a worker process"
    client = MlflowClient(f"sqlite:///{tmp_path / 'par' / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    coreset = [r for r in runs if r.data.tags.get("tdds.stage") == "coreset"]
    assert len(coreset) == 4 and {r.data.tags["mlflow.parentRunId"] for r in coreset} == {par.run_id}
    assert all(r.info.status == "FINISHED" for r in coreset)


def test_dry_run_validates_and_trains_nothing(tmp_path, capsys):
    """`tdds grid --dry-run`: the plan, the dataset and what the full-data run records, printed; no
    folder written; a bad method option is refused the same way."""
    from pathlib import Path

    from tdds_core.cli import main

    config = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
    out = tmp_path / "out"
    assert main(["grid", "--config", config, "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "config quickstart: valid" in printed and "records logits" in printed and "score settings" in printed
    assert not out.exists()
    assert main(["grid", "--config", config, "--out", str(out), "--dry-run",
                 "--set", "methods=[{name: tdds, params: {window: 3}}]"]) == 2
    assert "window" in capsys.readouterr().err and not out.exists()
