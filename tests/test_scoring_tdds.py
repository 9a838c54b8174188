"""TDDS scoring: against a slow per-sample oracle, streaming vs one-shot vs blocked, the authors'
reference layout (permuted, duplicated and missing indices), validation and NaN handling."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdds_core.dynamics import DynamicsWriter, epoch_file, open_dynamics
from tdds_core.dynamics_reference import ReferenceDynamics, open_any_dynamics
from tdds_core.errors import ArtifactError, ScoringError
from tdds_core.scoring import TddsAccumulator, compute_scores, tdds_from_array, tdds_from_epochs, window_weights


# -- oracles -------------------------------------------------------------------------------------
def slow_tdds(X, labels=None, *, W, decay=0.9, inner="kl", signed=False, aggregate="ema"):
    """TDDS one sample at a time with Python floats (the formula of tdds-facts.md, literally)."""
    T, N, C = X.shape
    out = []
    for i in range(N):
        probs = []
        for t in range(T):
            row = [float(v) for v in X[t, i]]
            m = max(row)
            ex = [math.exp(v - m) for v in row]
            s = sum(ex)
            probs.append([e / s for e in ex])
        d = []
        for t in range(T - 1):
            p0, p1 = probs[t], probs[t + 1]
            if inner == "kl":
                terms = [p1[c] * (math.log(p1[c] + 1e-8) - math.log(p0[c] + 1e-8)) for c in range(C)]
                d.append(sum(terms) if signed else sum(abs(v) for v in terms))
            elif inner == "loss":
                y = int(labels[i])
                diff = -math.log(p1[y] + 1e-8) + math.log(p0[y] + 1e-8)
                d.append(diff if signed else abs(diff))
            else:
                y = int(labels[i])
                d.append(math.sqrt(sum((p1[c] - (1.0 if c == y else 0.0)) ** 2 for c in range(C))))
        K = T - W + 1
        total = 0.0
        for k in range(K):
            win = d[k:k + W - 1]
            mu = sum(win) / len(win)
            s_k = math.sqrt(sum((v - mu) ** 2 for v in win))
            w = decay * (1 - decay) ** (T - W - k) if aggregate == "ema" else 1.0 / K
            total += w * s_k
        out.append(total)
    return np.array(out)


def authors_procedure(outputs, indexes, N, *, T, W, decay=0.9):
    """The authors' importance_evaluation.py procedure, restated: for every window, soft-max the W
    epochs' visit rows again, add them into an N x C matrix by index, then the KL-like terms."""
    C = outputs[0].shape[1]
    total = np.zeros(N)
    for k in range(T - W + 1):
        mats = []
        for i in range(W):
            o = outputs[k + i].astype(np.float64)
            e = np.exp(o - o.max(axis=1, keepdims=True))
            sm = e / e.sum(axis=1, keepdims=True)
            P = np.zeros((N, C))
            np.add.at(P, indexes[k + i], sm)
            mats.append(P)
        kd = np.array([np.abs(mats[j + 1] * (np.log(mats[j + 1] + 1e-8) - np.log(mats[j] + 1e-8))).sum(axis=1)
                       for j in range(W - 1)])
        avg = kd.sum(axis=0) / (W - 1)
        total += np.linalg.norm(kd - avg, axis=0) * decay * (1 - decay) ** (T - W - k)
    return total


