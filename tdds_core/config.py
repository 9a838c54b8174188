"""Run configuration: pydantic models loaded from YAML, one file for CLI, local and cluster runs.

Every field is documented; unknown keys and wrong types are rejected with a message that names
the field (``train.lr: Input should be greater than 0``). ``--set key.sub=value`` overrides any
field from the command line.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

__all__ = [
    "Config", "DataConfig", "NoiseConfig", "ModelConfig", "TrainConfig", "DynamicsConfig",
    "MethodSpec", "SelectionConfig", "CoresetConfig", "EvaluateConfig", "TuneConfig", "TrackingConfig",
    "PipelineConfig", "load_config", "parse_config", "config_digest",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class NoiseConfig(_Strict):
    """Noise injected into the training set before anything else (paper appendix F)."""

    label_noise: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of training labels replaced by another class.")
    corruption: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of training images corrupted.")
    corruption_types: list[Literal["gaussian", "occlusion", "resolution", "fog", "motion_blur"]] = Field(
        default_factory=lambda: ["gaussian", "occlusion", "resolution", "fog", "motion_blur"],
        description="Corruptions drawn uniformly for each corrupted image.",
    )
    seed: int = Field(0, description="Seed of the noise draw (recorded with the run).")

    @property
    def active(self) -> bool:
        return self.label_noise > 0 or self.corruption > 0


class DataConfig(_Strict):
    """Which dataset, where it lives and how it is served."""

    name: str = Field("fashion-mnist", description="Registered dataset: fashion-mnist, mnist, cifar10, cifar100, imagefolder, manifest, synthetic.")
    root: Optional[str] = Field(None, description="Folder with the dataset files (manifest: the manifest file or folder, local or s3://); None = the dataset's default folder.")
    download: bool = Field(False, description="Allow torchvision to download CIFAR when it is missing.")
    train_subset: Optional[int] = Field(None, gt=0, description="Use a seeded, class-stratified subset of this many training samples (quick runs).")
    test_subset: Optional[int] = Field(None, gt=0, description="Use a seeded subset of this many test samples.")
    subset_seed: int = Field(0, description="Seed for train_subset/test_subset/val_size.")
    val_size: int = Field(0, ge=0, description="Hold out this many training samples (class-stratified, seeded) as a "
                          "validation split: nothing trains on them; `tdds tune` chooses settings on them.")
    evaluate_on: Literal["test", "validation"] = Field(
        "test", description="Which split every accuracy is measured on. 'validation' (needs val_size) replaces the test "
        "split by the held-out samples before anything reads it: settings chosen on it never saw a test label.")
    image_size: Optional[int] = Field(None, gt=0, description="Resize side for imagefolder and manifest datasets (default 32).")
    resident: Literal["auto", "always", "never"] = Field(
        "auto", description="Serve the training set from a device-resident uint8 tensor (auto: when it fits)."
    )
    resident_max_bytes: int = Field(4 << 30, gt=0, description="Largest dataset (bytes, uint8) served resident under 'auto'.")
    num_workers: int = Field(2, ge=0, description="DataLoader workers for datasets that are not resident.")
    options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for the dataset function (e.g. synthetic sizes).")
    noise: NoiseConfig = Field(default_factory=NoiseConfig, description="Optional label noise / image corruption.")

    @model_validator(mode="after")
    def _validation(self) -> "DataConfig":
        if self.evaluate_on == "validation" and not self.val_size:
            raise ValueError("data.evaluate_on: 'validation' needs a validation split; set data.val_size "
                             "(e.g. 10% of the training samples)")
        return self


class ModelConfig(_Strict):
    arch: str = Field("resnet18", description="Registered architecture (see `tdds models`).")
    options: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for the model function.")


class TrainConfig(_Strict):
    """Full-data training; defaults are the authors' (tdds-facts.md)."""

    epochs: int = Field(200, gt=0, description="Epochs of full-data training.")
    batch_size: int = Field(100, gt=0, description="Batch size (authors: 100 for full data).")
    lr: float = Field(0.1, gt=0, description="Initial learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    nesterov: bool = Field(True, description="Nesterov momentum.")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay.")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="LR schedule, stepped every iteration.")
    seed: int = Field(42, description="Seed for init, data order and augmentation.")
    augment: bool = Field(True, description="Random crop (pad 4) and horizontal flip where it applies.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    amp: Literal["auto", "bf16", "off"] = Field("auto", description="bf16 autocast on CUDA ('auto' = on for CUDA).")
    channels_last: bool = Field(True, description="channels_last memory format on CUDA and CPU (about 1.3x faster small CNNs on CPU; docs/BENCHMARKS.md).")
    compile: bool = Field(False, description="torch.compile the model on CUDA.")
    deterministic: bool = Field(False, description="Bit-identical reruns on a GPU: deterministic CUDA kernels "
                                "(torch.use_deterministic_algorithms, cuDNN without autotuning; slower). A CPU run is "
                                "deterministic anyway.")
    eval_batch_size: int = Field(1000, gt=0, description="Batch size for test evaluation and feature extraction.")
    drop_last: bool = Field(False, description="Drop the last partial batch of each epoch.")
    eval_every: int = Field(1, gt=0, description="Evaluate on the test set every this many epochs (and always after the last).")
    checkpoint_every: int = Field(1, gt=0, description="Save the resumable checkpoint every this many epochs (a "
                                  "resume repeats the epochs after the last one; larger saves time on big models).")
    processes: int = Field(1, gt=0, description="Processes training the full-data run on one machine (torchrun "
                           "--nproc-per-node; DDP with synchronised batch norm; one GPU each on CUDA, and a KFP "
                           "train-full task asks for that many GPUs). The dynamics are those of one process within "
                           "float tolerance; above 1 it is part of the run's key.")
    nodes: int = Field(1, gt=0, description="Machines training the full-data run together (a Kubeflow PyTorchJob of "
                       "`nodes` pods with `processes` GPUs each, launched by the train-full task; needs the Kubeflow "
                       "Training Operator and pipeline.shared_volume; docs/CLUSTER.md). Above 1 it is part of the key.")
    progress: bool = Field(True, description="Show a progress bar per epoch (loss, accuracy, img/s).")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda", "mps") and not v.startswith("cuda:"):
            raise ValueError("must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return v


#: bytes a sample and epoch of per-sample statistics (tdds_core.statistics: 9 columns), by their storage dtype
STATS_BYTES_PER_SAMPLE = {"float64": 72, "float32": 36}


class DynamicsConfig(_Strict):
    """What the full-data run records for scoring."""

    record: Union[bool, Literal["logits", "stats", "both", "auto"]] = Field(
        "auto", description="What the full-data run records every epoch: logits (true: C values a sample), stats (9 "
        "numbers a sample whatever the classes, 72 bytes, 36 with stats_dtype float32; every built-in method scores "
        "from them, TDDS for any T/W/start; tdds_core.statistics), both, nothing (false), or auto (the default): "
        "stats where they are smaller than the logits (float64 statistics: more than 36 classes with float16 logits, "
        "18 with float32) and every configured method reads them, else logits.")
    mode: Literal["train", "clean"] = Field(
        "train", description="'train': the training forward pass's logits (authors; no extra pass); "
        "'clean': an extra eval-mode pass without augmentation after each epoch."
    )
    dtype: Literal["float16", "float32"] = Field("float16", description="Storage dtype of the logits.")
    stats_dtype: Literal["float64", "float32"] = Field(
        "float64", description="Storage dtype of the per-sample statistics (computed in float64 either way): float32 "
        "halves them to 36 bytes a sample and epoch; scores then agree with float64 ones to float32 precision.")
    epoch_start: int = Field(0, ge=0, description="First epoch recorded.")
    epoch_stop: Optional[int] = Field(None, gt=0, description="Stop recording before this epoch (None = all).")
    save_features: bool = Field(True, description="Save penultimate features of every sample (Moderate needs them).")
    stop_training: bool = Field(
        False, description="End the full-data run at the last recorded epoch (epoch_stop, or the latest epoch any "
        "configured method reads when epoch_stop is unset): the dynamics cost only that share of a run, and the "
        "run's accuracy is not a full-data reference (reports mark it absent).")

    @field_validator("record", mode="before")
    @classmethod
    def _record(cls, v: Any) -> Any:
        return True if v == "logits" else v     # one value per meaning: true is the logits recording

    def resolved(self, num_classes: Optional[int] = None, stats_readable: bool = True) -> Union[bool, str]:
        """``record`` with ``auto`` decided: True (logits), "stats", "both" or False. ``auto``
        records statistics when they take fewer bytes than a sample's logits (``num_classes x``
        the logits' itemsize > 72, or 36 for float32 statistics) and ``stats_readable`` (every configured method reads them);
        logits otherwise, and when ``num_classes`` is not known yet."""
        if self.record != "auto":
            return self.record
        itemsize = 2 if self.dtype == "float16" else 4
        smaller = num_classes is not None and int(num_classes) * itemsize > STATS_BYTES_PER_SAMPLE[self.stats_dtype]
        return "stats" if smaller and stats_readable else True

    @model_validator(mode="after")
    def _range(self) -> "DynamicsConfig":
        if self.epoch_stop is not None and self.epoch_stop <= self.epoch_start:
            raise ValueError(f"dynamics.epoch_stop ({self.epoch_stop}) must be greater than epoch_start ({self.epoch_start})")
        return self


class MethodSpec(_Strict):
    """One scoring method entry. ``params`` are keyword options of the scorer; ``per_rate`` overrides
    them for given pruning rates (e.g. TDDS's (T, W) per rate)."""

    name: str = Field(..., description="Registered scoring method (tdds, random, entropy, forgetting, el2n, aum, moderate, ccs, dyn_unc).")
    label: Optional[str] = Field(None, description="Row name in tables and MLflow (default: name plus params).")
    params: dict[str, Any] = Field(default_factory=dict, description="Scorer options, e.g. {T: 30, W: 10, decay: 0.9}.")
    per_rate: dict[float, dict[str, Any]] = Field(default_factory=dict, description="Per-pruning-rate overrides of params; "
                                                  "the key 'weighting' overrides the coreset loss weighting at that rate.")
    rates: Optional[list[float]] = Field(None, description="Only these pruning rates (default: selection.rates).")
    weighting: Optional[Literal["batch", "sample", "mean1", "none"]] = Field(
        None, description="Coreset loss weighting for this method (None: coreset.weighting's rule).")
    strategy: Optional[str] = Field(
        None, description="Selection strategy (tdds_core.strategies: topk, ccs, dual_beta, class_balanced; `tdds list`); "
        "None: the method's own (CCS: its strata and cutoff; DUAL: Beta sampling at the rates its authors use it; "
        "the others: topk). A per_rate entry's 'strategy' overrides it at that rate.")
    strategy_params: dict[str, Any] = Field(default_factory=dict, description="Options of the selection strategy, "
                                            "e.g. {beta: 0.1} for ccs or {c_d: 4} for dual_beta.")

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        parts = [f"{k}={v}" for k, v in sorted(self.params.items())]
        parts += [f"strategy={self.strategy}"] if self.strategy else []
        parts += [f"{k}={v}" for k, v in sorted(self.strategy_params.items())]
        return f"{self.name}[{','.join(parts)}]" if parts else self.name

    def per_rate_for(self, rate: float) -> dict[str, Any]:
        """A copy of the ``per_rate`` entry of ``rate`` ({} when it has none)."""
        return next((dict(over) for r, over in self.per_rate.items() if abs(float(r) - rate) < 1e-9), {})

    def params_for(self, rate: float) -> dict[str, Any]:
        """The scorer options at ``rate``: params updated by its ``per_rate`` entry (less 'weighting')."""
        over = self.per_rate_for(rate)
        over.pop("weighting", None)
        over.pop("strategy", None)
        return {**self.params, **over}

    def strategy_for(self, rate: Optional[float]) -> Optional[str]:
        """The selection strategy at ``rate``: its ``per_rate`` entry's, else ``strategy`` (None: the method's own)."""
        return (self.per_rate_for(rate).get("strategy") if rate is not None else None) or self.strategy

    def weighting_for(self, rate: Optional[float]) -> Optional[str]:
        """The coreset loss weighting at ``rate``: its ``per_rate`` entry's, else ``weighting`` (None: the config's rule)."""
        return (self.per_rate_for(rate).get("weighting") if rate is not None else None) or self.weighting

    @field_validator("per_rate")
    @classmethod
    def _per_rate_weighting(cls, v: dict[float, dict[str, Any]]) -> dict[float, dict[str, Any]]:
        for r, over in v.items():
            if "weighting" in over and over["weighting"] not in ("batch", "sample", "mean1", "none"):
                raise ValueError(f"per_rate[{r}].weighting: {over['weighting']!r} is not one of batch, sample, mean1, none")
        return v


def _default_methods() -> list[MethodSpec]:
    return [MethodSpec(name=n) for n in ("random", "entropy", "forgetting", "el2n", "aum", "moderate", "ccs", "dyn_unc", "tdds")]


class SelectionConfig(_Strict):
    rates: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7, 0.8, 0.9], description="Pruning rates p in (0, 1); keep round((1-p)N).")
    class_balanced: bool = Field(False, description="Keep the same fraction of every class instead of the global top.")
    export: bool = Field(False, description="Also export the pruned dataset itself (images, labels, ids, weights).")

    @field_validator("rates")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        for r in v:
            if not (0.0 < r < 1.0):
                raise ValueError(f"pruning rate {r} is outside (0, 1); use e.g. 0.7 to prune 70%")
        return v


