"""One full-data run trained by several processes (``torchrun --nproc-per-node 2``, gloo on the CPU,
synchronised batch norm) records the dynamics of the single-process run, within float tolerance,
in the same layout, and says so in its manifests (``"world_size": 2``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fixtures_config import synthetic_config
from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.dynamics import open_dynamics
from tdds_core.engine import GlooSyncBatchNorm, full_data_spec, load_model, train
from tdds_core.engine.distributed import _Group
from tdds_core.errors import ConfigError
from tdds_core.io import read_json, verify_manifest
from tdds_core.statistics import open_statistics

# 100 samples in batches of 15: six batches split 7 / 8 between two ranks, a last one of 10 split 5 / 5
SYN = synthetic_config(100, 40, 12, batch_size=15, dynamics={"record": "both", "dtype": "float32"})

SCRIPT = """
import json, sys
from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.engine import full_data_spec, train
cfg = parse_config(json.loads(sys.argv[1]))
stop_at = int(sys.argv[3]) if len(sys.argv) > 3 else -1

def on_epoch(rec):
    if rec["epoch"] == stop_at:
        raise RuntimeError("stopped on purpose")

res = train(create_dataset(cfg.data), full_data_spec(cfg), sys.argv[2], on_epoch=on_epoch)
print("RESULT", res.iterations, res.final_acc)
"""


def _torchrun(tmp_path, cfg: dict, out, *extra: str, nproc: int = 2) -> subprocess.CompletedProcess:
    script = tmp_path / "run_train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           str(script), json.dumps(cfg), str(out), *extra], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_gloo_processes_record_the_single_process_dynamics(tmp_path):
    proc = _torchrun(tmp_path, SYN, tmp_path / "two")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    cfg = parse_config(SYN)
    splits = create_dataset(cfg.data)
    one = train(splits, full_data_spec(cfg), tmp_path / "one")
    two_dir, one_dir = tmp_path / "two", tmp_path / "one"
    verify_manifest(two_dir)
    assert read_json(two_dir / "manifest.json")["world_size"] == 2 and read_json(one_dir / "manifest.json")["world_size"] == 1
    assert read_json(two_dir / "run.json")["numerics"]["world_size"] == 2
    assert "world_size" not in read_json(one_dir / "run.json")["numerics"]     # single-process keys stand
    # the same layout
    files = lambda d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert files(two_dir / "dynamics") == files(one_dir / "dynamics")
    assert files(two_dir) == files(one_dir)
    a, b = open_dynamics(two_dir / "dynamics"), open_dynamics(one_dir / "dynamics")
    assert a.manifest["world_size"] == 2 and b.manifest["world_size"] == 1
    assert a.epochs == b.epochs == [0, 1, 2] and a.ids == b.ids and np.array_equal(a.labels, b.labels)
    for t in a.epochs:
        np.testing.assert_allclose(a.epoch(t), b.epoch(t), rtol=1e-4, atol=1e-5, err_msg=f"epoch {t}")
    np.testing.assert_allclose(a.final_logits(), b.final_logits(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.features(), b.features(), rtol=1e-4, atol=1e-5)
    sa, sb = open_statistics(two_dir / "stats"), open_statistics(one_dir / "stats")
    for t in sa.epochs:
        np.testing.assert_allclose(sa.epoch(t), sb.epoch(t), rtol=1e-4, atol=1e-5, err_msg=f"stats epoch {t}")
    two = read_json(two_dir / "result.json")
    assert two["iterations"] == one.iterations == 3 * 7 and two["num_train"] == 100
    for h2, h1 in zip(two["history"], one.history):
        assert h2["images"] == h1["images"] == 100
        assert abs(h2["train_loss"] - h1["train_loss"]) < 1e-4 and h2["train_acc"] == pytest.approx(h1["train_acc"], abs=1.01)
    wa = load_model(two_dir / "model.pt").state_dict()       # plain BatchNorm2d takes the synchronised one's state
    wb = torch.load(one_dir / "model.pt", weights_only=False)["state_dict"]
    for k in wb:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_two_process_run_resumes_bit_for_bit(tmp_path):
    """Stopped after its second epoch (rank 0 fails, torchrun ends the other), the run resumes from
    rank 0's checkpoint in both processes and ends with the uninterrupted run's files, bit for bit."""
    whole = _torchrun(tmp_path, SYN, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-6000:]
    stopped = _torchrun(tmp_path, SYN, tmp_path / "run", "1")
    assert stopped.returncode != 0 and "stopped on purpose" in stopped.stdout + stopped.stderr
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and not (tmp_path / "run" / "result.json").exists()
    resumed = _torchrun(tmp_path, SYN, tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    a, b = open_dynamics(tmp_path / "run" / "dynamics"), open_dynamics(tmp_path / "whole" / "dynamics")
    for t in (0, 1, 2):
        assert np.array_equal(a.epoch(t), b.epoch(t)), t
    assert np.array_equal(a.final_logits(), b.final_logits())
    wa = torch.load(tmp_path / "run" / "model.pt", weights_only=False)["state_dict"]
    wb = torch.load(tmp_path / "whole" / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_a_batch_too_small_to_share_is_refused(tmp_path):
    """Every rank needs a part of every batch: a last batch of one sample cannot be split in two
    (checked as rank 0 of 2 builds its trainer, before anything trains)."""
    from tdds_core.engine.trainer import _Trainer

    cfg = parse_config({**SYN, "data": {"name": "synthetic", "options": {"num_train": 31, "num_test": 40, "image_size": 12}}})
    with pytest.raises(ConfigError, match=r"2 processes cannot share a batch of 1 samples .*torchrun --nproc-per-node"):
        _Trainer(create_dataset(cfg.data), full_data_spec(cfg), tmp_path, None, group=_Group(0, 2))


def test_rank_rows_cover_a_batch_once():
    for n in (2, 7, 15, 100):
        parts = [_Group(r, 2).rows(n) for r in range(2)]
        assert parts[0].start == 0 and parts[0].stop == parts[1].start and parts[1].stop == n
        assert abs((parts[0].stop - parts[0].start) - (parts[1].stop - parts[1].start)) <= 1


def test_gloo_sync_batchnorm_is_batchnorm_in_one_process():
    """Without a process group (and in eval mode) the synchronised batch norm is BatchNorm2d: same
    outputs and running statistics, same state dict."""
    torch.manual_seed(0)
    x = torch.randn(6, 4, 5, 5)
    bn, sbn = torch.nn.BatchNorm2d(4), GlooSyncBatchNorm(4)
    sbn.load_state_dict(bn.state_dict())
    torch.testing.assert_close(sbn(x), bn(x))
    torch.testing.assert_close(sbn.running_var, bn.running_var)
    assert list(sbn.state_dict()) == list(bn.state_dict())


@pytest.mark.parametrize("resident", ["always", "never"])
def test_each_rank_augments_only_its_rows_as_the_whole_batch_would(resident):
    """A rank's share of a global batch comes out of the loader as the rows of the whole batch
    augmented and normalised by one process: the same random draws, only its rows worked on."""
    from tdds_core.data.loader import make_loader

    cfg = parse_config(SYN)
    splits = create_dataset(cfg.data)
    kw = dict(batch_size=15, device=torch.device("cpu"), mean=splits.mean, std=splits.std, augment=True,
              flip=True, pad=2, resident=resident, resident_max_bytes=1 << 30, num_workers=0)
    whole = list(make_loader(splits.train, **kw).epoch(3, 42))
    for rank in range(2):
        group = _Group(rank, 2, 0)
        parts = list(make_loader(splits.train, **kw).epoch(3, 42, rows=group.rows))
        assert len(parts) == len(whole)
        for (x, y, idx), (xp, yp, ip, wp) in zip(whole, parts):
            s = group.rows(len(idx))
            assert torch.equal(wp, idx) and torch.equal(ip, idx[s]) and torch.equal(yp, y[s])
            assert torch.equal(xp, x[s])
