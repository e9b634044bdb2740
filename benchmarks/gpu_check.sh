#!/usr/bin/env bash
# GPU check, under 5 minutes, on a machine with an NVIDIA GPU: make sure onnxruntime's CUDA
# provider is there (installing mlserve with onnxruntime-gpu in ./.venv-gpu when the current
# Python lacks it), then serve the demo models on the CUDA provider and print throughput and
# latency beside the CPU provider, in-process and over HTTP, in the same run.
#
#   benchmarks/gpu_check.sh [OUT.json]
#
# Exit status: 0 when the CUDA provider ran, 1 when it is not available (the CPU figures are
# still printed), 2 when the environment cannot be prepared.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check.json}
python=${PYTHON:-python3}

has_cuda() {
    "$1" -c "import sys, onnxruntime as o; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null
}

ready() {
    has_cuda "$1" && "$1" -c "import mlserve, sklearn, skl2onnx, httpx" 2>/dev/null
}

if ! ready "$python" && [[ -x .venv-gpu/bin/python ]] && ready .venv-gpu/bin/python; then
    python=.venv-gpu/bin/python  # prepared by an earlier run: installing again would break it
elif ! ready "$python"; then
    echo "gpu_check: preparing .venv-gpu (mlserve[demo] with onnxruntime-gpu)"
    rm -rf .venv-gpu
    python3 -m venv .venv-gpu || exit 2
    python=.venv-gpu/bin/python
    "$python" -m pip install --quiet --upgrade pip || exit 2
    "$python" -m pip install --quiet -e '.[demo]' httpx || exit 2
    version=$("$python" -c "import importlib.metadata as m; print(m.version('onnxruntime'))")
    "$python" -m pip uninstall --quiet -y onnxruntime
    "$python" -m pip install --quiet "onnxruntime-gpu==$version" || exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
exec timeout 270 "$python" -m benchmarks.gpu --seconds 3 --runs 300 --batches 1,64,1024 --out "$out"
