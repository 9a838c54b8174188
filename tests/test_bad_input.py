"""Bad inputs, one test each, through the entry point a user hits (the ``tdds`` CLI in process, or
the library function the CLI calls).

Every test checks three things: the command fails with exit code 2 (or the documented
TddsError subclass), the one-line message names the problem AND the fix, and nothing is lost:
no partial output appears and existing artifacts keep every byte (``snapshot`` before and after).
docs/RELIABILITY.md lists these tests next to the guarantees they show.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fixtures_config import synthetic_config
from fixtures_servers import FAKE_SECRET_KEY, free_port, s3_client
from helpers import make_idx_dataset, write_idx
from tdds_core.stages.score import score
from tdds_core.stages.select import select
from tdds_core.stages.train_full import train_full
from tdds_core.cli import main
from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.dynamics import DynamicsWriter
from tdds_core.engine import full_data_spec, train
from tdds_core.errors import ArtifactError
from tdds_core.io import sha256_file, write_manifest

SYN = {"num_train": 64, "num_test": 32, "image_size": 8}
BASE = synthetic_config(**SYN, name="bad-input", width=4, epochs=4, batch_size=32,
                        dynamics={"save_features": False},
                        methods=[{"name": "random"}, {"name": "tdds", "params": {"T": 3, "W": 2}}],
                        selection={"rates": [0.5]}, coreset={"batch_size": 16, "epochs": 1},
                        evaluate={"archs": ["small_cnn"], "rates": []}, tracking={"enabled": False})


def merged(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, section by section; ``options`` dicts are replaced whole."""
    out = json.loads(json.dumps(base))
    for k, v in over.items():
        deep = isinstance(v, dict) and isinstance(out.get(k), dict) and k != "options"
        out[k] = merged(out[k], v) if deep else v
    return out


