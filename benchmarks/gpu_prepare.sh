#!/usr/bin/env bash
# Prepare, on the CPU machine, what a lent GPU machine lacks (issue 18): it has no internet and no
# Debian package, and its Python 3.12 image has torch, torchvision, numpy, matplotlib, pyyaml and
# tqdm but not pydantic (which the config needs). This script puts into the git-ignored data/
#   data/fashion-mnist/*.gz        the four Debian Fashion-MNIST files
#   data/wheels-py312/*.whl        pydantic and its dependencies, built for CPython 3.12
# and prints the `carry` list and the first command to run there (it installs the wheels without
# an index and checks that the suite's imports work before any measurement).
#
#   bash benchmarks/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
SRC=/usr/share/datasets/fashion-mnist
mkdir -p data/fashion-mnist data/wheels-py312
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$SRC/$f" ] || { echo "missing $SRC/$f: apt-get install dataset-fashion-mnist" >&2; exit 1; }
  cp -u "$SRC/$f" data/fashion-mnist/
done
"$PY" -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d data/wheels-py312 "pydantic>=2.6,<3"
du -sh data/fashion-mnist data/wheels-py312
cat <<'EOF'
carry: ["data"]
first command on the GPU machine (installs the wheels offline, then checks the imports the suite needs):
  python3 -m pip install --quiet --no-index --find-links data/wheels-py312 pydantic && \
  PYTHONPATH=$PWD python3 -c "import tdds_core.grid, tdds_core.engine, tdds_core.scoring, torch; print('imports ok', torch.cuda.get_device_name(0))" && \
  PYTHON=python3 PYTHONPATH=$PWD bash benchmarks/gpu_check.sh
a grid that does not fit one call: end each call with
  python3 benchmarks/gpu_carry.py benchmarks/out/full/grid "$OUT/grid"
and copy the returned folder to benchmarks/out/full/grid (carried) before the next call: its finished
stages are reused, nothing is trained twice (weights and features stay behind: 64 MiB carry).
EOF
