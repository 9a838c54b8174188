"""The stage registry: one :class:`Stage` per module of :mod:`tdds_core.stages` (or of a plugin),
registered on import. A stage module loads when its stage is first looked up (``get_stage("score")``
imports ``tdds_core.stages.score`` alone), every one when the chain is asked for.

A stage declares the config sections it reads (its keys and its KFP cache projection derive from
them, :mod:`tdds_core.plan`), the plan items it runs once per (``loop``), and ``run(ctx, item,
state) -> State``: the work of one item given the artifacts of the stages before it, returned as a
:class:`State` holding only what it added. Both runners iterate the same registry in ``order``:
``tdds grid`` in this process (:func:`tdds_core.grid.run_grid`), the KFP pipeline as one task per
item (:func:`tdds_core.steps.run_task`) with a collect task merging each loop's states.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .config import Config
from .data import create_dataset
from .errors import ArtifactError, DataError
from .plugins import PLUGINS_ENV, load_plugins
from .registry import Registry

__all__ = ["Stage", "State", "Ref", "Context", "register_stage", "unregister_stage", "get_stage", "list_stages",
           "chain", "STATE_FORMAT", "STAGES", "load_plugins", "PLUGINS_ENV"]

STATE_FORMAT = "tdds-state/1"
Loop = Literal["once", "scores", "rates", "pairs", "evals"]


class Ref(BaseModel):
    """One artifact a stage wrote: where it is and what it is of."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uri: str
    key: str                                  # store key under the output root
    run_stage: str = ""                       # the tracked stage whose MLflow run logged it ("" = none)
    label: str = ""
    method: str = ""
    rate: Optional[float] = None


class State(BaseModel):
    """What the stages so far produced: artifacts by stage and item key, and result rows. Holds no
    per-run values, so a KFP task's cache key (which includes its input state) stays stable."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["tdds-state/1"] = STATE_FORMAT
    fingerprint: str
    refs: dict[str, dict[str, Ref]] = Field(default_factory=dict)
    rows: list[dict] = Field(default_factory=list)

    def ref(self, stage: str, key: str = "") -> Ref:
        """The artifact of ``stage`` for item ``key`` (ArtifactError when the state lacks it)."""
        found = self.refs.get(stage, {}).get(key)
        if found is None:
            raise ArtifactError(f"no {stage} output for {key or 'the run'!r} among the stages before this one; the "
                                "pipeline was built from another config: compile it again.")
        return found

    def part(self, stage: str, refs: dict[str, Ref], rows: Iterable[dict] = ()) -> "State":
        """A state of the same dataset holding only ``refs`` of ``stage`` and ``rows``."""
        return State(fingerprint=self.fingerprint, refs={stage: dict(refs)} if refs else {}, rows=list(rows))

    def merge(self, parts: Iterable["State"]) -> "State":
        """This state plus the parts (one dataset version; an item key written twice must agree)."""
        refs = {s: dict(items) for s, items in self.refs.items()}
        rows = list(self.rows)
        for p in parts:
            if p.fingerprint != self.fingerprint:
                raise ArtifactError(f"outputs of two dataset versions ({self.fingerprint[:12]}, {p.fingerprint[:12]}) "
                                    "met in one run; rerun the pipeline on one version.")
            for stage, items in p.refs.items():
                for k, r in items.items():
                    if refs.setdefault(stage, {}).setdefault(k, r) != r:
                        raise ArtifactError(f"two different {stage} outputs for {k!r}; compile the pipeline again.")
            rows += p.rows
        return State(fingerprint=self.fingerprint, refs=refs, rows=rows)


@dataclass
class Context:
    """What a stage runs with: the config (as the stage reads it), the dataset version and the
    tracker (children of the pipeline's parent run)."""

    cfg: Config
    fingerprint: str
    tracker: Any
    parent_run_id: Optional[str] = None
    finish_parent: bool = False            # KFP: the report stage ends the parent run FINISHED
    _splits: Any = None

    @property
    def splits(self) -> Any:
        """The dataset (loaded once); DataError when it is not the version the run started on."""
        if self._splits is None:
            splits = create_dataset(self.cfg.data)
            if splits.fingerprint != self.fingerprint:
                raise DataError(f"dataset {self.cfg.data.name!r} changed while the pipeline ran (fingerprint "
                                f"{self.fingerprint[:12]} when it started, {splits.fingerprint[:12]} now); rerun the "
                                "pipeline on the new version.")
            self._splits = splits
        return self._splits


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline (see the module docstring)."""

    name: str                                   # MLflow stage tag, KFP task name, state section
    order: int                                  # position in the chain
    loop: Loop                                  # the plan items it runs once per
    run: Callable[[Context, Any, State], State]
    reads: tuple[str, ...] = ()                 # config sections / fields it reads (plan.identity, stage_config)
    gpu: bool = False                           # trains: GPU image, resources and retries on a cluster
    cached: bool = True                         # False: runs every time (report, reprune)
    side: bool = False                          # its output does not continue the chain
    pipelines: tuple[str, ...] = ("prune", "reprune")
    module: str = field(default="", compare=False)


STAGES: Registry[Stage] = Registry("stage", discover="tdds_core.stages")
LOOPS = ("once", "scores", "rates", "pairs", "evals")


def register_stage(stage: Stage) -> Stage:
    """Register ``stage`` (a name registered by another module is an error)."""
    module = stage.module or getattr(stage.run, "__module__", "")
    if stage.loop not in LOOPS:
        raise ValueError(f"stage {stage.name!r}: unknown loop {stage.loop!r}")
    return STAGES.add(stage.name, Stage(**{**stage.__dict__, "module": module}), module)


def unregister_stage(name: str) -> Stage:
    """Remove a registered stage (tests); KeyError when unknown."""
    return STAGES.remove(name)


def get_stage(name: str) -> Stage:
    """The stage registered as ``name`` (its module is imported on first use); ConfigError when unknown."""
    return STAGES.get(name)


def list_stages() -> list[Stage]:
    """Every registered stage in chain order."""
    return sorted((s for _, s in STAGES.items()), key=lambda s: (s.order, s.name))


def chain(pipeline: str = "prune") -> list[Stage]:
    """The stages of one pipeline kind in order."""
    return [s for s in list_stages() if pipeline in s.pipelines]
