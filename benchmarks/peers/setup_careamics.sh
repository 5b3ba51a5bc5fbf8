#!/usr/bin/env bash
# Create the virtual environment the quality suite runs CAREamics in (not a dependency of the package).
#
#   bash benchmarks/peers/setup_careamics.sh [VENV]      # default: benchmarks/.venv-careamics
#   python -m benchmarks.quality --suite real             # finds that venv by itself
#
# CPU torch is installed first, so that careamics does not pull a CUDA build; then careamics 0.3.5,
# the version the runner (careamics_runner.py) was written against.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/../.venv-careamics}"
python="${PYTHON:-python3}"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --upgrade pip
"$venv/bin/python" -m pip install "torch==2.13.0"
"$venv/bin/python" -m pip install "careamics==0.3.5"
"$venv/bin/python" -c "import careamics, torch; print('careamics', careamics.__version__, 'torch', torch.__version__)"
echo "CAREamics interpreter: $venv/bin/python"
