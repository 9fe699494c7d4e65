#!/usr/bin/env bash
# Build the wheelhouse that benchmarks/gpu_check.sh installs on a GPU machine without network.
#
#   bash benchmarks/gpu_check_prepare.sh [DIR]        # default DIR: build/gpu_wheels
#
# The GPU machine has Python 3.12 with PyTorch (a CUDA build), NumPy, SciPy, lxml, PyYAML,
# absl-py, protobuf, requests, tqdm, rich, matplotlib and pytest, but none of the packages
# below. Each is fetched as a CPython 3.12 manylinux x86-64 wheel, at the version this
# checkout's virtual environment runs (the combination its tests pass with); antlr4's
# runtime exists only as a source archive and is built into a wheel here. dm_control is
# slimmed to the modules OGBench's manipulation envs use (mjcf and the MuJoCo wrappers):
# its locomotion and suite assets alone are 100 MiB, more than a device call carries.
# No package here needs a GPU or torch at install time; torch itself is never fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-build/gpu_wheels}
PY=${PYTHON:-.venv/bin/python}

PACKAGES=(
  torchrl tensordict pyvers hoptorch orjson importlib-metadata
  hydra-core omegaconf
  gymnasium farama-notifications ogbench mujoco mujoco-core
  dm-control dm-env dm-tree glfw
)
SOURCE_ONLY=(antlr4-python3-runtime)
# dm_control's subpackages that OGBench does not import (nor anything they import).
DM_CONTROL_UNUSED=(locomotion suite blender composer entities manipulation third_party autowrap)

version() { "$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"; }

rm -rf "$DIR"
mkdir -p "$DIR"
specs=()
for name in "${PACKAGES[@]}"; do specs+=("$name==$(version "$name")"); done
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d "$DIR" "${specs[@]}"
for name in "${SOURCE_ONLY[@]}"; do
  "$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$DIR" "$name==$(version "$name")"
done

"$PY" - "$DIR" "${DM_CONTROL_UNUSED[@]}" <<'EOF'
"""Rewrite the dm_control wheel without the subpackages named, its RECORD to match."""
import sys
import zipfile
from pathlib import Path

folder, unused = Path(sys.argv[1]), sys.argv[2:]
(wheel,) = folder.glob("dm_control-*.whl")
drop = tuple(f"dm_control/{name}/" for name in unused)
slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
    for item in source.infolist():
        if item.filename.startswith(drop):
            continue
        data = source.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(line for line in lines if not line.startswith(drop)).encode()
        out.writestr(item, data)
before, after = wheel.stat().st_size, slim.stat().st_size
slim.replace(wheel)
print(f"{wheel.name}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")
EOF

ls -1 "$DIR"
echo "wheelhouse $DIR: $(du -sh "$DIR" | cut -f1) in $(ls "$DIR" | wc -l) wheels"
