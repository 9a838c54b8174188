"""The pipeline's tasks called directly (no KFP): every stage run item by item from the state of
the stages before it, each loop's parts merged by a fan-in, exactly as the KFP DAG wires them. A
tiny synthetic dataset and a real (2-epoch) full-data run; tracking off."""
from __future__ import annotations

import json

import pytest

from fixtures_config import synthetic_config
from tdds_core import steps
from tdds_core.config import parse_config
from tdds_core.errors import ArtifactError, ConfigError, PipelineError
from tdds_core.plan import Plan
from tdds_core.selection import load_selection
from tdds_core.stage_registry import State, chain

CFG = synthetic_config(64, 32, 8, name="steps", width=4, epochs=2, batch_size=32,
                       dynamics={"save_features": False},
                       methods=[{"name": "random"}, {"name": "tdds", "params": {"T": 2, "W": 2}, "rates": [0.25]}],
                       selection={"rates": [0.25, 0.5]}, coreset={"batch_size": 16, "epochs": 1},
                       evaluate={"archs": ["small_cnn"], "rates": []}, tracking={"enabled": False})


def _run_chain(cfg, until: str | None = None) -> dict[str, State]:
    """Every stage's tasks in order, as the DAG runs them; the state after each stage."""
    _, fingerprint = steps.open_run(cfg.to_json(), run_id="r1")
    plan, state, after = Plan.from_config(cfg), None, {}
    for stage in chain():
        config_json = steps.stage_config_json(cfg, stage.name) if stage.cached else cfg.to_json()
        parts = [steps.run_task(stage.name, config_json, item, state=state, fingerprint=fingerprint)
                 for item in plan.items_json(stage.loop)]
        state = parts[0] if state is None else steps.collect(state, parts)
        after[stage.name] = state
        if stage.name == until:
            break
    return after


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    cfg = parse_config({**CFG, "output": str(tmp_path_factory.mktemp("out"))})
    return cfg, _run_chain(cfg)


def test_plan_has_one_rate_item_per_rate():
    cfg = parse_config({**CFG, "output": "/tmp/unused"})
    plan = Plan.from_config(cfg)
    # random at 0.25 and 0.5, tdds (its own rates) only at 0.25
    assert [(r.rate, sorted(p.score.label for p in r.pairs)) for r in plan.rates] == [
        (0.25, ["random", "tdds[T=2,W=2]"]), (0.5, ["random"])]
    assert sorted(p.key for r in plan.rates for p in r.pairs) == sorted(p.key for p in plan.pairs)
    from tdds_core.plan import parse_item

    assert [parse_item("rates", x) for x in plan.items_json("rates")] == list(plan.rates)


def test_each_stage_adds_its_artifacts_to_the_state(states):
    cfg, after = states
    plan = Plan.from_config(cfg)
    final = after["report"]
    assert set(final.refs) == {"train-full", "score", "select", "coreset"}
    assert sorted(final.refs["score"]) == sorted(s.key for s in plan.scores)
    assert sorted(final.refs["select"]) == sorted(p.key for p in plan.pairs)
    for pair in plan.pairs:
        ref = final.refs["select"][pair.key]
        sel = load_selection(ref.uri, expected_fingerprint=final.fingerprint)
        assert ref.rate == pair.rate and sel.num_selected == round(64 * (1 - pair.rate))
    # rows: the full-data row, then one coreset row per (pair, seed)
    assert [(r["method"], r["rate"]) for r in final.rows] == [("full", None)] + [(p.score.label, p.rate)
                                                                                for p in plan.pairs]
    assert all(r["num_train"] == round(64 * (1 - r["rate"])) for r in final.rows[1:])
    # a state holds no per-run values: running again gives the same state
    assert steps.collect(after["select"], []) == after["select"]


def test_a_rerun_reuses_every_artifact(states):
    cfg, after = states
    again = _run_chain(cfg)
    assert again["report"].refs == after["report"].refs
    assert [r["final_acc"] for r in again["report"].rows] == [r["final_acc"] for r in after["report"].rows]


def test_collect_refuses_what_does_not_fit(states):
    _, after = states
    st = after["score"]
    other = State(fingerprint="0" * 64)
    with pytest.raises(ArtifactError, match="two dataset versions"):
        steps.collect(st, [other])
    clash = st.part("score", {k: r.model_copy(update={"uri": r.uri + "-other"}) for k, r in st.refs["score"].items()})
    with pytest.raises(ArtifactError, match="two different score outputs"):
        steps.collect(st, [clash])
    with pytest.raises(ArtifactError, match="no select output for"):
        st.ref("select", "random@p0.25")