def write_cfg(folder: Path, name: str = "c.yaml", **over) -> Path:
    p = Path(folder) / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(merged(BASE, over), sort_keys=False))
    return p


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def refused(rc: int, err: str, *fragments: str) -> None:
    """Exit 2, one ``tdds: error:`` message (no traceback) holding every fragment."""
    assert rc == 2, err
    assert err.startswith("tdds: error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (hidden ones too: a temp file left behind shows up)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished output root: full-data run (4 epochs, dynamics), TDDS scores and a 50% selection."""
    root = tmp_path_factory.mktemp("finished")
    cfg = parse_config(merged(BASE, {"output": str(root / "out")}))
    splits = create_dataset(cfg.data)
    full = train_full(cfg, splits=splits)
    sc = score(cfg, full.uri, cfg.methods[1], splits=splits)
    sel = select(cfg, full.uri, sc.uri, 0.5)

    class Finished:
        pass

    f = Finished()
    f.cfg, f.root, f.splits = cfg, Path(cfg.output), splits
    f.train_uri, f.scores_uri, f.selection_uri = full.uri, sc.uri, sel.uri
    f.dynamics = Path(full.uri) / "dynamics"
    return f


@pytest.fixture
def untouched(finished):
    """Asserts after the test that the finished output root kept every byte and gained nothing."""
    before = snapshot(finished.root)
    yield finished
    assert snapshot(finished.root) == before


# ------------------------------------------------------------------------------------------ rates
def test_pruning_rate_outside_0_1(tmp_path, capsys, untouched):
    # in the config: refused when the file is loaded, before any output exists
    cfg = write_cfg(tmp_path, output=str(tmp_path / "out"), selection={"rates": [0.5, 1.2]})
    rc, _, err = run(capsys, "grid", "--config", cfg)
    refused(rc, err, f"invalid config {cfg}", "selection.rates", "pruning rate 1.2 is outside (0, 1)",
            "use e.g. 0.7 to prune 70%")
    assert not (tmp_path / "out").exists()
    # on the command line: no rate is written when one of them is bad
    scores = Path(untouched.scores_uri) / "scores.npy"
    rc, _, err = run(capsys, "select", "--scores", scores, "--rate", 0.5, "--rate", 1.2, "--out", tmp_path / "sel")
    refused(rc, err, "pruning rate 1.2 is outside (0, 1)", "use e.g. 0.7 to prune 70%")
    assert not (tmp_path / "sel").exists()


# ------------------------------------------------------------------------------------------ TDDS window
@pytest.mark.parametrize("T,W,message", [
    (3, 1, "W (window size in epochs) must be an integer >= 2, got 1"),
    (3, 4, "window W=4 is longer than the trajectory T=3; use W <= T"),
])
def test_window_W_below_2_or_above_T(tmp_path, capsys, untouched, T, W, message):
    out = tmp_path / "s.npy"
    rc, _, err = run(capsys, "score", "--dynamics", untouched.dynamics, "--method", "tdds", "--T", T, "--W", W,
                     "--out", out)
    refused(rc, err, message)
    assert not out.exists() and not Path(str(out) + ".json").exists()


def test_start_plus_T_beyond_recorded_epochs(tmp_path, capsys, untouched):
    out = tmp_path / "s.npy"
    rc, _, err = run(capsys, "score", "--dynamics", untouched.dynamics, "--method", "tdds", "--start", 2, "--T", 3,
                     "--W", 2, "--out", out)
    refused(rc, err, "start=2 with T=3 needs epochs 2..4", "epoch 4 is not recorded", "recorded epochs: 0..3",
            "Lower T or choose start within the recorded range")
    assert not out.exists()


# ------------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("command,over,fragments", [
    ("train", {"data": {"name": "svhn", "options": {}}},
     ["data.name: unknown dataset 'svhn'", "known datasets: ", "fashion-mnist", "synthetic"]),
    ("train", {"model": {"arch": "resnet9000"}},
     ["model.arch: unknown architecture 'resnet9000'", "known architectures: ", "small_cnn", "`tdds list`"]),
    ("grid", {"model": {"arch": "resnet9000"}},
     ["model.arch: unknown architecture 'resnet9000'", "small_cnn"]),
    ("grid", {"methods": [{"name": "tdsd"}]}, ["unknown scoring method 'tdsd'", "known methods: ", "el2n", "tdds"]),
    ("grid", {"methods": [{"name": "tdds", "params": {"Tt": 3}}]},
     ["unknown option 'Tt' for scoring method 'tdds'", "valid options: ", "decay"]),
    ("grid", {"evaluate": {"archs": ["vgg99"], "rates": [0.5]}}, ["evaluate.archs: unknown architecture 'vgg99'"]),
    ("grid", {"train": {"drop_last": True}}, ["train.drop_last: dynamics need every sample", "set train.drop_last: false"]),
], ids=["dataset", "arch-train", "arch-grid", "method-grid", "method-option-grid", "eval-arch-grid", "drop-last-grid"])
def test_unknown_dataset_architecture_or_method(tmp_path, capsys, command, over, fragments):
    """Refused before any work and before the output root is claimed, so fixing the typo and rerunning
    with the same output works (an unknown architecture used to leave experiment.json and a run.json
    behind, and the corrected config was then refused as "another experiment")."""
    cfg = write_cfg(tmp_path, output=str(tmp_path / "out"), **over)
    rc, _, err = run(capsys, command, "--config", cfg)
    refused(rc, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_unknown_scoring_method_on_the_command_line(tmp_path, capsys, untouched):
    rc, _, err = run(capsys, "score", "--dynamics", untouched.dynamics, "--method", "tdsd", "--out", tmp_path / "s.npy")
    refused(rc, err, "unknown scoring method 'tdsd'", "known methods: ", "forgetting", "tdds")
    assert not (tmp_path / "s.npy").exists()


# ------------------------------------------------------------------------------------------ dataset folders
@pytest.mark.parametrize("name,layout,fragments", [
    ("fashion-mnist", "missing", ["is missing train-images-idx3-ubyte", "set data.root to the folder holding the IDX files"]),
    ("fashion-mnist", "empty", ["is missing train-images-idx3-ubyte", "set data.root"]),
    ("cifar10", "empty", ["cifar-10-batches-py does not exist", "set data.root", "data.download: true"]),
    ("imagefolder", "missing", ["does not exist", "set data.root to a folder of class folders"]),
    ("imagefolder", "empty", ["holds no images in class folders", "expected root/<class>/<image>"]),
    ("imagefolder", "no-test", ["has train/ but no test/ or val/ folder", "add one with the same class folders"]),
])
def test_dataset_folder_missing_or_empty(tmp_path, capsys, name, layout, fragments):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "no-test":  # class folders with images, but no test/ folder next to train/
        from helpers import make_imagefolder

        make_imagefolder(root, per_class=2)
        shutil.rmtree(root / "test")
    before = snapshot(root) if root.exists() else None
    cfg = write_cfg(tmp_path, output=str(tmp_path / "out"), data={"name": name, "root": str(root), "options": {}})
    rc, _, err = run(capsys, "train", "--config", cfg)
    refused(rc, err, *fragments)
    assert not (tmp_path / "out").exists()
    assert (snapshot(root) if root.exists() else None) == before  # the dataset folder is only read


# ------------------------------------------------------------------------------------------ labels
def test_labels_outside_0_C(tmp_path, capsys, untouched):
    # a dataset file with a label beyond the class list
    root = tmp_path / "fmnist"
    make_idx_dataset(root, n_train=20, n_test=10, gz=False)
    labels = np.arange(20) % 10
    labels[3] = 11
    write_idx(root / "train-labels-idx1-ubyte", labels, gz=False)
    cfg = write_cfg(tmp_path, output=str(tmp_path / "out"), data={"name": "fashion-mnist", "root": str(root), "options": {}})
    rc, _, err = run(capsys, "train", "--config", cfg)
    refused(rc, err, "1 train labels are outside [0, 10)", "sample '3' has label 11", "fix the labels or the class list")
    assert not (tmp_path / "out").exists()
    # labels passed to `tdds score` for the authors' layout (4 classes in the logits)
    ref = tmp_path / "ref"
    ref.mkdir()
    rng = np.random.default_rng(0)
    for t in range(3):
        np.save(ref / f"{t}_Output.npy", rng.standard_normal((12, 4)).astype(np.float32))
        np.save(ref / f"{t}_Index.npy", rng.permutation(12))
    bad = tmp_path / "labels.npy"
    np.save(bad, np.array([0, 1, 2, 3, 7, 0, 1, 2, 3, 0, 1, 2]))
    rc, _, err = run(capsys, "score", "--dynamics", ref, "--labels", bad, "--method", "aum", "--out", tmp_path / "a.npy")
    refused(rc, err, "labels range over 0..7 but the logits have 4 classes", "pass the labels of this training run")
    assert not (tmp_path / "a.npy").exists()


# ------------------------------------------------------------------------------------------ dynamics vs dataset
@pytest.mark.parametrize("options,fragments", [
    ({**SYN, "num_train": 48}, ["N=64, C=4 but dataset 'synthetic' has N=48, C=4", "retrain with `tdds train` on this dataset"]),
    ({**SYN, "num_classes": 5}, ["N=64, C=4 but dataset 'synthetic' has N=64, C=5", "retrain with `tdds train`"]),
    ({**SYN, "seed": 1}, ["recorded on another version of dataset 'synthetic' (fingerprint", "retrain with `tdds train`"]),
], ids=["N", "C", "fingerprint"])
def test_dynamics_N_or_C_differ_from_dataset(untouched, options, fragments):
    other = create_dataset(parse_config(merged(BASE, {"data": {"options": options}})).data)
    with pytest.raises(ArtifactError) as e:
        # a method/params whose scores do not exist yet: the stage would write them
        score(untouched.cfg, untouched.train_uri, "random", {"seed": 123}, splits=other)
    for f in fragments:
        assert f in str(e.value), str(e.value)
    assert not list((untouched.root / "scores").glob("random-*"))


# ------------------------------------------------------------------------------------------ NaN / Inf
def test_nan_or_inf_logits(tmp_path, capsys):
    folder = tmp_path / "dyn"
    rng = np.random.default_rng(3)
    w = DynamicsWriter(folder, ids=[str(i) for i in range(10)], labels=rng.integers(0, 3, 10), num_classes=3,
                       fingerprint="fp-nan", dtype="float32")
    for t in range(4):
        x = rng.standard_normal((10, 3))
        if t == 1:
            x[3, 2] = np.inf
        if t == 2:
            x[7, 0] = np.nan
            x[3, 1] = -np.inf
        w.write_epoch(t, x)
    w.finalize()
    before = snapshot(folder)
    out = tmp_path / "s.npy"
    rc, _, err = run(capsys, "score", "--dynamics", folder, "--method", "tdds", "--T", 4, "--W", 3, "--out", out)
    refused(rc, err, "epoch 1: 1 sample with NaN/Inf logits (first: sample 3)", "--nan-policy skip")
    assert not out.exists()
    with pytest.warns(RuntimeWarning, match="2 samples had NaN/Inf inputs"):
        rc, stdout, _ = run(capsys, "score", "--dynamics", folder, "--method", "tdds", "--T", 4, "--W", 3,
                            "--nan-policy", "skip", "--out", out)
    assert rc == 0 and "(2 with NaN/Inf inputs ranked last)" in stdout
    scores = np.load(out)
    assert np.isneginf(scores).sum() == 2 and np.isneginf(scores[[3, 7]]).all()
    assert json.loads(Path(str(out) + ".json").read_text())["num_skipped"] == 2
    assert snapshot(folder) == before


# ------------------------------------------------------------------------------------------ damaged files
@pytest.mark.parametrize("damage,method,fragments", [
    ("flip", "tdds", ["epoch_0002.npy is corrupt: SHA-256", "does not match the manifest", "delete the folder and rerun"]),
    ("flip", "el2n", ["epoch_0002.npy is corrupt: SHA-256", "delete the folder and rerun"]),
    ("truncate", "tdds", ["epoch_0002.npy is truncated (", "delete it and rerun training"]),
    ("truncate", "el2n", ["epoch_0002.npy is corrupt: SHA-256", "delete the folder and rerun"]),
    # damage that turns a logit into NaN is reported as damage, not as a diverged training run
    ("nan", "tdds", ["epoch_0002.npy is corrupt: SHA-256", "delete the folder and rerun"]),
])
def test_corrupt_or_truncated_npy(tmp_path, capsys, untouched, damage, method, fragments):
    dyn = tmp_path / "dynamics"
    shutil.copytree(untouched.dynamics, dyn)
    p = dyn / "epoch_0002.npy"
    data = bytearray(p.read_bytes())
    if damage == "flip":
        data[-4] ^= 0x01  # same size, the last mantissa bit of one float16 logit: only the checksum can tell
    elif damage == "nan":
        data[-1] = 0x7E  # high byte of the last float16 logit: exponent all ones -> NaN
    else:
        data = data[: len(data) // 2]
    p.write_bytes(bytes(data))
    params = ["--T", 3, "--W", 2] if method == "tdds" else []
    out = tmp_path / "s.npy"
    rc, _, err = run(capsys, "score", "--dynamics", dyn, "--method", method, *params, "--out", out)
    refused(rc, err, str(p), *fragments)
    assert not out.exists()


def test_truncated_scores_npy(tmp_path, capsys, untouched):
    scores = tmp_path / "scores.npy"
    scores.write_bytes((Path(untouched.scores_uri) / "scores.npy").read_bytes()[:100])
    rc, _, err = run(capsys, "select", "--scores", scores, "--rate", 0.5, "--out", tmp_path / "sel")
    refused(rc, err, f"{scores} is truncated or not a valid .npy file", "delete it and rerun the stage")
    assert not (tmp_path / "sel").exists()


# ------------------------------------------------------------------------------------------ selection vs dataset
def test_selection_from_another_dataset_version(tmp_path, capsys, untouched):
    """`tdds train-coreset` (stages.train_coreset -> selection.load_selection) on data whose
    fingerprint differs from the one the selection was made from."""
    cfg = write_cfg(tmp_path, output=str(tmp_path / "out"), data={"options": {**SYN, "seed": 1}})
    rc, _, err = run(capsys, "train-coreset", "--config", cfg, "--selection", untouched.selection_uri)
    refused(rc, err, f"{untouched.selection_uri} was selected from data with fingerprint",
            "but this run's data has fingerprint", "rerun `tdds score`/`tdds select` on this dataset")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ unreachable services
@pytest.fixture
def fake_aws(monkeypatch, tmp_path):
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATDDSBADINPUT0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("TDDS_CACHE", str(tmp_path / "cache"))
    return monkeypatch


def test_unreachable_s3_endpoint(tmp_path, capsys, fake_aws):
    """A closed port: bounded retries (TDDS_S3_RETRIES x AWS_MAX_ATTEMPTS), then one StorageError."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    fake_aws.setenv("AWS_ENDPOINT_URL", endpoint)
    fake_aws.setenv("TDDS_S3_RETRIES", "2")
    fake_aws.setenv("AWS_MAX_ATTEMPTS", "1")
    cfg = write_cfg(tmp_path)
    t0 = time.monotonic()
    rc, _, err = run(capsys, "train", "--config", cfg, "--out", "s3://tdds-bad-input/run")
    assert time.monotonic() - t0 < 15
    refused(rc, err, f"cannot reach S3 endpoint {endpoint}", "after 2 attempts", "check AWS_ENDPOINT_URL",
            "that the server is up", "raise TDDS_S3_RETRIES")
    assert FAKE_SECRET_KEY not in err
    cache = tmp_path / "cache"
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


def test_unreachable_mlflow_server(tmp_path, capsys, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = write_cfg(tmp_path, output=str(tmp_path / "out"), tracking={"enabled": True, "uri": uri})
    t0 = time.monotonic()
    rc, _, err = run(capsys, "grid", "--config", cfg)
    assert time.monotonic() - t0 < 15
    refused(rc, err, f"cannot reach the MLflow tracking server {uri} after 3 attempts", "start it",
            "fix tracking.uri / MLFLOW_TRACKING_URI")
    assert not (tmp_path / "out").exists()  # the tracker is checked before the output root is claimed


def test_unreachable_kfp_host(tmp_path, capsys):
    host = f"http://127.0.0.1:{free_port()}"
    # a config a cluster can run (compile refuses local outputs before any host is contacted)
    cfg = write_cfg(tmp_path, output="s3://tdds-bucket/runs/bad-input",
                    tracking={"enabled": True, "uri": "http://mlflow.mlflow.svc:5000"},
                    pipeline={"gpus": 0, "image": "registry.example/tdds:1"})
    t0 = time.monotonic()
    rc, _, err = run(capsys, "submit", "--config", cfg, "--host", host)
    assert time.monotonic() - t0 < 15
    refused(rc, err, f"cannot reach the Kubeflow Pipelines API at {host}", "check the URL, that the cluster is up",
            "kubectl port-forward")
    assert not (tmp_path / "out").exists()


@pytest.mark.servers
def test_wrong_s3_credentials(tmp_path, capsys, fake_aws, auth_moto):
    """moto with IAM authentication on (its own server: /moto-api/reset-auth is server-wide)."""
    server, key = auth_moto
    good = s3_client(server.url, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    good.put_object(Bucket="secured", Key="run/keep/manifest.json", Body=b'{"files": {}}')

    def listing():
        return sorted((o["Key"], o["ETag"]) for o in good.list_objects_v2(Bucket="secured").get("Contents", []))

    before = listing()
    fake_aws.setenv("AWS_ENDPOINT_URL", server.url)
    fake_aws.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    fake_aws.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)  # the right key id, a wrong secret
    cfg = write_cfg(tmp_path)
    rc, _, err = run(capsys, "train", "--config", cfg, "--out", "s3://secured/run")
    refused(rc, err, f"S3 endpoint {server.url} refused the request", "the credentials are wrong or lack permission",
            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    assert FAKE_SECRET_KEY not in err and key["SecretAccessKey"] not in err
    assert listing() == before  # nothing written, nothing deleted


# ------------------------------------------------------------------------------------------ config files
@pytest.mark.parametrize("text,fragments", [
    ("train:\n  epochz: 3\n", ["train.epochz: unknown key", "check its spelling against `tdds config --show-defaults`"]),
    ("train:\n  batch_size: many\n", ["train.batch_size: Input should be a valid integer", "(got 'many')"]),
    ("selection:\n  rates: 0.5\n", ["selection.rates: Input should be a valid list"]),
    ("methods:\n  - name: tdds\n    params: [30, 10]\n", ["methods.0.params: Input should be a valid dictionary"]),
    ("data: synthetic\n", ["data: Input should be a valid dictionary"]),
    ("train:\n  epochs: 3\n   lr: 0.1\n", ["is not valid YAML"]),
], ids=["unknown-key", "wrong-type", "scalar-for-list", "list-for-dict", "scalar-for-section", "yaml-syntax"])
def test_yaml_unknown_keys_or_wrong_types(tmp_path, capsys, text, fragments):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"output: {tmp_path / 'out'}\n" + text)
    rc, _, err = run(capsys, "train", "--config", cfg)
    refused(rc, err, str(cfg), *fragments)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ output folders
def test_output_folder_holding_another_configs_run(tmp_path, capsys, untouched):
    # the output root (stages.claim_output), through the CLI
    other = write_cfg(tmp_path, train={"lr": 0.2})
    rc, _, err = run(capsys, "train", "--config", other, "--out", untouched.root)
    refused(rc, err, f"output {untouched.root} holds the experiment 'bad-input' with other",
            "refusing to mix runs: set another `output` (or --out), or delete that folder")
    rc, _, err = run(capsys, "grid", "--config", other, "--out", untouched.root)
    refused(rc, err, "refusing to mix runs")
    # one run folder (engine.train), through the library
    cfg = parse_config(merged(BASE, {"train": {"epochs": 5}}))
    with pytest.raises(ArtifactError, match=r"holds another run .* refusing to mix them: choose another output folder"):
        train(untouched.splits, full_data_spec(cfg), Path(untouched.train_uri))
