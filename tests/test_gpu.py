"""GPU-only checks, run by benchmarks/gpu_check.sh on a machine with CUDA (skipped elsewhere: the CPU
suite covers the same code paths on the CPU). They check what only a GPU can show: a training
resumed on the GPU (train.deterministic: deterministic kernels) ends with the same weights, bit for
bit, as one that ran through (the RNG states restore from a CPU-loaded checkpoint), and bf16
autocast and channels_last are applied and keyed."""
from __future__ import annotations

import pytest
import torch

from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.engine import full_data_spec, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh)")]

SYN = {"data": {"name": "synthetic", "options": {"num_train": 512, "num_test": 128, "image_size": 32, "channels": 3}},
       "model": {"arch": "resnet18"},
       "train": {"epochs": 3, "batch_size": 128, "lr": 0.05, "progress": False, "device": "cuda", "deterministic": True}}


def _stop_after(epoch: int):
    def on_epoch(rec: dict) -> None:
        if rec["epoch"] == epoch:
            raise RuntimeError("stop")
    return on_epoch


def test_resume_on_the_gpu_continues_the_same_run(tmp_path):
    cfg = parse_config(SYN)
    splits = create_dataset(cfg.data)
    whole = train(splits, full_data_spec(cfg), tmp_path / "whole")
    with pytest.raises(RuntimeError, match="stop"):
        train(splits, full_data_spec(cfg), tmp_path / "resumed", on_epoch=_stop_after(0))
    resumed = train(splits, full_data_spec(cfg), tmp_path / "resumed")
    assert resumed.final_acc == whole.final_acc and resumed.iterations == whole.iterations
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_and_channels_last_are_applied_and_keyed():
    cfg = parse_config(SYN)
    spec = full_data_spec(cfg)
    n = spec.numerics()
    assert n["device"] == "cuda" and n["bf16"] is True and n["channels_last"] is True and n["deterministic"] is True
    off = full_data_spec(parse_config(SYN, ["train.amp='off'"]))
    assert off.numerics()["bf16"] is False and off.digest("fp") != spec.digest("fp")
