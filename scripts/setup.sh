#!/usr/bin/env bash
# One-time set-up on a fresh Debian-like machine (idempotent): the Fashion-MNIST files, a virtual
# environment in .venv and the tdds package. `--dev` adds the test dependencies (and Debian's chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

# 1. Fashion-MNIST: Debian's package where apt exists, torchvision's download elsewhere (below).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null || \
    echo "setup: could not install dataset-fashion-mnist with apt; falling back to torchvision's download" >&2
fi
# --dev: Debian's chromium, which renders the MLflow UI headless (tests/test_mlflow_ui.py, scripts/mlflow_screenshots.py)
if [ -n "$extras" ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null || \
    echo "setup: could not install chromium with apt; tests/test_mlflow_ui.py needs it" >&2
fi

# 2. The virtual environment and the package (torch <= 2.14.1 as pinned in pyproject.toml).
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".${extras}"

# 3. Without the Debian package: download Fashion-MNIST into ./data/fashion-mnist.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ ! -d data/fashion-mnist/FashionMNIST/raw ]; then
  .venv/bin/python -c "import torchvision as tv; [tv.datasets.FashionMNIST('data/fashion-mnist', train=t, download=True) for t in (True, False)]"
fi
echo "setup: ready (.venv/bin/tdds)"
