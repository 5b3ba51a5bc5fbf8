#!/usr/bin/env bash
# Create the virtual environment the quality suite runs CAREamics in (not a dependency of the package).
#
#   bash benchmarks/peers/setup_careamics.sh [VENV]      # default: benchmarks/.venv-careamics
#   python -m benchmarks.quality --suite real             # finds that venv by itself
#
# careamics 0.3.5 (the version the runner, careamics_runner.py, was written against) pins torchvision<=0.26.0,
# which pins torch 2.11.0. PyPI has only a CUDA build of that torch (several GB; it runs on the CPU too), so
# the CPU build is taken from PyTorch's own index where that can be reached, and PyPI's otherwise.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/../.venv-careamics}"
python="${PYTHON:-python3}"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --upgrade pip
torch_pins=("torch==2.11.0" "torchvision==0.26.0")
"$venv/bin/python" -m pip install --retries 0 --timeout 20 --index-url https://download.pytorch.org/whl/cpu \
    "${torch_pins[@]}" || "$venv/bin/python" -m pip install "${torch_pins[@]}"
"$venv/bin/python" -m pip install "careamics==0.3.5"
"$venv/bin/python" -c "import careamics, torch; print('careamics', careamics.__version__, 'torch', torch.__version__)"
echo "CAREamics interpreter: $venv/bin/python"
