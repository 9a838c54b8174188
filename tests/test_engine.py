import math

import numpy as np
import pytest
import torch

from fixtures_config import synthetic_config
from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.dynamics import open_dynamics
from tdds_core.engine import coreset_batch_size, coreset_spec, full_data_spec, load_model, train, weighted_loss
from tdds_core.errors import ArtifactError, ConfigError
from tdds_core.io import verify_manifest

SYN = synthetic_config(96, 48, 12)


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


def test_strategy_p_trains_E_over_1_minus_p_epochs(tmp_path):
    """The paper's Strategy-P: E / (1 - p) epochs whatever the batch sizes (the batch rule included)."""
    cfg = cfg_(**{"coreset.strategy": "P", "coreset.batch_size": 10, "train.epochs": 2})
    s = create_dataset(cfg.data)
    pos = np.arange(0, 96, 4)  # 24 samples kept of 96: p = 0.75
    spec = coreset_spec(cfg, rate=0.75, positions=pos, weights=np.ones(len(pos)), num_full=96)
    assert spec.epochs == 8 and spec.iterations is None
    res = train(s, spec, tmp_path)
    assert res.epochs == 8 and res.iterations == 8 * math.ceil(24 / 10) and res.num_train == 24
    rule = cfg_(**{"coreset.strategy": "P", "coreset.batch_rule": True, "train.epochs": 200})
    assert [coreset_spec(rule, rate=r, positions=pos, weights=np.ones(len(pos)), num_full=96).epochs
            for r in (0.3, 0.5, 0.7, 0.9)] == [286, 400, 667, 2000]
    e = coreset_spec(cfg_(**{"coreset.batch_size": 10, "train.epochs": 2}), rate=0.75, positions=pos, weights=np.ones(len(pos)), num_full=96)
    assert e.iterations is None and e.epochs == 2


def test_checkpoint_loads_onto_the_cpu_and_rng_states_restore_as_cpu_bytes(tmp_path, monkeypatch):
    """A resume loads the checkpoint with map_location='cpu' and hands torch's RNG setters CPU uint8
    tensors (loading onto the training device put them on the GPU, which the setters refuse)."""
    from tdds_core.engine import checkpoint as engine

    cfg = cfg_()
    s = create_dataset(cfg.data)
    spec = full_data_spec(cfg)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="stop"):
        train(s, spec, out, on_epoch=lambda rec: (_ for _ in ()).throw(RuntimeError("stop")) if rec["epoch"] == 1 else None)
    assert (out / "checkpoint.pt").is_file()
    loads, states = [], []
    real_load, real_set = torch.load, torch.set_rng_state
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("map_location")) or real_load(*a, **k))
    monkeypatch.setattr(torch, "set_rng_state", lambda t: states.append((t.device.type, t.dtype)) or real_set(t))
    st = engine.load_checkpoint(out / "checkpoint.pt")
    st["rng"]["torch"] = st["rng"]["torch"].to(torch.int64)     # as a foreign loader might hand it over
    assert engine._cpu_bytes(st["rng"]["torch"]).dtype == torch.uint8
    resumed = train(s, spec, out)
    assert loads and set(loads) == {"cpu"} and states and set(states) == {("cpu", torch.uint8)}
    whole = train(s, spec, tmp_path / "whole")
    assert resumed.final_acc == whole.final_acc


def test_the_trainer_itself_refuses_drop_last_with_recording(tmp_path):
    import dataclasses

    cfg = cfg_()
    spec = dataclasses.replace(full_data_spec(cfg), drop_last=True)
    with pytest.raises(ConfigError, match="drop_last"):
        train(create_dataset(cfg.data), spec, tmp_path)


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


def test_a_resume_with_other_numerics_is_refused_and_names_the_setting(tmp_path):
    """channels_last changes a CPU run's numbers: resuming a run in the same folder with it toggled is
    refused, naming the numeric setting, instead of mixing the two."""
    cfg = cfg_()
    s = create_dataset(cfg.data)
    with pytest.raises(RuntimeError, match="stop"):
        train(s, full_data_spec(cfg), tmp_path, on_epoch=lambda rec: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(ArtifactError, match=r"numerics channels_last True -> False \(train.channels_last\).*"
                                            r"set train.channels_last back to what the run used"):
        train(s, full_data_spec(cfg_(**{"train.channels_last": False})), tmp_path)


class _StopTrainer:
    """Stands in for the trainer where no GPU is at hand: the run's identity is claimed, nothing trains."""

    def __init__(self, *a, **k):
        pass

    def run(self):
        raise Stop


def test_a_resume_with_another_amp_or_device_class_is_refused(tmp_path, monkeypatch):
    """A bf16 GPU run's folder (the device resolution stubbed: no CUDA here) refuses a resume in
    fp32, naming train.amp and the fix, and refuses a resume on a CPU, naming the device class."""
    from tdds_core import numerics
    from tdds_core.engine import run as engine

    cfg = cfg_(**{"train.amp": "bf16"})
    s = create_dataset(cfg.data)
    with monkeypatch.context() as m:
        m.setattr(numerics, "resolve_device", lambda name: torch.device("cuda"))
        m.setattr(engine, "_Trainer", _StopTrainer)
        with pytest.raises(Stop):
            train(s, full_data_spec(cfg), tmp_path)
        assert engine.read_json(tmp_path / "run.json")["numerics"]["bf16"] is True
        with pytest.raises(Stop):     # the same numerics resume
            train(s, full_data_spec(cfg), tmp_path)
        with pytest.raises(ArtifactError, match=r"numerics bf16 True -> False \(train.amp\).*set train.amp back"):
            train(s, full_data_spec(cfg_(**{"train.amp": "'off'"})), tmp_path)
    with pytest.raises(ArtifactError, match=r"numerics bf16 True -> False \(train.amp\); numerics device 'cuda' -> 'cpu'"):
        train(s, full_data_spec(cfg), tmp_path)


def test_kernel_flags_choose_deterministic_kernels_on_cuda_and_restore_them(monkeypatch):
    """train.deterministic: deterministic kernels, no cuDNN autotuning, a cuBLAS workspace setting,
    for the run only; a CPU run changes nothing."""
    from tdds_core.engine import kernel_flags

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    with kernel_flags(torch.device("cuda"), True):
        assert torch.are_deterministic_algorithms_enabled() and cudnn.deterministic and not cudnn.benchmark
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled()) == before
    with kernel_flags(torch.device("cuda"), False):
        assert cudnn.benchmark and not cudnn.deterministic and not torch.are_deterministic_algorithms_enabled()
    with kernel_flags(torch.device("cpu"), True):
        assert (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled()) == before
    assert (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled()) == before


