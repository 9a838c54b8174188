"""Baseline scorers: hand-computed small cases, the registry contract, CCS's sampler, NaN policy."""
from __future__ import annotations

import math
import pkgutil
import warnings

import numpy as np
import pytest

from tdds_core.dynamics import DynamicsWriter, open_dynamics
from tdds_core.errors import ArtifactError, ScoringError
import tdds_core.scoring as scoring
from tdds_core.scoring import (aum_from_epochs, ccs_beta, ccs_sample, compute_scores, dyn_unc_from_epochs,
                               el2n_from_epochs, entropy_from_logits, forgetting_from_epochs, get_method, get_sampler,
                               list_methods, list_modules, margins, method_options, moderate_from_features,
                               probability_margins, random_scores, register_method, resolve_params)
from tdds_core.scoring.moderate import class_distances
from tdds_core.selection import select

# the paper's methods (appendix B): a guard that discovery found them, NOT the list the contract runs over
PAPER_METHODS = {"aum", "ccs", "dyn_unc", "el2n", "entropy", "forgetting", "moderate", "random", "tdds"}


def write(folder, X, y, features=None, dtype="float32", final=None):
    """Dynamics with epochs ``X`` [T, N, C]; ``final``: the clean final pass's logits [N, C]."""
    T, N, C = X.shape
    w = DynamicsWriter(folder, ids=[str(i) for i in range(N)], labels=y, num_classes=C, fingerprint="fp", dtype=dtype)
    for t in range(T):
        w.write_epoch(t, X[t])
    if final is not None:
        w.write_final_pass(final, features, epoch=T - 1)
    elif features is not None:
        w.write_features(features)
    w.finalize()
    return open_dynamics(folder)


@pytest.fixture(scope="module")
def dyn(tmp_path_factory):
    rng = np.random.default_rng(0)
    N, C, T = 60, 4, 12
    y = rng.integers(0, C, N)
    onehot = np.eye(C)[y]
    X = np.stack([rng.standard_normal((N, C)) * 2 + onehot * t * rng.random((N, 1)) for t in range(T)])
    # the clean final pass: like the last epoch, but not equal to it
    return write(tmp_path_factory.mktemp("dyn") / "d", X, y, features=rng.standard_normal((N, 6)),
                 final=X[-1] + rng.standard_normal((N, C))), X, y


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Dynamics with a known difficulty: the first half is easy (confidently right from epoch 0, barely
    moving), the second half hard (pure noise, right about 1 time in C). Returns (dynamics, hard mask)."""
    rng = np.random.default_rng(1)
    N, C, T = 80, 4, 12
    y = rng.integers(0, C, N)
    hard = np.arange(N) >= N // 2
    easy_logits = 8.0 * np.eye(C)[y] + 0.1 * rng.standard_normal((T, N, C))
    noise = 1.5 * rng.standard_normal((T, N, C))
    X = np.where(hard[None, :, None], noise, easy_logits)
    return write(tmp_path_factory.mktemp("graded") / "d", X, y, features=rng.standard_normal((N, 6)), final=X[-1]), hard


# -- registry ------------------------------------------------------------------------------------
def test_all_methods_registered():
    discovered = {m.name for m in pkgutil.iter_modules(scoring.__path__) if not m.name.startswith("_")}
    assert set(list_modules()) == discovered  # every method module was imported and registers something
    assert PAPER_METHODS <= set(list_methods())
    assert sorted(n for m in list_modules() for n in list_methods(module=m)) == list_methods()
    # (another method starting with d may be registered: check the filter, not the exact list)
    assert "dyn_unc" in list_methods("d*") and all(n.startswith("d") for n in list_methods("d*"))
    assert list_methods(["a*", "e*"], exclude_filters="el*") == ["aum", "entropy"]
    assert list_methods(module="random_") == ["random"]
    assert list_methods(module="tdds_core.scoring.tdds") == ["tdds"]
    assert list_methods(module="nope") == []


def test_exports_are_in_the_namespace_and_all():
    for name in scoring.__all__:
        assert getattr(scoring, name) is not None
    assert len(scoring.__all__) == len(set(scoring.__all__))
    for name in ("tdds_from_epochs", "TddsAccumulator", "aum_from_epochs", "margins", "ccs_sample", "random_scores"):
        assert name in scoring.__all__
    assert scoring.tdds_from_epochs.__module__ == "tdds_core.scoring.tdds"
    assert scoring.tdds.__name__ == "tdds_core.scoring.tdds"  # method modules stay submodules, not shadowed


SMALL = {"tdds": dict(T=12, W=4), "dyn_unc": dict(width=4)}  # options that fit the 12-epoch fixtures
# direction where a method defines one on `graded`: "hard" = hard samples score higher (keep first),
# "easy" = easy samples do (AUM, and CCS on its AUM base, as the paper keeps high AUM). Methods not
# named here (moderate: features only; random) get no direction check.
DIRECTION = {"tdds": "hard", "entropy": "hard", "el2n": "hard", "forgetting": "hard", "dyn_unc": "hard",
             "dual": "hard", "aum": "easy", "ccs": "easy"}


def test_direction_table_names_registered_methods():
    assert set(DIRECTION) <= set(list_methods()) and set(SMALL) <= set(list_methods())


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a pos score > a neg score), ties counting half."""
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


