#!/usr/bin/env bash
# Create a virtual environment and install charrnn into it (editable), with the right torch build:
#   - a machine with an NVIDIA driver (nvidia-smi) gets PyPI's default torch, which carries CUDA;
#   - a CPU-only machine never downloads that multi-GB CUDA build: it takes a torch wheel that pip
#     already finds locally (find-links / a local index), else PyTorch's CPU-only wheel index.
# Usage: scripts/setup_env.sh [VENV_DIR] [EXTRAS]     e.g. scripts/setup_env.sh .venv test
# Environment: PYTHON (default python3), TORCH_VERSION (default 2.13.0), TORCH_INDEX_URL (force an index).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
extras=${2:-}
python=${PYTHON:-python3}
torch_version=${TORCH_VERSION:-2.13.0}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${pip[@]}" install "torch==$torch_version" --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple
  elif command -v nvidia-smi >/dev/null 2>&1; then
    echo "setup: NVIDIA driver found: installing PyPI's torch==$torch_version (CUDA build)"
    "${pip[@]}" install "torch==$torch_version"
  elif "${pip[@]}" install -q --dry-run --no-deps --no-index "torch==$torch_version" >/dev/null 2>&1; then
    echo "setup: no GPU; installing the torch==$torch_version wheel found locally"
    "${pip[@]}" install "torch==$torch_version"
  else
    echo "setup: no GPU; installing torch==$torch_version from PyTorch's CPU-only index"
    "${pip[@]}" install "torch==$torch_version" --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
  fi
fi
# strict: a static path entry (a link tree in build/), where Hydra's plugin scan (pkgutil) sees our
# hydra_plugins/ packages; the default editable finder hides them, and compat cannot map charrnn.conf=conf/.
# Edits are live (the tree links the files); a new file (module or config) needs this script again.
"${pip[@]}" install -q -e ".${extras:+[$extras]}" --config-settings editable_mode=strict
# charrnn's own modules compiled now, as a wheel install compiles them (pip compiles site-packages): where
# PYTHONDONTWRITEBYTECODE is set, each process (every sweep job) would otherwise compile them again.
"$venv/bin/python" -m compileall -q "$("$venv/bin/python" -c 'import charrnn, pathlib; print(pathlib.Path(charrnn.__file__).parents[1])')"
echo "setup: ready in $venv"
