"""Stage train-full: full-data training that records every sample's dynamics (resumes when
interrupted). Key ``train/<fingerprint>-<identity digest>``; MLflow run ``train-full/<arch>/s<seed>``."""
from __future__ import annotations

from typing import Any, Callable, Optional

from .. import plan as P
from ..config import Config
from ..data import Splits, create_dataset
from ..tracking import (STAGE_TRAIN_FULL, TAG_ARCH, TAG_FINGERPRINT, TAG_METHOD, TAG_SEED, TAG_STAGE, Tracker,
                        artifact_tags, run_name, run_params)
from ._artifacts import StageOutput, claim_output, existing, train_into, uri_of, work_dir
from ._registry import Context, Ref, Stage, State, register_stage
from ._training import epoch_logger, log_training_outputs, result_metrics, result_row

__all__ = ["train_full", "tracked_train_full"]


def train_full(cfg: Config, *, splits: Optional[Splits] = None,
               on_epoch: Optional[Callable[[dict], Any]] = None) -> StageOutput:
    """Full-data training with dynamics capture into the output root (reused when finished)."""
    from ..engine import full_data_spec, load_result      # torch: imported where training runs

    splits = splits or create_dataset(cfg.data)
    spec = full_data_spec(cfg, splits.num_classes)
    claim_output(cfg)
    uri = uri_of(cfg, P.train_key(cfg, splits.fingerprint))
    done = existing(uri)
    if done is not None:
        return StageOutput(uri, done, load_result(done), reused=True)
    return StageOutput(uri, work_dir(uri), train_into(uri, splits, spec, on_epoch, cfg=cfg))


def tracked_train_full(cfg: Config, tracker: Tracker, splits: Splits) -> StageOutput:
    """:func:`train_full` inside its MLflow run (a finished run with the same key is reused)."""
    akey = P.train_key(cfg, splits.fingerprint)
    key = P.run_key_of(STAGE_TRAIN_FULL, cfg.output, akey)
    tags = {TAG_STAGE: STAGE_TRAIN_FULL, TAG_METHOD: "full", TAG_ARCH: cfg.model.arch, TAG_SEED: cfg.train.seed,
            TAG_FINGERPRINT: splits.fingerprint}
    with tracker.start_run(run_name(STAGE_TRAIN_FULL, arch=cfg.model.arch, seed=cfg.train.seed), key=key,
                           tags=tags, system_metrics=cfg.tracking.system_metrics) as run:
        out = train_full(cfg, splits=splits, on_epoch=None if run.reused else epoch_logger(tracker))
        if not run.reused:
            t = cfg.train
            tracker.log_params({**run_params(method="full", seed=t.seed, arch=cfg.model.arch, epochs=t.epochs, lr=t.lr,
                                             weighting="none"),
                                **P.identity(cfg, STAGE_TRAIN_FULL)})
            tracker.log_metrics(result_metrics(out.result))
            tracker.set_tags(artifact_tags(out.uri, akey))
            log_training_outputs(cfg, tracker, out, splits.classes, full=True)
            tracker.log_input_dataset(cfg.data.name, splits.fingerprint, source=str(cfg.data.root or cfg.data.name))
            if "noise" in splits.info:
                tracker.log_dict(splits.info["noise"], "noise.json")
    return out


def run(ctx: Context, item: Any, state: State) -> State:
    cfg = ctx.cfg
    out = tracked_train_full(cfg, ctx.tracker, ctx.splits)
    ref = Ref(uri=out.uri, key=P.train_key(cfg, ctx.fingerprint), run_stage=STAGE_TRAIN_FULL)
    return state.part(STAGE_TRAIN_FULL, {"": ref},
                      [result_row("full", None, cfg.train.seed, cfg.model.arch, out.result, stage=STAGE_TRAIN_FULL)])


STAGE = register_stage(Stage(STAGE_TRAIN_FULL, order=10, loop="once", run=run,
                             reads=("data", "model", "train", "dynamics"), gpu=True))
