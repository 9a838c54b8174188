"""The scoring path imports numpy, not torch (issue 17): `tdds score` on a tdds logits folder, the
authors' layout and a statistics folder, every registered method, `tdds stats` and `tdds select`,
and the score stage, each run in a fresh interpreter that must end without ``torch`` in
``sys.modules``. Importing torch costs a scoring process about 0.7 GB and seconds of start-up."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tdds_core.dynamics import DynamicsWriter
from tdds_core.io import write_manifest
from test_scoring_tdds import trajectory, write_reference

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter (argv[1:] = ``args``); it prints one JSON line last."""
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """A float16 logits folder with a clean final pass and features, and the same (float16) logits in
    the authors' layout."""
    root = tmp_path_factory.mktemp("no_torch")
    X, y = trajectory(5, 12, 40, 5)
    w = DynamicsWriter(root / "dyn", ids=[f"s{i}" for i in range(40)], labels=y, num_classes=5, fingerprint="fp",
                       dtype="float16")
    for t in range(12):
        w.write_epoch(t, X[t])
    rng = np.random.default_rng(0)
    w.write_final_pass(X[-1].astype(np.float32), rng.standard_normal((40, 6)).astype(np.float32), epoch=11, info={})
    w.finalize()
    write_reference(root / "ref", [x.astype(np.float16).astype(np.float32) for x in X], [np.arange(40)] * 12)
    return root


CLI = r"""
import json, sys
from pathlib import Path
from tdds_core.cli import main
from tdds_core.scoring import list_methods
root = Path(sys.argv[1])
opts = {"tdds": ["--T", "12", "--W", "4"], "dual": ["--param", "epochs=12", "--param", "window=4"],
        "dyn_unc": ["--param", "width=4"]}
ran = []
assert main(["stats", "--dynamics", str(root / "dyn"), "--out", str(root / "stats")]) == 0
for m in list_methods():
    assert main(["score", "--dynamics", str(root / "dyn"), "--method", m, "--out", str(root / f"{m}.npy"),
                 *opts.get(m, [])]) == 0, m
    ran.append(m)
for src in ("ref", "stats"):
    assert main(["score", "--dynamics", str(root / src), "--method", "tdds", "--T", "12", "--W", "4",
                 "--out", str(root / f"tdds-{src}.npy")]) == 0
assert main(["select", "--scores", str(root / "tdds.npy"), "--rate", "0.5", "--rate", "0.9",
             "--dynamics", str(root / "dyn"), "--out", str(root / "sel")]) == 0
print(json.dumps({"methods": ran, "torch": "torch" in sys.modules}))
"""


def test_tdds_score_imports_no_torch(folders):
    got = _run(CLI, str(folders))
    assert got["torch"] is False, "the scoring path imported torch"
    assert {"tdds", "aum", "el2n", "forgetting", "dyn_unc", "dual", "ccs", "entropy", "moderate",
            "random"} <= set(got["methods"])
    a, b, c = (np.load(folders / f) for f in ("tdds.npy", "tdds-ref.npy", "tdds-stats.npy"))
    assert np.abs(a - b).max() <= 1e-9 * np.abs(a).max() and np.abs(a - c).max() <= 1e-9 * np.abs(a).max()


STAGE = r"""
import json, sys
from pathlib import Path
from tdds_core.config import parse_config
from tdds_core.stages.score import score
from tdds_core.steps import run_task   # the KFP step's module
root = Path(sys.argv[1])
cfg = parse_config({"data": {"name": "synthetic"}, "model": {"arch": "small_cnn"}, "output": str(root / "out")})
out = score(cfg, str(root / "train"), "tdds", {"T": 12, "W": 4})
print(json.dumps({"scores": str(out.local / "scores.npy"), "torch": "torch" in sys.modules}))
"""


def test_the_score_stage_imports_no_torch(folders, tmp_path):
    import shutil

    train = tmp_path / "train"
    shutil.copytree(folders / "dyn", train / "dynamics")
    write_manifest(train, None, kind="train")
    got = _run(STAGE, str(tmp_path))
    assert got["torch"] is False, "the score stage imported torch"
    from tdds_core.dynamics import open_dynamics
    from tdds_core.scoring import compute_scores

    assert np.array_equal(np.load(got["scores"]), compute_scores("tdds", open_dynamics(folders / "dyn"), T=12, W=4))
