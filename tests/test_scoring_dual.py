"""DUAL (Cho et al., ICML 2025): the score against a plain-loop transcription of its definition, a
hand-worked case, the epoch/window checks, both dynamics layouts, NaN policy, and the Beta sampling
selection sampler (its weights against the definition, reproducibility, and its distribution)."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from tdds_core.dynamics import DynamicsWriter, open_dynamics
from tdds_core.dynamics_reference import ReferenceDynamics
from tdds_core.errors import ScoringError
from tdds_core.scoring import (dual_beta_pdf, compute_scores, dual_beta_sample, dual_beta_weights, dual_from_epochs,
                               dyn_unc_from_epochs, get_method, get_sampler, method_options, registered)
from tdds_core.scoring._common import NonFiniteError
from tdds_core.selection import select


# -- builders ------------------------------------------------------------------------------------
def trajectory(n: int, T: int, c: int, seed: int = 0, scale: float = 2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    drift = rng.random((n, 1)) * 0.6
    X = np.stack([rng.standard_normal((n, c)) * scale + np.eye(c)[y] * drift * t for t in range(T)])
    return X, y


def write_tdds(folder, X, y, dtype="float32"):
    T, n, c = X.shape
    w = DynamicsWriter(folder, ids=[str(i) for i in range(n)], labels=y, num_classes=c, fingerprint="fp-dual",
                       dtype=dtype)
    for t in range(T):
        w.write_epoch(t, X[t])
    w.finalize()
    return open_dynamics(folder)


def write_reference(folder, X, seed=0):
    """The authors' layout: each epoch's rows in a random visit order with their sample indices."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(X.shape[0]):
        idx = rng.permutation(X.shape[1])
        np.save(folder / f"{t}_Output.npy", X[t][idx].astype(np.float32))
        np.save(folder / f"{t}_Index.npy", idx.astype(np.int64))
        np.save(folder / f"{t}_Loss.npy", np.zeros(len(idx), np.float32))
    return folder


def slow_dual(X, y, window):
    """Plain-loop transcription of the definition (dual-facts.md): per sample, p_t = softmax(x_t)[y];
    per window of `window` epochs (stride 1) 10 * std(ddof=1) * (1 - mean); mean over windows."""
    T, n, c = X.shape
    out = np.zeros(n)
    for i in range(n):
        p = []
        for t in range(T):
            row = [float(v) for v in X[t, i]]
            m = max(row)
            e = [math.exp(v - m) for v in row]
            p.append(e[int(y[i])] / sum(e))
        ws = []
        for k in range(T - window + 1):
            w = p[k:k + window]
            mean = sum(w) / window
            std = math.sqrt(sum((v - mean) ** 2 for v in w) / (window - 1))
            ws.append(std * 10 * (1 - mean))
        out[i] = sum(ws) / len(ws)
    return out


def slow_pred_mean(X, y):
    P = np.exp(X - X.max(axis=2, keepdims=True))
    P /= P.sum(axis=2, keepdims=True)
    return P[:, np.arange(X.shape[1]), y].mean(axis=0)


def ranks(a):
    r = np.empty(len(a))
    r[np.argsort(a, kind="stable")] = np.arange(len(a))
    return r


# -- the score -----------------------------------------------------------------------------------
@pytest.mark.parametrize("T,W", [(12, 4), (10, 10), (7, 2), (30, 10)])
def test_matches_slow_oracle(T, W):
    X, y = trajectory(40, T, 5, seed=T * 7 + W)
    got = dual_from_epochs(iter(X), y, window=W)
    want = slow_dual(X, y, W)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(ranks(got), ranks(want))  # Spearman 1.0
    assert got.dtype == np.float64 and (got >= 0).all() and got.std() > 0