class CoresetConfig(_Strict):
    """Training on a selection (paper section 5.1, Eq. 13)."""

    strategy: Literal["E", "P"] = Field("E", description="E: same epochs as full data; P: train.epochs / (1 - rate) epochs (the paper: as many sample visits as full data).")
    weighting: Literal["method", "batch", "sample", "mean1", "none"] = Field(
        "method", description="method: each method's own (TDDS: batch, its Eq. 13 as the authors' code applies it; "
        "the baselines: none, as their sources train); or one weighting for every method. batch: batch-mean CE x "
        "batch-mean importance; sample: per-sample weighted CE; mean1: per-sample weights scaled to mean 1 over the "
        "kept samples (Eq. 13's relative importance without changing the learning rate); none: plain CE."
    )
    batch_size: int = Field(128, gt=0, description="Coreset batch size (authors: 128).")
    batch_rule: bool = Field(False, description="Paper's rule: halve the batch at rate >= thresholds[0], quarter at >= thresholds[1].")
    batch_rule_thresholds: tuple[float, float] = Field((0.7, 0.9), description="Rates at which the batch is halved / quartered.")
    epochs: Optional[int] = Field(None, gt=0, description="Coreset epochs under strategy E (default: train.epochs).")
    seeds: list[int] = Field(default_factory=lambda: [42], description="Seeds; one coreset run per seed.")
    concurrent_runs: Optional[int] = Field(
        None, ge=1, description="Coreset and cross-architecture trainings of `tdds grid` run side by side on one "
        "device, this many processes at a time (None: free GPU memory // 6 GiB, at most 4; 1 on a CPU).")


