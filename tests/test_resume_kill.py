"""Kill -9 at several moments of a training run, resume, and compare with an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_config import synthetic_config
from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.dynamics import open_dynamics
from tdds_core.engine import coreset_spec, full_data_spec, train

CFG = synthetic_config(1200, 100, 16, epochs=5, batch_size=50)

CHILD = r"""
import sys, json
import numpy as np
from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.engine import full_data_spec, coreset_spec, train
cfg = parse_config(json.loads(sys.argv[1]))
s = create_dataset(cfg.data)
if sys.argv[3] == "coreset":
    pos = np.arange(0, len(s.train), 2)
    spec = coreset_spec(cfg, rate=0.5, positions=pos, weights=np.linspace(0, 1, len(pos)), num_full=len(s.train))
else:
    spec = full_data_spec(cfg)
print("ready", flush=True)
train(s, spec, sys.argv[2])
print("done", flush=True)
"""


def _spec(kind, cfg, s):
    if kind == "coreset":
        pos = np.arange(0, len(s.train), 2)
        return coreset_spec(cfg, rate=0.5, positions=pos, weights=np.linspace(0, 1, len(pos)), num_full=len(s.train))
    return full_data_spec(cfg)


def _weights(folder: Path):
    return torch.load(folder / "model.pt")["state_dict"]


@pytest.mark.parametrize("kind", ["full", "coreset", "both"])
@pytest.mark.slow
def test_kill9_then_resume_is_bit_identical(tmp_path, kind):
    """``both``: the full-data run recording logits and per-sample statistics (whose TDDS terms need
    the epoch before; a resume reads its logits back from the side file)."""
    import json

    conf = {**CFG, "dynamics": {"record": "both"}} if kind == "both" else CFG
    cfg = parse_config(conf)
    s = create_dataset(cfg.data)
    ref = train(s, _spec(kind, cfg, s), tmp_path / "ref")
    ref_epoch_s = np.mean([h["epoch_s"] for h in ref.history])
    out = tmp_path / "run"
    kills = 0
    # kill at several moments: early in the first epoch, mid-run, late; then let it finish
    for frac in (0.4, 1.7, 3.2):
        p = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(conf), str(out), kind], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(frac * ref_epoch_s)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 1
    res = train(s, _spec(kind, cfg, s), out)  # resume to the end
    assert res.final_acc == ref.final_acc and res.iterations == ref.iterations
    wa, wb = _weights(tmp_path / "ref"), _weights(out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    if kind in ("full", "both"):
        a, b = open_dynamics(tmp_path / "ref" / "dynamics"), open_dynamics(out / "dynamics")
        assert a.epochs == b.epochs
        for t in a.epochs:
            assert np.array_equal(a.epoch(t), b.epoch(t))
    if kind == "both":
        for t in range(cfg.train.epochs):
            assert (out / "stats" / f"epoch_{t:04d}.npy").read_bytes() == \
                (tmp_path / "ref" / "stats" / f"epoch_{t:04d}.npy").read_bytes(), t
        assert (out / "stats" / "final.npy").read_bytes() == (tmp_path / "ref" / "stats" / "final.npy").read_bytes()
