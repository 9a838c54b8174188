"""Selection strategies (issue #27): each strategy applied to the scores of a method other than its own,
against a plain transcription of its source's definition written here; the methods' defaults (CCS's
stratified sampling, DUAL's Beta sampling by rate); the store keys of default selections; the select
stage over a plan with ``strategy: ccs`` on TDDS scores; ``tdds select --strategy``; ``epochs_read``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tdds_core import plan as P
from tdds_core.cli import main
from tdds_core.config import parse_config
from tdds_core.dynamics import DynamicsWriter, open_dynamics
from tdds_core.errors import ConfigError, ScoringError
from tdds_core.io import write_manifest
from tdds_core.names import ELAPSED_S, STAGE_SCORE, STAGE_SELECT, STAGE_TRAIN_FULL
from tdds_core.scoring import (compute_scores, default_strategy, dual_from_epochs, epochs_read, get_sampler,
                               list_methods, mean_target_probability, registered, selection_strategy,
                               strategy_context)
from tdds_core.selection import load_selection, num_to_keep, select, tie_break_keys
from tdds_core.stage_registry import Context, Ref, State
from tdds_core.stages.score import score as score_stage
from tdds_core.stages.select import run as run_select_stage
from tdds_core.strategies import (STRATEGIES, StrategyContext, dual_beta_weights, list_strategies, register_strategy,
                                  resolve_strategy_params, strategy_options, strategy_sampler)

N, C, T = 120, 4, 12


def trajectory(n: int, t_max: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    drift = rng.random((n, 1)) * 0.6
    return np.stack([rng.standard_normal((n, c)) * 2 + np.eye(c)[y] * drift * t for t in range(t_max)]), y


def write_dynamics(folder: Path, X: np.ndarray, y: np.ndarray, fingerprint: str = "fp-strat"):
    w = DynamicsWriter(folder, ids=[f"s{i:04d}" for i in range(X.shape[1])], labels=y, num_classes=X.shape[2],
                       fingerprint=fingerprint, dtype="float32")
    for t in range(X.shape[0]):
        w.write_epoch(t, X[t])
    w.finalize()
    return open_dynamics(folder)


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    """A recording of N samples over T epochs, its logits as stored (float32) and labels."""
    X, y = trajectory(N, T, C, seed=3)
    folder = tmp_path_factory.mktemp("strategies") / "dynamics"
    return write_dynamics(folder, X, y), X.astype(np.float32).astype(np.float64), y


# ------------------------------------------------------------------------------------------ transcriptions
def source_topk(s, n_keep, seed):
    """The n_keep highest scores; among equal scores the lower key of the seeded permutation first."""
    key = tie_break_keys(len(s), seed)
    return sorted(range(len(s)), key=lambda i: (-s[i], key[i]))[:n_keep]


def source_class_balanced(s, y, rate, seed):
    """Per class, quota (1 - rate) n_c by largest remainder (ties to the lower class), top scores inside."""
    key = tie_break_keys(len(s), seed)
    classes = sorted(set(int(c) for c in y))
    n_keep = round((1 - rate) * len(s))
    exact = {c: (1 - rate) * int((y == c).sum()) for c in classes}
    quota = {c: math.floor(exact[c]) for c in classes}
    for c in sorted(classes, key=lambda c: (-(exact[c] - quota[c]), c))[: n_keep - sum(quota.values())]:
        quota[c] += 1
    kept = []
    for c in classes:
        members = [i for i in range(len(s)) if y[i] == c]
        kept += sorted(members, key=lambda i: (-s[i], key[i]))[: quota[c]]
    return kept


def source_ccs(s, n_keep, beta, seed, strata=50, hard_end="high"):
    """CCS (haizhongzheng/Coverage-centric-coreset-selection, core/data/Coreset.py): cut the floor(beta N)
    hardest, 50 strata of width (max * 1.0001 - min) / 50 over the rest, bin_allocate budgets from the
    smallest stratum up, a random permutation of each stratum's members (hardest first) in order."""
    n = len(s)
    hardest_first = sorted(range(n), key=lambda i: ((-s[i]) if hard_end == "high" else s[i], i))
    rest = hardest_first[int(math.floor(beta * n)):]
    lo, hi = min(s[i] for i in rest), max(s[i] for i in rest)
    step = (hi * 1.0001 - lo) / strata
    bins = [[i for i in rest if lo + k * step <= s[i] < lo + (k + 1) * step] for k in range(strata)]
    budget, left = [0] * strata, n_keep
    for j, k in enumerate(sorted(range(strata), key=lambda k: (len(bins[k]), k))):
        budget[k] = min(len(bins[k]), left // (strata - j))
        left -= budget[k]
    rng = np.random.default_rng(seed)
    chosen = []
    for k in range(strata):
        perm = rng.permutation(len(bins[k]))
        chosen += [bins[k][p] for p in perm[: budget[k]]]
    return sorted(chosen)


def source_pred_mean(X, y, epochs):
    """Mean over the first ``epochs`` epochs of softmax(logits)[y]."""
    p = np.exp(X[:epochs] - X[:epochs].max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    return p[:, np.arange(len(y)), y].mean(axis=0)


def source_beta_weights(score, pred_mean, n_keep, c_d=4.0):
    """DUAL (behaapyy/dual-pruning, exp_cifar/data_subset.py beta_sampling): anchor = mean pred_mean of the 10
    top-scored, r the pruning rate, b = 15 (1 - anchor)(1 - r^c_D), a = 16 - b, p ~ BetaPDF(pred_mean) * score."""
    n = len(score)
    r = 1 - n_keep / n
    anchor = float(np.mean([pred_mean[i] for i in sorted(range(n), key=lambda i: (-score[i], i))[:10]]))
    b = 15 * (1 - anchor) * (1 - r ** c_d)
    a = 16 - b
    pdf = [x ** (a - 1) * (1 - x) ** (b - 1) * math.gamma(a + b) / (math.gamma(a) * math.gamma(b)) for x in pred_mean]
    w = np.array(pdf) * score
    return w / w.sum()


# ------------------------------------------------------------------------------------------ the strategies
def test_registry_lists_the_four_with_their_options():
    assert {"topk", "class_balanced", "ccs", "dual_beta"} <= set(list_strategies())
    assert strategy_options("ccs") == {"beta": "auto", "strata": 50, "hard_end": None}
    assert strategy_options("dual_beta") == {"c_d": 4.0, "epochs": 30, "start": None}
    with pytest.raises(ConfigError, match="unknown selection strategy 'ccz'; the known ones are: ccs, class_balanced, "
                                          "dual_beta, topk"):
        resolve_strategy_params("ccz")
    with pytest.raises(ConfigError, match="unknown option 'betta' for selection strategy 'ccs'; valid options: beta"):
        resolve_strategy_params("ccs", {"betta": 0.1})
    for bad in ({"strata": 0}, {"beta": 1.5}, {"hard_end": "top"}):
        with pytest.raises(ScoringError, match="ccs: "):
            resolve_strategy_params("ccs", bad)
    with pytest.raises(ScoringError, match="dual_beta: c_d"):
        resolve_strategy_params("dual_beta", {"c_d": 0})


@pytest.mark.parametrize("rate,seed", [(0.5, 0), (0.8, 4), (0.9, 9)])
def test_topk_on_el2n_scores_matches_the_definition(rec, rate, seed):
    d, _, _ = rec
    s = np.round(compute_scores("el2n", d, k=4), 1)  # rounded: many ties at the cut-off
    n_keep = num_to_keep(rate, N)
    want = source_topk(s, n_keep, seed)
    topk = STRATEGIES.get("topk").fn
    got = topk(s, n_keep, labels=None, seed=seed, context=StrategyContext())
    assert got.tolist() == want
    assert strategy_sampler("topk") is None     # selection's own path: the same positions
    assert sorted(select(s, rate, labels=None, seed=seed).indices.tolist()) == sorted(want)


@pytest.mark.parametrize("rate,seed", [(0.3, 1), (0.7, 2), (0.9, 5)])
def test_class_balanced_on_tdds_scores_matches_the_definition(rec, rate, seed):
    d, _, y = rec
    s = np.round(compute_scores("tdds", d, T=8, W=3), 3)
    want = source_class_balanced(s, y, rate, seed)
    sampler = strategy_sampler("class_balanced", {}, strategy_context("tdds", {"T": 8, "W": 3}, rate=rate))
    sel = select(s, rate, labels=y, sampler=sampler, seed=seed)
    assert sorted(sel.indices.tolist()) == sorted(want)
    # the same selection as selection.class_balanced, byte for byte (order included)
    assert sel.indices.tolist() == select(s, rate, labels=y, class_balanced=True, seed=seed).indices.tolist()
    for c in range(C):  # the same fraction of every class
        assert abs(int((y[sel.indices] == c).sum()) - (1 - rate) * int((y == c).sum())) < 1
    # without a rate in the context the fraction is n_keep / N (same total)
    bare = strategy_sampler("class_balanced")(s, sel.num_selected, labels=y, seed=seed)
    assert len(bare) == sel.num_selected == len(set(bare.tolist()))
    with pytest.raises(ScoringError, match="needs labels"):
        strategy_sampler("class_balanced")(s, 10, labels=None, seed=0)


@pytest.mark.parametrize("rate,beta,strata,seed", [(0.9, 0.3, 50, 0), (0.7, 0.1, 50, 1), (0.8, "auto", 50, 2),
                                                   (0.5, 0.2, 7, 3), (0.9, "auto", 50, 4)])
def test_ccs_on_tdds_scores_matches_the_source(rec, rate, beta, strata, seed):
    d, _, _ = rec
    s = compute_scores("tdds", d, T=10, W=4)          # not AUM: the hard end is "high" (higher = harder)
    n_keep = num_to_keep(rate, N)
    b = {0.7: 0.1, 0.8: 0.1, 0.9: 0.3}[rate] if beta == "auto" else beta  # the CCS paper's CIFAR-10 row
    want = source_ccs(s, n_keep, b, seed, strata=strata, hard_end="high")
    choice = selection_strategy("tdds", {"T": 10, "W": 4}, rate, "ccs", {"beta": beta, "strata": strata})
    assert choice.name == "ccs" and not choice.default
    sampler = get_sampler("tdds", {"T": 10, "W": 4}, rate=rate, choice=choice)
    sel = select(s, rate, labels=None, sampler=sampler, seed=seed)
    assert sorted(sel.indices.tolist()) == want
    assert not np.isin(np.argsort(-s, kind="stable")[: int(b * N)], sel.indices).any()  # the hardest are cut
    # stated the other way round, the low end is cut
    low = strategy_sampler("ccs", {"beta": 0.3, "strata": strata, "hard_end": "low"})(s, n_keep, seed=seed)
    assert low.tolist() == source_ccs(s, n_keep, 0.3, seed, strata=strata, hard_end="low")


def test_ccs_hard_end_follows_the_scores_method():
    ctx = {m: StrategyContext(method=m) for m in ("aum", "moderate", "el2n", "tdds")}
    s = np.linspace(1.0, 2.0, 100)
    for m, c in ctx.items():
        kept = strategy_sampler("ccs", {"beta": 0.3, "strata": 5}, c)(s, 20, seed=0)
        cut = np.arange(30) if m in ("aum", "moderate") else np.arange(70, 100)
        assert not np.isin(cut, kept).any(), m
    ccs_on_aum = StrategyContext(method="ccs", method_params={"base": "aum"})
    assert strategy_sampler("ccs", {"beta": 0.3, "strata": 5}, ccs_on_aum)(s, 20, seed=0).min() >= 30


def test_pred_mean_from_the_dynamics_is_the_mean_target_probability(rec):
    d, X, y = rec
    np.testing.assert_allclose(mean_target_probability(d, 7), source_pred_mean(X, y, 7), rtol=1e-12)
    np.testing.assert_allclose(mean_target_probability(d, 40), source_pred_mean(X, y, T), rtol=1e-12)  # all there is
    _, dual_pm = dual_from_epochs(d.iter_epochs(0, 10), y, window=4, return_pred_mean=True)
    np.testing.assert_array_equal(mean_target_probability(d, 10), dual_pm)
    ctx = strategy_context("tdds", {"T": 8, "W": 3}, dynamics=d, rate=0.9)
    assert ctx.pred_mean(7, None) is ctx.pred_mean(7, None)   # read once


def test_dual_beta_on_tdds_scores_weights_and_seeded_draws(rec):
    d, X, y = rec
    s = compute_scores("tdds", d, T=10, W=4)
    ctx = strategy_context("tdds", {"T": 10, "W": 4}, dynamics=d, rate=0.8)
    sampler = strategy_sampler("dual_beta", {"epochs": 8, "c_d": 3}, ctx)
    assert sampler.__name__.startswith("dual_beta_sampler(c_d=3.0, epochs=8")
    a = select(s, 0.8, labels=y, sampler=sampler, seed=11)
    assert a.indices.tolist() == select(s, 0.8, labels=y, sampler=sampler, seed=11).indices.tolist()
    assert a.indices.tolist() != select(s, 0.8, labels=y, sampler=sampler, seed=12).indices.tolist()
    # the first draw's probabilities are the definition's weights
    want = source_beta_weights(s, source_pred_mean(X, y, 8), a.num_selected, c_d=3.0)
    np.testing.assert_allclose(dual_beta_weights(s, mean_target_probability(d, 8), a.num_selected, c_d=3.0), want,
                               rtol=1e-9)
    with pytest.raises(ScoringError, match="needs the training dynamics.*--dynamics"):
        strategy_sampler("dual_beta", {}, strategy_context("tdds", {"T": 10, "W": 4}, rate=0.8))
    with pytest.raises(ScoringError, match="class-balanced selection is not supported"):
        select(s, 0.8, labels=y, class_balanced=True, sampler=sampler, seed=0)


def test_dual_beta_inclusion_frequencies_follow_the_weights(tmp_path):
    """Sequential draws without replacement (numpy's choice(replace=False, p), which the authors call):
    with weights w, a sample is kept in a draw of 2 with probability w_i + sum_j w_j w_i / (1 - w_j)."""
    X, y = trajectory(12, 6, 3, seed=21)
    d = write_dynamics(tmp_path / "d", X, y)
    s = compute_scores("el2n", d, k=6)                 # any score: EL2N here
    w = source_beta_weights(s, source_pred_mean(X.astype(np.float32).astype(np.float64), y, 6), 2)
    p_keep = w + np.array([sum(w[j] * w[i] / (1 - w[j]) for j in range(12) if j != i) for i in range(12)])
    sampler = strategy_sampler("dual_beta", {"epochs": 6}, strategy_context("el2n", {"k": 6}, dynamics=d))
    draws = 4000
    counts = np.zeros(12)
    first = np.zeros(12)
    for seed in range(draws):
        kept = sampler(s, 2, labels=y, seed=seed)
        counts[kept] += 1
        first[kept[0]] += 1
    assert np.all(np.abs(counts / draws - p_keep) <= 4.5 * np.sqrt(p_keep * (1 - p_keep) / draws) + 1e-3)
    chi2 = float(((first - draws * w) ** 2 / (draws * w)).sum())   # first draws ~ w: 11 degrees of freedom
    assert chi2 < 31.26                                             # the 0.999 quantile of chi-square(11)


# ------------------------------------------------------------------------------------------ methods' defaults
def test_each_method_declares_its_default_strategy():
    assert default_strategy("ccs", {}, 0.9) == ("ccs", {"beta": "auto", "strata": 50, "hard_end": "low"})
    assert default_strategy("ccs", {"base": "el2n", "beta": 0.2}, 0.9)[1]["hard_end"] == "high"
    dual_beta = ("dual_beta", {"c_d": 4.0, "epochs": 30, "start": None})
    assert default_strategy("dual", {}, 0.9) == ("topk", {})                     # beta_sampling False (default)
    assert default_strategy("dual", {"beta_sampling": True}, 0.3) == dual_beta
    for rate, want in ((0.5, ("topk", {})), (0.7, ("topk", {})), (0.8, dual_beta), (0.9, dual_beta)):
        assert default_strategy("dual", {"beta_sampling": "auto"}, rate) == want, rate
    with pytest.raises(ScoringError, match="pass rate="):
        default_strategy("dual", {"beta_sampling": "auto"})
    for m in set(list_methods()) - {"ccs", "dual"}:
        assert default_strategy(m, {}, 0.9) == ("topk", {}), m


def test_dual_auto_selects_as_explicit_beta_sampling_at_high_rates(rec):
    d, _, y = rec
    params = {"epochs": 10, "window": 4}
    s = compute_scores("dual", d, **params)
    auto = get_sampler("dual", {**params, "beta_sampling": "auto"}, dynamics=d, rate=0.9)
    on = get_sampler("dual", {**params, "beta_sampling": True}, dynamics=d, rate=0.9)
    assert auto(s, 12, labels=y, seed=3).tolist() == on(s, 12, labels=y, seed=3).tolist()
    assert get_sampler("dual", {**params, "beta_sampling": "auto"}, dynamics=d, rate=0.5) is None


def test_strategy_choice_is_default_only_when_it_selects_as_the_method():
    assert selection_strategy("tdds", {}, 0.5).default and selection_strategy("tdds", {}, 0.5, "topk").default
    assert selection_strategy("ccs", {}, 0.9, "ccs").default                      # its own, said explicitly
    assert selection_strategy("ccs", {"beta": 0.2}, 0.9, None, {"beta": 0.2}).default
    assert not selection_strategy("ccs", {}, 0.9, None, {"strata": 10}).default
    assert not selection_strategy("ccs", {}, 0.9, "topk").default
    c = selection_strategy("tdds", {}, 0.9, "ccs", {"beta": 0.1})
    assert c.key() == {"name": "ccs", "params": {"beta": 0.1, "strata": 50, "hard_end": None}}
    with pytest.raises(ConfigError, match="method 'tdds' at pruning rate 0.5: unknown selection strategy 'nope'; the "
                                          "known ones are: ccs, class_balanced, dual_beta, topk"):
        selection_strategy("tdds", {}, 0.5, "nope")
    with pytest.raises(ConfigError, match="unknown option 'c_d' for selection strategy 'topk'"):
        selection_strategy("dual", {"beta_sampling": "auto"}, 0.5, None, {"c_d": 3})


def test_a_plugin_strategy_is_one_decorated_function():
    @register_strategy("lowest_first")
    def lowest_first(scores, n_keep, *, labels, seed, context):
        """Toy: the lowest scores."""
        return np.argsort(scores, kind="stable")[:n_keep]

    try:
        assert "lowest_first" in list_strategies()
        sel = select(np.arange(10.0), 0.7, labels=None, sampler=strategy_sampler("lowest_first"))
        assert sorted(sel.indices.tolist()) == [0, 1, 2]
        assert selection_strategy("el2n", {}, 0.7, "lowest_first").name == "lowest_first"
    finally:
        STRATEGIES.remove("lowest_first")


# ------------------------------------------------------------------------------------------ epochs_read
@pytest.mark.parametrize("name,params,want", [
    ("tdds", {"T": 30, "W": 10}, 30), ("tdds", {"T": 30, "W": 10, "start": 5}, 35), ("tdds", {"T": 300}, 200),
    ("el2n", {}, 10), ("el2n", {"k": 20, "start": 3}, 23),
    ("forgetting", {}, 200), ("forgetting", {"stop": 50}, 50), ("aum", {}, 200), ("aum", {"stop": 80}, 80),
    ("dyn_unc", {}, 200), ("ccs", {}, 200), ("ccs", {"base": "el2n", "base_params": {"k": 15}}, 15),
    ("dual", {}, 30), ("dual", {"epochs": 60, "start": 2}, 62),
    ("entropy", {}, 200), ("entropy", {"source": "last_epoch", "epoch": 99}, 100),
    ("moderate", {}, 200), ("moderate", {"features": "/elsewhere/feats.npy"}, 0), ("random", {}, 0),
])
def test_epochs_read_by_method(name, params, want):
    assert epochs_read(name, params, 200) == want


def test_epochs_read_of_a_method_without_the_hook_is_every_epoch():
    def toy(view):
        """Toy."""
        return np.zeros(view.num_samples)

    toy.__module__ = "toy_epochs_read"
    with registered("toy_all", toy, options={}):
        assert epochs_read("toy_all", {}, 17) == 17
    with pytest.raises(ScoringError, match="unknown option"):
        epochs_read("tdds", {"TT": 3}, 10)


# ------------------------------------------------------------------------------------------ the select stage
def test_select_stage_records_the_strategy_and_keeps_default_keys(tmp_path, rec):
    _, X, y = rec
    cfg = parse_config({"output": str(tmp_path / "out"), "selection": {"rates": [0.5, 0.8]}, "methods": [
        {"name": "tdds", "label": "tdds", "params": {"T": 6, "W": 3}},
        {"name": "tdds", "label": "tdds-ccs", "params": {"T": 6, "W": 3}, "strategy": "ccs",
         "strategy_params": {"beta": 0.1, "strata": 5}},
        {"name": "ccs", "label": "ccs"},
        {"name": "ccs", "label": "ccs-said", "strategy": "ccs"},
        {"name": "el2n", "label": "el2n", "per_rate": {0.8: {"strategy": "class_balanced"}}},
    ]})
    train = tmp_path / "out" / "train" / "t"
    d = write_dynamics(train / "dynamics", X, y)
    write_manifest(train, files=[], kind="train")
    plan = P.Plan.from_config(cfg)
    state = State(fingerprint=d.fingerprint, refs={STAGE_TRAIN_FULL: {"": Ref(uri=str(train), key="train/t")}})
    scores = {}
    for item in plan.scores:
        out = score_stage(cfg, str(train), item.method.model_copy(update={"label": item.label}), item.params)
        scores[item.key] = Ref(uri=out.uri, key=out.key)
    state = state.merge([state.part(STAGE_SCORE, scores)])
    ctx = Context(cfg, d.fingerprint, tracker=None)
    refs = {}
    for item in plan.rates:
        refs.update(run_select_stage(ctx, item, state).refs[STAGE_SELECT])
    by = {(r.label, r.rate): r for r in refs.values()}
    want = {("tdds", 0.5): "topk", ("tdds-ccs", 0.5): "ccs", ("tdds-ccs", 0.8): "ccs", ("ccs", 0.8): "ccs",
            ("ccs-said", 0.8): "ccs", ("el2n", 0.5): "topk", ("el2n", 0.8): "class_balanced"}
    for (label, rate), strategy in want.items():
        ref = by[(label, rate)]
        sel = load_selection(ref.uri, expected_fingerprint=d.fingerprint)
        assert sel.meta["strategy"] == strategy and sel.meta[ELAPSED_S] >= 0, (label, rate)
        default = label != "tdds-ccs" and not (label == "el2n" and rate == 0.8)
        score_uri = scores[next(i.key for i in plan.scores if i.label == label)].uri
        assert (ref.key == P.selection_key(cfg, score_uri, label, rate)) == default, (label, rate)
    ccs_sel = load_selection(by[("tdds-ccs", 0.8)].uri)
    assert ccs_sel.meta["strategy_params"] == {"beta": 0.1, "strata": 5, "hard_end": None}
    s = np.load(Path(scores[next(i.key for i in plan.scores if i.label == "tdds-ccs")].uri) / "scores.npy")
    assert sorted(ccs_sel.indices.tolist()) == source_ccs(s, num_to_keep(0.8, N), 0.1, 0, strata=5)
    # CCS said explicitly is CCS's own selection: the same kept samples as the default entry
    assert (load_selection(by[("ccs-said", 0.8)].uri).indices.tolist()
            == load_selection(by[("ccs", 0.8)].uri).indices.tolist())
    assert P.selection_key(cfg, "scores/x", "x", 0.5, strategy=None) == P.selection_key(cfg, "scores/x", "x", 0.5)
    assert P.selection_key(cfg, "scores/x", "x", 0.5, {"name": "ccs", "params": {}}) != P.selection_key(
        cfg, "scores/x", "x", 0.5)


# ------------------------------------------------------------------------------------------ tdds select --strategy
def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_select_cli_strategy_flag(rec, tmp_path, capsys):
    d, X, y = rec
    dyn = d.folder
    scores = tmp_path / "el2n.npy"
    assert run_cli(capsys, "score", "--dynamics", dyn, "--method", "el2n", "--param", "k=5", "--out", scores)[0] == 0
    s = np.load(scores)
    rc, out, err = run_cli(capsys, "select", "--scores", scores, "--rate", 0.9, "--dynamics", dyn, "--strategy", "ccs",
                           "--strategy-option", "beta=0.2", "--strategy-option", "strata=6", "--seed", 4,
                           "--out", tmp_path / "ccs")
    assert rc == 0, err
    sel = load_selection(tmp_path / "ccs")
    assert sel.meta["strategy"] == "ccs" and sel.meta["strategy_params"]["beta"] == 0.2 and ELAPSED_S in sel.meta
    assert sorted(sel.indices.tolist()) == source_ccs(s, 12, 0.2, 4, strata=6)
    rc, _, err = run_cli(capsys, "select", "--scores", scores, "--rate", 0.8, "--strategy", "dual_beta",
                         "--out", tmp_path / "x")
    assert rc == 2 and "needs the training dynamics" in err and "--dynamics" in err
    rc, _, err = run_cli(capsys, "select", "--scores", scores, "--rate", 0.8, "--dynamics", dyn, "--strategy",
                         "dual_beta", "--strategy-option", "epochs=6", "--seed", 2, "--out", tmp_path / "beta")
    assert rc == 0, err
    pm = mean_target_probability(d, 6)
    want = strategy_sampler("dual_beta", {"epochs": 6}, StrategyContext(pred_mean=lambda e, st: pm))(s, 24, seed=2)
    assert sorted(load_selection(tmp_path / "beta").indices.tolist()) == sorted(want.tolist())
    rc, _, err = run_cli(capsys, "select", "--scores", scores, "--rate", 0.8, "--strategy", "stratified",
                         "--out", tmp_path / "y")
    assert rc == 2 and "unknown selection strategy 'stratified'" in err and "class_balanced" in err
    rc, _, err = run_cli(capsys, "select", "--scores", scores, "--rate", 0.8, "--strategy", "ccs",
                         "--strategy-option", "strata=0", "--out", tmp_path / "z")
    assert rc == 2 and "strata" in err and not (tmp_path / "z").exists()
    # the default stays the method's own (top-k for EL2N), recorded as such
    rc, out, _ = run_cli(capsys, "select", "--scores", scores, "--rate", 0.5, "--dynamics", dyn, "--out", tmp_path / "k")
    assert rc == 0 and "(topk)" in out
    assert load_selection(tmp_path / "k").meta["strategy"] == "topk"
    assert json.loads((tmp_path / "k" / "manifest.json").read_text())["strategy_params"] == {}
