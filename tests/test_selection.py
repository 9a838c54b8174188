"""Selection: exact sizes, seeded ties, class balance, weights, CCS sampler, folders, export."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdds_core.errors import ArtifactError, DataError, ScoringError
from tdds_core.scoring import get_sampler
from tdds_core.selection import (class_quotas, export_arrays, export_files, export_subset, importance_order,
                                 load_selection, normalized_weights, num_to_keep, select, select_many, tie_break_keys,
                                 write_selection)

rates = st.floats(0.01, 0.99)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), rate=rates, seed=st.integers(0, 1000))
def test_size_is_exactly_round_of_kept_fraction(n, rate, seed):
    scores = np.random.default_rng(seed).random(n)
    want = round((1 - rate) * n)
    if want == 0:
        with pytest.raises(ScoringError, match="keeps"):
            select(scores, rate, labels=None)
        return
    sel = select(scores, rate, labels=None)
    assert sel.num_selected == want == num_to_keep(rate, n)
    # the kept are the top scores
    assert sel.scores.min() >= np.sort(scores)[::-1][want - 1]


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(0, 3), min_size=2, max_size=60), rate=rates, seed=st.integers(0, 50))
def test_ties_are_broken_by_the_seeded_permutation(values, rate, seed):
    # was test_ties_are_broken_by_position: ties now follow tie_break_keys(N, seed), a permutation
    # seeded with the selection's seed, instead of the sample position
    scores = np.asarray(values, dtype=float)
    n = len(scores)
    if num_to_keep(rate, n) == 0:
        return
    sel = select(scores, rate, labels=None, seed=seed)
    key = tie_break_keys(n, seed)
    # importance order: score descending, then tie key ascending
    pairs = list(zip(-sel.scores, key[sel.indices]))
    assert pairs == sorted(pairs)
    # among samples with the cut-off score, those with the lowest tie keys are kept
    cut = sel.scores[-1]
    tied = np.flatnonzero(scores == cut)
    kept_tied = np.sort(sel.indices[sel.scores == cut])
    np.testing.assert_array_equal(kept_tied, np.sort(tied[np.argsort(key[tied])][:len(kept_tied)]))
    assert sel.ids == [str(i) for i in sel.indices]
    np.testing.assert_array_equal(sel.indices, select(scores, rate, labels=None, seed=seed).indices)


def test_tie_break_keys():
    k = tie_break_keys(50, 3)
    assert sorted(k.tolist()) == list(range(50)) and k.dtype == np.int64
    np.testing.assert_array_equal(k, tie_break_keys(50, 3))
    assert not np.array_equal(k, tie_break_keys(50, 4))
    np.testing.assert_array_equal(tie_break_keys(5, None), np.arange(5))
    np.testing.assert_array_equal(importance_order(np.zeros(6), seed=3), np.argsort(tie_break_keys(6, 3)))


def _class_sorted(classes=10, per_class=100):
    return np.repeat(np.arange(classes), per_class)


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_equal_scores_cover_the_classes_of_a_class_sorted_dataset(seed):
    y = _class_sorted()  # 1000 samples stored class by class
    s = np.zeros(1000)
    sel = select(s, 0.9, labels=y, seed=seed)  # keep 100 of 1000 equal scores
    counts = np.bincount(sel.labels, minlength=10)
    # position order would keep class 0 only; a random tie-break keeps about 10 of each
    assert counts.min() >= 2 and counts.max() <= 22, counts
    np.testing.assert_array_equal(sel.indices, select(s, 0.9, labels=y, seed=seed).indices)  # same seed, same set
    other = select(s, 0.9, labels=y, seed=seed + 100)
    assert set(other.indices) != set(sel.indices)  # another seed, another set
    # nested across rates for one seed
    wide = select(s, 0.5, labels=y, seed=seed)
    assert set(sel.indices) <= set(wide.indices)


def test_equal_scores_class_balanced_ties_are_random_within_a_class():
    y = _class_sorted(4, 50)
    s = np.zeros(200)
    a = select(s, 0.8, labels=y, class_balanced=True, seed=5)
    assert np.bincount(a.labels).tolist() == [10, 10, 10, 10]
    for c in range(4):
        kept = np.sort(a.indices[a.labels == c]) - 50 * c
        assert not np.array_equal(kept, np.arange(10))  # not the first 10 positions of the class
        assert kept.max() >= 25  # drawn from the whole class
    np.testing.assert_array_equal(a.indices, select(s, 0.8, labels=y, class_balanced=True, seed=5).indices)
    b = select(s, 0.8, labels=y, class_balanced=True, seed=6)
    assert set(a.indices) != set(b.indices)
    # distinct scores are unaffected by the seed
    r = np.random.default_rng(0).random(200)
    np.testing.assert_array_equal(select(r, 0.8, labels=y, class_balanced=True, seed=5).indices,
                                  select(r, 0.8, labels=y, class_balanced=True, seed=6).indices)


def test_partial_ties_at_the_cut_off_are_drawn_by_seed():
    s = np.r_[np.full(5, 2.0), np.full(20, 1.0), np.zeros(5)]
    sel = select(s, 0.5, labels=None, seed=9)  # keeps the five 2.0 and 10 of the twenty 1.0
    assert set(range(5)) <= set(sel.indices.tolist()) and not set(range(25, 30)) & set(sel.indices.tolist())
    ones = np.sort(sel.indices[sel.scores == 1.0])
    assert len(ones) == 10 and not np.array_equal(ones, np.arange(5, 15))


def test_selections_of_one_run_are_nested():
    scores = np.random.default_rng(1).random(500)
    sels = select_many(scores, [0.3, 0.5, 0.9], labels=None)
    assert set(sels[0.9].indices) <= set(sels[0.5].indices) <= set(sels[0.3].indices)
    assert [s.num_selected for s in sels.values()] == [350, 250, 50]


def test_importance_order_and_weights():
    s = np.array([0.5, 2.0, -1.0, 2.0, -np.inf])
    np.testing.assert_array_equal(importance_order(s), [1, 3, 0, 2, 4])
    np.testing.assert_allclose(normalized_weights(s), [0.5, 1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(normalized_weights(np.full(3, 7.0)), [1, 1, 1])
    with pytest.raises(ScoringError, match="NaN"):
        select(np.array([1.0, np.nan]), 0.5, labels=None)


def test_weights_are_normalised_over_all_samples():
    s = np.array([10.0, 0.0, 5.0, 7.5, 2.5])
    sel = select(s, 0.6, labels=None)  # keeps 2: 10 and 7.5
    assert sel.weights.dtype == np.float32
    np.testing.assert_allclose(sel.weights, [1.0, 0.75])  # min 0 / max 10 over ALL samples, not the kept ones


@settings(max_examples=60, deadline=None)
@given(n=st.integers(5, 300), c=st.integers(1, 7), rate=rates, seed=st.integers(0, 100))
def test_class_balanced_is_exact_and_proportional(n, c, rate, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    s = rng.random(n)
    want = num_to_keep(rate, n)
    q = class_quotas(y, rate)
    assert sum(q.values()) == want
    for k, v in q.items():
        nk = int((y == k).sum())
        assert abs(v - (1 - rate) * nk) < 1.0 + 1e-9 and 0 <= v <= nk
    if want == 0:
        return
    sel = select(s, rate, labels=y, class_balanced=True)
    assert sel.num_selected == want
    for k, v in q.items():
        members = np.flatnonzero(y == k)
        kept = sel.indices[sel.labels == k]
        assert len(kept) == v
        # within a class, the top scores are kept
        if v:
            assert s[kept].min() >= np.sort(s[members])[::-1][v - 1]


def test_class_balanced_differs_from_global():
    y = np.array([0] * 6 + [1] * 6)
    s = np.r_[np.arange(6) + 100.0, np.arange(6.0)]
    glob = select(s, 0.5, labels=y)
    bal = select(s, 0.5, labels=y, class_balanced=True)
    assert set(glob.labels) == {0}
    assert np.bincount(bal.labels).tolist() == [3, 3]
    with pytest.raises(ScoringError, match="needs labels"):
        select(s, 0.5, labels=None, class_balanced=True)


def test_sampler_is_used_and_ordered_by_importance():
    s = np.arange(100, dtype=float)
    sampler = get_sampler("ccs", {"beta": 0.1, "strata": 5})
    sel = select(s, 0.7, labels=None, sampler=sampler, seed=3)
    assert sel.num_selected == 30
    assert sel.indices.min() >= 10  # the hardest (lowest AUM) 10% were cut
    assert np.all(np.diff(sel.scores) <= 0)
    top = select(s, 0.7, labels=None)
    assert not np.array_equal(np.sort(sel.indices), np.sort(top.indices))  # coverage, not the top 30
    y = np.arange(100) % 2
    bal = select(s, 0.7, labels=y, class_balanced=True, sampler=sampler, seed=3)
    assert np.bincount(bal.labels).tolist() == [15, 15]

    def broken(scores, n_keep, *, labels=None, seed=0):
        return np.zeros(n_keep, dtype=int)

    with pytest.raises(ScoringError, match="distinct"):
        select(s, 0.7, labels=None, sampler=broken)


def test_rate_validation():
    for bad in (0.0, 1.0, -0.1, 1.5, True):
        with pytest.raises(ScoringError, match=r"outside \(0, 1\)"):
            select(np.ones(10), bad, labels=None)


# -- folders -------------------------------------------------------------------------------------
def test_write_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    s = rng.random(50)
    y = rng.integers(0, 3, 50)
    ids = [f"img/{i:03d}.png" for i in range(50)]
    sel = select(s, 0.8, labels=y, ids=ids)
    m = write_selection(tmp_path / "sel", sel, method="tdds", params={"T": 30, "W": 10}, fingerprint="fp-A")
    assert m["num_selected"] == 10 and m["format"] == "tdds-selection/1"
    back = load_selection(tmp_path / "sel", expected_fingerprint="fp-A")
    np.testing.assert_array_equal(back.indices, sel.indices)
    np.testing.assert_array_equal(back.scores, sel.scores)
    np.testing.assert_array_equal(back.weights, sel.weights)
    np.testing.assert_array_equal(back.labels, sel.labels)
    assert back.ids == sel.ids and back.rate == 0.8 and back.meta["params"] == {"T": 30, "W": 10}
    with open(tmp_path / "sel" / "selected.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["id"] == ids[sel.indices[0]] and float(rows[0]["score"]) == sel.scores[0]
    assert back.mask().sum() == 10


def test_fingerprint_mismatch_and_corruption_are_refused(tmp_path):
    sel = select(np.arange(20.0), 0.5, labels=None)
    write_selection(tmp_path / "sel", sel, method="random", params={}, fingerprint="fp-A")
    with pytest.raises(ArtifactError, match="fingerprint 'fp-A'.*'fp-B'"):
        load_selection(tmp_path / "sel", expected_fingerprint="fp-B")
    p = tmp_path / "sel" / "indices.npy"
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="corrupt"):
        load_selection(tmp_path / "sel")
    (tmp_path / "sel" / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        load_selection(tmp_path / "sel")


def test_rewrite_removes_manifest_first(tmp_path):
    sel = select(np.arange(20.0), 0.5, labels=None)
    folder = tmp_path / "sel"
    write_selection(folder, sel, method="random", params={}, fingerprint="fp")
    (folder / "ids.txt").unlink()
    (folder / "ids.txt").mkdir()  # a real failure: the rename onto ids.txt cannot succeed
    with pytest.raises(OSError):
        write_selection(folder, select(np.arange(20.0), 0.9, labels=None), method="random", params={}, fingerprint="fp")
    assert not (folder / "manifest.json").exists()  # half-rewritten reads as incomplete
    with pytest.raises(ArtifactError, match="incomplete"):
        load_selection(folder)


# -- export --------------------------------------------------------------------------------------
def test_export_arrays(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 4, 30)
    sel = select(rng.random(30), 0.6, labels=y, ids=[f"s{i}" for i in range(30)])
    m = export_subset(tmp_path / "ex", sel, images=images, fingerprint="fp")
    assert m["kind"] == "arrays" and m["num_selected"] == 12 and m["fingerprint"] == "fp"
    with np.load(tmp_path / "ex" / "subset.npz") as z:
        np.testing.assert_array_equal(z["images"], images[sel.indices])
        np.testing.assert_array_equal(z["labels"], y[sel.indices])
        assert list(z["ids"]) == sel.ids and z["weights"].dtype == np.float32
    with pytest.raises(DataError, match="uint8"):
        export_arrays(tmp_path / "bad", images.astype(np.float32), y, [str(i) for i in range(30)], np.ones(30))


@pytest.mark.parametrize("link", [True, False])
def test_export_files(tmp_path, link):
    src = tmp_path / "data"
    paths, ids = [], []
    for i in range(6):
        rel = f"class{i % 2}/img{i}.jpg"
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes([i]) * (i + 1))
        paths.append(p)
        ids.append(rel)
    y = np.arange(6) % 2
    sel = select(np.arange(6.0), 0.5, labels=y, ids=ids)
    m = export_subset(tmp_path / "out", sel, paths=paths, link=link)
    assert m["kind"] == "files" and m["link"] is link
    for i in sel.indices:
        dst = tmp_path / "out" / "files" / ids[i]
        assert dst.read_bytes() == bytes([i]) * (i + 1)
        assert os.path.islink(dst) is link
    not_kept = set(range(6)) - set(sel.indices.tolist())
    assert not any((tmp_path / "out" / "files" / ids[i]).exists() for i in not_kept)
    with open(tmp_path / "out" / "subset.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == sel.ids
    with pytest.raises(DataError, match="safe relative path"):
        export_files(tmp_path / "bad", paths[:1], ["../escape.jpg"], y[:1], np.ones(1))
