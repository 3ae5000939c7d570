#!/usr/bin/env bash
# Create (or update) the virtual environment .venv with everything this project needs.
#
# torch/torchvision are installed first and pinned to the builds these machines serve from
# local disk; basicsr 1.4.2 (an sdist whose build would otherwise pull a second torch into an
# isolated build environment) is then built against them without build isolation. The dev
# extra brings the rest: training, ONNX, spandrel, PyAV for videos (the video extra), the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q "setuptools>=65" wheel
"${pip[@]}" install -q "torch==2.14.1" "torchvision==0.29.1"
"${pip[@]}" install -q --no-build-isolation "basicsr==1.4.2"
"${pip[@]}" install -q -e ".[dev]"
"$VENV/bin/python" -c "import esc_arch.basicsr_plugin, basicsr, esc_arch; print('esc_arch', esc_arch.__version__, 'with basicsr', basicsr.__version__)"