@pytest.mark.parametrize("name", list_methods())  # collected from the registry: a new method file is covered
def test_registry_contract(dyn, graded, name):
    d, _, _ = dyn
    s = compute_scores(name, d, **SMALL.get(name, {}))
    assert s.shape == (d.num_samples,) and s.dtype == np.float64 and np.isfinite(s).all()
    if name != "rs2":   # RS2's selection fixes only the kept size: its score is constant by design
        assert s.std() > 0  # informative on this data
    assert get_method(name).__doc__  # every method documents itself
    g, hard = graded
    s = compute_scores(name, g, **SMALL.get(name, {}))
    assert s.shape == (g.num_samples,) and s.dtype == np.float64 and np.isfinite(s).all()
    if name in DIRECTION:
        first, then = (s[hard], s[~hard]) if DIRECTION[name] == "hard" else (s[~hard], s[hard])
        assert _auc(first, then) > 0.9, f"{name}: the {DIRECTION[name]} samples should score higher"


def test_unknown_method_and_option_errors(dyn):
    d, _, _ = dyn
    with pytest.raises(ScoringError, match="unknown scoring method 'tdsd'; known methods: aum, ccs, .*dyn_unc"):
        compute_scores("tdsd", d)
    with pytest.raises(ScoringError, match=r"unknown option 'widht' for scoring method 'dyn_unc'; valid options: start, stop, width"):
        compute_scores("dyn_unc", d, widht=3)
    with pytest.raises(ScoringError, match="nan_policy"):
        compute_scores("aum", d, nan_policy="ignore")
    # None falls back to the default (timm's create_model convention)
    assert resolve_params("el2n", k=None) == {"k": 10, "start": None}
    assert method_options("tdds")["decay"] == 0.9


def test_register_rejects_methods_without_options_contract():
    with pytest.raises(TypeError, match="keyword-only"):
        @register_method("bad_positional")
        def bad(dynamics, k=3, *, nan_policy="raise"):  # pragma: no cover - never called
            return None
    with pytest.raises(TypeError, match="kwargs"):
        @register_method("bad_kwargs")
        def bad2(dynamics, *, nan_policy="raise", **kw):  # pragma: no cover
            return None
    assert "bad_positional" not in list_methods() and "bad_kwargs" not in list_methods()


# -- hand-computed cases -------------------------------------------------------------------------
def test_entropy_hand_case():
    logits = np.array([[0.0, 0.0], [math.log(3.0), 0.0], [50.0, -50.0]])
    h = entropy_from_logits(logits)
    p = 0.75
    np.testing.assert_allclose(h, [math.log(2), -(p * math.log(p) + (1 - p) * math.log(1 - p)), 0.0], atol=1e-12)
    # direction: the uncertain sample ranks first
    assert np.argmax(h) == 0


