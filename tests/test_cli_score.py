"""`tdds score` and `tdds select` end to end on small dynamics folders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tdds_core.cli import main
from tdds_core.dynamics import DynamicsWriter, open_dynamics
from tdds_core.io import sha256_file
from tdds_core.scoring import compute_scores
from tdds_core.selection import load_selection

N, C, T = 80, 5, 12


@pytest.fixture(scope="module")
def dyn_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, N)
    folder = tmp_path_factory.mktemp("cli") / "dynamics"
    w = DynamicsWriter(folder, ids=[f"img/{i:03d}.png" for i in range(N)], labels=y, num_classes=C,
                       fingerprint="fp-cli", dtype="float16")
    for t in range(T):
        w.write_epoch(t, rng.standard_normal((N, C)) * 2 + np.eye(C)[y] * t / 3)
    w.finalize()
    return folder


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_score_writes_scores_and_sidecar(dyn_dir, tmp_path, capsys):
    out = tmp_path / "tdds.npy"
    rc, stdout, _ = run(capsys, "score", "--dynamics", dyn_dir, "--method", "tdds", "--T", 10, "--W", 4,
                        "--decay", 0.8, "--start", 1, "--param", "inner=loss", "--out", out)
    assert rc == 0 and "scored 80 samples" in stdout
    scores = np.load(out)
    assert scores.dtype == np.float64 and scores.shape == (N,)
    want = compute_scores("tdds", open_dynamics(dyn_dir), T=10, W=4, decay=0.8, start=1, inner="loss")
    np.testing.assert_array_equal(scores, want)
    side = json.loads(Path(str(out) + ".json").read_text())
    assert side["method"] == "tdds" and side["fingerprint"] == "fp-cli" and side["sha256"] == sha256_file(out)
    assert side["params"]["T"] == 10 and side["params"]["inner"] == "loss" and side["params"]["aggregate"] == "ema"
    assert side["num_samples"] == N and side["num_skipped"] == 0


@pytest.mark.parametrize("argv,message", [
    (["--method", "tdsd"], "unknown scoring method 'tdsd'"),
    (["--method", "aum", "--param", "widht=3"], "unknown option 'widht'"),
    (["--method", "aum", "--T", "5"], "unknown option 'T' for scoring method 'aum'"),
    (["--method", "tdds", "--T", "40"], "recorded epochs: 0..11"),
    (["--method", "tdds", "--param", "W"], "expected KEY=VALUE"),
    (["--method", "tdds", "--T", "5", "--param", "T=6"], "both given"),
])
def test_score_errors_exit_2_without_traceback(dyn_dir, tmp_path, capsys, argv, message):
    rc, _, err = run(capsys, "score", "--dynamics", dyn_dir, "--out", tmp_path / "x.npy", *argv)
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "x.npy").exists()


def test_missing_dynamics_folder(tmp_path, capsys):
    rc, _, err = run(capsys, "score", "--dynamics", tmp_path / "nope", "--method", "random", "--out", tmp_path / "x.npy")
    assert rc == 2 and "does not exist" in err


def test_select_many_rates(dyn_dir, tmp_path, capsys):
    scores = tmp_path / "s.npy"
    assert run(capsys, "score", "--dynamics", dyn_dir, "--method", "el2n", "--out", scores)[0] == 0
    rc, stdout, _ = run(capsys, "select", "--scores", scores, "--rate", 0.9, "--rate", 0.5, "--dynamics", dyn_dir,
                        "--out", tmp_path / "sel")
    assert rc == 0 and "kept 8 of 80" in stdout and "kept 40 of 80" in stdout
    s90 = load_selection(tmp_path / "sel" / "rate_0.9", expected_fingerprint="fp-cli")
    s50 = load_selection(tmp_path / "sel" / "rate_0.5", expected_fingerprint="fp-cli")
    assert s90.num_selected == 8 and s50.num_selected == 40
    assert set(s90.indices) <= set(s50.indices)
    assert s90.ids[0].startswith("img/") and s90.meta["method"] == "el2n"
    np.testing.assert_array_equal(s90.indices, np.argsort(-np.load(scores), kind="stable")[:8])


def test_select_class_balanced_single_rate(dyn_dir, tmp_path, capsys):
    scores = tmp_path / "s.npy"
    run(capsys, "score", "--dynamics", dyn_dir, "--method", "random", "--param", "seed=4", "--out", scores)
    rc, _, _ = run(capsys, "select", "--scores", scores, "--rate", 0.5, "--class-balanced", "--dynamics", dyn_dir,
                   "--out", tmp_path / "bal")
    assert rc == 0
    sel = load_selection(tmp_path / "bal")
    y = open_dynamics(dyn_dir).labels
    assert sel.class_balanced and sel.num_selected == 40
    for c in range(C):
        assert abs((sel.labels == c).sum() - 0.5 * (y == c).sum()) <= 1
    rc, _, err = run(capsys, "select", "--scores", scores, "--rate", 0.5, "--class-balanced", "--out", tmp_path / "x")
    assert rc == 2 and "needs labels" in err


def test_select_ccs_uses_its_sampler(dyn_dir, tmp_path, capsys):
    scores = tmp_path / "ccs.npy"
    run(capsys, "score", "--dynamics", dyn_dir, "--method", "ccs", "--param", "strata=4", "--out", scores)
    rc, _, _ = run(capsys, "select", "--scores", scores, "--rate", 0.75, "--dynamics", dyn_dir, "--param", "beta=0.25",
                   "--out", tmp_path / "sel")
    assert rc == 0
    sel = load_selection(tmp_path / "sel")
    s = np.load(scores)
    assert sel.num_selected == 20 and sel.meta["params"]["beta"] == 0.25 and "ccs_sampler" in sel.meta["sampler"]
    assert not np.isin(np.argsort(s)[:20], sel.indices).any()  # the 25% lowest-AUM cut


def test_select_refuses_mismatched_inputs(dyn_dir, tmp_path, capsys):
    scores = tmp_path / "s.npy"
    run(capsys, "score", "--dynamics", dyn_dir, "--method", "aum", "--out", scores)
    side = Path(str(scores) + ".json")
    info = json.loads(side.read_text())
    info["fingerprint"] = "fp-other"
    side.write_text(json.dumps(info))
    rc, _, err = run(capsys, "select", "--scores", scores, "--rate", 0.5, "--dynamics", dyn_dir, "--out", tmp_path / "a")
    assert rc == 2 and "fp-other" in err
    np.save(scores, np.zeros(N))  # scores changed after scoring: sidecar checksum differs
    rc, _, err = run(capsys, "select", "--scores", scores, "--rate", 0.5, "--out", tmp_path / "b")
    assert rc == 2 and "does not match its sidecar" in err


def test_reference_format_with_labels(tmp_path, capsys):
    rng = np.random.default_rng(7)
    ref = tmp_path / "ref"
    ref.mkdir()
    n, c = 30, 4
    for t in range(6):
        idx = rng.permutation(n)
        np.save(ref / f"{t}_Output.npy", rng.standard_normal((n, c)).astype(np.float32))
        np.save(ref / f"{t}_Index.npy", idx)
        np.save(ref / f"{t}_Loss.npy", np.zeros(n, np.float32))
    labels = tmp_path / "labels.npy"
    np.save(labels, rng.integers(0, c, n))
    rc, _, err = run(capsys, "score", "--dynamics", ref, "--method", "aum", "--out", tmp_path / "a.npy")
    assert rc == 2 and "--labels" in err
    rc, _, _ = run(capsys, "score", "--dynamics", ref, "--format", "reference", "--labels", labels, "--method", "aum",
                   "--out", tmp_path / "a.npy")
    assert rc == 0
    rc, _, _ = run(capsys, "score", "--dynamics", ref, "--method", "tdds", "--T", 6, "--W", 3, "--out", tmp_path / "t.npy")
    assert rc == 0
    side = json.loads((tmp_path / "t.npy.json").read_text())
    assert side["dynamics_format"] == "reference" and side["fingerprint"].startswith("ref-")
    rc, _, _ = run(capsys, "select", "--scores", tmp_path / "a.npy", "--rate", 0.5, "--dynamics", ref, "--labels", labels,
                   "--out", tmp_path / "sel")
    assert rc == 0 and load_selection(tmp_path / "sel").labels is not None
    # scored without labels (TDDS needs none), selected class-balanced with them: same recording
    rc, _, err = run(capsys, "select", "--scores", tmp_path / "t.npy", "--rate", 0.5, "--class-balanced", "--dynamics", ref,
                     "--labels", labels, "--out", tmp_path / "bal")
    assert rc == 0, err
    assert load_selection(tmp_path / "bal", expected_fingerprint=side["fingerprint"]).class_balanced


def test_nan_policy_flag(tmp_path, capsys):
    rng = np.random.default_rng(9)
    folder = tmp_path / "d"
    w = DynamicsWriter(folder, ids=[str(i) for i in range(10)], labels=rng.integers(0, 3, 10), num_classes=3,
                       fingerprint="fp", dtype="float32")
    for t in range(4):
        x = rng.standard_normal((10, 3))
        if t == 2:
            x[7, 0] = np.nan
        w.write_epoch(t, x)
    w.finalize()
    rc, _, err = run(capsys, "score", "--dynamics", folder, "--method", "tdds", "--T", 4, "--W", 2, "--out", tmp_path / "s.npy")
    assert rc == 2 and "epoch 2: 1 sample with NaN/Inf logits" in err and "--nan-policy skip" in err
    with pytest.warns(RuntimeWarning):
        rc, stdout, _ = run(capsys, "score", "--dynamics", folder, "--method", "tdds", "--T", 4, "--W", 3,
                            "--nan-policy", "skip", "--out", tmp_path / "s.npy")
    assert rc == 0 and "1 with NaN/Inf inputs ranked last" in stdout
    assert np.load(tmp_path / "s.npy")[7] == -np.inf


# -- DUAL (Cho et al., ICML 2025) ------------------------------------------------------------------
def test_score_dual_tdds_layout(dyn_dir, tmp_path, capsys):
    out = tmp_path / "dual.npy"
    rc, stdout, _ = run(capsys, "score", "--dynamics", dyn_dir, "--method", "dual", "--param", "epochs=10",
                        "--param", "window=4", "--start", 1, "--out", out)
    assert rc == 0 and "dual: scored 80 samples" in stdout
    want = compute_scores("dual", open_dynamics(dyn_dir), epochs=10, window=4, start=1)
    np.testing.assert_array_equal(np.load(out), want)
    side = json.loads(Path(str(out) + ".json").read_text())
    assert side["method"] == "dual" and side["params"] == {"epochs": 10, "window": 4, "start": 1,
                                                          "beta_sampling": False, "c_d": 4.0}
    # the defaults (epochs=30, window=10) on a 12-epoch recording use the 12 epochs
    rc, _, _ = run(capsys, "score", "--dynamics", dyn_dir, "--method", "dual", "--out", tmp_path / "d.npy")
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), compute_scores("dual", open_dynamics(dyn_dir), epochs=12))
    rc, _, err = run(capsys, "score", "--dynamics", dyn_dir, "--method", "dual", "--param", "window=13",
                     "--param", "epochs=13", "--out", tmp_path / "x.npy")
    assert rc == 2 and "window=13 consecutive recorded epochs" in err and "Traceback" not in err
    # plain top-k selection (no beta sampling: no sampler)
    rc, stdout, _ = run(capsys, "select", "--scores", out, "--rate", 0.75, "--dynamics", dyn_dir, "--out", tmp_path / "sel")
    assert rc == 0 and "kept 20 of 80" in stdout
    sel = load_selection(tmp_path / "sel", expected_fingerprint="fp-cli")
    np.testing.assert_array_equal(sel.indices, np.argsort(-want, kind="stable")[:20])
    assert sel.meta["method"] == "dual"


def test_score_dual_reference_layout_matches_tdds_layout(tmp_path, capsys):
    rng = np.random.default_rng(21)
    n, c, t_max = 40, 4, 11
    y = rng.integers(0, c, n)
    X = np.stack([rng.standard_normal((n, c)) + np.eye(c)[y] * t * rng.random((n, 1)) / 3
                  for t in range(t_max)]).astype(np.float32)
    ref, tdds_dir = tmp_path / "ref", tmp_path / "tdds"
    ref.mkdir()
    w = DynamicsWriter(tdds_dir, ids=[str(i) for i in range(n)], labels=y, num_classes=c, fingerprint="fp", dtype="float32")
    for t in range(t_max):
        idx = rng.permutation(n)
        np.save(ref / f"{t}_Output.npy", X[t][idx])
        np.save(ref / f"{t}_Index.npy", idx)
        np.save(ref / f"{t}_Loss.npy", np.zeros(n, np.float32))
        w.write_epoch(t, X[t])
    w.finalize()
    labels = tmp_path / "labels.npy"
    np.save(labels, y)
    rc, _, err = run(capsys, "score", "--dynamics", ref, "--method", "dual", "--out", tmp_path / "r.npy")
    assert rc == 2 and "--labels" in err
    for argv in ([], ["--param", "window=3", "--param", "epochs=8"]):
        rc, _, err = run(capsys, "score", "--dynamics", ref, "--labels", labels, "--method", "dual", *argv,
                         "--out", tmp_path / "r.npy")
        assert rc == 0, err
        rc, _, err = run(capsys, "score", "--dynamics", tdds_dir, "--method", "dual", *argv, "--out", tmp_path / "t.npy")
        assert rc == 0, err
        np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), np.load(tmp_path / "t.npy"))
    assert json.loads((tmp_path / "r.npy.json").read_text())["dynamics_format"] == "reference"


def test_select_dual_beta_sampling_needs_the_dynamics(dyn_dir, tmp_path, capsys):
    scores = tmp_path / "dual.npy"
    assert run(capsys, "score", "--dynamics", dyn_dir, "--method", "dual", "--param", "window=4",
               "--out", scores)[0] == 0
    rc, _, err = run(capsys, "select", "--scores", scores, "--rate", 0.8, "--param", "beta_sampling=true",
                     "--out", tmp_path / "sel")
    assert rc == 2 and "needs the training dynamics" in err and "--dynamics" in err and "Traceback" not in err


def test_select_dual_beta_sampling(dyn_dir, tmp_path, capsys):
    from tdds_core.scoring import dual_beta_sample, dual_from_epochs

    scores = tmp_path / "dual.npy"
    assert run(capsys, "score", "--dynamics", dyn_dir, "--method", "dual", "--param", "window=4",
               "--out", scores)[0] == 0
    argv = ["select", "--scores", scores, "--rate", 0.8, "--dynamics", dyn_dir, "--param", "beta_sampling=true",
            "--param", "c_d=3", "--seed", 7]
    rc, _, err = run(capsys, *argv, "--out", tmp_path / "a")
    assert rc == 0, err
    rc, _, err = run(capsys, *argv, "--out", tmp_path / "b")
    assert rc == 0, err
    a, b = load_selection(tmp_path / "a"), load_selection(tmp_path / "b")
    np.testing.assert_array_equal(a.indices, b.indices)  # seeded
    d = open_dynamics(dyn_dir)
    s = np.load(scores)
    _, pred_mean = dual_from_epochs(d.iter_epochs(0, 12), d.labels, window=4, return_pred_mean=True)
    assert sorted(a.indices.tolist()) == sorted(dual_beta_sample(s, pred_mean, 16, c_d=3.0, seed=7).tolist())
    assert "dual_beta_sampler" in a.meta["sampler"] and a.meta["params"]["beta_sampling"] is True