def test_hand_worked_case():
    # C = 2 and logits [log q, log(1 - q)]: the target probability of label 0 is q, of label 1 is 1 - q
    def logits(q):
        return np.array([math.log(q), math.log(1 - q)])

    qs = {0: [0.2, 0.4, 0.6], 1: [0.5, 0.5, 0.5], 2: [0.2, 0.4, 0.6]}
    y = np.array([0, 0, 1])
    X = np.stack([np.stack([logits(qs[i][t]) for i in range(3)]) for t in range(3)])
    # one window of 3: p = .2 .4 .6 -> mean .4, std(ddof=1) .2 -> 10 * .2 * (1 - .4) = 1.2
    # sample 1: constant -> 0; sample 2 (label 1): p = .8 .6 .4 -> mean .6 -> 10 * .2 * .4 = 0.8
    np.testing.assert_allclose(dual_from_epochs(iter(X), y, window=3), [1.2, 0.0, 0.8], rtol=1e-12, atol=1e-15)
    # windows of 2: [.2 .4] -> 10 * sqrt(.02) * .7, [.4 .6] -> 10 * sqrt(.02) * .5; mean = 6 sqrt(.02)
    np.testing.assert_allclose(dual_from_epochs(iter(X), y, window=2)[0], 6 * math.sqrt(0.02), rtol=1e-12)
    # the harder sample (lower mean, same spread) scores higher: difficulty x uncertainty
    s = dual_from_epochs(iter(X), y, window=3)
    assert s[0] > s[2] > s[1]


def test_one_window_is_dyn_unc_times_difficulty():
    X, y = trajectory(30, 6, 4, seed=3)
    s, m = dual_from_epochs(iter(X), y, window=6, return_pred_mean=True)
    np.testing.assert_allclose(m, slow_pred_mean(X, y), rtol=1e-12)
    np.testing.assert_allclose(s, 10 * dyn_unc_from_epochs(iter(X), y, width=6) * (1 - m), rtol=1e-12)