# -- builders ------------------------------------------------------------------------------------
def trajectory(seed, T, N, C, scale=3.0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((N, C))
    X = np.stack([base * (1 + 0.3 * t) + scale * rng.standard_normal((N, C)) for t in range(T)])
    return X, rng.integers(0, C, N)


def write_dynamics(folder, X, labels, dtype="float32", first_epoch=0):
    T, N, C = X.shape
    w = DynamicsWriter(folder, ids=[f"s{i:03d}" for i in range(N)], labels=labels, num_classes=C,
                       fingerprint="fp-test", dtype=dtype)
    for t in range(T):
        w.write_epoch(first_epoch + t, X[t])
    w.finalize()
    return open_dynamics(folder)


def write_reference(folder, outputs, indexes):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for t, (o, idx) in enumerate(zip(outputs, indexes)):
        np.save(folder / f"{t}_Output.npy", o)
        np.save(folder / f"{t}_Index.npy", np.asarray(idx, dtype=np.int64))
        np.save(folder / f"{t}_Loss.npy", np.zeros(len(idx), dtype=np.float32))
    return folder


# -- correctness against the oracle --------------------------------------------------------------
@pytest.mark.parametrize("T,W", [(8, 3), (6, 6), (5, 2), (9, 4)])
def test_matches_slow_oracle(T, W):
    X, _ = trajectory(T * 10 + W, T, 23, 6)
    got = tdds_from_epochs(iter(X), T=T, W=W)
    np.testing.assert_allclose(got, slow_tdds(X, W=W), rtol=1e-9, atol=1e-12)
    if W == 2:  # one term per window: deviation from its own mean is 0
        assert np.all(got == 0)
    else:
        assert got.std() > 0


def test_window_equal_to_trajectory_is_one_window():
    X, _ = trajectory(3, 5, 11, 4)
    assert window_weights(5, 5, 0.9) == [0.9]
    np.testing.assert_allclose(tdds_from_epochs(iter(X), T=5, W=5, decay=0.9), slow_tdds(X, W=5), rtol=1e-9)


def test_saturated_softmax_matches_oracle():
    X, _ = trajectory(5, 7, 19, 5, scale=400.0)
    X *= 2.5  # logits in the thousands: most probabilities are exactly 0 or 1
    got = tdds_from_epochs(iter(X), T=7, W=4)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, slow_tdds(X, W=4), rtol=1e-9, atol=1e-9)
    assert got.max() > 1.0  # argmax flips give terms near |log 1e-8| = 18.4


@pytest.mark.parametrize("decay", [0.9, 0.5, 1.0])
@pytest.mark.parametrize("aggregate", ["ema", "mean"])
def test_decay_and_aggregate(decay, aggregate):
    X, _ = trajectory(7, 8, 13, 5)
    got = tdds_from_epochs(iter(X), T=8, W=3, decay=decay, aggregate=aggregate)
    np.testing.assert_allclose(got, slow_tdds(X, W=3, decay=decay, aggregate=aggregate), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("inner", ["kl", "loss", "el2n"])
@pytest.mark.parametrize("signed", [False, True])
def test_inner_terms_and_signed(inner, signed):
    if inner == "el2n" and signed:
        with pytest.raises(ScoringError, match="signed"):
            tdds_from_epochs(iter(np.zeros((3, 2, 2))), np.zeros(2, int), T=3, W=2, inner=inner, signed=signed)
        return
    X, y = trajectory(11, 7, 17, 5)
    got = tdds_from_epochs(iter(X), y, T=7, W=3, inner=inner, signed=signed)
    np.testing.assert_allclose(got, slow_tdds(X, y, W=3, inner=inner, signed=signed), rtol=1e-9, atol=1e-12)


def test_inner_options_need_labels():
    X, _ = trajectory(1, 4, 5, 3)
    with pytest.raises(ScoringError, match="labels"):
        tdds_from_epochs(iter(X), T=4, W=2, inner="loss")


def test_float16_dynamics_folder_matches_oracle_on_stored_values(tmp_path):
    X, y = trajectory(13, 9, 31, 7, scale=4.0)
    dyn = write_dynamics(tmp_path / "d", X, y, dtype="float16")
    X16 = X.astype(np.float16)
    got = compute_scores("tdds", dyn, T=9, W=4)
    np.testing.assert_allclose(got, slow_tdds(X16, W=4), rtol=1e-9, atol=1e-12)
    # the float16 rounding matters: the float64 trajectory gives other numbers
    assert not np.allclose(got, slow_tdds(X, W=4), rtol=1e-6)


def test_start_selects_the_trajectory(tmp_path):
    X, y = trajectory(17, 12, 15, 4)
    dyn = write_dynamics(tmp_path / "d", X, y)
    got = compute_scores("tdds", dyn, T=6, W=3, start=4)
    np.testing.assert_allclose(got, slow_tdds(X[4:10].astype(np.float32), W=3), rtol=1e-9, atol=1e-12)


def test_float32_compute_is_close_to_float64():
    X, _ = trajectory(19, 8, 40, 10)
    a = tdds_from_epochs(iter(X), T=8, W=4)
    b = tdds_from_epochs(iter(X), T=8, W=4, dtype="float32")
    np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-6)
    assert not np.array_equal(a, b)


