"""The names every layer shares, in one place: MLflow tags, stage names, metric names, run names
and how a pruning rate is written. Nothing here imports anything of tdds but the standard library."""
from __future__ import annotations

import re
from typing import Any, Optional

__all__ = [
    "TAG_KEY", "TAG_STAGE", "TAG_METHOD", "TAG_LABEL", "TAG_METHOD_NAME", "TAG_EXPERIMENT_KIND", "EXPERIMENT_KIND", "TAG_RATE", "TAG_ARCH", "TAG_SEED",
    "TAG_FINGERPRINT", "TAG_CODE_VERSION", "TAG_GIT_SHA", "TAG_PIPELINE_RUN", "TAG_CONFIG_NAME",
    "TAG_ARTIFACT_URI", "TAG_ARTIFACT_KEY", "TAG_NOTE", "TAG_SELECTION_SHA256", "TAG_SELECTION_URI", "TAG_PARENT_RUN",
    "TAG_DATASET", "TAG_TRAIN_URI", "TAG_PREVIOUS_FINGERPRINT", "TAG_PREVIOUS_SELECTION_URI",
    "STAGE_PIPELINE", "STAGE_TRAIN_FULL", "STAGE_SCORE", "STAGE_SELECT", "STAGE_CORESET", "STAGE_EVALUATE",
    "STAGE_REPORT", "STAGE_REPRUNE", "METRIC_FINAL_ACC", "METRIC_BEST_ACC", "METRIC_NOISY_KEPT", "METRIC_NUM_TRAIN",
    "METRIC_ITERATIONS", "METRIC_WALL_S", "METRIC_COST_DYNAMICS_SHARE", "METRIC_COST_DYNAMICS_S", "METRIC_COST_SCORING_S",
    "METRIC_COST_SELECTION_S", "METRIC_COST_TRAIN_S", "METRIC_COST_TOTAL_S", "COST_METRICS", "ELAPSED_S",
    "SECRET_ENV", "METRIC_TEST_ACC", "METRIC_DIFF_VS_RANDOM", "STAGE_SUMMARY", "MODEL_ALIAS",
    "MAX_PARAM_KEY_LENGTH", "METHOD_RS2", "run_name", "metric_name", "format_rate", "rate_text", "rate_step", "model_name", "slug",
]

# ---------------------------------------------------------------- tags (strings on every tdds run)
TAG_KEY = "tdds.key"                    # dedup key of the work a run did (see run_key)
TAG_STAGE = "tdds.stage"                # one of the STAGE_* values below
TAG_METHOD = "tdds.method"              # registered method name (tdds, el2n, random, ...; "full" for full data), = param method
TAG_LABEL = "tdds.label"                # the table's row name, e.g. "tdds[T=6,W=3]" (MethodSpec.display), = param label
TAG_METHOD_NAME = "tdds.method_name"    # same as TAG_METHOD (kept for runs and searches made before tdds.label)
TAG_RATE = "tdds.rate"                  # pruning rate as rate_text(rate), e.g. "0.5" (= param rate); absent for full data
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
# experiment tag the MLflow 3 UI reads to open an experiment as model training (runs, charts) instead of
# GenAI (traces): mlflow/server/js/src/experiment-tracking/constants.ts, enum ExperimentKind
# (CUSTOM_MODEL_DEVELOPMENT = 'custom_model_development'), read from the tag 'mlflow.experimentKind'
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
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
STAGE_SUMMARY = "summary"        # one child of a pipeline run per method: its curve over the pruning rates