def test_registered_method_defaults_and_epochs(tmp_path):
    X, y = trajectory(25, 34, 4, seed=5)
    d = write_tdds(tmp_path / "d", X, y)
    assert method_options("dual") == {"epochs": 30, "window": 10, "start": None, "beta_sampling": False, "c_d": 4.0}
    assert get_method("dual").__doc__
    X32 = X.astype(np.float32).astype(np.float64)  # what the folder stores
    np.testing.assert_allclose(compute_scores("dual", d), slow_dual(X32[:30], y, 10), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(compute_scores("dual", d, epochs=12, window=4), slow_dual(X32[:12], y, 4),
                               rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(compute_scores("dual", d, epochs=8, window=3, start=5), slow_dual(X32[5:13], y, 3),
                               rtol=1e-10, atol=1e-13)
    # beta_sampling/c_d are selection options: the scores do not change
    np.testing.assert_array_equal(compute_scores("dual", d, epochs=12, window=4, beta_sampling=True, c_d=2.0),
                                  compute_scores("dual", d, epochs=12, window=4))


def test_fewer_recorded_epochs_than_asked_uses_them(tmp_path, caplog):
    X, y = trajectory(20, 12, 3, seed=6)
    d = write_tdds(tmp_path / "d", X, y)
    with caplog.at_level(logging.WARNING, logger="tdds.scoring"):
        s = compute_scores("dual", d)  # epochs=30 asked, 12 recorded, window 10: the 12 are used
    assert "only epochs 0..11" in caplog.text
    np.testing.assert_array_equal(s, compute_scores("dual", d, epochs=12))


def test_window_and_epoch_checks(tmp_path):
    X, y = trajectory(10, 8, 3, seed=7)
    d = write_tdds(tmp_path / "d", X, y)
    with pytest.raises(ScoringError, match=r"needs at least window=10 consecutive recorded epochs from epoch 0 but "
                                           r"found 8; recorded epochs: 0\.\.7\. Lower window"):
        compute_scores("dual", d)  # default window 10 > 8 recorded
    with pytest.raises(ScoringError, match="from epoch 5 but found 3"):
        compute_scores("dual", d, window=4, start=5)
    with pytest.raises(ScoringError, match="window=6 is longer than epochs=5"):
        compute_scores("dual", d, epochs=5, window=6)
    for bad in (dict(window=1), dict(window=2.5), dict(epochs=True), dict(start=-1), dict(c_d=0.0),
                dict(beta_sampling="yes")):
        with pytest.raises(ScoringError, match="dual: "):
            compute_scores("dual", d, **{"window": 4, **bad})
    with pytest.raises(ScoringError, match="unknown option 'widow'"):
        compute_scores("dual", d, widow=4)
    with pytest.raises(ScoringError, match="dual needs at least window=4 epochs but got 3"):
        dual_from_epochs(iter(X[:3]), y, window=4)


def test_both_dynamics_layouts_give_the_same_scores(tmp_path):
    X, y = trajectory(36, 14, 5, seed=8)
    X = X.astype(np.float32)
    d = write_tdds(tmp_path / "tdds", X, y, dtype="float32")
    ref = ReferenceDynamics(write_reference(tmp_path / "ref", X, seed=1), labels=y)
    for kw in (dict(epochs=14, window=5), dict(epochs=9, window=3, start=2), {}):  # {}: the defaults
        a, b = compute_scores("dual", d, **kw), compute_scores("dual", ref, **kw)
        assert a.std() > 0
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ScoringError, match="--labels"):
        compute_scores("dual", ReferenceDynamics(tmp_path / "ref"), epochs=14, window=5)


def test_nan_policy(tmp_path):
    X, y = trajectory(12, 6, 3, seed=9)
    X[2, 4, 1] = np.nan
    with pytest.raises(NonFiniteError, match="epoch 2: 1 sample with NaN/Inf logits"):
        dual_from_epochs(iter(X), y, window=3)
    with pytest.warns(RuntimeWarning, match="dual: 1 sample"):
        s, m = dual_from_epochs(iter(X), y, window=3, nan_policy="skip", return_pred_mean=True)
    assert s[4] == -np.inf and np.isnan(m[4]) and np.isfinite(np.delete(s, 4)).all()
    clean = X.copy()
    clean[:, 4] = 0.0
    np.testing.assert_allclose(np.delete(s, 4), np.delete(slow_dual(clean, y, 3), 4), rtol=1e-10, atol=1e-13)


# -- Beta sampling -------------------------------------------------------------------------------
def definition_weights(scores, pred_mean, n_keep, c_d=4.0, pdf=None):
    """The weights straight from dual-facts.md (anchor over the 10 highest scores)."""
    n = len(scores)
    r = 1 - n_keep / n
    anchor = pred_mean[np.argsort(-scores, kind="stable")[:10]].mean()
    b = 15 * (1 - anchor) * (1 - r ** c_d)
    a = 16 - b
    dens = (pdf or dual_beta_pdf)(pred_mean, a, b)
    w = dens * scores
    return w / w.sum(), (a, b, anchor)


def test_beta_pdf():
    x = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(dual_beta_pdf(x, 2.0, 3.0), 12 * x * (1 - x) ** 2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dual_beta_pdf(x, 1.0, 1.0), np.ones(11), rtol=1e-12)
    grid = np.linspace(0, 1, 200001)
    for a, b in ((15.2, 0.8), (3.5, 12.5), (8.0, 8.0)):
        v = dual_beta_pdf(grid[1:-1], a, b)
        assert abs(np.sum(v) * (grid[1] - grid[0]) - 1.0) < 2e-2
    scipy_stats = pytest.importorskip("scipy.stats")
    for a, b in ((15.2, 0.8), (3.5, 12.5), (1.0, 15.0), (16.0, 0.3)):
        xs = np.linspace(0.01, 0.99, 50)
        np.testing.assert_allclose(dual_beta_pdf(xs, a, b), scipy_stats.beta.pdf(xs, a, b), rtol=1e-10)


@pytest.mark.parametrize("n_keep", [5, 20, 60])
def test_beta_weights_follow_the_definition(n_keep):
    rng = np.random.default_rng(11)
    n = 80
    scores = rng.random(n) * 2
    pred_mean = rng.random(n) * 0.9 + 0.05
    got = dual_beta_weights(scores, pred_mean, n_keep)
    want, (a, b, anchor) = definition_weights(scores, pred_mean, n_keep)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert 0 < b < 15 and a == pytest.approx(16 - b)
    try:
        from scipy.stats import beta as scipy_beta
    except ImportError:  # pragma: no cover - scipy is optional
        return
    np.testing.assert_allclose(got, definition_weights(scores, pred_mean, n_keep, pdf=scipy_beta.pdf)[0], rtol=1e-9)


def test_beta_sampling_is_seeded_and_distinct():
    rng = np.random.default_rng(12)
    scores, pred_mean = rng.random(50), rng.random(50)
    a = dual_beta_sample(scores, pred_mean, 20, seed=3)
    assert a.dtype == np.int64 and len(a) == 20 and len(np.unique(a)) == 20
    np.testing.assert_array_equal(a, dual_beta_sample(scores, pred_mean, 20, seed=3))
    assert not np.array_equal(np.sort(a), np.sort(dual_beta_sample(scores, pred_mean, 20, seed=4)))
    assert sorted(dual_beta_sample(scores, pred_mean, 50, seed=0)) == list(range(50))


def test_beta_sampling_distribution_first_two_draws():
    """The ordered first two draws follow sequential sampling without replacement:
    P(i then j) = p_i * p_j / (1 - p_i); chi-square over the N(N-1) ordered pairs."""
    scores = np.array([0.3, 0.9, 1.5, 0.6, 1.1])
    pred_mean = np.array([0.5, 0.62, 0.55, 0.7, 0.45])
    n, n_keep, M = 5, 2, 20000
    p = dual_beta_weights(scores, pred_mean, n_keep)
    counts = np.zeros((n, n))
    for seed in range(M):
        i, j = dual_beta_sample(scores, pred_mean, n_keep, seed=seed)
        counts[i, j] += 1
    expected = np.array([[0.0 if i == j else p[i] * p[j] / (1 - p[i]) for j in range(n)] for i in range(n)]) * M
    off = ~np.eye(n, dtype=bool)
    assert expected[off].min() > 20  # the chi-square approximation holds
    chi2 = float((((counts - expected) ** 2)[off] / expected[off]).sum())
    assert chi2 < 43.8, chi2  # chi-square, 19 degrees of freedom, p = 0.001
    # inclusion frequency follows the weights' order
    inc = counts.sum(axis=0) + counts.sum(axis=1)
    np.testing.assert_array_equal(np.argsort(inc), np.argsort(p))


def test_beta_sampling_never_draws_zero_weight_and_refuses_too_few():
    scores = np.array([0.0, 1.0, 2.0, -np.inf, 0.5, 0.7])
    pred_mean = np.array([0.3, 0.4, 0.5, np.nan, 0.2, 1.0])  # 1.0: nudged inside (0, 1), weight stays finite
    w = dual_beta_weights(scores, pred_mean, 4)
    assert w[0] == 0 and w[3] == 0 and np.isfinite(w).all() and w[5] >= 0
    for seed in range(50):
        got = dual_beta_sample(scores, pred_mean, 4, seed=seed)
        assert not {0, 3} & set(got.tolist())
    with pytest.raises(ScoringError, match="only 4 of 6 samples have a positive weight"):
        dual_beta_sample(scores, pred_mean, 5)
    with pytest.raises(ScoringError, match="degenerate"):
        dual_beta_sample(np.array([0.0, 0.0, 1e-3]), np.array([1.0, 1.0, 1.0]), 1)


def test_anchor_is_the_ten_highest_scored():
    n = 40
    scores = np.linspace(0.1, 4.0, n)  # the last 10 are the top
    pred_mean = np.full(n, 0.5)
    pred_mean[-10:] = 0.9
    n_keep = 8
    got = dual_beta_weights(scores, pred_mean, n_keep, c_d=2.0)
    r = 1 - n_keep / n
    b = 15 * (1 - 0.9) * (1 - r ** 2)
    want = dual_beta_pdf(pred_mean, 16 - b, b) * scores
    np.testing.assert_allclose(got, want / want.sum(), rtol=1e-10)


# -- the sampler plumbing ------------------------------------------------------------------------
def test_sampler_factory_and_selection(tmp_path):
    X, y = trajectory(60, 12, 4, seed=13)
    d = write_tdds(tmp_path / "d", X, y)
    params = dict(epochs=12, window=4)
    assert get_sampler("dual", params) is None  # beta sampling off: plain top-k
    assert get_sampler("dual", params, dynamics=d) is None
    with pytest.raises(ScoringError, match=r"needs the training dynamics.*--dynamics"):
        get_sampler("dual", {**params, "beta_sampling": True})
    with pytest.raises(ScoringError, match="c_d"):
        get_sampler("dual", {**params, "beta_sampling": True, "c_d": -1}, dynamics=d)
    sampler = get_sampler("dual", {**params, "beta_sampling": True, "c_d": 3.0}, dynamics=d)
    assert "dual_beta_sampler(c_d=3" in sampler.__name__
    scores = compute_scores("dual", d, **params)
    _, pred_mean = dual_from_epochs(d.iter_epochs(0, 12), y, window=4, return_pred_mean=True)
    got = sampler(scores, 6, labels=y, seed=5)
    np.testing.assert_array_equal(got, dual_beta_sample(scores, pred_mean, 6, c_d=3.0, seed=5))
    sel = select(scores, 0.9, labels=y, sampler=sampler, seed=5)
    assert sorted(sel.indices.tolist()) == sorted(got.tolist())
    assert select(scores, 0.9, labels=y, sampler=sampler, seed=5).indices.tolist() == sel.indices.tolist()
    with pytest.raises(ScoringError, match="class-balanced selection is not supported with beta_sampling"):
        select(scores, 0.5, labels=y, class_balanced=True, sampler=sampler, seed=5)
    # pred_mean uses the scored epochs (start/epochs), not the whole recording
    s2 = get_sampler("dual", dict(epochs=6, window=3, start=4, beta_sampling=True), dynamics=d)
    sc2 = compute_scores("dual", d, epochs=6, window=3, start=4)
    _, pm2 = dual_from_epochs(d.iter_epochs(4, 10), y, window=3, return_pred_mean=True)
    np.testing.assert_array_equal(s2(sc2, 10, labels=y, seed=1), dual_beta_sample(sc2, pm2, 10, seed=1))


def test_get_sampler_passes_dynamics_only_to_factories_that_take_it(tmp_path):
    X, y = trajectory(20, 4, 3, seed=14)
    d = write_tdds(tmp_path / "d", X, y)
    # CCS's factory (params only) keeps working whether or not dynamics is given
    for kw in ({}, {"dynamics": d}):
        ccs = get_sampler("ccs", {"strata": 4}, **kw)
        assert len(ccs(np.arange(20.0), 5, labels=y, seed=0)) == 5
    seen = {}

    def flat(dynamics, *, nan_policy: str = "raise"):
        """Toy."""
        return np.zeros(int(dynamics.num_samples))

    def kw_factory(params, **kwargs):
        seen["kwargs"] = kwargs
        return None

    def named_factory(params, dynamics=None):
        seen["named"] = dynamics
        return lambda scores, n_keep, *, labels=None, seed=0: np.arange(n_keep)

    flat.__module__ = "toy_dual_plumbing"
    with registered("toy_kw", flat, sampler=kw_factory):
        assert get_sampler("toy_kw", {}, dynamics=d) is None and seen["kwargs"] == {"dynamics": d}
        assert get_sampler("toy_kw", {}) is None and seen["kwargs"] == {"dynamics": None}
    with registered("toy_named", flat, sampler=named_factory):
        assert get_sampler("toy_named", {}, dynamics=d) is not None and seen["named"] is d
