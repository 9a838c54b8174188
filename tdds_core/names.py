"""The names every layer shares, in one place: MLflow tags, stage names, metric names, run names
and how a pruning rate is written. Nothing here imports anything of tdds but the standard library."""
from __future__ import annotations

import re
from typing import Any, Optional

__all__ = [
    "TAG_KEY", "TAG_STAGE", "TAG_METHOD", "TAG_METHOD_NAME", "TAG_RATE", "TAG_ARCH", "TAG_SEED",
    "TAG_FINGERPRINT", "TAG_CODE_VERSION", "TAG_GIT_SHA", "TAG_PIPELINE_RUN", "TAG_CONFIG_NAME",
    "TAG_ARTIFACT_URI", "TAG_ARTIFACT_KEY", "TAG_NOTE", "TAG_SELECTION_SHA256", "TAG_SELECTION_URI", "TAG_PARENT_RUN",
    "TAG_DATASET", "TAG_TRAIN_URI", "TAG_PREVIOUS_FINGERPRINT", "TAG_PREVIOUS_SELECTION_URI",
    "STAGE_PIPELINE", "STAGE_TRAIN_FULL", "STAGE_SCORE", "STAGE_SELECT", "STAGE_CORESET", "STAGE_EVALUATE",
    "STAGE_REPORT", "STAGE_REPRUNE", "METRIC_FINAL_ACC", "METRIC_BEST_ACC", "METRIC_NOISY_KEPT", "METRIC_NUM_TRAIN",
    "METRIC_ITERATIONS", "METRIC_WALL_S", "MAX_PARAM_KEY_LENGTH", "run_name", "metric_name", "format_rate", "slug",
]

# ---------------------------------------------------------------- tags (strings on every tdds run)
TAG_KEY = "tdds.key"                    # dedup key of the work a run did (see run_key)
TAG_STAGE = "tdds.stage"                # one of the STAGE_* values below
TAG_METHOD = "tdds.method"              # method label as shown in tables (MethodSpec.display), "full" for full data
TAG_METHOD_NAME = "tdds.method_name"    # registered scoring function (tdds, el2n, ...)
TAG_RATE = "tdds.rate"                  # pruning rate, format_rate(rate) e.g. "0.70"; absent for full data
TAG_ARCH = "tdds.arch"                  # architecture trained/evaluated
TAG_SEED = "tdds.seed"                  # training seed
TAG_FINGERPRINT = "tdds.fingerprint"    # dataset fingerprint (full value)
TAG_CODE_VERSION = "tdds.code_version"  # tdds_core.__version__ (+ "+g<sha>" when the git sha is known)
TAG_GIT_SHA = "tdds.git_sha"            # git commit of the code, when known ($TDDS_GIT_SHA or `git rev-parse`)
TAG_PIPELINE_RUN = "tdds.pipeline_run_id"  # id of the pipeline run (one parent run per pipeline run)
TAG_CONFIG_NAME = "tdds.config_name"    # Config.name
TAG_ARTIFACT_URI = "tdds.artifact_uri"  # where the stage's artifact lives, as a URI (s3://... or file://...)
TAG_ARTIFACT_KEY = "tdds.artifact_key"  # the artifact's key under the output root (portable across machines)
TAG_NOTE = "mlflow.note.content"        # the run's description in the MLflow UI (Markdown)
TAG_SELECTION_SHA256 = "tdds.selection_sha256"  # SHA-256 of the selection's indices.npy
TAG_SELECTION_URI = "tdds.selection_uri"        # where the selection a coreset run trained on lives
TAG_PARENT_RUN = "mlflow.parentRunId"   # MLflow's own nesting tag
# re-pruning (tdds_core.reprune)
TAG_DATASET = "tdds.dataset"                         # dataset_identity(cfg.data)
TAG_TRAIN_URI = "tdds.train_uri"                     # the full-data run (its dynamics/ids.txt lists the version's ids)
TAG_PREVIOUS_FINGERPRINT = "tdds.previous_fingerprint"
TAG_PREVIOUS_SELECTION_URI = "tdds.previous_selection_uri"

# ---------------------------------------------------------------- stage values of TAG_STAGE
STAGE_PIPELINE = "pipeline"
STAGE_TRAIN_FULL = "train-full"
STAGE_SCORE = "score"
STAGE_SELECT = "select"
STAGE_CORESET = "coreset"
STAGE_EVALUATE = "evaluate"   # cross-architecture coreset training
STAGE_REPORT = "report"
STAGE_REPRUNE = "reprune"        # re-pruning: how each coreset changed against the previous dataset version

# ---------------------------------------------------------------- metrics
METRIC_FINAL_ACC = "final_acc"      # test accuracy after the last epoch, percent (0..100)
METRIC_BEST_ACC = "best_acc"        # best test accuracy over epochs, percent (0..100)
METRIC_NOISY_KEPT = "noisy_kept"    # fraction (0..1) of the kept samples whose label/image was corrupted
METRIC_NUM_TRAIN = "num_train"      # training samples used
METRIC_ITERATIONS = "iterations"    # optimizer steps
METRIC_WALL_S = "wall_s"            # wall-clock seconds of the stage

MAX_PARAM_KEY_LENGTH = 250          # MLflow's limit on a param or metric key


def run_name(stage: str, *, method: Optional[str] = None, rate: Optional[float] = None,
             arch: Optional[str] = None, seed: Optional[int] = None) -> str:
    """Run name that lines runs up in MLflow's compare view: ``coreset/tdds/p0.70/resnet18/s42``,
    ``score/tdds``, ``train-full/resnet18/s42``."""
    parts = [stage]
    if method is not None:
        parts.append(str(method))
    if rate is not None:
        parts.append(f"p{format_rate(rate)}")
    if arch is not None:
        parts.append(str(arch))
    if seed is not None:
        parts.append(f"s{seed}")
    return "/".join(parts)


def metric_name(*parts: Any) -> str:
    """A metric key MLflow accepts (letters, digits, ``_ - . / :`` and spaces) from name parts:
    ``metric_name("final_acc", "tdds[T=6]", "p0.70")`` = ``final_acc/tdds_T_6/p0.70``."""
    return "/".join(re.sub(r"[^\w.\-: ]+", "_", str(p)).strip("_") for p in parts if p not in (None, ""))[:MAX_PARAM_KEY_LENGTH]


def slug(s: str) -> str:
    """A path- and tag-safe form of a label: runs of other characters become ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"


def format_rate(rate: float | None) -> str:
    """``0.7`` -> ``"0.70"`` (two decimals unless more are needed); None -> ``""``."""
    if rate is None:
        return ""
    r = float(rate)
    s = f"{r:.2f}"
    return s if abs(float(s) - r) < 1e-12 else repr(r)