class EvaluateConfig(_Strict):
    archs: list[str] = Field(default_factory=lambda: ["resnet50", "vgg16_bn", "mobilenet_v2", "shufflenet_v2"], description="Architectures for cross-architecture evaluation.")
    rates: list[float] = Field(default_factory=list, description="Pruning rates evaluated across architectures (empty = none).")
    methods: list[str] = Field(default_factory=lambda: ["tdds", "random"], description="Method labels evaluated across architectures.")


class TuneConfig(_Strict):
    """`tdds tune`: one method's settings chosen per pruning rate on the validation split (``data.val_size``)."""

    method: str = Field("tdds", description="Label or name of the method entry whose settings are tuned.")
    grid: dict[str, list[Any]] = Field(
        default_factory=lambda: {"T": [3, 5, 10], "W": [3, 5]},
        description="Candidate values per option (every combination is tried; combinations the method refuses, "
        "such as W > T, are dropped). Keys are scorer options, or 'weighting' (chosen once for all rates).")
    epochs: Optional[int] = Field(None, gt=0, description="Coreset epochs of the candidate runs (default: the grid's).")
    seeds: list[int] = Field(default_factory=lambda: [0], description="Coreset seeds of the candidate runs.")
    rates: Optional[list[float]] = Field(None, description="Pruning rates tuned (default: selection.rates).")
    baseline: Optional[str] = Field("random", description="A method entry trained beside the candidates for reference (never chosen; None: none).")
    rule: bool = Field(True, description="Also write the fixed fallback (the paper's CIFAR-100 (T, W) fractions) as the row '<method>-rule'.")
    choose: Optional[list[str]] = Field(
        None, description="Choose the coreset per rate among these method entries (labels or names; ['all']: every "
        "configured method): each entry's grid in `grids` (tune.method's is `grid`), its strategies and weightings. "
        "The tuned config gets a 'recommended' row per rate. None: tune only tune.method's settings.")
    grids: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict, description="Candidate values per method entry (label or name) for `choose`; keys are "
        "scorer options, 'weighting' or 'strategy'. An entry without a grid is one candidate, as configured.")
    budget: Optional[int] = Field(
        None, gt=0, description="Candidate trainings per rate and seed round for `choose` (successive halving over "
        "tune.seeds: every candidate trains on the first seed, the best half on the next, ...; None: all on every seed).")