def test_entropy_reads_the_clean_final_pass_by_default(dyn):
    d, X, _ = dyn
    final = d.final_logits()
    assert final.dtype == np.float32 and not np.allclose(final, X[-1])
    np.testing.assert_allclose(compute_scores("entropy", d), entropy_from_logits(final), rtol=1e-12)
    np.testing.assert_array_equal(compute_scores("entropy", d, source="clean"), compute_scores("entropy", d))
    # source="last_epoch": the behaviour before the clean pass (the last recorded epoch's logits, or `epoch`)
    np.testing.assert_allclose(compute_scores("entropy", d, source="last_epoch"),
                               entropy_from_logits(X[-1].astype(np.float32)), rtol=1e-12)
    np.testing.assert_allclose(compute_scores("entropy", d, source="last_epoch", epoch=3),
                               entropy_from_logits(X[3].astype(np.float32)), rtol=1e-12)
    with pytest.raises(ScoringError, match="epoch only applies to source='last_epoch'"):
        compute_scores("entropy", d, epoch=3)
    with pytest.raises(ScoringError, match="source must be one of clean, last_epoch"):
        compute_scores("entropy", d, source="final")
    assert method_options("entropy") == {"source": "clean", "epoch": None}


def test_entropy_without_the_clean_pass_names_the_fix(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((3, 10, 4))
    d = write(tmp_path / "old", X, rng.integers(0, 4, 10))  # a folder recorded before the clean pass
    assert not d.has_final_logits
    with pytest.raises(ArtifactError, match=r"no final_logits\.npy.*source='last_epoch'"):
        compute_scores("entropy", d)
    np.testing.assert_allclose(compute_scores("entropy", d, source="last_epoch"),
                               entropy_from_logits(X[-1].astype(np.float32)), rtol=1e-12)


def test_entropy_nan_in_the_clean_pass(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((2, 6, 3))
    final = rng.standard_normal((6, 3))
    final[4, 2] = np.nan
    d = write(tmp_path / "nan", X, rng.integers(0, 3, 6), final=final)
    with pytest.raises(ScoringError, match=r"1 sample with NaN/Inf logits \(first: sample 4\)"):
        compute_scores("entropy", d)
    with pytest.warns(RuntimeWarning, match="1 sample had NaN/Inf"):
        s = compute_scores("entropy", d, nan_policy="skip")
    assert s[4] == -np.inf and np.isfinite(np.delete(s, 4)).all()


def test_forgetting_hand_case():
    # label 0 for every sample; logits favour class 0 when "correct"
    right, wrong = [2.0, 0.0], [0.0, 2.0]
    seq = {  # per sample: correctness over 5 epochs
        0: "CCCCC",  # learned, never forgotten -> 0
        1: "CWCWC",  # forgotten twice -> 2
        2: "WWWWW",  # never learned -> E + 1 = 6
        3: "WCCWW",  # forgotten once -> 1
        4: "CWWWW",  # learned at the start, forgotten once -> 1
    }
    X = np.array([[right if seq[i][t] == "C" else wrong for i in range(5)] for t in range(5)])
    s = forgetting_from_epochs(iter(X), np.zeros(5, dtype=int))
    np.testing.assert_array_equal(s, [0, 2, 6, 1, 1])


def test_el2n_hand_case():
    X = np.array([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])  # p = (0.5, 0.5) then (0.75, 0.25), label 0
    s = el2n_from_epochs(iter(X), np.array([0]))
    want = (math.sqrt(0.5 ** 2 + 0.5 ** 2) + math.sqrt(0.25 ** 2 + 0.25 ** 2)) / 2
    np.testing.assert_allclose(s, [want], rtol=1e-12)


def test_el2n_uses_first_k_epochs(dyn):
    d, X, y = dyn
    np.testing.assert_allclose(compute_scores("el2n", d, k=3), el2n_from_epochs(iter(X[:3].astype(np.float32)), y), rtol=1e-12)
    assert not np.allclose(compute_scores("el2n", d, k=3), compute_scores("el2n", d))


def test_aum_hand_case_logit_space():
    # the logit margin of Pleiss et al. (space="logit"; was the default before AUM followed the TDDS
    # paper's probability gap, so this test now names the space)
    X = np.array([
        [[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]],
        [[1.0, 1.0, 0.0], [4.0, 2.0, 3.0]],
    ])
    y = np.array([0, 2])
    np.testing.assert_array_equal(margins(X[0], y), [1.0, -4.0])
    s = aum_from_epochs(iter(X), y, space="logit")
    np.testing.assert_allclose(s, [(1.0 + 0.0) / 2, (-4.0 + -1.0) / 2])
    assert s[0] > s[1]  # the paper keeps high AUM


def test_aum_hand_case_probability_space():
    # default space="prob": mean over epochs of p[y] - max other p (TDDS appendix B, the CCS code)
    ln = math.log
    X = np.array([
        [[ln(3.0), 0.0, 0.0], [ln(6.0), ln(3.0), 0.0]],  # p = (.6, .2, .2) and (.6, .3, .1)
        [[0.0, 0.0, 0.0], [0.0, ln(2.0), ln(2.0)]],      # p = (1/3, 1/3, 1/3) and (.2, .4, .4)
    ])
    y = np.array([0, 2])
    np.testing.assert_allclose(probability_margins(X[0], y), [0.6 - 0.2, 0.1 - 0.6], atol=1e-12)
    s = aum_from_epochs(iter(X), y)
    np.testing.assert_allclose(s, [(0.4 + 0.0) / 2, (-0.5 + 0.0) / 2], atol=1e-12)
    np.testing.assert_array_equal(s, aum_from_epochs(iter(X), y, space="prob"))
    assert s[0] > s[1]  # higher AUM = keep first
    with pytest.raises(ScoringError, match="space"):
        aum_from_epochs(iter(X), y, space="logits")


def test_aum_method_space_option(dyn):
    d, X, y = dyn
    X32 = X.astype(np.float32)
    np.testing.assert_allclose(compute_scores("aum", d), aum_from_epochs(iter(X32), y, space="prob"), rtol=1e-12)
    np.testing.assert_allclose(compute_scores("aum", d, space="logit"), aum_from_epochs(iter(X32), y, space="logit"),
                               rtol=1e-12)
    assert method_options("aum")["space"] == "prob"
    assert np.all(np.abs(compute_scores("aum", d)) <= 1.0)  # probability gaps
    with pytest.raises(ScoringError, match="space"):
        compute_scores("aum", d, space="softmax")


def test_dyn_unc_hand_case():
    # target probabilities over 4 epochs: softmax([a, 0])[0] = sigmoid(a)
    pt = np.array([[0.5, 0.6, 0.9, 0.2], [0.5, 0.5, 0.5, 0.5]])
    a = np.log(pt / (1 - pt))
    X = np.stack([np.stack([a[:, t], np.zeros(2)], axis=1) for t in range(4)])
    s = dyn_unc_from_epochs(iter(X), np.array([0, 0]), width=3)
    w1 = np.std([0.5, 0.6, 0.9], ddof=1)
    w2 = np.std([0.6, 0.9, 0.2], ddof=1)
    np.testing.assert_allclose(s, [(w1 + w2) / 2, 0.0], atol=1e-12)
    with pytest.raises(ScoringError, match="width=5"):
        dyn_unc_from_epochs(iter(X), np.array([0, 0]), width=5)


def test_moderate_hand_case():
    # class 0: coordinate-wise median (0, 0) (its mean is (1, -1.4)): distances 0, 1, 3, 4, 10
    # class 1: median (5, 6): distances 2, 2.5, 0
    f = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [4.0, 0.0], [0.0, -10.0], [5.0, 4.0], [5.0, 8.5], [5.0, 6.0]])
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(class_distances(f, y), [0, 1, 3, 4, 10, 2, 2.5, 0], atol=1e-12)
    # one global ascending order (ties by position): s0 s7 s1 s5 s6 s2 s3 s4 -> ranks 0..7, middle rank 3.5
    s = moderate_from_features(f, y)
    np.testing.assert_array_equal(s, [-3.5, -1.5, -1.5, -2.5, -3.5, -0.5, -0.5, -2.5])
    # keeping half: the source keeps ranks [round(8 * 0.25), round(8 * 0.75)) = 2..5 -> samples 1, 5, 6, 2
    assert set(np.argsort(-s, kind="stable")[:4]) == {1, 2, 5, 6}
    # the band is global: class 1 keeps 2 of 3, class 0 keeps 2 of 5 (no per-class quota)