# -- streaming, one-shot and blocked give the same numbers ---------------------------------------
def test_streaming_equals_one_shot_exactly():
    X, y = trajectory(23, 10, 57, 8)
    for kw in (dict(W=4), dict(W=10), dict(W=3, inner="loss"), dict(W=5, aggregate="mean", signed=True)):
        oneshot = tdds_from_array(X, y, **kw)
        for block_rows, workers in ((None, None), (1, 1), (57 // 4, 2), (57 // 2, 3), (57 + 100, 2)):
            stream = tdds_from_epochs((x for x in X), y, T=10, block_rows=block_rows, workers=workers, **kw)
            np.testing.assert_array_equal(stream, oneshot)


def test_the_reader_thread_hands_on_errors_and_stops_reading():
    """With workers the next epoch is read on a reader thread: an error it meets is raised to the
    caller as it is, a short input is the usual ScoringError, and nothing past T is read."""
    X, y = trajectory(5, 10, 40, 4)
    read: list[int] = []

    def epochs(fail_at=None):
        for t, x in enumerate(X):
            read.append(t)
            if t == fail_at:
                raise ArtifactError(f"epoch {t} is damaged")
            yield x

    with pytest.raises(ArtifactError, match="epoch 3 is damaged"):
        tdds_from_epochs(epochs(fail_at=3), y, T=10, W=3, workers=2)
    with pytest.raises(ScoringError, match="held only 10"):
        tdds_from_epochs(iter(X), y, T=11, W=3, workers=2)
    read.clear()
    got = tdds_from_epochs(epochs(), y, T=6, W=3, workers=2)
    assert read == list(range(6))
    np.testing.assert_array_equal(got, tdds_from_array(X[:6], y, W=3))


@pytest.mark.parametrize("block_rows", [1, 7, 29, 57, 157])
def test_blocked_folder_equals_streaming(tmp_path, block_rows):
    X, y = trajectory(29, 8, 57, 6)
    dyn = write_dynamics(tmp_path / "d", X, y)
    stream = tdds_from_epochs(iter(X.astype(np.float32)), T=8, W=3)
    np.testing.assert_array_equal(compute_scores("tdds", dyn, T=8, W=3, block_rows=block_rows), stream)


def test_accumulator_state_does_not_grow_with_T():
    X, _ = trajectory(31, 20, 9, 3)
    acc = TddsAccumulator(9, T=20, W=4)
    for x in X:
        acc.update(x)
        assert len(acc._ring) <= 3
    np.testing.assert_allclose(acc.result(), slow_tdds(X, W=4), rtol=1e-9)
    with pytest.raises(ScoringError, match="already received"):
        acc.update(X[0])


# -- the authors' reference layout ---------------------------------------------------------------
def messy_visits(rng, X, n_dup):
    """Per epoch: a random visit order in which n_dup indices are visited twice and n_dup never."""
    T, N, C = X.shape
    outputs, indexes = [], []
    for t in range(T):
        idx = rng.permutation(N)
        if n_dup:
            dup_src = rng.choice(N, size=2 * n_dup, replace=False)
            idx[dup_src[:n_dup]] = idx[dup_src[n_dup:]]  # these positions now repeat another index
        rows = X[t][np.arange(N)] + 0.0
        rows = rows[rng.permutation(N)].astype(np.float32)  # the logits of each visit
        outputs.append(rows)
        indexes.append(idx)
    return outputs, indexes


def test_reference_layout_matches_authors_procedure(tmp_path):
    rng = np.random.default_rng(41)
    X, _ = trajectory(41, 8, 30, 5)
    outputs, indexes = messy_visits(rng, X, n_dup=4)
    assert any(len(np.unique(i)) < 30 for i in indexes)
    folder = write_reference(tmp_path / "ref", outputs, indexes)
    dyn = ReferenceDynamics(folder)
    assert dyn.num_samples == 30 and dyn.num_classes == 5 and dyn.epochs == list(range(8))
    got = compute_scores("tdds", dyn, T=8, W=4)
    want = authors_procedure(outputs, indexes, 30, T=8, W=4)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # a missing sample's all-zero row makes its next visit jump: scores are not all alike
    assert got.std() > 0


def test_reference_layout_mixing_clean_and_messy_epochs(tmp_path):
    """Epochs that visit every sample once are soft-maxed by the scorer, the others come as the
    authors' summed matrices; both kinds in one trajectory give the authors' numbers."""
    rng = np.random.default_rng(47)
    X, _ = trajectory(47, 7, 26, 4)
    outputs, indexes = messy_visits(rng, X, n_dup=0)
    messy_o, messy_i = messy_visits(rng, X, n_dup=3)
    for t in (2, 5):
        outputs[t], indexes[t] = messy_o[t], messy_i[t]
    dyn = ReferenceDynamics(write_reference(tmp_path / "ref", outputs, indexes))
    assert [dyn.tdds_input(t)[0] for t in range(7)] == ["logits", "logits", "probs", "logits", "logits", "probs", "logits"]
    got = compute_scores("tdds", dyn, T=7, W=3)
    np.testing.assert_allclose(got, authors_procedure(outputs, indexes, 26, T=7, W=3), rtol=1e-10, atol=1e-12)
    via_matrices = tdds_from_epochs(dyn.iter_probs(0, 7), T=7, W=3, inputs="probs")
    np.testing.assert_allclose(got, via_matrices, rtol=1e-12, atol=1e-14)


def test_reference_layout_with_fewer_rows_than_samples(tmp_path):
    rng = np.random.default_rng(43)
    X, y = trajectory(43, 6, 25, 4)
    outputs, indexes = [], []
    for t in range(6):  # drop_last-like: 5 samples not visited each epoch
        idx = rng.permutation(25)[:20]
        outputs.append(X[t][idx].astype(np.float32))
        indexes.append(idx)
    folder = write_reference(tmp_path / "ref", outputs, indexes)
    with pytest.raises(ArtifactError, match="outside"):
        compute_scores("tdds", ReferenceDynamics(folder), T=6, W=3)  # N defaults to 20 rows, as the authors'
    dyn = ReferenceDynamics(folder, labels=y)
    got = compute_scores("tdds", dyn, T=6, W=3)
    np.testing.assert_allclose(got, authors_procedure(outputs, indexes, 25, T=6, W=3), rtol=1e-10, atol=1e-12)


def test_reference_reader_logits_view(tmp_path):
    outputs = [np.array([[1.0, 2.0], [3.0, 5.0], [7.0, 9.0]], dtype=np.float32)]
    indexes = [np.array([2, 0, 2])]  # sample 2 twice, sample 1 never
    folder = write_reference(tmp_path / "ref", outputs, indexes)
    dyn = ReferenceDynamics(folder)
    X = dyn.epoch(0)
    np.testing.assert_array_equal(X[0], [3.0, 5.0])
    assert np.isnan(X[1]).all()
    np.testing.assert_array_equal(X[2], [4.0, 5.5])
    np.testing.assert_array_equal(dyn.visit_counts(0), [1, 0, 2])
    P = dyn.probabilities(0)
    assert P[1].sum() == 0 and abs(P[2].sum() - 2.0) < 1e-12 and abs(P[0].sum() - 1.0) < 1e-12
    assert dyn.ids == ["0", "1", "2"]
    with pytest.raises(ScoringError, match="--labels"):
        compute_scores("aum", dyn)
    with pytest.raises(ScoringError, match="nan_policy"):  # the unvisited sample's NaN row
        compute_scores("entropy", ReferenceDynamics(folder, labels=np.array([0, 1, 1])), source="last_epoch")


def test_reference_reader_errors(tmp_path):
    folder = write_reference(tmp_path / "ref", [np.zeros((3, 2), np.float32)], [np.array([0, 1, 2])])
    (folder / "0_Index.npy").unlink()
    with pytest.raises(ArtifactError, match="_Index.npy"):
        ReferenceDynamics(folder)
    np.save(folder / "0_Index.npy", np.array([0, 1]))
    with pytest.raises(ArtifactError, match="different runs"):
        ReferenceDynamics(folder).probabilities(0)
    with pytest.raises(ArtifactError, match="authors' layout"):
        ReferenceDynamics(tmp_path)
    assert isinstance(open_any_dynamics(folder), ReferenceDynamics)
    with pytest.raises(ScoringError, match="reference"):
        open_any_dynamics(folder, format="tdds", labels=np.zeros(3, int))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(2, 12), c=st.integers(2, 5), dup=st.booleans())
def test_reference_scores_do_not_depend_on_visit_order(seed, n, c, dup):
    rng = np.random.default_rng(seed)
    T, W = 4, 3
    X = rng.standard_normal((T, n, c)) * 3
    outputs, indexes = messy_visits(rng, X, n_dup=1 if dup and n >= 2 else 0)
    shuffled_o, shuffled_i = [], []
    for o, i in zip(outputs, indexes):
        p = rng.permutation(len(i))
        shuffled_o.append(o[p])
        shuffled_i.append(i[p])
    with tempfile.TemporaryDirectory() as d:
        a = compute_scores("tdds", ReferenceDynamics(write_reference(Path(d) / "a", outputs, indexes)), T=T, W=W)
        b = compute_scores("tdds", ReferenceDynamics(write_reference(Path(d) / "b", shuffled_o, shuffled_i)), T=T, W=W)
    if dup:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    else:
        np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(-200, 200), n=st.integers(1, 10), c=st.integers(2, 6))
