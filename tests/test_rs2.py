"""RS2 (Okanovic et al., ICLR 2024) as a coreset-training row: a fresh seeded subset every epoch, drawn
without replacement across epochs, trained for as many iterations as the static coreset of its rate."""
import dataclasses
import math

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

import tdds_core.scoring.rs2  # noqa: F401 - registers rs2 (until scoring/__init__.py imports it)
from fixtures_config import synthetic_config
from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.data.loader import make_loader
from tdds_core.data.rs2_draws import RS2Draws, rs2_epoch_positions
from tdds_core.engine import TrainSpec, coreset_spec, train
from tdds_core.errors import ConfigError
from tdds_core.grid import run_grid
from tdds_core.scoring import get_method, method_weighting, random_scores
from tdds_core.scoring import method_per_epoch as is_per_epoch
from tdds_core.scoring.rs2 import RS2
from tdds_core.selection import num_to_keep, select, write_selection
from tdds_core.stages.coreset import RS2_STRATEGY, train_coreset

SYN = synthetic_config(96, 48, 12, epochs=3, batch_size=16, coreset={"batch_size": 16}, tracking={"enabled": False})


def _stream(n: int, m: int, seed: int, epochs: int) -> list[np.ndarray]:
    d = RS2Draws(n, m, seed)
    return [d.epoch(e) for e in range(epochs)]


# -- the draws ------------------------------------------------------------------------------------
def test_each_epoch_draws_a_fresh_subset_reproducible_by_its_seed():
    n, m = 1000, 300
    a, b, other = _stream(n, m, 7, 6), _stream(n, m, 7, 6), _stream(n, m, 8, 6)
    for e in range(6):
        assert a[e].dtype == np.int64 and a[e].shape == (m,)
        assert np.array_equal(a[e], b[e])                                  # same seed, same draw
        assert not np.array_equal(np.sort(a[e]), np.sort(other[e]))       # another seed, another subset
        assert np.array_equal(a[e], rs2_epoch_positions(n, m, 7, e))       # the pure function agrees
    sets = [frozenset(x.tolist()) for x in a]
    assert len(set(sets)) == 6                                            # a different subset every epoch


