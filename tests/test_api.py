"""The notebook facade (tdds_core.api): the README's "From Python" calls, end to end on a small
synthetic dataset, give what the stages and the CLI give."""
from __future__ import annotations

import numpy as np

from fixtures_config import synthetic_config
from tdds_core import api as tdds
from tdds_core.config import parse_config
from tdds_core.scoring import compute_scores


def test_the_facade_trains_scores_selects_and_reads_results_back(tmp_path):
    cfg = parse_config({**synthetic_config(64, 32, 8, epochs=3, name="api"), "output": str(tmp_path / "out"),
                        "methods": [{"name": "el2n"}, {"name": "random"}], "selection": {"rates": [0.5]},
                        "coreset": {"seeds": [0]}, "tracking": {"enabled": False}})
    full = tdds.train_full(cfg)
    rec = tdds.open_recorded(full.local)
    assert rec.num_samples == 64
    scores = tdds.score("el2n", rec)
    assert scores.dtype == np.float64 and scores.shape == (64,)
    assert np.array_equal(scores, compute_scores("el2n", rec))
    coreset = tdds.select(scores, 0.5, labels=rec.labels, ids=rec.ids)
    assert len(coreset.ids) == 32 and set(coreset.ids) <= set(rec.ids)
    assert set(coreset.ids) == {rec.ids[i] for i in np.argsort(-scores, kind="stable")[:32]}   # the top half
    grid = tdds.run_grid(cfg)
    assert grid.outputs["train-full"][""] == full.uri           # the grid reused the full-data run
    rows = tdds.results(cfg)
    assert rows == grid.rows
    table = tdds.table(rows)
    assert {t["method"] for t in table if t["rate"] is not None} == {"el2n", "random"}