def test_invariant_to_a_constant_added_to_a_row(seed, shift, n, c):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((5, n, c)) * 2
    shifts = shift * rng.random((5, n, 1))
    a = tdds_from_epochs(iter(X), T=5, W=3)
    b = tdds_from_epochs(iter(X + shifts), T=5, W=3)
    np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


# -- validation ----------------------------------------------------------------------------------
@pytest.fixture()
def small_dyn(tmp_path):
    X, y = trajectory(3, 6, 10, 4)
    return write_dynamics(tmp_path / "d", X, y), X, y


@pytest.mark.parametrize("params,match", [
    (dict(T=6, W=7), "W=7 is longer than the trajectory T=6"),
    (dict(T=6, W=1), "W .* >= 2"),
    (dict(T=6, W=3, decay=0.0), r"decay .* \(0, 1\]"),
    (dict(T=6, W=3, decay=1.5), r"decay .* \(0, 1\]"),
    (dict(T=8, W=3), r"needs epochs 0..7.*recorded epochs: 0..5"),
    (dict(T=4, W=3, start=4), r"start=4 .* recorded epochs: 0..5"),
    (dict(T=6, W=3, inner="gradient"), "inner must be one of"),
    (dict(T=6, W=3, aggregate="median"), "aggregate must be one of"),
    (dict(T=6, W=3, dtype="float16"), "dtype must be one of"),
    (dict(T=6, W=3, window=3), "unknown option 'window' .* valid options: .*W"),
])
def test_invalid_settings_are_clear_errors(small_dyn, params, match):
    dyn, _, _ = small_dyn
    with pytest.raises(ScoringError, match=match):
        compute_scores("tdds", dyn, **params)