@pytest.mark.parametrize("n", [1, 2, 7, 10, 12, 13, 31])
def test_no_sample_repeats_in_an_epoch_nor_before_every_sample_was_used(n):
    """Every n consecutive items of the epochs' stream are a permutation of the samples (so no sample
    returns before all n were used), and no epoch holds a sample twice, for every size m, divisor or not."""
    for m in range(1, n + 1):
        eps = _stream(n, m, 3, 3 * n // m + 3)
        for x in eps:
            assert len(np.unique(x)) == m and x.min() >= 0 and x.max() < n
        s = np.concatenate(eps)
        for k in range(len(s) // n):
            assert np.array_equal(np.sort(s[k * n:(k + 1) * n]), np.arange(n)), (n, m, k)


def test_when_m_divides_n_each_round_of_n_over_m_epochs_uses_every_sample_once():
    n, m = 120, 30
    eps = _stream(n, m, 0, 8)
    for r in range(2):
        used = np.concatenate(eps[4 * r: 4 * r + 4])
        assert np.array_equal(np.sort(used), np.arange(n))
    assert not np.array_equal(np.concatenate(eps[:4]), np.concatenate(eps[4:]))   # a new permutation each round


@pytest.mark.parametrize("n,m", [(10, 7), (10, 3), (100, 67), (97, 50)])
def test_leftovers_are_carried_and_the_first_repeat_comes_after_all_samples(n, m):
    """m does not divide n: the epoch at a round's end takes the r samples its round left plus m - r
    others, so the first epoch that repeats a sample is the one that completes the set of all n."""
    eps = _stream(n, m, 5, 4 * n // m + 2)
    seen: set[int] = set()
    for e, x in enumerate(eps):
        drawn = set(x.tolist())
        if seen & drawn:
            assert seen | drawn == set(range(n)), f"epoch {e} repeats samples while {n - len(seen | drawn)} were never used"
            assert e == n // m                           # the epoch straddling the end of the first round
            assert set(x[: n - e * m].tolist()) == set(range(n)) - seen     # it starts with all the leftovers
            break
        seen |= drawn
    else:
        pytest.fail("no sample was ever repeated")


def test_a_resumed_schedule_draws_what_an_uninterrupted_one_drew():
    n, m = 500, 333
    seq = _stream(n, m, 11, 12)
    for e in (0, 5, 11, 7, 2):            # fresh objects (a resumed run), and going back on one object
        assert np.array_equal(RS2Draws(n, m, 11).epoch(e), seq[e])
    d = RS2Draws(n, m, 11)
    for e in (9, 3, 10):
        assert np.array_equal(d.epoch(e), seq[e])


def test_impossible_sizes_are_refused():
    with pytest.raises(ConfigError, match="samples per epoch"):
        RS2Draws(10, 11, 0)
    with pytest.raises(ConfigError, match="samples per epoch"):
        RS2Draws(10, 0, 0)
    with pytest.raises(ValueError, match="epochs count from 0"):
        RS2Draws(10, 3, 0).epoch(-1)


# -- the method, the loader, the spec -------------------------------------------------------------
def test_the_method_scores_nothing_and_selects_only_a_size():
    cfg = parse_config(SYN)
    splits = create_dataset(cfg.data)
    n = len(splits.train)
    assert is_per_epoch(RS2) and not is_per_epoch("random") and not is_per_epoch(None)
    assert method_weighting(RS2) == "none"

    class View:                            # RS2 reads only N
        num_samples = n
    s = get_method(RS2)(View())
    assert s.shape == (n,) and s.dtype == np.float64 and not s.any()
    sel = select(s, 0.3, labels=splits.train.labels, ids=splits.train.ids, seed=0)
    assert sel.num_selected == num_to_keep(0.3, n) == 67


def test_the_loader_trains_each_epoch_on_that_epochs_draw(tmp_path):
    cfg = parse_config(SYN)
    splits = create_dataset(cfg.data)
    n, m, b = len(splits.train), 67, 16
    common = dict(batch_size=b, device=torch.device("cpu"), mean=splits.mean, std=splits.std, augment=True,
                  flip=splits.flip, pad=splits.crop_padding, resident="always", resident_max_bytes=1 << 30, num_workers=0)
    loader = make_loader(splits.train, per_epoch=m, **common)
    assert len(loader) == math.ceil(m / b) == 5
    seen = []
    for e in range(3):
        idx = torch.cat([batch[2] for batch in loader.epoch(e, seed=4)]).numpy()
        assert len(idx) == m and np.array_equal(np.sort(idx), np.sort(rs2_epoch_positions(n, m, 4, e)))
        seen.append(idx)
    fresh = make_loader(splits.train, per_epoch=m, **common)     # a resumed run's loader starts at epoch 2
    assert np.array_equal(torch.cat([bt[2] for bt in fresh.epoch(2, seed=4)]).numpy(), seen[2])
    with pytest.raises(ConfigError, match="samples per epoch"):
        make_loader(splits.train, per_epoch=n + 1, **common)


def test_per_epoch_enters_the_digest_only_when_set():
    spec = TrainSpec(arch="small_cnn", epochs=3, batch_size=16, device="cpu", positions=[1, 2, 3], weights=[1.0, 1.0, 1.0])
    # the digest this spec had before TrainSpec knew per_epoch: finished runs keep their folders
    assert spec.digest("fp") == "f9586187bc4cf5ff"
    rs2 = dataclasses.replace(spec, positions=None, weights=None, per_epoch=3)
    assert rs2.digest("fp") != dataclasses.replace(rs2, per_epoch=None).digest("fp")
    assert rs2.digest("fp") != dataclasses.replace(rs2, per_epoch=2).digest("fp")


@pytest.mark.parametrize("strategy", ["E", "P"])
def test_rs2_spec_has_the_static_coresets_epochs_batch_and_size(strategy):
    cfg = parse_config(SYN, [f"coreset.strategy={strategy}", "coreset.batch_rule=true", "train.epochs=4"])
    pos = np.arange(0, 96, 4)                                  # 24 of 96: rate 0.75, the batch rule halves it
    static = coreset_spec(cfg, rate=0.75, positions=pos, weights=np.ones(24), num_full=96)
    rs2 = coreset_spec(cfg, rate=0.75, positions=pos, weights=np.ones(24), num_full=96, per_epoch=True)
    assert (rs2.epochs, rs2.batch_size) == (static.epochs, static.batch_size) == ((16 if strategy == "P" else 4), 8)
    assert rs2.per_epoch == 24 and rs2.positions is None and rs2.weights is None and rs2.weighting == "none"
    assert static.per_epoch is None and len(static.positions) == 24
    with pytest.raises(ConfigError, match="unweighted"):
        coreset_spec(cfg, rate=0.75, positions=pos, weights=np.ones(24), num_full=96, weighting="batch", per_epoch=True)


def test_a_recording_run_cannot_draw_per_epoch(tmp_path):
    cfg = parse_config(SYN)
    spec = TrainSpec(arch="small_cnn", epochs=1, batch_size=16, device="cpu", record_dynamics=True, per_epoch=10,
                     progress=False)
    with pytest.raises(ConfigError, match="RS2"):
        train(create_dataset(cfg.data), spec, tmp_path)


# -- real trainings -------------------------------------------------------------------------------
def _selections(tmp_path, splits, rate):
    """A random selection and an RS2 selection of ``rate`` (folders, as the select stage writes them)."""
    out = {}
    n = len(splits.train)
    for method, scores in (("random", random_scores(n, seed=0)), (RS2, np.zeros(n))):
        sel = select(scores, rate, labels=splits.train.labels, ids=splits.train.ids, seed=0)
        write_selection(tmp_path / method, sel, method=method, fingerprint=splits.fingerprint)
        out[method] = str(tmp_path / method)
    return out


class Stop(Exception):
    pass


@pytest.mark.slow
def test_rs2_trains_the_static_coresets_iterations_and_a_resumed_run_draws_the_same_subsets(tmp_path):
    cfg = parse_config({**SYN, "output": str(tmp_path / "out")})
    splits = create_dataset(cfg.data)
    sels = _selections(tmp_path / "sel", splits, 0.3)           # M = 67 of 96: not a divisor
    static = train_coreset(cfg, sels["random"], splits=splits).result
    rs2 = train_coreset(cfg, sels[RS2], splits=splits)
    assert rs2.result.iterations == static.iterations == 3 * math.ceil(67 / 16)
    assert rs2.result.num_train == static.num_train == 67 and rs2.result.epochs == static.epochs == 3
    assert [h["images"] for h in rs2.result.history] == [67, 67, 67]
    with pytest.raises(ConfigError, match="unweighted"):
        train_coreset(cfg, sels[RS2], splits=splits, weighting="batch")

    def boom(rec):
        if rec["epoch"] == 1:
            raise Stop

    cfg2 = parse_config({**SYN, "output": str(tmp_path / "again")})
    with pytest.raises(Stop):
        train_coreset(cfg2, sels[RS2], splits=splits, on_epoch=boom)
    resumed = train_coreset(cfg2, sels[RS2], splits=splits)
    assert not resumed.reused and resumed.result.iterations == rs2.result.iterations
    assert [h["train_loss"] for h in resumed.result.history] == [h["train_loss"] for h in rs2.result.history]
    wa = torch.load(rs2.local / "model.pt")["state_dict"]
    wb = torch.load(resumed.local / "model.pt")["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)           # the same draws after the resume, bit for bit


@pytest.mark.slow
def test_an_rs2_row_in_the_grid_matches_random_in_iterations_and_says_no_fixed_subset(tmp_path):
    out = tmp_path / "out"
    cfg = parse_config({**SYN, "output": str(out), "train": {**SYN["train"], "epochs": 2},
                        "methods": [{"name": "random"}, {"name": RS2}], "selection": {"rates": [0.3]},
                        "tracking": {"enabled": True}})
    res = run_grid(cfg)
    rows = {r["method"]: r for r in res.rows if r["rate"] is not None}
    assert rows[RS2]["iterations"] == rows["random"]["iterations"] == 2 * math.ceil(67 / 16)
    assert rows[RS2]["num_train"] == rows["random"]["num_train"] == 67
    assert rows[RS2]["fixed_subset"] is False and rows["random"]["fixed_subset"] is True
    assert rows[RS2]["weighting"] == "none"
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=1000)]
    coreset = {r.data.tags["tdds.label"]: r for r in runs if r.data.tags.get("tdds.stage") == "coreset"}
    assert coreset[RS2].data.params["strategy"] == RS2_STRATEGY and coreset[RS2].data.params["fixed_subset"] == "False"
    assert coreset["random"].data.params["strategy"] == "E" and coreset["random"].data.params["fixed_subset"] == "True"
    assert "tdds.selection_sha256" not in coreset[RS2].data.tags and "tdds.selection_sha256" in coreset["random"].data.tags
