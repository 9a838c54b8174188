"""AUM and CCS against slow, plain transcriptions of their sources.

* AUM: the CCS code's ``accumulated_margin`` (``haizhongzheng/Coverage-centric-coreset-selection``,
  ``generate_importance_score.py``, ``training_dynamics_metrics``): per logged epoch,
  ``output = exp(log_softmax(logits))``, target probability minus the largest other probability,
  SUMMED over epochs (the TDDS paper's "probability gap"); and Pleiss et al.'s logit margin.
* CCS: ``core/data/Coreset.py`` ``mislabel_mask`` + ``stratified_sampling`` (with its inner
  ``bin_allocate``) as ``train.py --coreset-mode stratified`` calls them, loop by loop; torch's
  unseeded ``randperm`` is replaced by ``numpy.random.default_rng(seed).permutation`` (the one
  documented change), so kept sets can be compared exactly.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from test_scoring_baselines import write  # the random-dynamics writer of the baseline tests
from tdds_core.scoring import aum_from_epochs, ccs_sample, compute_scores, get_sampler
from tdds_core.selection import num_to_keep, select


# -- slow transcriptions -------------------------------------------------------------------------
def source_accumulated_margin(X, y):
    """CCS's accumulated_margin: sum over epochs of p[y] - max_{c != y} p[c], one sample at a time."""
    T, N, C = X.shape
    acc = [0.0] * N
    for t in range(T):
        for i in range(N):
            row = [float(v) for v in X[t, i]]
            m = max(row)
            log_z = m + math.log(sum(math.exp(v - m) for v in row))
            output = [math.exp(v - log_z) for v in row]  # exp(log_softmax)
            target_prob = output[y[i]]
            output[y[i]] = 0.0
            acc[i] += target_prob - max(output)
    return np.array(acc)


def source_logit_aum(X, y):
    """Pleiss et al.: mean over epochs of logit[y] - max_{c != y} logit[c]."""
    T, N, C = X.shape
    out = []
    for i in range(N):
        total = 0.0
        for t in range(T):
            row = [float(v) for v in X[t, i]]
            total += row[y[i]] - max(v for c, v in enumerate(row) if c != y[i])
        out.append(total / T)
    return np.array(out)


def source_ccs(score, coreset_num, mis_ratio, seed, stratas=50):
    """train.py (stratified mode) -> mislabel_mask -> stratified_sampling, in plain loops.

    Cutoff sort ties by position (torch's order is unspecified); budget ties by stratum index."""
    score = [float(v) for v in score]
    total_num = len(score)
    # mislabel_mask(mis_key='accumulated_margin', mis_num, mis_descending=False)
    mis_num = int(mis_ratio * total_num)
    mis_score_sorted_index = sorted(range(total_num), key=lambda i: (score[i], i))
    easy_index = mis_score_sorted_index[mis_num:]
    data = [score[i] for i in easy_index]
    # stratified_sampling(data_score, coreset_key, coreset_num)
    min_score = min(data)
    max_score = max(data) * 1.0001
    step = (max_score - min_score) / stratas

    def bin_range(k):
        return min_score + k * step, min_score + (k + 1) * step

    strata_num = []
    for i in range(stratas):
        start, end = bin_range(i)
        strata_num.append(sum(1 for v in data if start <= v < end))

    def bin_allocate(num, bins):
        sorted_index = sorted(range(len(bins)), key=lambda i: (bins[i], i))
        rest_exp_num = num
        rst = [0] * len(bins)
        for i, b in enumerate(sorted_index):
            rest_bins = len(bins) - i
            avg = rest_exp_num // rest_bins
            cur_num = min(bins[b], avg)
            rst[b] = cur_num
            rest_exp_num -= cur_num
        return rst

    budgets = bin_allocate(coreset_num, strata_num)
    rng = np.random.default_rng(seed)
    selected_index = []
    for i in range(stratas):
        start, end = bin_range(i)
        pool = [j for j in range(len(data)) if start <= data[j] < end]
        rand_index = rng.permutation(len(pool))
        selected_index += [pool[r] for r in rand_index[:budgets[i]]]
    return sorted(easy_index[j] for j in selected_index)


def spearman(a, b):
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


# -- AUM -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_dynamics(tmp_path_factory):
    rng = np.random.default_rng(21)
    N, C, T = 90, 5, 8
    y = rng.integers(0, C, N)
    X = np.stack([rng.standard_normal((N, C)) * 2 + np.eye(C)[y] * t * rng.random((N, 1)) for t in range(T)])
    d = write(tmp_path_factory.mktemp("src") / "d", X, y)
    return d, X.astype(np.float32), y  # the folder stores float32


