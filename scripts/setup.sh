#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install sorl-torchrl with its dev and docs tools
# and the sweep launchers (their configs are tested).
#
# Usage: bash scripts/setup.sh [VENV_DIR]        (default: .venv)
#
# Torch selection (so a CPU machine never downloads CUDA wheels):
#   * If torch is already importable in the venv, it is kept as is (bring your own CUDA build).
#   * Otherwise, with no NVIDIA GPU visible, the CPU build pinned in constraints/torch-cpu.txt
#     is installed. Set SORL_TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu) where
#     that pin would otherwise resolve to a CUDA build.
#   * With a GPU (nvidia-smi works) the default PyPI torch, a CUDA build, is installed.
#   * SORL_TORCH_SPEC overrides the requirement string altogether.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp="$VENV/.sorl-installed"
# Skip the install when nothing that drives it changed since the last successful one.
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt constraints/torch-cpu.txt ]; then
  exit 0
fi
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${SORL_TORCH_SPEC:-}" ]; then
    spec="$SORL_TORCH_SPEC"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    spec="torch"
  else
    spec="$(grep -E '^torch' constraints/torch-cpu.txt)"
  fi
  extra=()
  [ -n "${SORL_TORCH_INDEX:-}" ] && extra=(--extra-index-url "$SORL_TORCH_INDEX")
  echo "[setup] installing $spec"
  "$VPY" -m pip install -q "${extra[@]}" "$spec"
fi
# Constrain torch to the version now installed, so resolving the rest never swaps it.
tv="$("$VPY" -c 'import torch; print(torch.__version__.split("+")[0])')"
echo "[setup] torch $tv; installing sorl-torchrl[dev,docs,sweeps]"
"$VPY" -m pip install -q -e ".[dev,docs,sweeps]" "torch==$tv"
"$VPY" -c "import sorl_torchrl" 
touch "$stamp"
