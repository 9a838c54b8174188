"""Stage train-full: full-data training that records every sample's dynamics (resumes when
interrupted). Key ``train/<fingerprint>-<identity digest>``; MLflow run ``full s<seed> (train-full)``."""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

from .. import plan as P
from ..artifacts import StageOutput, existing, uri_of, work_dir
from ..config import Config, config_digest
from ..data import Splits, create_dataset
from ..engine import full_data_spec, load_result
from ..errors import ArtifactError
from ..names import (STAGE_TRAIN_FULL, TAG_ARCH, TAG_FINGERPRINT, TAG_LABEL, TAG_METHOD, TAG_METHOD_NAME, TAG_SEED,
                     TAG_STAGE, model_name, run_name)
from ..stage_registry import Context, Ref, Stage, State, register_stage
from ..storage import Workspace
from ..tracking import Tracker, artifact_tags, run_params
from ._training import epoch_logger, log_training_outputs, result_metrics, result_row, train_into

__all__ = ["train_full", "tracked_train_full", "claim_output"]


def train_full(cfg: Config, *, splits: Optional[Splits] = None,
               on_epoch: Optional[Callable[[dict], Any]] = None) -> StageOutput:
    """Full-data training with dynamics capture into the output root (reused when finished)."""
    splits = splits or create_dataset(cfg.data)
    spec = full_data_spec(cfg, splits.num_classes)
    claim_output(cfg)
    key = P.train_key(cfg, splits.fingerprint)
    uri = uri_of(cfg, key)
    done = existing(uri)
    if done is not None:
        return StageOutput(uri, done, load_result(done), reused=True, key=key)
    return StageOutput(uri, work_dir(uri), train_into(uri, splits, spec, on_epoch, cfg=cfg), key=key)


def claim_output(cfg: Config) -> None:
    """Record which experiment an output root holds (``experiment.json``) and refuse a config whose
    full-data identity (:func:`tdds_core.plan.claim_identity`) differs: one root, one full-data run,
    never mixed. Methods, rates, seeds and evaluation settings may change (the grid grows); runtime
    settings may change freely. The full-data settings are validated first, so a config that cannot
    run never claims the root."""
    full_data_spec(cfg)  # ConfigError (unknown architecture, drop_last with dynamics) before anything is written
    ident = P.claim_identity(cfg)
    digest = config_digest(ident)
    key = "experiment.json"
    body = {"name": cfg.name, "digest": digest, "identity": ident}
    store = Workspace.of(cfg).store
    if store.exists(key):
        _check_claim(json.loads(store.get_bytes(key)), digest, cfg.output)
    else:
        store.put_bytes(key, json.dumps(body, indent=2, sort_keys=True).encode())


def _check_claim(prev: dict, digest: str, root: str) -> None:
    if prev.get("digest") != digest:
        raise ArtifactError(
            f"output {root} holds the experiment {prev.get('name')!r} with other data/model/train/dynamics settings; "
            "refusing to mix runs: set another `output` (or --out), or delete that folder."
        )


def tracked_train_full(cfg: Config, tracker: Tracker, splits: Splits) -> StageOutput:
    """:func:`train_full` inside its MLflow run (a finished run with the same key is reused)."""
    akey = P.train_key(cfg, splits.fingerprint)
    key = P.run_key_of(STAGE_TRAIN_FULL, cfg.output, akey)
    tags = {TAG_STAGE: STAGE_TRAIN_FULL, TAG_METHOD: "full", TAG_LABEL: "full", TAG_METHOD_NAME: "full",
            TAG_ARCH: cfg.model.arch, TAG_SEED: cfg.train.seed, TAG_FINGERPRINT: splits.fingerprint}
    with tracker.start_run(run_name(STAGE_TRAIN_FULL, seed=cfg.train.seed), key=key,
                           tags=tags, system_metrics=cfg.tracking.system_metrics) as run:
        out = train_full(cfg, splits=splits, on_epoch=None if run.reused else epoch_logger(tracker))
        if not run.reused:
            t = cfg.train
            tracker.log_params({**run_params(method="full", seed=t.seed, arch=cfg.model.arch, epochs=t.epochs, lr=t.lr,
                                             weighting="none"),
                                **P.identity(cfg, STAGE_TRAIN_FULL)})
            metrics = result_metrics(out.result)
            if out.result.epochs < t.epochs:       # dynamics.stop_training: not a full-data reference
                metrics = {k: v for k, v in metrics.items() if k not in ("final_acc", "best_acc", "best_epoch")}
                metrics.update(stopped_epoch=out.result.epochs, stopped_acc=out.result.final_acc)
            tracker.log_metrics(metrics)
            tracker.set_tags(artifact_tags(out.uri, akey))
            log_training_outputs(cfg, tracker, out, splits.classes, full=True,
                                 model_name=model_name(STAGE_TRAIN_FULL, seed=t.seed))
            tracker.log_input_dataset(cfg.data.name, splits.fingerprint, source=str(cfg.data.root or cfg.data.name))
            if "noise" in splits.info:
                tracker.log_dict(splits.info["noise"], "noise.json")
    return out


def run(ctx: Context, item: Any, state: State) -> State:
    cfg = ctx.cfg
    out = tracked_train_full(cfg, ctx.tracker, ctx.splits)
    ref = Ref(uri=out.uri, key=out.key, run_stage=STAGE_TRAIN_FULL)
    row = result_row("full", None, cfg.train.seed, cfg.model.arch, out.result, stage=STAGE_TRAIN_FULL)
    if out.result.epochs < cfg.train.epochs:
        # dynamics.stop_training: no full-data reference; the accuracy it stopped at stays apart
        row.update(stopped_epoch=out.result.epochs, stopped_acc=row.pop("final_acc"), best_acc=None)
    return state.part(STAGE_TRAIN_FULL, {"": ref}, [row])


STAGE = register_stage(Stage(STAGE_TRAIN_FULL, order=10, loop="once", run=run,
                             reads=("data", "model", "train", "dynamics"), gpu=True))