def _source_moderate_prune_idx(features, targets, rate):
    """A slow, literal transcription of tmllab/2023_ICLR_Moderate-DS ``selection.py``: get_median,
    get_distance and get_prune_idx (``rate`` = fraction kept); returns (pruned ids, distances)."""
    num_classes = len(np.unique(targets, axis=0))
    prot = np.zeros((num_classes, features.shape[-1]), dtype=features.dtype)
    for i in range(num_classes):
        prot[i] = np.median(features[(targets == i).nonzero(), :].squeeze(), axis=0, keepdims=False)
    prots_for_each_example = np.zeros(shape=(features.shape[0], prot.shape[-1]))
    for i in range(num_classes):
        prots_for_each_example[(targets == i).nonzero()[0], :] = prot[i]
    distance = np.linalg.norm(features - prots_for_each_example, axis=1)
    low, high = 0.5 - rate / 2, 0.5 + rate / 2
    sorted_idx = distance.argsort()
    low_idx, high_idx = round(distance.shape[0] * low), round(distance.shape[0] * high)
    return np.concatenate((sorted_idx[:low_idx], sorted_idx[high_idx:])), distance


def _spearman(a, b):
    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):  # average ranks for ties
            m = x == v
            r[m] = r[m].mean()
        return r
    return float(np.corrcoef(ranks(np.asarray(a)), ranks(np.asarray(b)))[0, 1])


