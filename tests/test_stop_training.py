"""`dynamics.stop_training`: the full-data run ends at the last epoch any configured setting reads,
on the whole run's schedule (its recorded epochs equal a whole run's), and the report marks the
full-data accuracy as not measured."""
from __future__ import annotations

import numpy as np

from fixtures_config import synthetic_config
from tdds_core.config import parse_config
from tdds_core.dynamics import open_dynamics
from tdds_core.engine import full_data_spec
from tdds_core.engine.spec import dynamics_stop
from tdds_core.grid import run_grid
from tdds_core.report import build_table, to_markdown
from tdds_core.stages.train_full import train_full


def _cfg(tmp_path, name: str, **dyn) -> object:
    return parse_config(synthetic_config(96, 48, 12, epochs=5, name=name, output=str(tmp_path / name),
                                         dynamics={"record": True, **dyn},
                                         methods=[{"name": "random"}, {"name": "tdds", "params": {"T": 3, "W": 2}}],
                                         selection={"rates": [0.5]}, coreset={"seeds": [0], "batch_size": 16},
                                         tracking={"enabled": False}))


def test_the_stop_is_the_latest_epoch_a_setting_reads(tmp_path):
    assert dynamics_stop(_cfg(tmp_path, "a")) is None                         # off: the whole run
    assert dynamics_stop(_cfg(tmp_path, "b", stop_training=True)) == 3        # tdds T=3 reads epochs 0..2
    assert dynamics_stop(_cfg(tmp_path, "c", stop_training=True, epoch_stop=4)) == 4
    both = _cfg(tmp_path, "d", stop_training=True).model_copy(update={"methods": [
        *_cfg(tmp_path, "d").methods, parse_config({"methods": [{"name": "forgetting"}]}).methods[0]]})
    assert dynamics_stop(both) is None                                         # forgetting reads every epoch
    spec = full_data_spec(_cfg(tmp_path, "e", stop_training=True))
    assert (spec.epochs, spec.stop_epoch) == (5, 3)
    assert spec.digest("fp") != full_data_spec(_cfg(tmp_path, "e")).digest("fp")


def test_a_stopped_run_records_the_whole_runs_first_epochs_and_the_report_says_no_reference(tmp_path):
    whole = train_full(_cfg(tmp_path, "whole"))
    stopped_cfg = _cfg(tmp_path, "stopped", stop_training=True)
    stopped = train_full(stopped_cfg)
    assert (whole.result.epochs, stopped.result.epochs) == (5, 3)
    a, b = open_dynamics(whole.local / "dynamics"), open_dynamics(stopped.local / "dynamics")
    assert len(b) == 3 and len(a) == 5
    for e in range(3):          # the same schedule: the first epochs are the whole run's, bit for bit (CPU)
        assert np.array_equal(np.asarray(a.epoch(e)), np.asarray(b.epoch(e)))
    rows = run_grid(stopped_cfg).rows
    full = [r for r in rows if r["method"] == "full"]
    assert len(full) == 1 and full[0]["stopped_epoch"] == 3 and "final_acc" not in full[0]
    md = to_markdown(build_table(rows))
    assert "not measured (the dynamics run stopped after epoch 3: dynamics.stop_training)" in md
    tdds = [r for r in rows if r["method"].startswith("tdds")]
    assert tdds and all(r["cost_dynamics_share"] == 0.6 for r in tdds)