def test_aum_matches_the_ccs_codes_accumulated_margin(random_dynamics):
    d, X, y = random_dynamics
    want = source_accumulated_margin(X, y)
    got = compute_scores("aum", d)  # default: probability space, mean over the epochs
    assert spearman(got, want) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(got * X.shape[0], want, rtol=1e-9, atol=1e-12)
    via_ccs = compute_scores("ccs", d)  # CCS's base is the same AUM
    np.testing.assert_array_equal(via_ccs, got)


def test_aum_logit_space_matches_pleiss(random_dynamics):
    d, X, y = random_dynamics
    want = source_logit_aum(X, y)
    got = compute_scores("aum", d, space="logit")
    assert spearman(got, want) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # the two spaces are different scores on these dynamics
    assert spearman(got, compute_scores("aum", d)) < 0.9999


def test_aum_hand_worked_two_epochs():
    # sample 0 (label 1): logits (0, ln 4, 0) -> p = (1/6, 4/6, 1/6): gap 1/2; then (ln 2, 0, ln 2) ->
    # p = (2/5, 1/5, 2/5): gap -1/5. Sum 0.3 (CCS's accumulated_margin), mean 0.15.
    # sample 1 (label 0): logits (ln 9, 0, 0) -> p = (9/11, 1/11, 1/11): gap 8/11; then all equal: 0.
    ln = math.log
    X = np.array([[[0.0, ln(4), 0.0], [ln(9), 0.0, 0.0]],
                  [[ln(2), 0.0, ln(2)], [0.0, 0.0, 0.0]]])
    y = np.array([1, 0])
    np.testing.assert_allclose(source_accumulated_margin(X, y), [0.3, 8 / 11], atol=1e-12)
    np.testing.assert_allclose(aum_from_epochs(iter(X), y), [0.15, 4 / 11], atol=1e-12)
    # logit space: sample 0: ln 4 then -ln 2 -> mean ln(2)/2; sample 1: ln 9 then 0 -> ln(9)/2
    np.testing.assert_allclose(aum_from_epochs(iter(X), y, space="logit"), [ln(2) / 2, ln(9) / 2], atol=1e-12)


# -- CCS -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,rate,beta,strata,seed", [
    (400, 0.9, 0.3, 50, 0), (400, 0.7, 0.1, 50, 1), (1000, 0.8, 0.1, 50, 2), (257, 0.5, 0.0, 50, 3),
    (300, 0.9, 0.3, 7, 4), (120, 0.3, 0.2, 10, 5),
])
def test_ccs_kept_sets_match_the_source_transcription(n, rate, beta, strata, seed):
    rng = np.random.default_rng(100 + seed)
    # AUM-like probability gaps in [-1, 1], skewed towards easy, with some exact duplicates
    s = np.clip(rng.beta(4, 1.5, n) * 2 - 1, -1, 1)
    s[rng.integers(0, n, 10)] = s[0]
    n_keep = num_to_keep(rate, n)
    want = source_ccs(s, n_keep, beta, seed, stratas=strata)
    got = ccs_sample(s, n_keep, beta=beta, strata=strata, hard_end="low", seed=seed)
    assert len(want) == n_keep
    np.testing.assert_array_equal(got, want)
    # and through selection with the registry's sampler (the selection's seed reaches the draws)
    sel = select(s, rate, labels=None, sampler=get_sampler("ccs", {"beta": beta, "strata": strata}), seed=seed)
    np.testing.assert_array_equal(np.sort(sel.indices), want)


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7, 0.8, 0.9])
def test_ccs_default_beta_matches_the_source_at_the_papers_rates(rate):
    s = np.random.default_rng(7).uniform(-0.5, 1.0, 2000)
    beta = {0.3: 0.0, 0.5: 0.0, 0.7: 0.1, 0.8: 0.1, 0.9: 0.3}[rate]  # the CCS paper's CIFAR-10 row
    n_keep = num_to_keep(rate, 2000)
    want = source_ccs(s, n_keep, beta, seed=3)
    np.testing.assert_array_equal(ccs_sample(s, n_keep, seed=3), want)  # beta="auto"
    hardest = np.argsort(s, kind="stable")[: int(beta * 2000)]
    assert not np.isin(hardest, want).any()


