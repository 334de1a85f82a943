#!/usr/bin/env bash
# The GPU check of the CUDA backend (issue 8), for a machine with an NVIDIA GPU.
#
#   benchmarks/gpu_check.sh            # build, CUDA tests, benchmark (TF32 off and on)
#   benchmarks/gpu_check.sh --quick    # the benchmark with fewer steps, TF32 on only
#   PYTHON=/path/to/python TORCH_PYTHON=/usr/bin/python3 benchmarks/gpu_check.sh
#
# 1. builds timenet._core with the CUDA backend (TIMENET_CUDA=1: an error if
#    nvcc or cuDNN is missing), for this GPU's architecture unless
#    TIMENET_CUDA_ARCH says otherwise;
# 2. runs tests/test_cuda*.py (every engine op, the ODE step, the scoring
#    kernels and the metrics on CUDA against the CPU, forward and backward;
#    the allocator; bf16 autocast; a U-Net step, an AdamW step and the whole
#    pipeline against the CPU);
# 3. runs benchmarks/gpu.py: CUDA vs CPU on one paper-preset image, training
#    images/s and one-step inference images/s (denoiser + TPN + scoring) of the
#    paper preset at 256x256, peak GPU memory, and the same U-Net in PyTorch
#    side by side where an interpreter with torch is found (TORCH_PYTHON, this
#    PYTHON, or python3); skipped cleanly otherwise; then
#    benchmarks/gpu_metrics.py: P-AUROC and AUPRO of 160 x 256^2 maps, GPU vs CPU.
# Python: PYTHON, else .venv/bin/python, else python3 (on the lent H200
# machine: the image's python3 with numpy, scipy, pytest, torch; only
# scipy-openblas32 is missing there: carry its wheel, downloaded here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 -d .whl scipy-openblas32
# and this script installs .whl/*.whl into /tmp/site when the import fails).
# cuDNN: the toolkit's, else the nvidia-cudnn wheel next to PyTorch (setup.py).
# Arguments are passed to benchmarks/gpu.py. Budget: under 9 minutes on one
# A100/H100-class GPU: the build, the tests and the benchmark are limited to
# 120 + 150 + 200 + 60 s (what a phase printed before its limit stays on screen;
# --quick halves the benchmark). Exit status: 0 when the
# build, the tests and the benchmark ran clean; 2 when there is no GPU (the
# checks were skipped, which is not a pass); 1 otherwise.
# GPU_CHECK_OUT (or the device tool's OUT) names a folder that gets the
# whole log (gpu_check.log) and the tests' JUnit XML (cuda-tests.xml).
set -uo pipefail
cd "$(dirname "$0")/.."
logdir=${GPU_CHECK_OUT:-${OUT:-}}
junit=()
if [ -n "$logdir" ] && mkdir -p "$logdir"; then
    exec > >(tee "$logdir/gpu_check.log") 2>&1
    junit=(--junitxml "$logdir/cuda-tests.xml")
fi
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
start=$(date +%s)
status=0
if ! "$PY" -c "import scipy_openblas32" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || { echo "FAILED: installing .whl/*.whl"; exit 1; }
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "FAILED: $PY cannot import scipy_openblas32 and there is no .whl/ to install it from"
        exit 1
    fi
fi
say() { printf '\n== %s (%ds)\n' "$1" $(( $(date +%s) - start )); }

say "GPU"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
else
    echo "nvidia-smi not found"
    cap=""
fi
# Build only for the GPU in this machine (faster than the default 80;90 + PTX).
if [ -z "${TIMENET_CUDA_ARCH:-}" ] && [ -n "$cap" ]; then
    export TIMENET_CUDA_ARCH="$cap"
fi

say "build (TIMENET_CUDA=1, arch ${TIMENET_CUDA_ARCH:-default})"
if ! TIMENET_CUDA=1 timeout 120 "$PY" setup.py -q build_ext --inplace; then
    echo "FAILED: the CUDA build"
    exit 1
fi
"$PY" - <<'EOF' || status=1
import timenet
c = timenet.cuda
print(f"timenet {timenet.__version__}: CUDA build {c.is_built()}, available {c.is_available()}"
      + (f", {c.device_count()} x {c.get_device_name()}" if c.is_available() else
         f" ({c.unavailable_reason()})"))
EOF
have_gpu=$("$PY" -c "import timenet; print(int(timenet.cuda.is_available()))" 2>/dev/null || echo 0)

say "CUDA tests"
TIMENET_EXPECT_CUDA_BUILD=1 timeout 150 "$PY" -m pytest -q -p no:cacheprovider --maxfail=25 \
    -rfE "${junit[@]}" tests/test_cuda*.py || { echo "FAILED: tests/test_cuda*.py"; status=1; }

say "benchmark"
torch_args=()
if [ -n "${TORCH_PYTHON:-}" ]; then torch_args=(--torch-python "$TORCH_PYTHON"); fi
timeout 200 "$PY" -u benchmarks/gpu.py "${torch_args[@]}" "$@" || { echo "FAILED: benchmarks/gpu.py"; status=1; }
timeout 60 "$PY" -u benchmarks/gpu_metrics.py --repeat 3 || { echo "FAILED: benchmarks/gpu_metrics.py"; status=1; }

say "done"
if [ "$have_gpu" != "1" ]; then
    echo "NO GPU: the CUDA tests and benchmark were skipped; nothing was checked on a device"
    exit 2
fi
exit $status
