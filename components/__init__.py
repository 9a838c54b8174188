"""KFP components, one per tdds stage (see :mod:`components.stages`).

``make_components(image, gpu_image)`` turns the stage functions into KFP v2 lightweight components
that run in the configured images; the pipelines in :mod:`pipelines` call it with
``cfg.pipeline.image`` / ``cfg.pipeline.gpu_image``, so one setting names every task's image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from . import stages

__all__ = ["Components", "make_components", "GPU_STAGES", "CPU_STAGES", "stages"]

GPU_STAGES = ("train_full", "train_coreset", "evaluate_cross_arch")
CPU_STAGES = ("open_run", "score", "collect_scores", "materialize_subset", "collect_selections", "report", "close_run",
              "reprune_diff")


@dataclass(frozen=True)
class Components:
    """The components of one image pair (attributes named like the functions)."""

    open_run: Any
    train_full: Any
    score: Any
    collect_scores: Any
    materialize_subset: Any
    collect_selections: Any
    train_coreset: Any
    evaluate_cross_arch: Any
    report: Any
    close_run: Any
    reprune_diff: Any
    image: str
    gpu_image: str


def make_components(image: str, gpu_image: Optional[str] = None) -> Components:
    """Components whose CPU stages run in ``image`` and training stages in ``gpu_image`` (default
    ``image``); ``install_kfp_package=False`` because the images install kfp with tdds."""
    from kfp import dsl

    gpu_image = gpu_image or image
    made = {}
    for name in GPU_STAGES + CPU_STAGES:
        made[name] = dsl.component(getattr(stages, name), base_image=gpu_image if name in GPU_STAGES else image,
                                   install_kfp_package=False)
    return Components(image=image, gpu_image=gpu_image, **made)
