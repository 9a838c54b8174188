"""Per-sample statistics (tdds_core.statistics): from one real CPU run's logits, TDDS scored from the
statistics equals TDDS scored from the logits (and the authors' procedure) for settings chosen after
the run, with the same kept sets; each column equals its definition; the folder is checksummed."""
from __future__ import annotations

import numpy as np
import pytest

from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.dynamics import open_dynamics
from tdds_core.engine import full_data_spec, train
from tdds_core.errors import ArtifactError, ScoringError
from tdds_core.scoring import compute_scores
from tdds_core.scoring._registry import registered
from tdds_core.scoring import tdds_from_statistics
from tdds_core.statistics import COLUMNS, epoch_statistics, open_statistics, write_statistics
from test_scoring_tdds import authors_procedure, slow_tdds, trajectory

SYN = {"data": {"name": "synthetic", "options": {"num_train": 120, "num_test": 40, "image_size": 12}},
       "model": {"arch": "small_cnn", "options": {"width": 8}},
       "train": {"epochs": 8, "batch_size": 24, "lr": 0.05, "progress": False},
       "dynamics": {"dtype": "float32", "save_features": True}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One CPU run recording float32 logits, and its statistics."""
    out = tmp_path_factory.mktemp("run")
    cfg = parse_config(SYN)
    train(create_dataset(cfg.data), full_data_spec(cfg), out)
    dyn = open_dynamics(out / "dynamics")
    return dyn, write_statistics(dyn, out / "stats")


def _kept(scores: np.ndarray, rate: float) -> set[int]:
    keep = int(round((1 - rate) * len(scores)))
    return set(np.lexsort((np.arange(len(scores)), -scores))[:keep].tolist())


@pytest.mark.parametrize("T,W,decay,start", [(8, 4, 0.9, None), (6, 3, 0.5, 1), (5, 5, 0.9, 3), (7, 2, 0.9, 0),
                                             (4, 3, 0.2, 4)])
def test_tdds_from_statistics_equals_tdds_from_logits(run, T, W, decay, start):
    dyn, stats = run
    from_logits = compute_scores("tdds", dyn, T=T, W=W, decay=decay, start=start)
    from_stats = tdds_from_statistics(stats, T=T, W=W, decay=decay, start=start)
    scale = max(np.abs(from_logits).max(), 1e-300)
    assert np.abs(from_stats - from_logits).max() / scale < 1e-9
    if W > 2:
        for rate in (0.3, 0.5, 0.7, 0.9):
            assert _kept(from_stats, rate) == _kept(from_logits, rate), rate
    # the authors' procedure on the same stored logits (every sample visited once an epoch)
    first = start or 0
    outputs = [np.asarray(dyn.epoch(t)) for t in range(first, first + T)]
    idx = [np.arange(dyn.num_samples)] * T
    assert np.allclose(from_stats, authors_procedure(outputs, idx, dyn.num_samples, T=T, W=W, decay=decay),
                       rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("inner,signed,aggregate", [("loss", False, "ema"), ("loss", True, "mean"),
                                                    ("el2n", False, "ema"), ("kl", True, "ema"), ("kl", False, "mean")])
def test_ablation_variants_from_statistics(run, inner, signed, aggregate):
    dyn, stats = run
    kw = dict(T=8, W=4, inner=inner, signed=signed, aggregate=aggregate)
    a, b = compute_scores("tdds", dyn, **kw), tdds_from_statistics(stats, **kw)
    assert np.abs(a - b).max() / max(np.abs(a).max(), 1e-300) < 1e-9


def test_columns_follow_their_definitions():
    X, y = trajectory(3, 2, 30, 5)
    first, p0 = epoch_statistics(X[0], y)
    second, _ = epoch_statistics(X[1], y, p0)
    col = {c: i for i, c in enumerate(COLUMNS)}
    assert np.isnan(first[:, col["kl"]]).all()
    # the KL term of the pair equals the oracle's two-epoch TDDS ingredients
    p1 = np.exp(X[1] - X[1].max(1, keepdims=True))
    p1 /= p1.sum(1, keepdims=True)
    term = p1 * (np.log(p1 + 1e-8) - np.log(p0 + 1e-8))
    assert np.allclose(second[:, col["kl"]], np.abs(term).sum(1)) and np.allclose(second[:, col["kl_signed"]], term.sum(1))
    rows = np.arange(30)
    assert np.allclose(second[:, col["p_target"]], p1[rows, y])
    assert np.allclose(second[:, col["ce"]], -np.log(p1[rows, y] + 1e-8))
    onehot = np.eye(5)[y]
    assert np.allclose(second[:, col["el2n"]], np.linalg.norm(p1 - onehot, axis=1))
    other = np.where(onehot > 0, -np.inf, X[1])
    assert np.allclose(second[:, col["margin_logit"]], X[1][rows, y] - other.max(1))
    assert np.array_equal(second[:, col["correct"]], (X[1].argmax(1) == y).astype(float))
    assert np.allclose(second[:, col["entropy"]], -(p1 * np.log(p1)).sum(1))
    # a 3-epoch trajectory through the statistics equals the slow per-sample oracle
    X3, y3 = trajectory(4, 3, 20, 4)
    terms, prev = [], None
    for t in range(3):
        s, prev = epoch_statistics(X3[t], y3, prev)
        terms.append(s[:, col["kl"]])
    d = np.stack(terms[1:], 1)
    oracle = slow_tdds(X3, W=3)
    assert np.allclose(np.sqrt(((d - d.mean(1, keepdims=True)) ** 2).sum(1)) * 0.9, oracle, rtol=1e-12)


def test_statistics_are_small_and_checked(run, tmp_path):
    dyn, stats = run
    assert stats.epochs == dyn.epochs and stats.num_samples == dyn.num_samples and stats.fingerprint == dyn.fingerprint
    assert np.array_equal(stats.labels, dyn.labels) and stats.ids == list(dyn.ids)
    assert stats.epoch(0).shape == (dyn.num_samples, len(COLUMNS))
    with pytest.raises(ScoringError, match="needs epochs 5..12"):
        tdds_from_statistics(stats, T=8, W=4, start=5)
    with pytest.raises(ScoringError, match="no column 'nope'"):
        stats.column(0, "nope")
    # a damaged epoch file (of a copy) is refused by its checksum
    import shutil

    copy = tmp_path / "stats"
    shutil.copytree(stats.folder, copy)
    damaged = copy / "epoch_0003.npy"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ArtifactError):
        open_statistics(copy).epoch(3)
    with pytest.raises(ArtifactError, match="not a statistics folder"):
        open_statistics(tmp_path / "missing")


def test_the_registered_method_reads_either_input_and_others_refuse_statistics(run):
    """compute_scores('tdds', ...) takes the statistics folder as it takes logits (the input is the
    folder's property); a method without a statistics path says so and names those that have one."""
    from tdds_core.dynamics_reference import open_any_dynamics

    dyn, stats = run
    opened = open_any_dynamics(stats.folder)
    a = compute_scores("tdds", opened, T=8, W=4)
    assert np.abs(a - compute_scores("tdds", dyn, T=8, W=4)).max() / np.abs(a).max() < 1e-9
    with registered("toy_logits", _logits_only):
        with pytest.raises(ScoringError, match=r"'toy_logits' scores from logits.*\(aum, ccs, dual, dyn_unc, el2n, "
                                               r"entropy, forgetting, moderate, random, rs2, tdds\)"):
            compute_scores("toy_logits", opened)


def _logits_only(dynamics, *, nan_policy: str = "raise") -> np.ndarray:
    """A method registered without a statistics path: the last epoch's largest logit."""
    return np.asarray(dynamics.epoch(dynamics.epochs[-1]), dtype=np.float64).max(axis=1)


def test_every_built_in_method_reads_statistics():
    from tdds_core.scoring import list_methods
    from tdds_core.scoring._registry import _info

    assert [m for m in list_methods() if _info(m).stats is None] == []


@pytest.mark.parametrize("method,params", [("forgetting", {}), ("forgetting", {"start": 2, "stop": 7}),
                                           ("el2n", {"k": 3, "start": 1}), ("aum", {}), ("aum", {"space": "logit", "stop": 5}),
                                           ("dyn_unc", {"width": 3}), ("dyn_unc", {"width": 4, "start": 2}),
                                           ("dual", {"epochs": 8, "window": 3}), ("dual", {"epochs": 5, "window": 4, "start": 2}),
                                           ("ccs", {}), ("ccs", {"base": "el2n", "base_params": {"k": 2}}),
                                           ("entropy", {}), ("entropy", {"source": "last_epoch", "epoch": 5}),
                                           ("moderate", {}), ("random", {"seed": 3})])
def test_baselines_from_statistics_equal_them_from_logits(run, method, params):
    """Every baseline with a statistics path: the same scores (float64, < 1e-9 relative) and the same
    kept sets at 30/50/70/90% as from the logits."""
    dyn, stats = run
    a, b = compute_scores(method, dyn, **params), compute_scores(method, stats, **params)
    assert np.abs(a - b).max() <= 1e-9 * max(np.abs(a).max(), 1e-300)
    for rate in (0.3, 0.5, 0.7, 0.9):
        assert _kept(a, rate) == _kept(b, rate), rate


def test_cli_converts_and_scores_from_statistics(run, tmp_path, capsys):
    from tdds_core.cli import main

    dyn, _ = run
    assert main(["stats", "--dynamics", str(dyn.folder), "--out", str(tmp_path / "st")]) == 0
    assert "9 columns" in capsys.readouterr().out
    for src, out in ((tmp_path / "st", tmp_path / "a.npy"), (dyn.folder, tmp_path / "b.npy")):
        assert main(["score", "--dynamics", str(src), "--method", "tdds", "--T", "6", "--W", "3", "--start", "2",
                     "--out", str(out)]) == 0
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert np.abs(a - b).max() / np.abs(b).max() < 1e-9


def test_a_run_records_statistics_equal_to_those_of_its_logits_and_resumes_bit_identically(run, tmp_path):
    """dynamics.record: both. The statistics the training records on its device (torch, float64, from
    the step's float32 logits) equal those the numpy converter computes from the float32 logits it
    stored, to float64 rounding, with the same TDDS kept sets; a run killed mid-way and resumed
    records the same bytes."""
    import dataclasses

    cfg = parse_config(SYN, ["dynamics.record=both"])
    spec = full_data_spec(cfg)
    assert spec.record_dynamics and spec.record_stats
    splits = create_dataset(cfg.data)
    train(splits, spec, tmp_path / "whole")
    recorded = open_statistics(tmp_path / "whole" / "stats")
    converted = write_statistics(open_dynamics(tmp_path / "whole" / "dynamics"), tmp_path / "converted")
    assert recorded.epochs == converted.epochs == list(range(8))
    for t in recorded.epochs:
        assert np.allclose(recorded.epoch(t), converted.epoch(t), rtol=1e-9, atol=1e-12, equal_nan=True), t
    a, b = compute_scores("tdds", recorded, T=8, W=4), compute_scores("tdds", converted, T=8, W=4)
    assert np.abs(a - b).max() <= 1e-9 * np.abs(a).max()
    for rate in (0.3, 0.5, 0.7, 0.9):
        assert _kept(a, rate) == _kept(b, rate), rate
    assert not list((tmp_path / "whole" / "stats").glob("_last_*")), "side files are removed when the run ends"

    def stop(rec):
        if rec["epoch"] == 4:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(splits, spec, tmp_path / "resumed", on_epoch=stop)
    train(splits, spec, tmp_path / "resumed")
    for t in recorded.epochs:
        assert (tmp_path / "resumed" / "stats" / f"epoch_{t:04d}.npy").read_bytes() == \
            (tmp_path / "whole" / "stats" / f"epoch_{t:04d}.npy").read_bytes(), t
    assert open_statistics(tmp_path / "resumed" / "stats").manifest["complete"] is True
    # checkpoints every 3 epochs: killed after epoch 4, the run resumes after epoch 2 (the side file of
    # epoch 2 was kept for it) and writes epochs 3 and 4 again, to the same bytes
    every3 = dataclasses.replace(spec, checkpoint_every=3)
    assert every3.digest("fp") == spec.digest("fp")      # a runtime setting
    seen: list[int] = []

    def stop_and_watch(rec):
        seen.append(rec["epoch"])
        if rec["epoch"] == 4:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(splits, every3, tmp_path / "every3", on_epoch=stop_and_watch)
    assert sorted(p.name for p in (tmp_path / "every3" / "stats").glob("_last_*")) == [
        "_last_0002.npy", "_last_0003.npy", "_last_0004.npy"]
    res = train(splits, every3, tmp_path / "every3", on_epoch=lambda rec: seen.append(rec["epoch"]))
    assert seen == [0, 1, 2, 3, 4, 3, 4, 5, 6, 7] and res.epochs == 8
    for t in recorded.epochs:
        for kind in ("stats", "dynamics"):
            assert (tmp_path / "every3" / kind / f"epoch_{t:04d}.npy").read_bytes() == \
                (tmp_path / "whole" / kind / f"epoch_{t:04d}.npy").read_bytes(), (kind, t)
    # a logits recording keeps the key it had before statistics existed
    assert full_data_spec(parse_config(SYN, ["dynamics.record=logits"])).digest("fp") == \
        dataclasses.replace(spec, record_stats=False).digest("fp")


def test_a_statistics_only_run_keeps_no_logits_and_scores_through_the_stages(run, tmp_path):
    """dynamics.record: stats records no logits folder; its statistics equal those converted from a
    float32 logits recording of the same training (the module fixture) to float64 rounding, and the
    stages' reader scores from them."""
    from tdds_core.artifacts import open_recorded

    _, converted = run
    spec = full_data_spec(parse_config(SYN, ["dynamics.record=stats"]))
    assert not spec.record_dynamics and spec.record_stats
    out = tmp_path / "stats-only"
    train(create_dataset(parse_config(SYN).data), spec, out)
    assert not (out / "dynamics").exists()
    got = open_recorded(out)
    for t in converted.epochs:
        assert np.allclose(got.epoch(t), converted.epoch(t), rtol=1e-9, atol=1e-12, equal_nan=True), t
    a, b = compute_scores("tdds", got, T=8, W=4), tdds_from_statistics(converted, T=8, W=4)
    assert np.abs(a - b).max() <= 1e-9 * np.abs(a).max()
    # the clean final pass's features travel with the statistics: Moderate needs no logits either
    assert got.has_features and got.has_final
    np.testing.assert_array_equal(compute_scores("moderate", got), compute_scores("moderate", converted))
    np.testing.assert_allclose(compute_scores("entropy", got), compute_scores("entropy", converted), rtol=1e-9)


def test_statistics_only_refuses_methods_that_need_logits_before_training():
    from tdds_core.errors import ConfigError
    from tdds_core.grid import check_grid

    with registered("toy_logits", _logits_only):
        cfg = parse_config({**SYN, "methods": [{"name": "tdds", "params": {"T": 4, "W": 3}}, {"name": "toy_logits"}]},
                           ["dynamics.record=stats"])
        with pytest.raises(ConfigError, match="dynamics.record: stats keeps no logits, and toy_logits score from logits"):
            check_grid(cfg)
    check_grid(parse_config({**SYN, "methods": [{"name": "tdds", "params": {"T": 4, "W": 3}}, {"name": "aum"}]},
                            ["dynamics.record=stats"]))


def test_record_auto_keeps_statistics_where_they_are_smaller_and_the_methods_read_them():
    """dynamics.record: auto (the default): logits for 10 classes in float16 (20 bytes a sample
    against the statistics' 72), statistics for 100 classes; logits again when a configured method
    reads logits only, and that choice is part of the full-data run's key."""
    from tdds_core.plan import train_key

    cfg = parse_config(SYN, ["dynamics.dtype=float16"])
    assert cfg.dynamics.record == "auto"

    def recorded(c, conf=cfg):
        s = full_data_spec(conf, c)
        return s.record_dynamics, s.record_stats

    assert recorded(10) == (True, False) and recorded(None) == (True, False)
    assert recorded(36) == (True, False) and recorded(37) == (False, True) and recorded(100) == (False, True)
    assert recorded(19, parse_config(SYN)) == (False, True)     # float32 logits: 76 bytes > 72
    # 10 classes: the same key and spec as an explicit logits recording
    assert full_data_spec(cfg, 10).digest("fp") == full_data_spec(parse_config(SYN, ["dynamics.record=true",
                                                                                      "dynamics.dtype=float16"]), 10).digest("fp")
    with registered("toy_logits", _logits_only):
        mixed = parse_config({**SYN, "methods": [{"name": "tdds"}, {"name": "toy_logits"}]})
        assert recorded(100, mixed) == (True, False)
        assert train_key(mixed, "fp") != train_key(parse_config({**SYN, "methods": [{"name": "tdds"}]}), "fp")


def test_float32_statistics_halve_the_bytes_and_agree_to_float32_precision(run, tmp_path):
    """stats_dtype float32 (tdds stats --dtype float32, or recorded): 36 bytes a sample and epoch,
    scores within float32 precision of the float64 statistics' and nearly the same kept sets; the
    recording says float32 in its manifest and key, and auto counts the smaller size."""
    from tdds_core.cli import main

    dyn, stats64 = run
    assert main(["stats", "--dynamics", str(dyn.folder), "--out", str(tmp_path / "s32"), "--dtype", "float32"]) == 0
    stats32 = open_statistics(tmp_path / "s32")
    assert stats32.dtype == "float32" and stats32.epoch(2).dtype == np.float64
    assert (tmp_path / "s32" / "epoch_0002.npy").stat().st_size < 0.55 * (stats64.folder / "epoch_0002.npy").stat().st_size
    for method, params in (("tdds", {"T": 8, "W": 4}), ("aum", {}), ("dual", {"epochs": 8, "window": 3}),
                           ("forgetting", {}), ("el2n", {"k": 3})):
        a, b = compute_scores(method, stats64, **params), compute_scores(method, stats32, **params)
        assert np.abs(a - b).max() <= 1e-5 * max(np.abs(a).max(), 1.0), method
        for rate in (0.3, 0.5, 0.7, 0.9):
            assert len(_kept(a, rate) ^ _kept(b, rate)) <= 0.04 * len(a), (method, rate)
    spec = full_data_spec(parse_config(SYN, ["dynamics.record=stats", "dynamics.stats_dtype=float32"]))
    assert spec.stats_dtype == "float32"
    assert spec.digest("fp") != full_data_spec(parse_config(SYN, ["dynamics.record=stats"])).digest("fp")
    out = tmp_path / "rec32"
    train(create_dataset(parse_config(SYN).data), spec, out)
    recorded = open_statistics(out / "stats")
    assert recorded.dtype == "float32" and np.load(out / "stats" / "epoch_0001.npy").dtype == np.float32
    np.testing.assert_allclose(recorded.epoch(3), stats32.epoch(3), rtol=1e-6, atol=1e-9)
    auto = parse_config(SYN, ["dynamics.dtype=float16", "dynamics.stats_dtype=float32"])
    assert (full_data_spec(auto, 18).record_stats, full_data_spec(auto, 19).record_stats) == (False, True)
