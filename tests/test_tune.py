"""`tdds tune` on a small real Fashion-MNIST subset: settings chosen on the validation split, the
test labels never read, and the written config is what the following grid runs."""
from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from tdds_core.config import load_config, parse_config
from tdds_core.data import create_dataset
from tdds_core.data.datasets import FASHION_MNIST_DEFAULT, read_idx
from tdds_core.errors import ConfigError
from tdds_core.grid import run_grid
from tdds_core.plan import Plan, coreset_weighting, format_rate
from tdds_core.tune import paper_rule, tune, tune_config

CFG = {"name": "tn", "data": {"name": "fashion-mnist", "train_subset": 500, "val_size": 160, "test_subset": 200},
       "model": {"arch": "small_cnn_fc", "options": {"width": 8, "hidden": 32}},
       "train": {"epochs": 4, "batch_size": 50, "lr": 0.05, "augment": False, "eval_every": 4, "progress": False},
       "methods": [{"name": "random"}, {"name": "tdds", "params": {"T": 4, "W": 3}}],
       "selection": {"rates": [0.5, 0.8]}, "coreset": {"batch_size": 32, "seeds": [0]}, "evaluate": {"rates": []},
       "tune": {"grid": {"T": [3, 4], "W": [3, 5], "weighting": ["batch", "none"]}, "seeds": [0]},
       "tracking": {"enabled": False}}


def _root_with_shifted_test_labels(tmp: Path) -> Path:
    """A copy of the Fashion-MNIST folder whose test labels are all wrong ((y + 1) mod 10)."""
    src = Path(FASHION_MNIST_DEFAULT)
    root = tmp / "fm-shifted"
    root.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        os.symlink(src / name, root / name)
    y = (read_idx(src / "t10k-labels-idx1-ubyte.gz").astype(np.int64) + 1) % 10
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, len(y)) + y.astype(np.uint8).tobytes())
    return root


def test_paper_rule_scales_the_cifar100_settings_to_the_run():
    assert paper_rule(0.3, 200) == {"T": 90, "W": 10} and paper_rule(0.9, 200) == {"T": 10, "W": 5}
    assert paper_rule(0.3, 10) == {"T": 5, "W": 3}          # 4.5 rounds up; W = 0.5 is raised to 3
    assert paper_rule(0.7, 10) == {"T": 3, "W": 3} and paper_rule(0.75, 40) == {"T": 12, "W": 4}
    assert all(3 <= r["W"] <= r["T"] <= 10 for r in (paper_rule(p, 10) for p in (0.3, 0.5, 0.7, 0.8, 0.9)))


def test_tune_needs_a_validation_split_and_a_known_method():
    with pytest.raises(ConfigError, match="data.val_size"):
        tune_config(parse_config({**CFG, "data": {"name": "fashion-mnist", "train_subset": 500}}))
    with pytest.raises(ConfigError, match="tune.method"):
        tune_config(parse_config({**CFG, "tune": {"method": "el2n"}}))
    with pytest.raises(ConfigError, match="evaluate_on"):
        parse_config({"data": {"evaluate_on": "validation"}})


@pytest.mark.slow
def test_tune_chooses_on_validation_never_reads_test_labels_and_the_grid_runs_its_choice(tmp_path):
    cfg = parse_config({**CFG, "output": str(tmp_path / "a")})
    tcfg, cands = tune_config(cfg)
    # the candidate runs measure on the held-out training samples: the test split is gone before any stage
    splits = create_dataset(tcfg.data)
    held = set(create_dataset(cfg.data).info["validation_ids"])
    assert set(splits.test.ids) == held and not held & set(splits.train.ids) and len(held) == 160
    assert len(cands) == 2 * 2 - 1 + 2 - 1  # (3,3) (4,3) valid, (3,5) (4,5) refused (W > T); x 2 weightings
    assert {c[0] for c in cands} == {"tdds[T=3,W=3,weighting=batch]", "tdds[T=3,W=3,weighting=none]",
                                     "tdds[T=4,W=3,weighting=batch]", "tdds[T=4,W=3,weighting=none]"}

    written = tmp_path / "tuned.yaml"
    res = tune(cfg, written)
    # the same tune with every test label wrong chooses the same, from the same validation accuracies
    shifted = parse_config({**CFG, "output": str(tmp_path / "b"),
                            "data": {**CFG["data"], "root": str(_root_with_shifted_test_labels(tmp_path))}})
    assert not np.array_equal(create_dataset(shifted.data).test.labels, create_dataset(cfg.data).test.labels)
    other = tune(shifted)
    assert other.chosen == res.chosen
    assert [(t["label"], t["rate"], t["mean"]) for t in other.table] == [(t["label"], t["rate"], t["mean"]) for t in res.table]

    # per rate, the chosen candidate (T, W and weighting) has the best validation accuracy
    for rate, chosen in res.chosen.items():
        pool = [t for t in res.table if t["rate"] == rate and t["label"].startswith("tdds[")]
        pick = [t for t in pool if t["chosen"]]
        assert len(pick) == 1 and pick[0]["mean"] == max(t["mean"] for t in pool)
        assert pick[0]["label"] == f"tdds[T={chosen['T']},W={chosen['W']},weighting={chosen['weighting']}]"
    assert "**" in res.report and "random" in res.report

    # the written config is what the grid runs: tuned (T, W) per rate, the chosen weighting, the rule row beside
    tuned = load_config(written)
    assert tuned.data.evaluate_on == "test" and tuned.data.val_size == 160
    pairs = {(p.score.label, p.rate): p.score.params for p in Plan.from_config(tuned).pairs}
    for rate, chosen in res.chosen.items():
        assert {k: pairs[("tdds", rate)][k] for k in ("T", "W")} == {k: chosen[k] for k in ("T", "W")}
        assert "weighting" not in pairs[("tdds", rate)]            # a coreset setting, not a scorer option
        assert coreset_weighting(tuned, next(m for m in tuned.methods if m.label == "tdds"), rate) == chosen["weighting"]
        assert pairs[("tdds-rule", rate)] == {**CFG["methods"][1]["params"], **paper_rule(rate, 4)}
    grid = run_grid(tuned)
    used = [json.loads(p.read_text()) for p in (tmp_path / "a" / "scores").glob("*/score.json")]
    assert {json.dumps(u["params"], sort_keys=True) for u in used if u["label"] == "tdds"} == {
        json.dumps({**CFG["methods"][1]["params"], "T": c["T"], "W": c["W"]}, sort_keys=True) for c in res.chosen.values()}
    rows = {(r["method"], r["rate"]) for r in grid.rows}
    assert {("tdds", 0.5), ("tdds", 0.8), ("tdds-rule", 0.5), ("random", 0.8)} <= rows
    for r in grid.rows:
        if r["method"] == "tdds":
            assert r["weighting"] == res.chosen[r["rate"]]["weighting"]


