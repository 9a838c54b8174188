import math

import numpy as np
import pytest
import torch

from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.dynamics import open_dynamics
from tdds_core.engine import coreset_batch_size, coreset_spec, full_data_spec, load_model, train, weighted_loss
from tdds_core.errors import ArtifactError, ConfigError
from tdds_core.io import verify_manifest

SYN = {"data": {"name": "synthetic", "options": {"num_train": 96, "num_test": 48, "image_size": 12}},
       "model": {"arch": "small_cnn", "options": {"width": 8}},
       "train": {"epochs": 3, "batch_size": 16, "lr": 0.05, "progress": False}}


def cfg_(**over):
    return parse_config(SYN, [f"{k}={v}" for k, v in over.items()])


def test_same_seed_same_dynamics_and_weights(tmp_path):
    cfg = cfg_()
    s = create_dataset(cfg.data)
    train(s, full_data_spec(cfg), tmp_path / "a")
    train(s, full_data_spec(cfg), tmp_path / "b")
    da, db = open_dynamics(tmp_path / "a" / "dynamics"), open_dynamics(tmp_path / "b" / "dynamics")
    assert da.epochs == db.epochs == [0, 1, 2]
    for t in da.epochs:
        assert np.array_equal(da.epoch(t), db.epoch(t))
    wa = torch.load(tmp_path / "a" / "model.pt")["state_dict"]
    wb = torch.load(tmp_path / "b" / "model.pt")["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other = train(s, full_data_spec(cfg_(**{"train.seed": 7})), tmp_path / "c")
    assert not np.array_equal(open_dynamics(tmp_path / "c" / "dynamics").epoch(2), da.epoch(2))
    assert other.epochs == 3


class Stop(Exception):
    pass


def test_resume_after_interruption_is_bit_identical(tmp_path):
    cfg = cfg_(**{"train.epochs": 4})
    s = create_dataset(cfg.data)
    ref = train(s, full_data_spec(cfg), tmp_path / "ref")

    def boom(rec):
        if rec["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(s, full_data_spec(cfg), tmp_path / "run", on_epoch=boom)
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and not (tmp_path / "run" / "result.json").exists()
    with pytest.raises(ArtifactError, match="incomplete"):
        open_dynamics(tmp_path / "run" / "dynamics")
    res = train(s, full_data_spec(cfg), tmp_path / "run")
    assert res.final_acc == ref.final_acc and res.iterations == ref.iterations
    a, b = open_dynamics(tmp_path / "ref" / "dynamics"), open_dynamics(tmp_path / "run" / "dynamics")
    for t in range(4):
        assert np.array_equal(a.epoch(t), b.epoch(t)), t
    assert np.array_equal(a.final_logits(), b.final_logits()) and np.array_equal(a.features(), b.features())
    wa = torch.load(tmp_path / "ref" / "model.pt")["state_dict"]
    wb = torch.load(tmp_path / "run" / "model.pt")["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_finished_run_is_reused_and_other_spec_refused(tmp_path):
    cfg = cfg_(**{"train.epochs": 1})
    s = create_dataset(cfg.data)
    r1 = train(s, full_data_spec(cfg), tmp_path)
    mtime = (tmp_path / "model.pt").stat().st_mtime_ns
    r2 = train(s, full_data_spec(cfg), tmp_path)
    assert r2 == r1 and (tmp_path / "model.pt").stat().st_mtime_ns == mtime
    with pytest.raises(ArtifactError, match="holds another run"):
        train(s, full_data_spec(cfg_(**{"train.epochs": 2})), tmp_path)


def test_clean_dynamics_rows_are_in_sample_id_order(tmp_path):
    cfg = cfg_(**{"dynamics.mode": "clean", "dynamics.dtype": "float32"})
    s = create_dataset(cfg.data)
    train(s, full_data_spec(cfg), tmp_path)
    dyn = open_dynamics(tmp_path / "dynamics")
    assert dyn.manifest["mode"] == "clean" and dyn.ids == s.train.ids
    assert np.array_equal(dyn.labels, s.train.labels)
    model = load_model(tmp_path / "model.pt").eval()
    x = (torch.from_numpy(s.train.images).float() / 255 - torch.tensor(s.mean).view(1, -1, 1, 1)) / torch.tensor(s.std).view(1, -1, 1, 1)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
    np.testing.assert_allclose(dyn.epoch(2), logits.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dyn.features(), feats.numpy(), rtol=1e-4, atol=1e-4)


def test_recording_epoch_range(tmp_path):
    cfg = cfg_(**{"dynamics.epoch_start": 1, "dynamics.epoch_stop": 2, "dynamics.save_features": False})
    s = create_dataset(cfg.data)
    train(s, full_data_spec(cfg), tmp_path)
    dyn = open_dynamics(tmp_path / "dynamics")
    assert dyn.epochs == [1] and not dyn.has_features
    # the clean final pass is of the final model, whatever range of epochs was recorded
    assert dyn.has_final_logits and dyn.manifest["final_pass"]["epoch"] == 2


def test_weighting_modes_on_a_hand_made_batch():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    w = torch.tensor([1.0, 0.5, 0.0])
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.isclose(weighted_loss(logits, y, w, "none"), ce.mean())
    assert torch.isclose(weighted_loss(logits, y, w, "batch"), ce.mean() * 0.5)
    assert torch.isclose(weighted_loss(logits, y, w, "sample"), (ce * w).mean())
    # the per-sample mode ignores a zero-weight sample's loss; the batch mode does not
    w2 = torch.tensor([1.0, 0.5, 0.0])
    l2 = logits.clone()
    l2[2] = torch.tensor([9.0, -9.0])
    assert torch.isclose(weighted_loss(l2, y, w2, "sample"), weighted_loss(logits, y, w2, "sample"))
    assert not torch.isclose(weighted_loss(l2, y, w2, "batch"), weighted_loss(logits, y, w2, "batch"))


def test_strategy_p_runs_the_full_data_iterations(tmp_path):
    cfg = cfg_(**{"coreset.strategy": "P", "coreset.batch_size": 10, "train.epochs": 2})
    s = create_dataset(cfg.data)
    full_iters = 2 * math.ceil(96 / 16)
    pos = np.arange(0, 96, 4)  # 24 samples -> 3 batches an epoch
    spec = coreset_spec(cfg, rate=0.75, positions=pos, weights=np.ones(len(pos)), num_full=96)
    assert spec.iterations == full_iters and spec.epochs == math.ceil(full_iters / 3)
    res = train(s, spec, tmp_path)
    assert res.iterations == full_iters and res.num_train == 24
    e = coreset_spec(cfg_(**{"coreset.batch_size": 10, "train.epochs": 2}), rate=0.75, positions=pos, weights=np.ones(len(pos)), num_full=96)
    assert e.iterations is None and e.epochs == 2


def test_batch_rule():
    cfg = cfg_(**{"coreset.batch_rule": True})
    assert [coreset_batch_size(cfg, r) for r in (0.3, 0.7, 0.8, 0.9)] == [128, 64, 64, 32]
    assert coreset_batch_size(cfg_(), 0.9) == 128


def test_drop_last_with_dynamics_refused():
    with pytest.raises(ConfigError, match="drop_last"):
        full_data_spec(cfg_(**{"train.drop_last": True}))


@pytest.mark.slow
def test_real_fashion_mnist_dynamics(tmp_path):
    cfg = parse_config({"data": {"name": "fashion-mnist", "train_subset": 1000, "test_subset": 500},
                        "model": {"arch": "small_cnn"}, "train": {"epochs": 2, "progress": False, "lr": 0.05}})
    s = create_dataset(cfg.data)
    res = train(s, full_data_spec(cfg), tmp_path)
    assert res.final_acc > 30.0  # chance is 10%
    dyn = open_dynamics(tmp_path / "dynamics")
    verify_manifest(tmp_path / "dynamics")
    verify_manifest(tmp_path)
    assert dyn.epochs == [0, 1] and dyn.dtype == "float16"
    for _, logits in dyn.iter_epochs():
        assert logits.shape == (1000, 10) and np.isfinite(logits).all()
    assert dyn.ids == s.train.ids and dyn.fingerprint == s.fingerprint
    assert dyn.features().shape == (1000, 128)


def test_streamed_dataloader_path_equals_resident_path(tmp_path):
    """Large datasets go through a DataLoader; on CPU it gives exactly the resident path's dynamics."""
    a_cfg = cfg_(**{"data.resident": "always", "train.epochs": 2})
    b_cfg = cfg_(**{"data.resident": "never", "data.num_workers": 0, "train.epochs": 2})
    s = create_dataset(a_cfg.data)
    train(s, full_data_spec(a_cfg), tmp_path / "a")
    train(s, full_data_spec(b_cfg), tmp_path / "b")
    da, db = open_dynamics(tmp_path / "a" / "dynamics"), open_dynamics(tmp_path / "b" / "dynamics")
    for t in (0, 1):
        assert np.array_equal(da.epoch(t), db.epoch(t))
