#!/usr/bin/env bash
# The GPU suite (issue 8): one run, at most ~10 minutes on one H100/H200, that measures
#   1. training throughput: reference-style loop vs the engine, capture on/off (batch 128, CIFAR-shaped)
#   2. TDDS scoring time for N=50,000, C=100, T=30 (the scorer streams on the host's CPU cores)
#   3. the Fashion-MNIST grid with configs/fashion-mnist.yaml (all nine methods x 30/50/70/80/90%),
#      with its wall time, table and accuracy-vs-rate plot
#   4. cross-architecture rows for TDDS and Random at 70% and 90% (the config's evaluate section)
# and publishes the figures into docs/ (benchmarks/publish.py; nothing retyped by hand).
#
#   bash benchmarks/gpu_suite.sh            # on a GPU machine (no internet needed)
#   bash benchmarks/gpu_suite.sh --smoke    # reduced CPU mode, seconds to minutes (CI runs it)
#
# Fashion-MNIST: /usr/share/datasets/fashion-mnist or ./data/fashion-mnist (copy the four .gz files
# there to carry them to a GPU machine). PYTHON selects the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=full
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) MODE=smoke ;;
    --out) OUT="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-benchmarks/out/$MODE}
DOCS=docs
[ "$MODE" = smoke ] && DOCS="$OUT/docs"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - "$OUT/env.json" "$MODE" "$*" <<'PY'
import json, sys, datetime, torch, platform
card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
json.dump({"card": card, "torch": torch.__version__, "date": datetime.date.today().isoformat(), "mode": sys.argv[2],
           "command": "bash benchmarks/gpu_suite.sh" + (" --smoke" if sys.argv[2] == "smoke" else "")}, open(sys.argv[1], "w"), indent=2)
print(json.load(open(sys.argv[1])))
PY

if [ "$MODE" = smoke ]; then
  GRID_ARGS=(--config configs/quickstart.yaml --set data.train_subset=300 --set data.test_subset=200
             --set train.epochs=3 --set train.progress=false --set selection.rates=[0.7]
             --set 'methods=[{name: random}, {name: tdds, params: {T: 3, W: 3}}]'
             --set evaluate.archs=[resnet18] --set evaluate.rates=[0.7] --set tracking.enabled=false)
else
  # no MLflow on the GPU machine (it has no mlflow package); the suite publishes from its own files
  GRID_ARGS=(--config configs/fashion-mnist.yaml --set train.progress=false --set tracking.enabled=false)
fi

echo "== 0. the grid's config, validated before any GPU time is spent (methods, options, dataset files, plan)"
"$PY" -m tdds_core grid "${GRID_ARGS[@]}" --out "$OUT/grid" --dry-run

echo "== 1. training throughput"
if [ "$MODE" = smoke ]; then
  "$PY" benchmarks/train_throughput.py --device cpu --arch small_cnn --n 300 --epochs 1 --repeat 1 --json "$OUT/throughput.json"
else
  "$PY" benchmarks/train_throughput.py --arch resnet18 --n 20000 --epochs 2 --json "$OUT/throughput.json"
fi

echo "== 2. scoring (the streaming scorer runs on the host CPU; its table includes N=50,000, C=100, T=30)"
if [ "$MODE" = smoke ]; then
  "$PY" benchmarks/scoring.py --quick | tee "$OUT/scoring.md"
else
  "$PY" benchmarks/scoring.py | tee "$OUT/scoring.md"
fi

echo "== 3+4. Fashion-MNIST grid (with cross-architecture rows)"
start=$(date +%s.%N)
"$PY" -m tdds_core grid "${GRID_ARGS[@]}" --out "$OUT/grid"
end=$(date +%s.%N)
"$PY" - "$OUT/grid_time.json" "$start" "$end" "${GRID_ARGS[*]}" <<'PY'
import json, sys
json.dump({"wall_s": float(sys.argv[3]) - float(sys.argv[2]), "command": f"tdds grid {sys.argv[4]}"}, open(sys.argv[1], "w"), indent=2)
PY

echo "== publish"
"$PY" benchmarks/publish.py "$OUT" --docs "$DOCS"
