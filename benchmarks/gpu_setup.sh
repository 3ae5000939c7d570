#!/usr/bin/env bash
# Set-up of a GPU machine for benchmarks/gpu_acceptance.py, in two steps.
#
#   bash benchmarks/gpu_setup.sh fetch        # here, where pip reaches a package index: wheels into .whl/
#   source benchmarks/gpu_setup.sh install    # there, in the repository root, with .whl/ copied along:
#   python3 benchmarks/gpu_acceptance.py --out results    # seconds to install; nothing is built there
#
# The GPU machine is assumed to have Python with a CUDA build of torch, torchvision, numpy, OpenCV,
# SciPy, PyYAML, tqdm and Pillow already, and no network (this project's lent machines: Python 3.12,
# torch with CUDA 13). What it lacks and this script brings, as wheels for that Python:
#   - basicsr 1.4.2: published as a source distribution only; `fetch` builds it into a pure-Python
#     wheel here (its CUDA extensions are off by default), so nothing compiles there;
#   - addict and lmdb (BasicSR's own imports on some paths; small wheels);
#   - flash-attn, only from a prebuilt wheel given as FLASH_ATTN_WHEEL=path (the project's GitHub
#     releases publish some, per torch/CUDA/Python/C++ ABI; PyPI has only the source, whose build takes
#     well over an hour on 16 cores). Without one the flash rows are SKIPPED. The wheels are hundreds of
#     MB, more than some set-ups can copy to the machine.
#   - onnxruntime-gpu is not fetched (also hundreds of MB): with the CPU onnxruntime alone the
#     CUDA-provider row is SKIPPED.
# The esc_arch package itself is used from the repository (PYTHONPATH), not installed.
WHEELS=${WHEELS:-.whl}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

case "${1:-}" in
fetch) (
    set -euo pipefail
    PY=${PYTHON:-python3}
    mkdir -p "$WHEELS"
    "$PY" -m pip wheel -q --no-deps --no-build-isolation "basicsr==1.4.2" -w "$WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
        "${PLATFORMS[@]}" -d "$WHEELS" "addict==2.4.0" "lmdb>=1.4"
    if [ -n "${FLASH_ATTN_WHEEL:-}" ]; then
        cp "$FLASH_ATTN_WHEEL" "$WHEELS/"
    else
        echo "no FLASH_ATTN_WHEEL given: the flash rows will be SKIPPED on the GPU machine"
    fi
    ls -l "$WHEELS"
    ) ;;
install)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/esc_site \
        "$WHEELS"/*.whl || { return 1 2>/dev/null || exit 1; }
    export PYTHONPATH="/tmp/esc_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    python3 -c "import torch, esc_arch, basicsr; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'GPU', torch.cuda.get_device_name() if torch.cuda.is_available() else None, 'basicsr', basicsr.__version__)"
    ;;
*)
    echo "usage: bash benchmarks/gpu_setup.sh fetch | source benchmarks/gpu_setup.sh install" >&2
    return 2 2>/dev/null || exit 2
    ;;
esac
