"""The pipeline's steps called directly (no KFP): the score fan-in, one materialize step per pruning
rate, the selections fan-in, and the coreset step reading its pair from the merged pointer. A tiny
synthetic dataset and a real (2-epoch) full-data run; tracking off."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tdds_core import steps
from tdds_core.config import parse_config
from tdds_core.errors import ArtifactError, PipelineError
from tdds_core.selection import load_selection

CFG = {"name": "steps", "data": {"name": "synthetic", "options": {"num_train": 64, "num_test": 32, "image_size": 8}},
       "model": {"arch": "small_cnn", "options": {"width": 4}},
       "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "progress": False},
       "dynamics": {"save_features": False},
       "methods": [{"name": "random"}, {"name": "tdds", "params": {"T": 2, "W": 2}, "rates": [0.25]}],
       "selection": {"rates": [0.25, 0.5]}, "coreset": {"batch_size": 16, "epochs": 1},
       "evaluate": {"archs": ["small_cnn"], "rates": []}, "tracking": {"enabled": False}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = parse_config({**CFG, "output": str(tmp_path_factory.mktemp("out"))})
    config_json = cfg.to_json()
    _, fingerprint = steps.open_run(config_json, run_id="r1")
    train = steps.train_full(steps.stage_config_json(cfg, "train-full"), fingerprint=fingerprint)
    plan = steps.pipeline_plan(cfg)
    scores = [steps.score(steps.stage_config_json(cfg, "score"), method_json=item, train_pointer=train.pointer).pointer
              for item in plan.score_items]
    return cfg, plan, train.pointer, scores


def test_plan_has_one_rate_item_per_rate(trained):
    cfg, plan, _, _ = trained
    # random at 0.25 and 0.5, tdds (its own rates) only at 0.25
    assert [(r["rate"], sorted(p["label"] for p in r["pairs"])) for r in plan.rates] == [
        ("0.25", ["random", "tdds[T=2,W=2]"]), ("0.5", ["random"])]
    assert sorted(p["key"] for r in plan.rates for p in r["pairs"]) == sorted(p["key"] for p in plan.pairs)
    assert [json.loads(x) for x in plan.rate_items] == plan.rates


def test_collect_scores_then_one_selection_per_rate(trained, tmp_path):
    cfg, plan, train, scores = trained
    score_set = steps.collect(scores, "score-set").pointer
    assert score_set["kind"] == "score-set" and sorted(score_set["items"]) == sorted(s["key"] for s in plan.scores)
    assert score_set["uri"] == str(Path(cfg.output) / "scores") and score_set["key"] == "scores"
    select_cfg = steps.stage_config_json(cfg, "select")
    per_rate = [steps.select(select_cfg, train_pointer=train, scores=score_set, rate_json=item)
                for item in plan.rate_items]
    assert [sorted(r.pointer["items"]) for r in per_rate] == [sorted(p["key"] for p in r["pairs"]) for r in plan.rates]
    for result, item in zip(per_rate, plan.rates):
        for p in result.pointer["items"].values():
            assert p["rate"] == float(item["rate"])
            sel = load_selection(p["uri"], expected_fingerprint=train["fingerprint"])
            assert sel.num_selected == round(64 * (1 - float(item["rate"]))) == p["num_selected"]
    # the fan-in: every pair once, pointing at the same folders as the per-rate outputs
    merged = steps.collect([r.pointer for r in per_rate], "selections").pointer
    assert merged["kind"] == "selections" and merged["train_uri"] == train["uri"]
    assert merged["items"] == {k: v for r in per_rate for k, v in r.pointer["items"].items()}
    assert sorted(merged["items"]) == sorted(p["key"] for p in plan.pairs)
    # every pair of the (whole) config's plan in one call, from a list of score pointers: the same
    everything = steps.select(cfg.to_json(), train_pointer=train, scores=scores)
    assert everything.pointer["items"] == merged["items"]
    # a coreset step finds its pair in the merged pointer
    pair = next(p for p in plan.pairs if p["label"] == "tdds[T=2,W=2]")
    out = steps.train_coreset(steps.stage_config_json(cfg, "coreset"), selections=merged, pair_json=json.dumps(pair))
    assert out.rows[0]["num_train"] == 48 and out.pointer["selection_uri"] == merged["items"][pair["key"]]["uri"]


def test_collect_and_select_refuse_what_does_not_fit(trained):
    cfg, plan, train, scores = trained
    with pytest.raises(ArtifactError, match="no scores outputs to merge"):
        steps.collect([], "score-set")
    with pytest.raises(PipelineError, match="unknown kind"):
        steps.collect(scores, "models")
    other = dict(scores[0], fingerprint="0" * 64)
    with pytest.raises(ArtifactError, match="2 dataset versions"):
        steps.collect([scores[0], other], "score-set")
    clash = dict(scores[0], uri=scores[0]["uri"] + "-other")
    with pytest.raises(ArtifactError, match="two different scores outputs"):
        steps.collect([scores[0], clash], "score-set")
    with pytest.raises(ArtifactError, match="expected a 'scores' pointer"):
        steps.collect([train], "score-set")
    select_cfg = steps.stage_config_json(cfg, "select")
    score_set = steps.collect(scores, "score-set").pointer
    with pytest.raises(PipelineError, match="does not list the pipeline plan's pairs; compile the pipeline again"):
        steps.select(select_cfg, train_pointer=train, scores=score_set, rate_json=json.dumps({"rate": "0.7", "pairs": ["x@p0.70"]}))
    with pytest.raises(PipelineError, match="not an item of the pipeline plan"):
        steps.select(select_cfg, train_pointer=train, scores=score_set, rate_json="0.5")
    only_random = steps.collect([s for s in scores if s["method"] == "random"], "score-set").pointer
    with pytest.raises(ArtifactError, match="no scores for 'tdds"):
        steps.select(select_cfg, train_pointer=train, scores=only_random, rate_json=plan.rate_items[0])


def test_select_config_ignores_rates_and_methods(trained):
    # materialize's cache key: the selection options only; the loop item names the pairs
    cfg, plan, _, _ = trained
    grown = cfg.model_copy(update={"selection": cfg.selection.model_copy(update={"rates": [0.25, 0.5, 0.75]}),
                                   "methods": cfg.methods[:1]})
    assert steps.stage_config_json(grown, "select") == steps.stage_config_json(cfg, "select")
    assert steps.pipeline_plan(grown).rate_items[:1] != plan.rate_items[:1]    # 0.25 lost its tdds pair
    balanced = cfg.model_copy(update={"selection": cfg.selection.model_copy(update={"class_balanced": True})})
    assert steps.stage_config_json(balanced, "select") != steps.stage_config_json(cfg, "select")
