"""Stage evaluate (cross-architecture): another architecture trained on the selection of an
evaluated (method, rate) pair (``evaluate.rates`` x ``evaluate.methods`` x ``evaluate.archs``,
the model's own architecture left out: that is the coreset row). Same keys and runs as the
coreset stage, tagged ``evaluate``."""
from __future__ import annotations

from typing import Optional

from .. import plan as P
from ..config import Config
from ..data import Splits, create_dataset
from ..artifacts import StageOutput
from ..names import STAGE_EVALUATE, STAGE_SELECT
from ..stage_registry import Context, Stage, State, register_stage
from .coreset import tracked_coreset, train_coreset

__all__ = ["evaluate_cross_arch"]


def evaluate_cross_arch(cfg: Config, selection_uri: str, archs: Optional[list[str]] = None, *,
                        seed: Optional[int] = None, splits: Optional[Splits] = None) -> list[tuple[str, StageOutput]]:
    """Train each architecture on the same selection; one (arch, output) per architecture."""
    splits = splits or create_dataset(cfg.data)
    return [(a, train_coreset(cfg, selection_uri, arch=a, seed=seed, splits=splits)) for a in (archs or cfg.evaluate.archs)]


def run(ctx: Context, item: P.EvalItem, state: State) -> State:
    ref, row = tracked_coreset(ctx, state.ref(STAGE_SELECT, item.pair.key), item.pair, seed=item.seed, arch=item.arch,
                               stage=STAGE_EVALUATE)
    return state.part(STAGE_EVALUATE, {f"{item.pair.key}/{item.arch}": ref}, [row])


STAGE = register_stage(Stage(STAGE_EVALUATE, order=50, loop="evals", run=run,
                             reads=("data", "model", "train", "coreset"), gpu=True))