class TrackingConfig(_Strict):
    enabled: bool = Field(True, description="Log to MLflow.")
    uri: Optional[str] = Field(None, description="Tracking URI; None = $MLFLOW_TRACKING_URI or sqlite:///<output>/mlflow.db.")
    experiment: Optional[str] = Field(None, description="Experiment name; None = 'tdds-<dataset>'.")
    log_models: Literal["none", "full", "all"] = Field(
        "all", description="Final models logged with mlflow.pytorch.log_model: none, the full-data run's only, or "
                           "every training run's (full-data, coreset, cross-architecture).")
    register_model: Optional[str] = Field(
        "auto", description="Register the full-data run's model in the MLflow model registry under this name, "
                            "its newest version with the alias 'full-data' ('auto': tdds-<config name>; None: not "
                            "registered).")
    system_metrics: bool = Field(True, description="Log CPU/GPU/memory/disk system metrics on training runs.")
    system_metrics_interval_s: float = Field(10.0, gt=0, description="Seconds between system-metric samples.")


class SecretEnv(_Strict):
    """A Kubernetes secret whose keys every cluster task gets as environment variables."""

    secret_name: str = Field(..., min_length=1, description="Name of an existing secret in the runs' namespace.")
    keys: dict[str, str] = Field(..., min_length=1, description="Secret key -> environment variable, e.g. "
                                 "{AWS_ACCESS_KEY_ID: AWS_ACCESS_KEY_ID}.")


