"""The one plan and the one declaration of what each stage depends on (tdds_core.plan)."""
from __future__ import annotations

import pytest

from tdds_core import plan as P
from tdds_core.config import Config, parse_config

FP = "f" * 64
CACHED = ("train-full", "score", "select", "coreset", "evaluate")

# a value different from the default for every runtime field: toggling it must change no key
RUNTIME_TOGGLES = {
    "name": "other", "output": "/elsewhere", "data.root": "/data/elsewhere", "data.download": True,
    "data.resident": "never", "data.resident_max_bytes": 123, "data.num_workers": 7,
    "train.eval_batch_size": 17, "train.progress": False, "selection.export": True,
    "tracking.enabled": False, "tracking.uri": "http://x:5000", "tracking.experiment": "e",
    "tracking.log_models": "none", "tracking.register_model": "tdds-full", "tracking.system_metrics": False,
    "tracking.system_metrics_interval_s": 2.5, "coreset.concurrent_runs": 2,
    "tune.method": "el2n", "tune.grid": {"T": [3], "W": [3]}, "tune.epochs": 3, "tune.seeds": [1, 2],
    "tune.rates": [0.5], "tune.baseline": "el2n", "tune.rule": False,
    "tune.choose": ["all"], "tune.grids": {"ccs": {"strategy": ["topk"]}}, "tune.budget": 4,
    "pipeline.image": "img:2", "pipeline.gpu_image": "gpu:2", "pipeline.accelerator_type": "amd.com/gpu",
    "pipeline.gpus": 2, "pipeline.cpu_request": "8", "pipeline.memory_request": "1G", "pipeline.retries": 0,
    "pipeline.caching": False, "pipeline.pipeline_root": "s3://b/p", "pipeline.parallelism": 2,
    "pipeline.light_cpu_request": "2", "pipeline.light_memory_request": "1G",
    "pipeline.secrets": [{"secret_name": "s3", "keys": {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID"}}],
    "pipeline.tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
    "pipeline.node_selector": {"pool": "gpu"}, "pipeline.shm_size": "8Gi",
    "pipeline.image_pull_secrets": ["regcred"], "pipeline.image_pull_policy": "Always", "pipeline.cpu_limit": "8",
    "pipeline.memory_limit": "32G", "pipeline.light_cpu_limit": "2", "pipeline.light_memory_limit": "6G",
    "pipeline.allow_unstamped_image": True, "pipeline.job_deadline_s": 600, "pipeline.job_wait_s": 60,
    "pipeline.data_volume": {"pvc_name": "datasets", "mount_path": "/data"},
    "pipeline.shared_volume": {"pvc_name": "shared", "mount_path": "/shared"}, "train.checkpoint_every": 5,
}
# identity fields whose change must change the key of the stages that read them
IDENTITY_TOGGLES = {
    "data.train_subset": (500, ("train-full", "coreset", "evaluate")),
    "data.val_size": (100, ("train-full", "coreset", "evaluate")),
    "data.noise.label_noise": (0.1, ("train-full", "coreset", "evaluate")),
    "model.arch": ("small_cnn", ("train-full", "coreset", "evaluate")),
    "train.lr": (0.2, ("train-full", "coreset", "evaluate")), "train.epochs": (3, ("train-full", "coreset", "evaluate")),
    "train.eval_every": (2, ("train-full", "coreset", "evaluate")),
    "dynamics.dtype": ("float32", ("train-full",)), "selection.class_balanced": (True, ("select",)),
    "train.processes": (2, ("train-full",)),    # the full-data run's world size; coreset runs train in one process
    "coreset.weighting": ("none", ("coreset", "evaluate")), "coreset.batch_size": (64, ("coreset", "evaluate")),
    "coreset.epochs": (3, ("coreset", "evaluate")),
}


def _with(path: str, value) -> Config:
    return parse_config({}, [f"{path}={value!r}" if isinstance(value, str) else f"{path}={str(value).lower()}"
                             if isinstance(value, bool) else f"{path}={value}"])


def test_every_config_field_is_classified():
    fields = set(P.config_fields())
    assert fields - set(P.FIELDS) == set(), "classify the new config fields in tdds_core.plan.FIELDS"
    assert set(P.FIELDS) - fields == set(), "tdds_core.plan.FIELDS names fields the config no longer has"
    assert set(P.FIELDS.values()) == {P.IDENTITY, P.RUNTIME}
    # the toggles below cover every runtime field
    assert {p for p, k in P.FIELDS.items() if k == P.RUNTIME} == set(RUNTIME_TOGGLES)


@pytest.mark.parametrize("path", sorted(RUNTIME_TOGGLES))
def test_runtime_field_changes_no_key(path):
    base, other = Config(), _with(path, RUNTIME_TOGGLES[path])
    assert P._get(other, path) != P._get(base, path)
    for stage in CACHED:
        assert P.identity(other, stage) == P.identity(base, stage), stage
    assert P.train_key(other, FP) == P.train_key(base, FP)
    assert P.selection_key(other, "scores/x", "x", 0.5) == P.selection_key(base, "scores/x", "x", 0.5)
    assert P.coreset_key(other, "selections/x", "resnet18", 1, "none") == P.coreset_key(base, "selections/x", "resnet18", 1, "none")
    assert P.experiment_key(other, FP).split("|")[-1] == P.experiment_key(base, FP).split("|")[-1]


@pytest.mark.parametrize("path", sorted(IDENTITY_TOGGLES))
def test_identity_field_changes_the_keys_of_the_stages_that_read_it(path):
    value, readers = IDENTITY_TOGGLES[path]
    base, other = Config(), _with(path, value)
    for stage in CACHED:
        changed = P.identity(other, stage) != P.identity(base, stage)
        assert changed == (stage in readers), (path, stage)
    assert P.experiment_key(other, FP) != P.experiment_key(base, FP)


def test_numerics_are_keyed_by_their_effect_on_this_machine():
    # on a CPU, bf16 autocast and compile are not applied: the same numbers, one key; channels_last is
    base = Config()
    for path, value in (("train.amp", "off"), ("train.compile", True), ("train.device", "cpu"), ("train.deterministic", True)):
        assert P.train_key(_with(path, value), FP) == P.train_key(base, FP), path
    assert P.train_key(_with("train.channels_last", False), FP) != P.train_key(base, FP)
    assert P.numerics(base)["device"] == "cpu" and P.numerics(base)["bf16"] is False



def test_deterministic_kernels_are_identity_on_a_gpu(monkeypatch):
    """On a GPU (the device resolution stubbed: no CUDA here) train.deterministic changes the key;
    off, the numerics carry no such entry, so keys from before the option stand."""
    import torch

    from tdds_core import numerics as engine

    monkeypatch.setattr(engine, "resolve_device", lambda name: torch.device("cuda"))
    gpu = _with("train.device", "cuda")
    assert "deterministic" not in P.numerics(gpu)
    det = gpu.model_copy(update={"train": gpu.train.model_copy(update={"deterministic": True})})
    assert P.numerics(det)["deterministic"] is True
    assert P.train_key(det, FP) != P.train_key(gpu, FP)


def test_stage_config_keeps_what_the_stage_reads():
    cfg = parse_config({}, ["selection.rates=[0.5]", "selection.class_balanced=true", "coreset.epochs=3",
                            "methods=[{name: el2n}]"])
    sel = P.stage_config(cfg, "select")
    assert sel.selection.class_balanced is True and sel.selection.rates == Config().selection.rates
    assert sel.coreset == Config().coreset and sel.methods == Config().methods
    assert P.stage_config(cfg, "coreset").coreset.epochs == 3
    assert P.stage_config(cfg, "train-full").coreset == Config().coreset


def test_plan_items():
    cfg = parse_config({}, [
        "model.arch=small_cnn", "selection.rates=[0.3, 0.7]", "coreset.seeds=[1, 2]",
        "methods=[{name: random}, {name: tdds, params: {T: 5, W: 3}, per_rate: {0.7: {T: 9}}}, {name: el2n, rates: [0.7]}]",
        "evaluate.rates=[0.7]", "evaluate.methods=[tdds]", "evaluate.archs=[small_cnn, resnet18]"])
    plan = P.Plan.from_config(cfg)
    # a method tuned per rate is one row (one label) with one score setting per rate
    assert [(s.label, s.params) for s in plan.scores] == [
        ("random", {}), ("tdds[T=5,W=3]", {"T": 5, "W": 3}), ("tdds[T=5,W=3]", {"T": 9, "W": 3}), ("el2n", {})]
    assert [(p.score.label, p.score.params.get("T"), p.rate) for p in plan.pairs] == [
        ("random", None, 0.3), ("random", None, 0.7), ("tdds[T=5,W=3]", 5, 0.3), ("tdds[T=5,W=3]", 9, 0.7),
        ("el2n", None, 0.7)]
    # only tdds at 0.7 is evaluated, and not on the model's own architecture (that is the coreset row)
    assert [(e.pair.score.params.get("T"), e.arch, e.seed) for e in plan.evals] == [(9, "resnet18", 1)]
    assert [(r.rate, [p.score.method.name for p in r.pairs]) for r in plan.rates] == [
        (0.3, ["random", "tdds"]), (0.7, ["random", "tdds", "el2n"])]


def test_plan_refuses_an_empty_grid():
    from tdds_core.errors import ConfigError

    with pytest.raises(ConfigError, match="no \\(method, pruning rate\\) pair"):
        P.Plan.from_config(parse_config({}, ["methods=[]"]))


def test_run_keys_name_the_store(tmp_path):
    a = P.run_key_of("score", str(tmp_path / "a"), "scores/x-1")
    assert a == P.run_key_of("score", str(tmp_path / "a"), "scores/x-1")
    assert a != P.run_key_of("score", str(tmp_path / "b"), "scores/x-1")
    assert a != P.run_key_of("coreset", str(tmp_path / "a"), "scores/x-1")


def test_coreset_weighting_is_the_methods_own_unless_set():
    from tdds_core.config import MethodSpec

    cfg = Config()
    assert P.coreset_weighting(cfg, "tdds") == "batch"            # its own Eq. 13, as the authors apply it
    assert P.coreset_weighting(cfg, "el2n") == "none"             # baselines train unweighted
    assert P.coreset_weighting(cfg, None) == "none"               # a selection of no known method
    assert P.coreset_weighting(cfg, MethodSpec(name="tdds", weighting="mean1")) == "mean1"
    forced = _with("coreset.weighting", "sample")
    assert P.coreset_weighting(forced, "el2n") == "sample" and P.coreset_weighting(forced, "tdds") == "sample"
    # the weighting keys the coreset run
    assert P.coreset_key(cfg, "selections/x", "resnet18", 1, "batch") != P.coreset_key(cfg, "selections/x", "resnet18", 1, "none")
    assert P.coreset_key(cfg, "selections/x", "resnet18", 1, "none") == P.coreset_key(forced, "selections/x", "resnet18", 1, "none")


def test_speed_options_of_a_scorer_are_not_in_its_key():
    base = P.score_key("train/ab-cd", "tdds", {"T": 5, "W": 3})
    assert base == P.score_key("train/ab-cd", "tdds", {"T": 5, "W": 3, "block_rows": 64, "workers": 2})
    assert base != P.score_key("train/ab-cd", "tdds", {"T": 5, "W": 4})