# ---------------------------------------------------------------- metrics
METRIC_FINAL_ACC = "final_acc"      # test accuracy after the last epoch, percent (0..100)
METRIC_BEST_ACC = "best_acc"        # best test accuracy over epochs, percent (0..100)
METRIC_NOISY_KEPT = "noisy_kept"    # fraction (0..1) of the kept samples whose label/image was corrupted
METRIC_NUM_TRAIN = "num_train"      # training samples used
METRIC_ITERATIONS = "iterations"    # optimizer steps
METRIC_WALL_S = "wall_s"            # wall-clock seconds of the stage
METRIC_TEST_ACC = "test_acc"        # test accuracy, percent: per epoch on training runs, per rate on summary runs
METRIC_DIFF_VS_RANDOM = "diff_vs_random"   # summary runs: mean paired difference to random, points, per rate
MODEL_ALIAS = "full-data"           # registry alias of the newest registered full-data model
# the whole cost of a coreset (tdds_core.cost): result-row fields of the same names, logged on its coreset run
METRIC_COST_DYNAMICS_SHARE = "cost_dynamics_share"  # latest epoch the setting reads / train.epochs (0..1; random: 0)
METRIC_COST_DYNAMICS_S = "cost_dynamics_s"          # that share of the full-data run's wall time, seconds
METRIC_COST_SCORING_S = "cost_scoring_s"            # wall time of the score stage, seconds (its artifact's elapsed_s)
METRIC_COST_SELECTION_S = "cost_selection_s"        # wall time of the select stage, seconds (its artifact's elapsed_s)
METRIC_COST_TRAIN_S = "cost_train_s"                # coreset training, seconds (= the row's wall_s)
METRIC_COST_TOTAL_S = "cost_total_s"                # dynamics + scoring + selection + training, seconds
COST_METRICS = (METRIC_COST_DYNAMICS_SHARE, METRIC_COST_DYNAMICS_S, METRIC_COST_SCORING_S, METRIC_COST_SELECTION_S,
                METRIC_COST_TRAIN_S, METRIC_COST_TOTAL_S)
ELAPSED_S = "elapsed_s"             # manifest key of the score and select artifacts: wall seconds the stage took

# environment variables whose values are never passed on in the clear (cluster env, PyTorchJob pods, logs)
SECRET_ENV = re.compile(r"(SECRET|PASSWORD|TOKEN|SESSION|CREDENTIAL|PRIVATE)", re.I)
MAX_PARAM_KEY_LENGTH = 250          # MLflow's limit on a param or metric key


def run_name(stage: str, *, method: Optional[str] = None, rate: Optional[float] = None,
             arch: Optional[str] = None, seed: Optional[int] = None) -> str:
    """A short run name leading with what tells a pipeline's runs apart (label, then rate), the stage
    last unless it is coreset (the runs a grid has most of): ``tdds[T=6,W=3] p0.5 s0``,
    ``tdds[T=6,W=3] p0.5 resnet18 s0 (evaluate)``, ``tdds[T=6,W=3] (score)``, ``full s0 (train-full)``;
    a pipeline's own run is its config name (``quickstart``; the runners append ``/<run id>``)."""
    if stage == STAGE_PIPELINE:
        return str(method or stage)
    parts = [str(method)] if method is not None else (["full"] if stage == STAGE_TRAIN_FULL else [])
    if rate is not None:
        parts.append(f"p{rate_text(rate)}")
    if arch is not None:
        parts.append(str(arch))
    if seed is not None:
        parts.append(f"s{seed}")
    if stage != STAGE_CORESET:
        parts.append(f"({stage})")
    return " ".join(parts) or stage


def rate_text(rate: float | None) -> str:
    """How a pruning rate is shown and searched (params, tags, run and model names, tables): the
    shortest decimal of the number, ``0.5`` -> ``"0.5"``, ``0.7`` -> ``"0.7"`` (``params.rate = '0.5'``
    finds it); None -> ``""``. Artifact keys keep :func:`format_rate` (``"0.50"``)."""
    if rate is None:
        return ""
    r = round(float(rate), 10)
    return repr(r) if r != int(r) else f"{int(r)}"


def rate_step(rate: float) -> int:
    """The step a per-rate metric is logged at: the rate in percent (0.5 -> 50)."""
    return int(round(100 * float(rate)))


def model_name(stage: str, method: Optional[str] = None, rate: Optional[float] = None, seed: Optional[int] = None,
               arch: Optional[str] = None) -> str:
    """The name a run's model is logged under, after its run: ``coreset-tdds-T-6-W-3-p50-s0``,
    ``train-full-s0``, ``evaluate-random-p50-resnet18-s0``. MLflow refuses ``/ : . % " '`` in model
    names, so the rate is written in percent here (as the summary runs' steps; ``p12_5`` for 0.125),
    other runs of characters as ``-``."""
    pct = None if rate is None else f"p{round(100 * float(rate), 6):g}".replace(".", "_")    # 0.125 -> p12_5
    parts = [stage, method, pct, arch, None if seed is None else f"s{seed}"]
    return "-".join(re.sub(r"[^A-Za-z0-9_-]+", "-", str(p)).strip("-") or "x" for p in parts if p not in (None, ""))


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

#: RS2's method name: its selection fixes only the kept size, nothing to export (tdds_core.scoring.rs2)
METHOD_RS2 = "rs2"