class Toleration(_Strict):
    """A Kubernetes toleration of the training tasks (e.g. of a tainted GPU node pool)."""

    key: Optional[str] = Field(None, description="Taint key, e.g. nvidia.com/gpu (None with Exists: every taint).")
    operator: Literal["Equal", "Exists"] = Field("Equal", description="Equal: the taint's value must be `value`; Exists: any value.")
    value: Optional[str] = Field(None, description="Taint value (operator Equal).")
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(None, description="Taint effect (None: all).")


class DataVolume(_Strict):
    """An existing PersistentVolumeClaim holding the dataset files, mounted into every cluster task."""

    pvc_name: str = Field(..., min_length=1, description="Name of the PVC (ReadOnlyMany or ReadWriteMany) in the runs' namespace.")
    mount_path: str = Field("/data", pattern=r"^/", description="Where the pods see it; data.root must lie under it.")


class PipelineConfig(_Strict):
    """Kubeflow settings (ignored by local runs except caching and the training tasks' requests and retries)."""

    image: str = Field("ghcr.io/tdds-project/tdds:0.1.0", description="Image every component runs in on a cluster.")
    gpu_image: Optional[str] = Field(None, description="Image for GPU tasks (None = image).")
    accelerator_type: str = Field("nvidia.com/gpu", description="Accelerator resource requested by training tasks.")
    gpus: int = Field(1, ge=0, description="GPUs per training task (0 = CPU only).")
    cpu_request: str = Field("4", description="CPU request of training tasks.")
    memory_request: str = Field("16G", description="Memory request of training tasks.")
    retries: int = Field(2, ge=0, description="Retries of every task on a cluster, of the training tasks also locally (backoff 60 s, x2, at most 30 min).")
    caching: bool = Field(True, description="Reuse results of unchanged tasks.")
    pipeline_root: Optional[str] = Field(None, description="KFP pipeline root (s3://bucket/prefix on a cluster).")
    parallelism: int = Field(8, ge=0, description="Most iterations of each loop (score, select, coreset, evaluate) running at once on a cluster (0 = no limit).")
    light_cpu_request: str = Field("1", description="CPU request of the tasks without a GPU (open-run, score, select, collect-*, report, close-run).")
    light_memory_request: str = Field("4G", description="Memory request of the tasks without a GPU.")
    secrets: list[SecretEnv] = Field(default_factory=list, description="Kubernetes secrets every cluster task gets as environment variables (S3 keys, MLflow credentials).")
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations of the training tasks, e.g. [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}].")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the training tasks must run on, e.g. {nvidia.com/gpu.product: NVIDIA-A100-SXM4-40GB}.")
    shm_size: Optional[str] = Field("2Gi", description="Size of the in-memory /dev/shm of the training tasks (DataLoader workers); None = the runtime's default (64 MB).")
    image_pull_secrets: list[str] = Field(default_factory=list, description="Kubernetes secrets (docker-registry type) every cluster pod pulls its image with, e.g. [regcred].")
    image_pull_policy: Optional[Literal["Always", "IfNotPresent", "Never"]] = Field(None, description="Image pull policy of every cluster task (None = Kubernetes' default).")
    cpu_limit: Optional[str] = Field(None, description="CPU limit of the training tasks (profiles with a LimitRange or quota need one).")
    memory_limit: Optional[str] = Field(None, description="Memory limit of the training tasks.")
    light_cpu_limit: Optional[str] = Field(None, description="CPU limit of the tasks without a GPU.")
    light_memory_limit: Optional[str] = Field(None, description="Memory limit of the tasks without a GPU.")
    allow_unstamped_image: bool = Field(False, description="Run a pipeline compiled from a known commit in an image built without TDDS_GIT_SHA (the code-version check cannot compare them).")
    data_volume: Optional[DataVolume] = Field(None, description="A PVC with the dataset files mounted into every cluster task (needed for a local data.root).")
    shared_volume: Optional[DataVolume] = Field(None, description="A ReadWriteMany PVC the pods of a several-node "
                                                "full-data run (train.nodes > 1) share as their run folder; the "
                                                "train-full task mounts it too.")
    job_deadline_s: int = Field(172800, gt=0, description="activeDeadlineSeconds of a several-node run's PyTorchJob "
                                "(train.nodes > 1): the Training Operator fails the job this long after it started.")
    job_wait_s: Optional[int] = Field(None, gt=0, description="Most seconds the train-full task waits for its "
                                      "PyTorchJob (None: job_deadline_s + 900, time for the operator to mark it failed).")


