"""Adding a scoring method and a stage: one plugin module (named in $TDDS_PLUGINS) registers a toy
method and a toy stage at test time, and both run through the local grid and through the
compiled pipeline run locally (kfp.local), with no edit anywhere else."""
from __future__ import annotations

import json
import re
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from fixtures_config import synthetic_settings
from tdds_core.cli import main
from tdds_core.config import parse_config
from helpers import EXECUTED as _EXEC
from tdds_core.grid import run_grid

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "tdds_toy_plugin"
SOURCE = '''
"""A toy method (the last epoch's target logit: easy samples first) and a toy stage (per pair:
the class counts of its selection, one small artifact)."""
import json

import numpy as np

from tdds_core.io import atomic_write_json, write_manifest
from tdds_core.scoring import register_method
from tdds_core.selection import load_selection
from tdds_core.artifacts import existing, fetch, publish, uri_of, work_dir
from tdds_core.stage_registry import Ref, Stage, register_stage


@register_method("toy_last")
def toy_last(dynamics, *, nan_policy="raise"):
    """Last recorded epoch's target-class logit, float64 (N,); higher = keep."""
    t = dynamics.epochs[-1]
    x = np.asarray(dynamics.epoch(t), dtype=np.float64)
    return x[np.arange(len(x)), np.asarray(dynamics.labels)]


def run(ctx, item, state):
    sel_ref = state.ref("select", item.key)
    key = f"toy/{item.key.replace('@', '-')}"
    uri = uri_of(ctx.cfg, key)
    if existing(uri) is None:
        sel = load_selection(fetch(sel_ref.uri), expected_fingerprint=state.fingerprint)
        counts = np.bincount(ctx.splits.train.labels[sel.indices], minlength=ctx.splits.num_classes)
        work = work_dir(uri)
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_json(work / "counts.json", {"pair": item.key, "counts": counts.tolist()})
        write_manifest(work, ["counts.json"], kind="toy")
        publish(work, uri)
    return state.part("toy-count", {item.key: Ref(uri=uri, key=key, label=item.score.label, rate=item.rate)})


register_stage(Stage("toy-count", order=45, loop="pairs", run=run))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch, local_tracking):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{PLUGIN}.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", f"{folder}:{REPO}")       # the pipeline's task processes import it too
    monkeypatch.setenv("TDDS_PLUGINS", PLUGIN)
    yield
    from tdds_core import plugins
    from tdds_core.scoring import is_method, unregister_method
    from tdds_core.stage_registry import list_stages, unregister_stage

    if is_method("toy_last"):
        unregister_method("toy_last")
    if "toy-count" in {s.name for s in list_stages()}:
        unregister_stage("toy-count")
    plugins._LOADED.discard(PLUGIN)
    sys.modules.pop(PLUGIN, None)


SETTINGS = synthetic_settings("toy", "[{name: toy_last}, {name: random}]")


def _counts(out: Path) -> dict[str, list[int]]:
    found = {}
    for f in (out / "toy").rglob("counts.json"):
        d = json.loads(f.read_text())
        found[d["pair"]] = d["counts"]
    return found


@pytest.mark.slow
def test_a_plugin_method_and_stage_run_in_the_grid_and_the_pipeline(plugin, tmp_path, capfd):
    from tdds_core.config import load_config

    cfg = load_config(REPO / "configs" / "quickstart.yaml", SETTINGS + [f"output={tmp_path / 'grid'}"])
    res = run_grid(cfg)
    assert {r["method"] for r in res.rows} == {"full", "toy_last", "random"}
    grid_counts = _counts(tmp_path / "grid")
    assert len(grid_counts) == 2 and all(sum(c) == 60 for c in grid_counts.values())
    assert "toy_last" in res.table_md

    out = tmp_path / "kfp"
    args = ["run", "--config", str(REPO / "configs" / "quickstart.yaml"), "--out", str(out)]
    for o in SETTINGS:
        args += ["--set", o]
    rc = main(args)
    log = "".join(capfd.readouterr())
    assert rc == 0, log[-3000:]
    executed = Counter(_EXEC.findall(log))
    assert executed["toy-count"] == 2 and executed["collect-toy-count"] == 1 and executed["score"] == 2
    assert _counts(out) == grid_counts          # the same selections, the same counts
    assert "toy_last" in (out / "report" / "table.md").read_text()


def test_a_plugin_that_cannot_be_imported_is_named(monkeypatch, tmp_path):
    from tdds_core.errors import ConfigError
    from tdds_core.plugins import load_plugins

    monkeypatch.setenv("TDDS_PLUGINS", "no_such_plugin_module")
    with pytest.raises(ConfigError, match="TDDS_PLUGINS names 'no_such_plugin_module'.*PYTHONPATH"):
        load_plugins()
    cfg = parse_config({"output": str(tmp_path), "methods": [{"name": "random"}]})
    with pytest.raises(ConfigError, match="no_such_plugin_module"):
        run_grid(cfg)