def test_shape_mismatches():
    X, y = trajectory(5, 4, 6, 3)
    with pytest.raises(ScoringError, match="6 samples"):
        tdds_from_epochs(iter(X), y[:5], T=4, W=2)
    with pytest.raises(ScoringError, match="3 classes"):
        tdds_from_epochs(iter(X), np.array([0, 1, 2, 3, 0, 1]), T=4, W=2)
    bad = [X[0], X[1][:, :2], X[2], X[3]]
    with pytest.raises(ScoringError, match="classes"):
        tdds_from_epochs(iter(bad), T=4, W=2)
    with pytest.raises(ScoringError, match="only 2"):
        tdds_from_epochs(iter(X[:2]), T=4, W=2)


def test_nan_raise_names_epoch_and_count(tmp_path):
    X, y = trajectory(7, 6, 40, 4)
    X[3, [5, 17, 33], 1] = np.nan
    X[3, 20, 0] = np.inf
    dyn = write_dynamics(tmp_path / "d", X, y)
    with pytest.raises(ScoringError, match=r"epoch 3: 4 samples with NaN/Inf logits \(first: sample 5\)"):
        compute_scores("tdds", dyn, T=6, W=3, block_rows=8)  # the count covers the whole epoch, not one block


def test_nan_skip_gives_lowest_score_and_warns(tmp_path):
    X, y = trajectory(9, 6, 30, 4)
    X[2, 4, :] = np.nan
    X[5, 11, 2] = -np.inf
    dyn = write_dynamics(tmp_path / "d", X, y)
    with pytest.warns(RuntimeWarning, match="2 samples had NaN/Inf"):
        s = compute_scores("tdds", dyn, T=6, W=3, nan_policy="skip", block_rows=7)
    assert s[4] == -np.inf and s[11] == -np.inf
    assert np.isfinite(np.delete(s, [4, 11])).all()
    # the other samples are unaffected
    clean = X.copy()
    clean[:, [4, 11]] = 0
    np.testing.assert_allclose(np.delete(s, [4, 11]), np.delete(slow_tdds(clean.astype(np.float32), W=3), [4, 11]),
                               rtol=1e-9, atol=1e-12)


def test_corrupt_epoch_file_is_refused(tmp_path):
    X, y = trajectory(11, 5, 12, 3)
    dyn = write_dynamics(tmp_path / "d", X, y)
    path = tmp_path / "d" / epoch_file(2)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x55
    path.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="corrupt"):
        compute_scores("tdds", dyn, T=5, W=3)
    # without verification the (changed) numbers are used
    s = compute_scores("tdds", open_dynamics(tmp_path / "d", verify=False), T=5, W=3)
    assert s.shape == (12,)
