"""A training task that dies with its output on S3 resumes on another machine from the mirrored checkpoint."""
import numpy as np
import pytest
import torch

from fixtures_config import synthetic_config
from fixtures_servers import s3_client
from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.dynamics import open_dynamics
from tdds_core.engine import full_data_spec, train
from tdds_core.artifacts import fetch
from tdds_core.stages.train_full import train_full

CFG = synthetic_config(200, 60, 12, name="s3resume", epochs=4, batch_size=40, tracking={"enabled": False})


class Preempted(Exception):
    pass


@pytest.mark.parametrize("record", ["true", "both"])
def test_retried_task_resumes_from_s3_checkpoint(s3_server, tmp_path, monkeypatch, record):
    """Also with per-sample statistics (record: both): their side files travel in _partial/ and the
    resumed statistics are the uninterrupted run's, byte for byte."""
    s3 = s3_client(s3_server)
    bucket = f"resume-{record}"
    s3.create_bucket(Bucket=bucket)
    cfg = parse_config({**CFG, "output": f"s3://{bucket}/runs"}, [f"dynamics.record={record}"])
    splits = create_dataset(cfg.data)
    ref = train(splits, full_data_spec(cfg, splits.num_classes), tmp_path / "ref")

    def preempt(rec):
        if rec["epoch"] == 2:
            raise Preempted

    monkeypatch.setenv("TDDS_CACHE", str(tmp_path / "machine-a"))
    with pytest.raises(Preempted):
        train_full(cfg, splits=splits, on_epoch=preempt)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(k.endswith("_partial/checkpoint.pt") for k in keys)
    assert not any(k.endswith("/manifest.json") and "/train/" in k and "_partial" not in k for k in keys)

    # another machine: an empty cache, so the only state is what the first one mirrored to S3
    monkeypatch.setenv("TDDS_CACHE", str(tmp_path / "machine-b"))
    seen = []
    out = train_full(cfg, splits=splits, on_epoch=lambda rec: seen.append(rec["epoch"]))
    assert seen == [2, 3]  # epochs 0 and 1 were not trained again
    assert out.result.final_acc == ref.final_acc
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not any("_partial" in k for k in keys)
    local = fetch(out.uri)
    a, b = open_dynamics(tmp_path / "ref" / "dynamics"), open_dynamics(local / "dynamics")
    for t in range(4):
        assert np.array_equal(a.epoch(t), b.epoch(t))
        if record == "both":
            assert (local / "stats" / f"epoch_{t:04d}.npy").read_bytes() == \
                (tmp_path / "ref" / "stats" / f"epoch_{t:04d}.npy").read_bytes(), t
    if record == "both":
        assert not list((local / "stats").glob("_last_*"))
    wa, wb = torch.load(tmp_path / "ref" / "model.pt")["state_dict"], torch.load(local / "model.pt")["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