def test_moderate_matches_the_source_definition():
    rng = np.random.default_rng(11)
    N, D, K = 240, 8, 5
    y = rng.integers(0, K, N)
    f = (rng.standard_normal((N, D)) * rng.uniform(0.5, 3.0, (N, 1)) + 4.0 * np.eye(K, D)[y]).astype(np.float32)
    s = moderate_from_features(f, y)
    _, dist = _source_moderate_prune_idx(f, y, 0.5)
    np.testing.assert_allclose(class_distances(f, y), dist, rtol=1e-5)
    # the source's order: closeness of the global distance rank to the middle rank
    rank = np.empty(N)
    rank[dist.argsort()] = np.arange(N)
    assert _spearman(s, -np.abs(rank - (N - 1) / 2)) == pytest.approx(1.0, abs=1e-12)
    # and its kept sets: for every even k (a band symmetric about the middle, no boundary tie) the top-k
    # of the score is what the source keeps at rate k / N
    order = np.lexsort((np.arange(N), -s))  # selection's order: score, ties by position
    for k in range(2, N, 2):
        pruned, _ = _source_moderate_prune_idx(f, y, k / N)
        kept = np.setdiff1d(np.arange(N), pruned)
        assert len(kept) == k and set(order[:k]) == set(kept), k
    # the class mean (the former centre) or a per-class band would order the samples differently
    assert _spearman(s, -np.abs(class_distances(f, y) - np.median(class_distances(f, y)))) < 1.0


def test_moderate_needs_features(tmp_path):
    X = np.zeros((2, 3, 2))
    d = write(tmp_path / "nf", X, np.array([0, 1, 0]))
    with pytest.raises(ScoringError, match="save_features"):
        compute_scores("moderate", d)


def test_moderate_features_from_a_file(dyn, tmp_path):
    d, _, y = dyn
    np.testing.assert_array_equal(compute_scores("moderate", d), moderate_from_features(d.features(), y))
    other = np.random.default_rng(4).standard_normal((d.num_samples, 3)).astype(np.float32)
    np.save(tmp_path / "ext.npy", other)
    s = compute_scores("moderate", d, features=str(tmp_path / "ext.npy"))
    np.testing.assert_array_equal(s, moderate_from_features(other, y))
    assert not np.array_equal(s, compute_scores("moderate", d))
    np.save(tmp_path / "short.npy", other[:5])
    with pytest.raises(ScoringError, match=r"expected numeric \[60, D\]"):
        compute_scores("moderate", d, features=str(tmp_path / "short.npy"))
    with pytest.raises(ArtifactError, match="does not exist"):
        compute_scores("moderate", d, features=str(tmp_path / "missing.npy"))