def test_ccs_seed_changes_the_draw_not_the_cutoff():
    s = np.random.default_rng(8).uniform(-1, 1, 500)
    a = ccs_sample(s, 50, seed=0)
    b = ccs_sample(s, 50, seed=1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, ccs_sample(s, 50, seed=0))
    hardest = np.argsort(s)[:150]  # rate 0.9 -> beta 0.3
    assert not np.isin(hardest, a).any() and not np.isin(hardest, b).any()


def test_ccs_hand_worked_case():
    # ten AUM values; beta = 0.2 cuts the two lowest (-0.8, -0.6). The remaining eight span
    # lo = 0.05 .. hi = 1.0, top edge 1.0 * 1.0001, step (1.0001 - 0.05) / 4 = 0.237525: strata
    # [0.05, 0.2875), [0.2875, 0.5251), [0.5251, 0.7626), [0.7626, 1.0001) hold 1, 3, 3, 1 samples.
    # Budget 6, smallest strata first: stratum 0 gets 6 // 4 = 1, stratum 3 gets 5 // 3 = 1,
    # stratum 1 gets 4 // 2 = 2, stratum 2 gets the last 2.
    s = np.array([0.3, -0.8, 0.62, 0.05, 0.34, 1.0, -0.6, 0.6, 0.32, 0.64])
    for seed in range(5):
        kept = ccs_sample(s, 6, beta=0.2, strata=4, seed=seed)
        assert 1 not in kept and 6 not in kept  # the cut
        assert 3 in kept and 5 in kept  # the single-member strata: the lowest remaining and the top
        assert len(set(kept) & {0, 4, 8}) == 2 and len(set(kept) & {2, 7, 9}) == 2
        np.testing.assert_array_equal(kept, source_ccs(s, 6, 0.2, seed, stratas=4))
    # a plain top-6 would drop 0.05 (coverage of the low range is what CCS keeps)
    top = np.argsort(-s)[:6]
    assert 3 not in top


def test_ccs_departures_from_the_source_on_degenerate_ranges():
    # all remaining scores <= 0: the source's max * 1.0001 falls below the maximum, dropping it from
    # every stratum; here the top edge is padded upward so every remaining sample stays eligible
    s = np.linspace(-1.0, -0.1, 10)
    kept = ccs_sample(s, 10, beta=0.0, strata=3, seed=0)
    np.testing.assert_array_equal(kept, np.arange(10))
    # all equal: the source's step is 0 and it selects nothing; here it is a uniform draw
    kept = ccs_sample(np.full(20, 0.5), 10, beta=0.0, seed=0)
    assert len(kept) == 10 and len(np.unique(kept)) == 10


# -- EL2N, forgetting, Dyn-Unc, entropy ------------------------------------------------------------
# Each source's definition as plain loops over samples and epochs, one Python float at a time,
# against compute_scores on random dynamics with a clean final pass.
def plain_softmax(row):
    row = [float(v) for v in row]
    m = max(row)
    exps = [math.exp(v - m) for v in row]
    z = sum(exps)
    return [e / z for e in exps]


def plain_argmax(row):
    best = 0
    for c in range(1, len(row)):
        if float(row[c]) > float(row[best]):
            best = c
    return best


def source_el2n(X, y, epochs):
    """Paul et al.: per sample, mean over ``epochs`` of ||softmax(logits) - onehot(y)||_2."""
    out = []
    for i in range(X.shape[1]):
        total = 0.0
        for t in epochs:
            p = plain_softmax(X[t, i])
            sq = 0.0
            for c in range(len(p)):
                d = p[c] - (1.0 if c == y[i] else 0.0)
                sq += d * d
            total += math.sqrt(sq)
        out.append(total / len(epochs))
    return np.array(out)


def source_forgetting(X, y, epochs):
    """Toneva et al.: correct at one recorded epoch, incorrect at the next = one forgetting event;
    never correct = "forgotten infinitely often", here the module's finite E + 1 (E epochs used)."""
    out = []
    for i in range(X.shape[1]):
        events, learned, prev = 0, False, None
        for t in epochs:
            correct = plain_argmax(X[t, i]) == int(y[i])
            if correct:
                learned = True
            if prev is not None and prev and not correct:
                events += 1
            prev = correct
        out.append(float(events) if learned else float(len(epochs) + 1))
    return np.array(out)