CHOOSE = {**CFG, "methods": [{"name": "random"}, {"name": "el2n", "params": {"k": 2}}, {"name": "tdds", "params": {"T": 4, "W": 3}}],
          "selection": {"rates": [0.5, 0.8]},
          "tune": {"choose": ["all"], "grid": {"T": [3, 4], "W": [3], "weighting": ["batch", "none"]},
                   "grids": {"el2n": {"weighting": ["none", "mean1"]}}, "seeds": [0, 1], "budget": 7, "epochs": 2}}


def test_choose_candidates_span_methods_settings_and_weightings():
    from tdds_core.tune import choose_candidates
    cfg = parse_config(CHOOSE)
    labels = [c.label for c in choose_candidates(cfg)]
    assert labels == ["random", "el2n[k=2,weighting=none]", "el2n[k=2,weighting=mean1]", "tdds[T=3,W=3,weighting=batch]",
                      "tdds[T=3,W=3,weighting=none]", "tdds[T=4,W=3,weighting=batch]", "tdds[T=4,W=3,weighting=none]"]
    with pytest.raises(ConfigError, match="tune.budget"):
        from tdds_core.tune import choose
        choose(parse_config({**CHOOSE, "tune": {**CHOOSE["tune"], "budget": 3}}))
    with pytest.raises(ConfigError, match="at least 2 tune.seeds"):
        choose(parse_config({**CHOOSE, "tune": {**CHOOSE["tune"], "seeds": [0]}}))
    with pytest.raises(ConfigError, match="tune.choose"):
        choose_candidates(parse_config({**CHOOSE, "tune": {**CHOOSE["tune"], "choose": ["ccs"]}}))


@pytest.mark.slow
def test_tune_chooses_the_coreset_on_validation_and_the_recommended_row_is_its_choice(tmp_path):
    cfg = parse_config({**CHOOSE, "output": str(tmp_path / "a")})
    written = tmp_path / "tuned.yaml"
    res = tune(cfg, written)
    # successive halving: 7 candidates on seed 0, the better 4 per rate on seed 1; the choice has n = 2
    for rate, rec in res.recommended.items():
        at = [t for t in res.table if t["rate"] == rate]
        assert len(at) == 7 and sum(t["n"] == 2 for t in at) == 4
        assert rec["n"] == 2 and rec["mean"] == max(t["mean"] for t in at if t["n"] == 2)
        assert [t["label"] for t in at if t["chosen"]] == [rec["label"]]
        assert f"p={format_rate(rate)}: {rec['label']}" in res.report
    # the same choice, from the same validation accuracies, when every test label is wrong
    shifted = parse_config({**CHOOSE, "output": str(tmp_path / "b"),
                            "data": {**CFG["data"], "root": str(_root_with_shifted_test_labels(tmp_path))}})
    other = tune(shifted)
    assert other.recommended == res.recommended
    assert [(t["label"], t["rate"], t["mean"], t["n"]) for t in other.table] == \
        [(t["label"], t["rate"], t["mean"], t["n"]) for t in res.table]
    # the written config's recommended row is, per rate, the chosen candidate's setting
    tuned = load_config(written)
    from tdds_core.tune import choose_candidates
    cands = {c.label: c for c in choose_candidates(cfg)}
    recs = [m for m in tuned.methods if m.label == "recommended"]
    assert sorted(r for m in recs for r in m.rates) == sorted(res.recommended)
    for m in recs:
        (rate,) = m.rates
        c = cands[res.recommended[rate]["label"]]
        assert (m.name, m.params, m.weighting or None) == (c.name, c.params_for(rate), c.weighting or None)
    grid = run_grid(tuned.model_copy(update={"methods": [m for m in tuned.methods if m.label in ("random", "recommended")]}))
    assert {(r["method"], r["rate"]) for r in grid.rows} >= {("recommended", 0.5), ("recommended", 0.8)}