def test_random_is_seeded_uniform(dyn):
    d, _, _ = dyn
    a = compute_scores("random", d, seed=3)
    np.testing.assert_array_equal(a, compute_scores("random", d, seed=3))
    assert not np.array_equal(a, compute_scores("random", d, seed=4))
    big = random_scores(20000, seed=1)
    assert big.min() >= 0 and big.max() < 1 and abs(big.mean() - 0.5) < 0.01


# -- CCS -----------------------------------------------------------------------------------------
def test_ccs_budget_from_the_smallest_stratum_up():
    # strata over [0, 10] with 5 bins of width 2: sizes 1, 2, 10, 3, 4 (20 samples)
    s = np.concatenate([[0.0], [2.5, 3.0], np.linspace(4.1, 5.9, 10), [6.5, 7, 7.5], [8.5, 9, 9.5, 10]])
    chosen = ccs_sample(s, 10, beta=0.0, strata=5, hard_end="low", seed=0)
    assert len(chosen) == 10 and len(np.unique(chosen)) == 10
    counts = np.bincount(np.minimum((s[chosen] // 2).astype(int), 4), minlength=5)
    # budget 10 over 5 strata: smallest (1) takes 1, then 2 takes 2 (9/4=2), then 3 takes 2 (7/3=2),
    # then 4 takes 2 (5/2=2), then the big stratum takes the remaining 3
    np.testing.assert_array_equal(counts, [1, 2, 3, 2, 2])


def test_ccs_hard_cutoff_and_direction():
    s = np.arange(100, dtype=float)
    low = ccs_sample(s, 40, beta=0.3, strata=5, hard_end="low", seed=1)
    assert low.min() >= 30  # the 30 lowest (hardest for AUM) were cut
    high = ccs_sample(s, 40, beta=0.3, strata=5, hard_end="high", seed=1)
    assert high.max() < 70
    np.testing.assert_array_equal(low, ccs_sample(s, 40, beta=0.3, strata=5, hard_end="low", seed=1))
    with pytest.raises(ScoringError, match="lower beta"):
        ccs_sample(s, 80, beta=0.3)
    assert not np.isin(ccs_sample(np.r_[s, -np.inf], 50, strata=3), [100]).any()  # -inf (skipped) never chosen


def test_ccs_scores_are_aum_and_sampler_from_params(dyn):
    d, _, _ = dyn
    np.testing.assert_array_equal(compute_scores("ccs", d), compute_scores("aum", d))
    np.testing.assert_array_equal(compute_scores("ccs", d, base="el2n", base_params={"k": 2}), compute_scores("el2n", d, k=2))
    sampler = get_sampler("ccs", {"beta": 0.2, "strata": 4})
    s = compute_scores("ccs", d)
    kept = sampler(s, 20, labels=None, seed=0)
    order = np.argsort(s)
    assert not np.isin(order[:12], kept).any()  # floor(0.2 * 60) lowest-AUM samples cut
    assert get_sampler("tdds") is None
    with pytest.raises(ScoringError, match="base may not be 'ccs'"):
        compute_scores("ccs", d, base="ccs")


def test_ccs_default_beta_follows_the_pruning_rate():
    # the CCS paper's CIFAR-10 table (0.3 at 90% is also the CCS README's command), interpolated between
    assert method_options("ccs")["beta"] == "auto"
    for rate, want in [(0.3, 0.0), (0.5, 0.0), (0.7, 0.1), (0.8, 0.1), (0.9, 0.3)]:
        assert ccs_beta(rate) == want
    np.testing.assert_allclose([ccs_beta(r) for r in (0.1, 0.6, 0.75, 0.85, 0.95, 0.99)],
                               [0.0, 0.05, 0.1, 0.2, 0.3, 0.3], atol=1e-12)
    assert ccs_beta(0.9, 0.15) == 0.15  # a number overrides the table at every rate
    table = {"0.8": 0.2, "0.9": 0.3}  # a mapping (keys as JSON would give them) replaces the table
    np.testing.assert_allclose([ccs_beta(r, table) for r in (0.5, 0.8, 0.85, 0.9, 0.95)], [0.2, 0.2, 0.25, 0.3, 0.3])
    for bad in (1.0, -0.1, "half", {}, {1.5: 0.1}, {0.5: 0.7}, True):
        with pytest.raises(ScoringError, match="beta"):
            ccs_beta(0.9, bad)


@pytest.mark.parametrize("rate,cut", [(0.9, 300), (0.8, 100), (0.7, 100), (0.5, 0)])
def test_ccs_default_cuts_the_hardest_beta_fraction(rate, cut):
    s = np.random.default_rng(11).uniform(-1, 1, 1000)
    n_keep = round((1 - rate) * 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default never has beta = 0 at a high rate
        kept = ccs_sample(s, n_keep, seed=2)
    hardest = np.argsort(s, kind="stable")[:cut]
    assert len(kept) == n_keep and not np.isin(hardest, kept).any()
    if cut:
        assert s[kept].min() >= np.sort(s)[cut]
    # the sampler built by the registry with default options does the same through selection
    sel = select(s, rate, labels=None, sampler=get_sampler("ccs"), seed=2)
    np.testing.assert_array_equal(np.sort(sel.indices), kept)


def test_ccs_warns_without_a_hard_cutoff_at_high_rates():
    s = np.random.default_rng(12).uniform(-1, 1, 200)
    with pytest.warns(UserWarning, match="no hard cutoff"):
        ccs_sample(s, 40, beta=0.0)  # rate 0.8
    with pytest.warns(UserWarning, match="no hard cutoff"):
        get_sampler("ccs", {"beta": {0.9: 0.0, 0.5: 0.0}})(s, 20, labels=None, seed=0)  # rate 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ccs_sample(s, 100, beta=0.0)  # rate 0.5: no warning below 0.7
        ccs_sample(s, 20, beta=0.3)


def test_ccs_mapping_beta_through_the_registry(dyn):
    d, _, _ = dyn
    s = compute_scores("ccs", d, beta={0.5: 0.1, 0.75: 0.25})
    sampler = get_sampler("ccs", {"beta": {0.5: 0.1, 0.75: 0.25}, "strata": 4})
    kept = sampler(s, 15, labels=None, seed=0)  # 60 samples, rate 0.75 -> beta 0.25 -> 15 cut
    assert not np.isin(np.argsort(s, kind="stable")[:15], kept).any()
    assert "beta={0.5: 0.1, 0.75: 0.25}" in sampler.__name__
    with pytest.raises(ScoringError, match="beta"):
        compute_scores("ccs", d, beta="cifar")


# -- NaN policy ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["entropy", "forgetting", "el2n", "aum", "dyn_unc"])
def test_nan_policy(tmp_path, name):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((5, 8, 3))
    X[4, 6, 1] = np.nan
    X[4, 2, 0] = np.inf
    d = write(tmp_path / name, X, rng.integers(0, 3, 8))
    kw = {"width": 3} if name == "dyn_unc" else {"source": "last_epoch"} if name == "entropy" else {}
    with pytest.raises(ScoringError, match=r"epoch 4: 2 samples with NaN/Inf logits \(first: sample 2\)"):
        compute_scores(name, d, **kw)
    with pytest.warns(RuntimeWarning, match="2 samples had NaN/Inf"):
        s = compute_scores(name, d, nan_policy="skip", **kw)
    assert s[2] == -np.inf and s[6] == -np.inf and np.isfinite(np.delete(s, [2, 6])).all()


def test_moderate_nan_features():
    f = np.ones((4, 2))
    f[1, 0] = np.nan
    with pytest.raises(ScoringError, match="NaN/Inf features"):
        moderate_from_features(f, np.zeros(4, int))
    with pytest.warns(RuntimeWarning):
        s = moderate_from_features(f, np.zeros(4, int), nan_policy="skip")
    assert s[1] == -np.inf


@pytest.mark.parametrize("fn,name", [(aum_from_epochs, "aum"), (el2n_from_epochs, "el2n"),
                                     (forgetting_from_epochs, "forgetting")])
def test_no_epochs_is_an_error(fn, name):
    with pytest.raises(ScoringError, match=f"{name} needs at least one epoch of logits"):
        fn(iter([]), np.zeros(3, int))
    with pytest.raises(ScoringError, match="dyn_unc needs at least width=2 epochs but got 1"):
        dyn_unc_from_epochs([np.zeros((3, 2))], np.zeros(3, int), width=2)
