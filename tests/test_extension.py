"""Extending tdds with one file. Methods: a new scoring method is one module with one registered
function over the column view; named in $TDDS_PLUGINS it is scored from a logits recording and from a
statistics recording (the same numbers), checked for its options, listed, and selected with, through
the public API and the CLI, and nothing else changes."""
from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from tdds_core import plugins
from tdds_core.cli import main
from tdds_core.dynamics import DynamicsWriter, open_dynamics
from tdds_core.errors import ScoringError
from tdds_core.scoring import (compute_scores, get_sampler, is_method, list_methods, method_options,
                               method_reads_statistics, unregister_method)
from tdds_core.selection import select
from tdds_core.statistics import write_statistics

# -- methods -------------------------------------------------------------------------------------
METHOD = "tdds_toy_confidence"
METHOD_SOURCE = '''
"""Confidence: the mean target-class probability over the last ``last`` recorded epochs."""
import numpy as np

from tdds_core.scoring import ColumnView, Option, register_method


@register_method("toy_confidence", options={"last": Option(3, int, min=1, doc="epochs averaged")})
def toy_confidence(view: ColumnView, *, last: int) -> np.ndarray:
    """float64 (N,): mean of the ``p_target`` column over the last ``last`` epochs; higher = keep first."""
    ts = view.epochs[-last:]
    return sum(view.columns(ts, "p_target")) / len(ts)
'''


@pytest.fixture
def method_plugin(tmp_path, monkeypatch):
    """The method module in a folder on sys.path, named in $TDDS_PLUGINS; removed afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{METHOD}.py").write_text(textwrap.dedent(METHOD_SOURCE))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(plugins.PLUGINS_ENV, METHOD)
    yield "toy_confidence"
    if is_method("toy_confidence"):
        unregister_method("toy_confidence")
    plugins._LOADED.discard(METHOD)
    sys.modules.pop(METHOD, None)


@pytest.fixture
def recording(tmp_path):
    """A small float32 logits recording (6 epochs, 40 samples, 4 classes) and its statistics."""
    rng = np.random.default_rng(0)
    T, N, C = 6, 40, 4
    y = rng.integers(0, C, N)
    X = np.stack([rng.standard_normal((N, C)) + t * 0.5 * np.eye(C)[y] for t in range(T)]).astype(np.float32)
    w = DynamicsWriter(tmp_path / "dyn", ids=[f"s{i}" for i in range(N)], labels=y, num_classes=C, fingerprint="fp",
                       dtype="float32")
    for t in range(T):
        w.write_epoch(t, X[t])
    w.finalize()
    dyn = open_dynamics(tmp_path / "dyn")
    return dyn, write_statistics(dyn, tmp_path / "stats"), X, y


def test_a_new_method_is_one_file_scored_from_both_layouts_and_selected(method_plugin, recording, tmp_path):
    dyn, stats, X, y = recording
    name = method_plugin
    assert name in list_methods() and method_options(name) == {"last": 3} and method_reads_statistics(name)
    p = np.exp(X.astype(np.float64))
    p /= p.sum(axis=2, keepdims=True)
    oracle = p[-3:, np.arange(len(y)), y].mean(axis=0)
    from_logits = compute_scores(name, dyn)
    from_stats = compute_scores(name, stats)
    assert from_logits.dtype == np.float64 and from_logits.shape == (len(y),)
    np.testing.assert_allclose(from_logits, oracle, rtol=1e-12)
    np.testing.assert_allclose(from_stats, from_logits, rtol=1e-12)
    np.testing.assert_allclose(compute_scores(name, stats, last=1), p[-1, np.arange(len(y)), y], rtol=1e-12)
    with pytest.raises(ScoringError, match=r"toy_confidence: last \(epochs averaged\) must be an integer >= 1"):
        compute_scores(name, dyn, last=0)
    with pytest.raises(ScoringError, match="unknown option 'lats'"):
        compute_scores(name, dyn, lats=2)
    # selection through the public API: the plain top-k (no sampler of its own)
    assert get_sampler(name, {}) is None
    sel = select(from_stats, 0.75, labels=y)
    assert sel.num_selected == 10 and set(sel.indices.tolist()) == set(np.argsort(-oracle, kind="stable")[:10].tolist())
    # and through the CLI, from either layout
    for src in ("dyn", "stats"):
        out = tmp_path / f"{src}.npy"
        assert main(["score", "--dynamics", str(tmp_path / src), "--method", name, "--param", "last=2",
                     "--out", str(out)]) == 0
        assert json.loads((tmp_path / f"{src}.npy.json").read_text())["params"] == {"last": 2}
        assert main(["select", "--scores", str(out), "--rate", "0.5", "--dynamics", str(tmp_path / src),
                     "--out", str(tmp_path / f"sel-{src}")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "stats.npy"), np.load(tmp_path / "dyn.npy"), rtol=1e-12)
