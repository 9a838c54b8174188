"""KFP components over the stage registry (:mod:`components.tasks`).

``make_components(image, gpu_image)`` gives one component per registered stage (the generic
``stage_task``, named after the stage: its tasks show as ``train-full``, ``score``, ...), a
``collect-<stage>`` fan-in per looping stage, and ``open-run`` / ``close-run``. Training stages run
in ``gpu_image`` (default ``image``); ``install_kfp_package=False`` because the images hold kfp.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from . import tasks
from tdds_core.stage_registry import list_stages

__all__ = ["Components", "make_components", "tasks"]


@dataclass(frozen=True)
class Components:
    """The components of one image pair."""

    open_run: Any
    close_run: Any
    stages: dict[str, Any] = field(default_factory=dict)      # stage name -> component
    collects: dict[str, Any] = field(default_factory=dict)    # stage name -> its fan-in component
    image: str = ""
    gpu_image: str = ""


def _component(fn: Any, image: str, name: Optional[str] = None) -> Any:
    from kfp import dsl

    comp = dsl.component(fn, base_image=image, install_kfp_package=False)
    if name:
        comp.component_spec.name = name
    return comp


def make_components(image: str, gpu_image: Optional[str] = None) -> Components:
    """Components whose light tasks run in ``image`` and training stages in ``gpu_image``."""
    gpu_image = gpu_image or image
    stages = {s.name: _component(tasks.stage_task, gpu_image if s.gpu else image, s.name) for s in list_stages()}
    collects = {s.name: _component(tasks.collect_task, image, f"collect-{s.name}") for s in list_stages()
                if s.loop != "once"}
    return Components(_component(tasks.open_run, image, "open-run"), _component(tasks.close_run, image, "close-run"),
                      stages, collects, image, gpu_image)