def test_rng_states_reach_the_setters_as_cpu_bytes_whatever_the_checkpoint_holds(tmp_path, monkeypatch):
    """However a checkpoint's RNG states arrive (here int64, as a foreign loader or a device move
    may hand them over), torch.set_rng_state and torch.cuda.set_rng_state_all get CPU uint8 tensors
    with the saved bytes."""
    from tdds_core.engine import trainer as engine

    cfg = cfg_()
    trainer = engine._Trainer(create_dataset(cfg.data), full_data_spec(cfg), tmp_path, None)
    st = trainer.state(0, 6, [], (-1.0, -1))
    saved = st["rng"]["torch"].clone()
    st["rng"]["torch"] = saved.to(torch.int64)
    st["rng"]["cuda"] = [saved.to(torch.int64), saved.to(torch.int32)]
    got, got_cuda = [], []
    real_set = torch.set_rng_state
    monkeypatch.setattr(torch, "set_rng_state", lambda t: got.append(t) or real_set(t))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: got_cuda.extend(states))
    trainer.load(st)
    assert len(got) == 1 and len(got_cuda) == 1
    for t in got + got_cuda:
        assert t.device.type == "cpu" and t.dtype == torch.uint8 and torch.equal(t, saved)


@pytest.mark.parametrize("record,message", [("true", r"epoch 1: 16 samples have NaN/Inf logits"),
                                            ("stats", r"epoch 1: 16 samples were not visited exactly once")])
def test_a_recorded_epoch_that_misses_samples_fails_instead_of_keeping_stale_rows(tmp_path, monkeypatch, record, message):
    """The capture buffer is cleared (NaN) before each recorded epoch: an epoch that does not visit
    every sample (its last batch skipped here) fails the finite check (the statistics recorder: its
    visit count) instead of storing the previous epoch's rows for the samples it missed."""
    from tdds_core.data.loader import ResidentLoader
    from tdds_core.errors import ScoringError

    real_epoch = ResidentLoader.epoch

    def epoch(self, epoch=0, seed=0, shuffle=True, **kw):
        batches = list(real_epoch(self, epoch, seed, shuffle, **kw))
        yield from (batches[:-1] if shuffle and epoch == 1 else batches)

    monkeypatch.setattr(ResidentLoader, "epoch", epoch)
    cfg = cfg_(**{"dynamics.record": record, "data.resident": "always"})
    with pytest.raises(ScoringError, match=message):
        train(create_dataset(cfg.data), full_data_spec(cfg), tmp_path)


def test_a_failed_background_write_stops_the_run_and_what_was_written_resumes(tmp_path, monkeypatch):
    """The writer thread stores an epoch's files while the next epoch trains: a write that fails
    (a full disk, here epoch 2's logits) is the run's error, raised before the run goes further,
    and the epochs written before it (checkpoint included) are there for a resume that ends like
    an uninterrupted run."""
    from tdds_core.dynamics import DynamicsWriter

    cfg = cfg_()
    s = create_dataset(cfg.data)
    ref = train(s, full_data_spec(cfg), tmp_path / "ref")
    real = DynamicsWriter.write_epoch

    def failing(self, t, logits):
        if t == 2:
            raise OSError(28, "No space left on device")
        return real(self, t, logits)

    monkeypatch.setattr(DynamicsWriter, "write_epoch", failing)
    with pytest.raises(OSError, match="No space left"):
        train(s, full_data_spec(cfg), tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert not (tmp_path / "run" / "result.json").exists()
    monkeypatch.setattr(DynamicsWriter, "write_epoch", real)
    res = train(s, full_data_spec(cfg), tmp_path / "run")
    assert res.final_acc == ref.final_acc
    a, b = open_dynamics(tmp_path / "ref" / "dynamics"), open_dynamics(tmp_path / "run" / "dynamics")
    for t in a.epochs:
        assert np.array_equal(a.epoch(t), b.epoch(t))