def test_tasks_refuse_bad_items_and_missing_inputs(states):
    cfg, after = states
    with pytest.raises(ConfigError, match="is not a 'rates' item of the plan"):
        steps.run_task("select", steps.stage_config_json(cfg, "select"), "0.5", state=after["score"])
    with pytest.raises(PipelineError, match="neither an input state nor a dataset fingerprint"):
        steps.run_task("train-full", steps.stage_config_json(cfg, "train-full"))
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        steps.run_task("nope", cfg.to_json(), state=after["score"])
    with pytest.raises(ArtifactError, match="not a tdds state"):
        steps.read_state({"format": "tdds-pointer/1"})


def test_select_config_ignores_rates_and_methods():
    # select's cache key: the selection options only; the loop item names the pairs
    cfg = parse_config({**CFG, "output": "/tmp/unused"})
    grown = cfg.model_copy(update={"selection": cfg.selection.model_copy(update={"rates": [0.25, 0.5, 0.75]}),
                                   "methods": cfg.methods[:1]})
    assert steps.stage_config_json(grown, "select") == steps.stage_config_json(cfg, "select")
    assert Plan.from_config(grown).items_json("rates")[:1] != Plan.from_config(cfg).items_json("rates")[:1]
    balanced = cfg.model_copy(update={"selection": cfg.selection.model_copy(update={"class_balanced": True})})
    assert steps.stage_config_json(balanced, "select") != steps.stage_config_json(cfg, "select")


def test_concurrent_runs_of_one_config_attach_to_their_own_parents(tmp_path, monkeypatch):
    """Two pipeline runs of the same config open at once: a cached stage task (which gets no parent
    run id) finds its own run's parent through $TDDS_PIPELINE_INSTANCE, not the newest RUNNING one."""
    from tdds_core.tracking import TAG_PARENT_RUN, make_tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = parse_config({**CFG, "output": str(tmp_path / "out"), "tracking": {"enabled": True, "log_models": "none",
                                                                            "system_metrics": False}})
    parents = {}
    for instance in ("wf-a", "wf-b"):            # wf-b opens last: the newest RUNNING parent of this config
        monkeypatch.setenv(steps.PIPELINE_INSTANCE_ENV, instance)
        parents[instance], fingerprint = steps.open_run(cfg.to_json(), run_id=f"run-{instance}")
    assert parents["wf-a"] != parents["wf-b"]
    monkeypatch.setenv(steps.PIPELINE_INSTANCE_ENV, "wf-a")
    state = steps.run_task("train-full", steps.stage_config_json(cfg, "train-full"), "{}", fingerprint=fingerprint)
    tracker = make_tracker(cfg)
    train = tracker.find_runs(tags={"tdds.stage": "train-full"})
    assert [r.tags[TAG_PARENT_RUN] for r in train] == [parents["wf-a"]]
    assert train[0].tags["tdds.pipeline_run_id"] == "run-wf-a"
    assert tracker.get_run(parents["wf-a"]).tags[steps.TAG_PIPELINE_INSTANCE] == "wf-a"
    # without an instance (a pipeline compiled before it existed) the pipeline key still finds a parent
    monkeypatch.delenv(steps.PIPELINE_INSTANCE_ENV)
    assert steps._stage_tracker(cfg, fingerprint).parent_id == parents["wf-b"]
    assert state.refs["train-full"]


@pytest.mark.slow
def test_a_coreset_task_trains_its_seeds_side_by_side(tmp_path, monkeypatch):
    """coreset.concurrent_runs in a KFP coreset task: each seed in its own worker process, the same
    rows as one seed after another."""
    import torch

    from tdds_core import concurrent

    spawned = []
    real = concurrent._spawn
    monkeypatch.setattr(concurrent, "_spawn", lambda job: spawned.append(job) or real(job))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows, weights = {}, {}
        for name, extra in (("seq", {}), ("par", {"concurrent_runs": 2})):
            cfg = parse_config({**CFG, "output": str(tmp_path / name), "coreset": {**CFG["coreset"], "seeds": [1, 2], **extra}})
            state = _run_chain(cfg)["coreset"]
            rows[name] = sorted((r["method"], r["rate"], r["seed"], r["final_acc"]) for r in state.rows if r["rate"])
            weights[name] = {k: torch.load(f"{ref.uri}/model.pt", weights_only=False)["state_dict"]
                             for k, ref in state.refs["coreset"].items()}
    finally:
        torch.set_num_threads(threads)
    assert len(rows["par"]) == 6 and rows["par"] == rows["seq"]
    assert weights["par"].keys() == weights["seq"].keys() and len(weights["par"]) == 6
    for k, sd in weights["par"].items():     # the same trained weights, bit for bit
        assert all(torch.equal(v, weights["seq"][k][n]) for n, v in sd.items()), k
    assert len(spawned) == 6 and sorted({json.loads(j["config_json"])["coreset"]["seeds"][0] for j in spawned}) == [1, 2]
