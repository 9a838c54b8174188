"""Re-pruning a growing dataset: the pure comparison, and tdds-reprune end to end on an image
folder that grows between two runs (the MLflow record shows the right kept / dropped / new counts)."""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import make_imagefolder
from tdds_core.cli import main
from tdds_core.reprune import compare_selections, read_dataset_ids, read_selection_ids
from helpers import EXECUTED as _EXEC

REPO = Path(__file__).resolve().parents[1]


def test_compare_selections_counts_and_order():
    prev = ["a", "b", "c", "d"]
    cur = ["e", "c", "b", "x"]
    d = compare_selections(prev, cur, previous_universe=["a", "b", "c", "d", "e", "f"])
    assert d.kept == ["c", "b"]            # current order
    assert d.dropped == ["a", "d"]         # previous order
    assert d.added == ["e", "x"]
    assert d.added_unseen == ["x"]         # "e" existed before but was not selected
    assert d.jaccard == pytest.approx(2 / 6)
    c = d.counts()
    assert (c["kept"], c["dropped"], c["added"], c["added_unseen"], c["num_previous"], c["num_current"]) == (2, 2, 2, 1, 4, 4)


def test_compare_selections_edge_cases():
    assert compare_selections([], []).jaccard == 1.0
    first = compare_selections([], ["a", "b"], previous_universe=[])
    assert first.added == ["a", "b"] and first.added_unseen == ["a", "b"] and first.jaccard == 0.0
    assert compare_selections(["a"], ["a"]).added_unseen is None      # universe unknown
    assert compare_selections(["a", "b"], ["b", "a"]).jaccard == 1.0
    with pytest.raises(ValueError, match="duplicate"):
        compare_selections(["a", "a"], ["b"])
    with pytest.raises(ValueError, match="previous_universe"):
        compare_selections(["a", "z"], ["a"], previous_universe=["a"])


@pytest.mark.slow
def test_reprune_pipeline_on_a_growing_imagefolder(tmp_path, capfd, local_tracking):
    root, out = tmp_path / "pets", tmp_path / "out"
    classes = ("cat", "dog", "fox")
    make_imagefolder(root, classes=classes, per_class=12, size=16)
    args = ["run", "--pipeline", "reprune", "--config", str(REPO / "configs" / "quickstart.yaml")]
    for o in (f"output={out}", "name=pets", "data.name=imagefolder", f"data.root={root}", "data.image_size=16",
              "data.train_subset=null", "data.test_subset=null", "train.epochs=2", "train.progress=false",
              "methods=[{name: tdds, params: {T: 2, W: 2}}]", "selection.rates=[0.5]", "pipeline.retries=0",
              "tracking.experiment=pets"):
        args += ["--set", o]

    assert main(args) == 0, capfd.readouterr().out[-3000:]
    log1 = capfd.readouterr().out
    assert "reprune" in _EXEC.findall(log1)
    new = [p for p in make_imagefolder(root, classes=classes, per_class=6, start=12, size=16) if p.startswith("train/")]
    assert len(new) == 18
    assert main(args) == 0, capfd.readouterr().out[-3000:]
    log2 = capfd.readouterr().out
    # the new dataset version has another fingerprint: nothing is served from the KFP cache
    assert Counter(_EXEC.findall(log2))["train-full"] == 1

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pets")
    runs = client.search_runs([exp.experiment_id], "tags.`tdds.stage` = 'reprune'", order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    first, second = runs
    assert first.data.metrics["has_previous"] == 0 and first.data.metrics["added"] == 18 == first.data.metrics["num_current"]
    assert first.data.tags["tdds.dataset"] == second.data.tags["tdds.dataset"]
    assert first.data.tags["tdds.dataset"].startswith(f"imagefolder:{root}")
    assert second.data.tags["tdds.previous_fingerprint"] == first.data.tags["tdds.fingerprint"] != \
        second.data.tags["tdds.fingerprint"]
    assert second.data.tags["tdds.previous_selection_uri"] == first.data.tags["tdds.selection_uri"]

    # the counts MLflow shows are those of the two selections, id by id
    prev_ids = read_selection_ids(first.data.tags["tdds.selection_uri"])
    cur_ids = read_selection_ids(second.data.tags["tdds.selection_uri"])
    assert len(prev_ids) == 18 and len(cur_ids) == 27           # half of 36, half of 54
    assert all(i.startswith("train/") for i in cur_ids)
    prev_set, cur_set = set(prev_ids), set(cur_ids)
    m = second.data.metrics
    assert m["has_previous"] == 1
    assert m["kept"] == len(prev_set & cur_set)
    assert m["dropped"] == len(prev_set - cur_set)
    assert m["added"] == len(cur_set - prev_set)
    assert m["added_unseen"] == len((cur_set - prev_set) & set(new))
    assert m["kept"] + m["dropped"] == 18 and m["kept"] + m["added"] == 27
    assert math.isclose(m["jaccard"], len(prev_set & cur_set) / len(prev_set | cur_set))
    assert set(read_dataset_ids(first.data.tags["tdds.train_uri"])) | set(new) == set(
        read_dataset_ids(second.data.tags["tdds.train_uri"]))

    # id lists as artifacts; the record is a child of the second pipeline run
    files = {f.path for f in client.list_artifacts(second.info.run_id, "reprune")}
    assert files == {"reprune/kept.txt", "reprune/dropped.txt", "reprune/added.txt"}
    added = Path(client.download_artifacts(second.info.run_id, "reprune/added.txt", str(tmp_path))).read_text().split()
    assert set(added) == cur_set - prev_set
    parents = client.search_runs([exp.experiment_id], "tags.`tdds.stage` = 'pipeline'", order_by=["attributes.start_time ASC"])
    assert [p.info.status for p in parents] == ["FINISHED", "FINISHED"]
    assert second.data.tags["mlflow.parentRunId"] == parents[1].info.run_id
    assert len(list((out / "reprune").rglob("*.json"))) == 2    # the store's history, one entry per version