class Config(_Strict):
    """A whole tdds run: data, model, training, dynamics, methods, selection, coreset training, tracking."""

    name: str = Field("tdds", description="Run name (used in paths and MLflow run names).")
    output: str = Field("runs/tdds", description="Output root: a local folder or s3://bucket/prefix.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    dynamics: DynamicsConfig = Field(default_factory=DynamicsConfig)
    methods: list[MethodSpec] = Field(default_factory=_default_methods)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    coreset: CoresetConfig = Field(default_factory=CoresetConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, v: Any) -> None:
            if isinstance(v, dict):
                for k, x in v.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), x)
            else:
                out[prefix] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)

        walk("", self.model_dump(mode="json"))
        return out


def _format_error(e: ValidationError, source: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against `tdds config --show-defaults`"
        lines.append(f"  {loc}: {msg}" + (f" (got {err['input']!r})" if err["type"] != "extra_forbidden" and "input" in err and not isinstance(err["input"], dict) else ""))
    return f"invalid config {source}:\n" + "\n".join(lines)


def _apply_override(d: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. --set train.epochs=5")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: cannot parse the value ({e})") from e
    parts = key.strip().split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {item!r}: {p} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def parse_config(data: dict | None, overrides: list[str] | None = None, source: str = "<dict>") -> Config:
    """Validate a config dict (plus ``key=value`` overrides) into a :class:`Config`."""
    d = dict(data or {})
    d = json.loads(json.dumps(d, default=str))  # deep copy
    for item in overrides or []:
        _apply_override(d, item)
    try:
        return Config.model_validate(d)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (None = all defaults) and apply ``key=value`` overrides."""
    if path is None:
        return parse_config({}, overrides)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass --config with a path such as configs/quickstart.yaml")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections (data:, model:, train: ...), not {type(data).__name__}")
    return parse_config(data, overrides, source=str(p))


def config_digest(obj: Any, length: int = 12) -> str:
    """Short stable hash of a config section (pydantic model or JSON-able value)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