def source_dyn_unc(X, y, epochs, width):
    """He et al.: per window of ``width`` consecutive epochs (stride 1), the sample standard
    deviation (ddof=1) of softmax(logits)[y]; mean over the windows."""
    out = []
    for i in range(X.shape[1]):
        probs = [plain_softmax(X[t, i])[y[i]] for t in epochs]
        windows = []
        for s in range(len(probs) - width + 1):
            w = probs[s:s + width]
            mean = sum(w) / width
            var = sum((v - mean) ** 2 for v in w) / (width - 1)
            windows.append(math.sqrt(var))
        out.append(sum(windows) / len(windows))
    return np.array(out)


def source_entropy(L):
    """Coleman et al.: -sum_c p_c log p_c of softmax(logits), per sample."""
    out = []
    for i in range(L.shape[0]):
        h = 0.0
        for p in plain_softmax(L[i]):
            if p > 0:
                h -= p * math.log(p)
        out.append(h)
    return np.array(out)


@pytest.fixture(scope="module")
def rich_dynamics(tmp_path_factory):
    """300 samples, 6 classes, 16 epochs (0..15): noisy logits with a per-sample learning speed, so
    samples are learned, forgotten and relearned; 20 samples never reach their label; a clean final
    pass that differs from the last epoch."""
    rng = np.random.default_rng(33)
    N, C, T = 300, 6, 16
    y = rng.integers(0, C, N)
    onehot = np.eye(C)[y]
    speed = rng.random((N, 1)) * 0.6
    X = np.stack([rng.standard_normal((N, C)) * 1.5 + onehot * t * speed for t in range(T)])
    never = rng.choice(N, 20, replace=False)
    X[:, never, :] -= onehot[never] * 50.0  # target logit far below the rest at every epoch
    final = X[-1] + rng.standard_normal((N, C))
    X, final = X.astype(np.float32), final.astype(np.float32)  # the folder stores float32
    d = write(tmp_path_factory.mktemp("src4") / "d", X, y, final=final)
    return d, X, y, final, never


def _same(got, want):
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert spearman(got, want) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("opts,epochs", [({}, range(10)),  # default k=10 from the first epoch
                                         ({"k": 4, "start": 5}, range(5, 9)),
                                         ({"k": 50, "start": 12}, range(12, 16))])  # k past the end: all left
def test_el2n_matches_paul_et_al(rich_dynamics, opts, epochs):
    d, X, y, _, _ = rich_dynamics
    _same(compute_scores("el2n", d, **opts), source_el2n(X, y, list(epochs)))


@pytest.mark.parametrize("opts,epochs", [({}, range(16)), ({"start": 3, "stop": 11}, range(3, 11))])
def test_forgetting_matches_toneva_et_al(rich_dynamics, opts, epochs):
    d, X, y, _, never = rich_dynamics
    epochs = list(epochs)
    want = source_forgetting(X, y, epochs)
    got = compute_scores("forgetting", d, **opts)
    np.testing.assert_array_equal(got, want)
    assert spearman(got, want) == pytest.approx(1.0, abs=1e-12)
    # the dynamics exercise every case: never learned in the epochs used (E + 1, above any count;
    # always the 20 planted ones), unforgettable (0) and forgotten more than once
    unlearned = np.array([all(plain_argmax(X[t, i]) != int(y[i]) for t in epochs) for i in range(len(y))])
    assert unlearned[never].all()
    assert (got[unlearned] == len(epochs) + 1).all()
    assert got[~unlearned].max() <= len(epochs) // 2
    assert (got[~unlearned] == 0).any() and (got[~unlearned] >= 2).any()


@pytest.mark.parametrize("opts,epochs,width", [({}, range(16), 10),  # default width 10: 7 windows
                                               ({"width": 3, "start": 4, "stop": 14}, range(4, 14), 3)])
def test_dyn_unc_matches_he_et_al(rich_dynamics, opts, epochs, width):
    d, X, y, _, _ = rich_dynamics
    _same(compute_scores("dyn_unc", d, **opts), source_dyn_unc(X, y, list(epochs), width))


def test_entropy_matches_coleman_et_al_on_both_sources(rich_dynamics):
    d, X, y, final, _ = rich_dynamics
    clean = compute_scores("entropy", d)  # default: the clean final pass
    _same(clean, source_entropy(final))
    _same(compute_scores("entropy", d, source="clean"), source_entropy(final))
    last = compute_scores("entropy", d, source="last_epoch")
    _same(last, source_entropy(X[-1]))
    _same(compute_scores("entropy", d, source="last_epoch", epoch=7), source_entropy(X[7]))
    assert spearman(clean, last) < 0.9999  # the two sources are different logits here
