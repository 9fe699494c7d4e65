#!/usr/bin/env bash
# The GPU check: CUDA tests, a short paper-size training run (and its resumption), training
# throughput and verifier latency on CUDA, in one command of at most 8 minutes.
#
# On a machine with an NVIDIA GPU, PyTorch and no network, with the wheelhouse that
# benchmarks/gpu_check_prepare.sh builds (build/gpu_wheels) copied beside the checkout:
#
#   bash benchmarks/gpu_check.sh                 # results in $OUT (default build/gpu_check)
#   bash benchmarks/gpu_check.sh --dry-run       # every step on the CPU, tiny sizes
#   bash benchmarks/gpu_check.sh --only train    # chosen steps (see benchmarks/gpu_check.py)
#
# The packages torch does not bring (torchrl, tensordict, hydra, OGBench, MuJoCo, ...) are
# installed from the wheelhouse into a separate folder put on PYTHONPATH, without their
# dependencies and without touching the machine's torch, unless the interpreter already has
# them (the project's own virtual environment, for a dry run). MuJoCo never renders here:
# MUJOCO_GL=disable keeps OpenGL out. Writes $OUT/gpu_check.json (every step's command,
# status, time and figures, rewritten after each step) and $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu_check}
WHEELS=${GPU_WHEELS:-build/gpu_wheels}
SITE=${GPU_SITE:-/tmp/sorl_gpu_site}
BUDGET=${GPU_CHECK_BUDGET:-420}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-disable}
mkdir -p "$OUT"
start=$(date +%s)

if ! "$PYTHON" -c "import torchrl, tensordict, hydra, ogbench" >/dev/null 2>&1; then
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu_check: no wheels in $WHEELS: run benchmarks/gpu_check_prepare.sh and carry it" >&2
    exit 2
  fi
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" "$WHEELS"/*.whl || exit 2
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  echo "gpu_check: installed $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE" \
    "in $(($(date +%s) - start)) s"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  echo "== $(date -u +%FT%TZ) $(uname -srm), python $("$PYTHON" -V 2>&1)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1 || true
} | tee -a "$OUT/gpu_check.log"
left=$((BUDGET - ($(date +%s) - start)))
"$PYTHON" benchmarks/gpu_check.py --out "$OUT" --budget "$left" "$@"
