"""The clean final pass of the full-data run (final_logits.npy, features.npy) and the float32 head
used for every stored logit: format, checksums, a manual eval-mode forward of the saved model,
the readers' errors, and bit-identity with the plain ``model(x)`` path on CPU."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from fixtures_config import synthetic_config
import tdds_core.engine.forward as engine
from tdds_core.config import parse_config
from tdds_core.data import create_dataset
from tdds_core.dynamics import FINAL_LOGITS, open_dynamics
from tdds_core.dynamics_reference import ReferenceDynamics
from tdds_core.engine import Fp32HeadForward, capture_forward, full_data_spec, load_model, split_head, train
from tdds_core.errors import ArtifactError
from tdds_core.io import verify_manifest
from tdds_core.models import create_model
from tdds_core.scoring import compute_scores, entropy_from_logits, moderate_from_features

SYN = synthetic_config(80, 40, 12)


def cfg_(**over):
    return parse_config(SYN, [f"{k}={v}" for k, v in over.items()])


def _clean_inputs(s):
    """The training images as the eval loader feeds them: no augmentation, normalised."""
    x = torch.from_numpy(s.train.images).float() / 255
    return (x - torch.tensor(s.mean).view(1, -1, 1, 1)) / torch.tensor(s.std).view(1, -1, 1, 1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = cfg_()
    s = create_dataset(cfg.data)
    out = tmp_path_factory.mktemp("clean") / "run"
    train(s, full_data_spec(cfg), out)
    return s, out


def test_final_pass_is_stored_with_checksums(run):
    s, out = run
    dyn = open_dynamics(out / "dynamics")
    verify_manifest(out / "dynamics")
    verify_manifest(out)
    files = dyn.manifest["files"]
    assert FINAL_LOGITS in files and "features.npy" in files
    assert dyn.manifest["final_pass"] == {"mode": "eval", "augment": False, "epoch": 2, "logits": FINAL_LOGITS,
                                          "features": "features.npy", "head_fp32": True, "autocast": "none"}
    final = dyn.final_logits()
    assert dyn.has_final_logits and final.dtype == np.float32 and final.shape == (len(s.train), s.num_classes)
    assert dyn.epoch(2).dtype == np.float16  # the epochs keep dynamics.dtype; the final pass is float32


def test_final_pass_matches_a_manual_eval_forward_of_the_saved_model(run):
    s, out = run
    dyn = open_dynamics(out / "dynamics")
    model = load_model(out / "model.pt").eval()
    with torch.no_grad():
        logits, feats = model(_clean_inputs(s), return_features=True)
    np.testing.assert_allclose(dyn.final_logits(), logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dyn.features(), feats.numpy(), rtol=1e-5, atol=1e-5)
    # logits and features come from the same pass
    with torch.no_grad():
        again = model.head(torch.from_numpy(dyn.features())).numpy()
    np.testing.assert_allclose(again, dyn.final_logits(), rtol=1e-5, atol=1e-5)
    # eval mode, not the training pass: the last recorded epoch's logits differ
    assert not np.allclose(dyn.epoch(2).astype(np.float32), dyn.final_logits(), atol=1e-3)
    # Entropy reads it by default; Moderate reads the same pass's features
    np.testing.assert_allclose(compute_scores("entropy", dyn), entropy_from_logits(logits.numpy()), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(compute_scores("moderate", dyn), moderate_from_features(dyn.features(), dyn.labels))


def test_final_pass_without_features_and_a_corrupt_file(tmp_path):
    cfg = cfg_(**{"train.epochs": 1, "dynamics.save_features": False})
    s = create_dataset(cfg.data)
    train(s, full_data_spec(cfg), tmp_path)
    dyn = open_dynamics(tmp_path / "dynamics")
    assert dyn.has_final_logits and not dyn.has_features
    assert dyn.manifest["final_pass"]["features"] is None
    p = tmp_path / "dynamics" / FINAL_LOGITS
    arr = np.load(p)
    arr[0, 0] += 1.0
    np.save(p, arr)
    with pytest.raises(ArtifactError, match="final_logits.npy"):
        open_dynamics(tmp_path / "dynamics").final_logits()


def test_no_final_pass_without_dynamics(tmp_path):
    cfg = cfg_(**{"train.epochs": 1, "dynamics.record": False})
    s = create_dataset(cfg.data)
    train(s, full_data_spec(cfg), tmp_path)
    assert not (tmp_path / "dynamics").exists()


def test_old_folder_and_reference_layout_name_the_fix(run, tmp_path):
    _, out = run
    # a tdds folder recorded before the clean pass existed: drop the file from the manifest
    import shutil

    old = tmp_path / "old"
    shutil.copytree(out / "dynamics", old)
    man = json.loads((old / "manifest.json").read_text())
    del man["files"][FINAL_LOGITS]
    (old / "manifest.json").write_text(json.dumps(man))
    (old / FINAL_LOGITS).unlink()
    dyn = open_dynamics(old)
    assert not dyn.has_final_logits
    with pytest.raises(ArtifactError, match=r"has no final_logits\.npy.*tdds train.*source='last_epoch'") as e1:
        dyn.final_logits()
    with pytest.raises(ArtifactError, match="source='last_epoch'"):
        compute_scores("entropy", dyn)
    np.testing.assert_array_equal(compute_scores("entropy", dyn, source="last_epoch"), entropy_from_logits(dyn.epoch(2)))

    # the authors' layout: no clean pass unless a final_logits.npy was put there
    ref = tmp_path / "ref"
    ref.mkdir()
    rng = np.random.default_rng(0)
    for t in range(2):
        idx = rng.permutation(6)
        np.save(ref / f"{t}_Output.npy", rng.standard_normal((6, 3)).astype(np.float32)[idx])
        np.save(ref / f"{t}_Index.npy", idx)
    rd = ReferenceDynamics(ref)
    assert not rd.has_final_logits
    with pytest.raises(ArtifactError, match=r"has no final_logits\.npy.*tdds train.*source='last_epoch'") as e2:
        rd.final_logits()
    assert "authors' layout" in str(e2.value) and "before the pass existed" in str(e1.value)
    with pytest.raises(ArtifactError, match="source='last_epoch'"):
        compute_scores("entropy", rd)
    np.testing.assert_array_equal(compute_scores("entropy", rd, source="last_epoch"), entropy_from_logits(rd.epoch(1)))
    final = rng.standard_normal((6, 3)).astype(np.float32)
    np.save(ref / FINAL_LOGITS, final)
    assert rd.has_final_logits
    np.testing.assert_array_equal(rd.final_logits(), final)
    np.testing.assert_array_equal(compute_scores("entropy", rd), entropy_from_logits(final))
    np.save(ref / FINAL_LOGITS, final[:4])
    with pytest.raises(ArtifactError, match="expected float"):
        rd.final_logits()


# -- the float32 head --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,size", [("small_cnn", 12), ("resnet18", 16), ("mobilenet_v2", 16)])
def test_fp32_head_forward_is_model_forward_on_cpu(arch, size):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=5, image_size=size)
    x = torch.randn(4, 3, size, size)
    fwd = capture_forward(model)
    assert isinstance(fwd, Fp32HeadForward) and fwd.head is model.head and fwd.features is model.features
    for mode in ("train", "eval"):
        getattr(model, mode)()
        torch.manual_seed(1)  # dropout (mobilenet) draws the same mask
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            want, wf = model(x, return_features=True)
        torch.manual_seed(1)
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            got, gf = fwd(x, return_features=True)
        assert torch.equal(got, want) and torch.equal(gf, wf), mode


def test_fp32_head_under_autocast_runs_the_head_in_float32():
    """CPU bf16 autocast stands in for CUDA's: the features come out in bf16, the head in float32."""
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, image_size=12, width=8).eval()
    x = torch.randn(3, 3, 12, 12)
    fwd = capture_forward(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        old = model(x)
        new, f = fwd(x, return_features=True)
    assert old.dtype == torch.bfloat16 and new.dtype == torch.float32 and f.dtype == torch.bfloat16
    with torch.no_grad():
        want = torch.nn.functional.linear(f.float(), model.head.weight, model.head.bias)
    assert torch.equal(new, want)


def test_split_head_fallback_is_logged(caplog):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    assert split_head(plain) is None
    with caplog.at_level(logging.INFO, logger="tdds.engine"):
        assert capture_forward(plain) is plain
    assert "no features/head split" in caplog.text
    m = create_model("small_cnn", num_classes=3, image_size=12, width=8)
    assert split_head(m) == (m.features, m.head)


def test_cpu_dynamics_are_bit_identical_to_the_plain_forward(tmp_path, monkeypatch):
    """The run with the float32-head capture equals, bit for bit, the run through ``model(x)`` (the
    path before the change, FP32_HEAD off) for a fixed seed: every epoch, the final pass, the weights."""
    cfg = cfg_(**{"dynamics.dtype": "float32"})
    s = create_dataset(cfg.data)
    train(s, full_data_spec(cfg), tmp_path / "new")
    monkeypatch.setattr(engine, "FP32_HEAD", False)
    train(s, full_data_spec(cfg), tmp_path / "old")
    a, b = open_dynamics(tmp_path / "new" / "dynamics"), open_dynamics(tmp_path / "old" / "dynamics")
    assert a.manifest["final_pass"]["head_fp32"] and not b.manifest["final_pass"]["head_fp32"]
    for t in a.epochs:
        assert np.array_equal(a.epoch(t), b.epoch(t)), t
    assert np.array_equal(a.final_logits(), b.final_logits())
    assert np.array_equal(a.features(), b.features())
    wa = torch.load(tmp_path / "new" / "model.pt")["state_dict"]
    wb = torch.load(tmp_path / "old" / "model.pt")["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_clean_mode_epochs_use_the_same_pass(tmp_path):
    """dynamics.mode clean: the last epoch's clean pass is the final pass (same model, same forward)."""
    cfg = cfg_(**{"dynamics.mode": "clean", "dynamics.dtype": "float32", "train.epochs": 2})
    s = create_dataset(cfg.data)
    train(s, full_data_spec(cfg), tmp_path)
    dyn = open_dynamics(tmp_path / "dynamics")
    assert np.array_equal(dyn.epoch(1), dyn.final_logits())
