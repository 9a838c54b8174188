"""The tdds stages as KFP v2 lightweight Python components: thin typed functions.

Each function validates nothing itself and decides nothing: it makes one call into
:mod:`tdds_core.steps` (which calls :mod:`tdds_core.stages` / the ``tracked_*`` functions of
:mod:`tdds_core.grid`) and writes the returned pointer / rows / metrics into its typed outputs with
:func:`tdds_core.steps.emit`. The functions are turned into components by
:func:`components.make_components`, which names the image (``pipeline.image``, or
``pipeline.gpu_image`` for the training stages) and sets ``install_kfp_package=False`` (the image
already holds kfp and tdds). KFP copies a function's source into the task, so every import is
inside the function.

The cached stages take ``context`` and ignore it: it is part of KFP's cache key, naming the store
and the tracker the task writes to (:func:`pipelines.run.cache_context`), so a run against another
store or MLflow never reuses a cached task whose artifacts and runs live elsewhere.

Outputs: ``Model`` / ``Dataset`` / ``Artifact`` hold a JSON pointer to the artifact in tdds's
store (``cfg.output``); ``Metrics`` hold the result rows and log ``final_acc`` / ``best_acc``.
"""

from typing import List, NamedTuple, Optional

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def open_run(config_json: str, run_id: str, job_id: str, build: str
             ) -> NamedTuple("Opened", [("parent_run_id", str), ("fingerprint", str)]):
    """Check the config, fingerprint the dataset and open the parent MLflow run (never cached)."""
    from collections import namedtuple

    from tdds_core import steps

    parent_run_id, fingerprint = steps.open_run(config_json, run_id=run_id, job_id=job_id, build=build)
    return namedtuple("Opened", ["parent_run_id", "fingerprint"])(parent_run_id, fingerprint)


def train_full(config_json: str, context: str, fingerprint: str, model: Output[Model], metrics: Output[Metrics]):
    """Full-data training with dynamics capture."""
    from tdds_core import steps

    steps.emit(steps.train_full(config_json, fingerprint=fingerprint), artifact=model, metrics=metrics)


def score(config_json: str, context: str, method_json: str, train: Input[Model], scores: Output[Artifact]):
    """Score every sample with one method setting (an item of the score loop)."""
    from tdds_core import steps

    steps.emit(steps.score(config_json, method_json=method_json, train_pointer=steps.read_pointer(train.path)),
               artifact=scores)


def collect_scores(scores: Input[List[Artifact]], score_set: Output[Artifact]):
    """Fan-in after the score loop: one pointer to every method setting's scores."""
    from tdds_core import steps

    steps.emit(steps.collect([steps.read_pointer(s.path) for s in scores], "score-set"), artifact=score_set)


def materialize_subset(config_json: str, context: str, rate_json: str, train: Input[Model], score_set: Input[Artifact],
                       selections: Output[Dataset], counts: Output[Metrics]):
    """Keep the most important samples at one pruning rate: the selection (coreset ids, weights) of
    every method setting (an item of the rate loop)."""
    from tdds_core import steps

    result = steps.select(config_json, train_pointer=steps.read_pointer(train.path),
                          scores=steps.read_pointer(score_set.path), rate_json=rate_json)
    steps.emit(result, artifact=selections, metrics=counts)


def collect_selections(selections: Input[List[Dataset]], merged: Output[Dataset]):
    """Fan-in after the rate loop: one pointer to the selection of every (method, rate) pair."""
    from tdds_core import steps

    steps.emit(steps.collect([steps.read_pointer(s.path) for s in selections], "selections"), artifact=merged)


def train_coreset(config_json: str, context: str, pair_json: str, selections: Input[Dataset], model: Output[Model],
                  metrics: Output[Metrics]):
    """Importance-weighted training on one (method, rate) selection, every seed of coreset.seeds."""
    from tdds_core import steps

    steps.emit(steps.train_coreset(config_json, selections=selections.path, pair_json=pair_json),
               artifact=model, metrics=metrics)


def evaluate_cross_arch(config_json: str, context: str, item_json: str, selections: Input[Dataset], model: Output[Model],
                        metrics: Output[Metrics]):
    """Train another architecture on the selection of one (method, rate) pair."""
    from tdds_core import steps

    steps.emit(steps.evaluate_cross_arch(config_json, selections=selections.path, item_json=item_json),
               artifact=model, metrics=metrics)


def report(config_json: str, parent_run_id: str, full: Input[Metrics], coreset: Input[List[Metrics]],
           table: Output[Markdown], report_dir: Output[Artifact], summary: Output[Metrics],
           evaluation: Optional[Input[List[Metrics]]] = None):
    """The methods x rates table and plot (MLflow, the store's report/, and the KFP UI)."""
    from pathlib import Path

    from tdds_core import steps

    rows = [row for m in [full, *coreset, *(evaluation or [])] for row in steps.read_rows(m.path)]
    result = steps.report(config_json, parent_run_id=parent_run_id, rows=rows, out_dir=report_dir.path)
    Path(table.path).write_text(result.text)
    steps.emit(result, metrics=summary)


def close_run(config_json: str, run_id: str, job_id: str) -> str:
    """Exit handler: mark the parent MLflow run FAILED if the pipeline stopped early."""
    from tdds_core import steps

    return steps.close_run(config_json, run_id=run_id, job_id=job_id)


def reprune_diff(config_json: str, parent_run_id: str, selections: Input[Dataset], diff: Output[Metrics]):
    """Compare each selection with the previous dataset version's (kept, dropped, added, Jaccard)."""
    from tdds_core import steps

    steps.emit(steps.reprune(config_json, parent_run_id=parent_run_id, selections=selections.path), metrics=diff)
