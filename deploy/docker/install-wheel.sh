#!/bin/sh
# Runtime stage of the Dockerfile: install the wheel from directory $1 into the active
# Python environment, with onnxruntime package $2 (onnxruntime or onnxruntime-gpu). Both
# packages provide the same "onnxruntime" module and cannot be installed side by side, so
# the GPU build replaces the CPU one at the same version.
set -eu
wheels=${1:?wheel directory}
runtime=${2:-onnxruntime}
python -m pip install --no-cache-dir "$wheels"/mlserve-*.whl
case "$runtime" in
onnxruntime) ;;
onnxruntime-gpu)
    version=$(python -c "import importlib.metadata as m; print(m.version('onnxruntime'))")
    python -m pip uninstall -y onnxruntime
    python -m pip install --no-cache-dir "onnxruntime-gpu==$version"
    ;;
*)
    echo "install-wheel.sh: unknown onnxruntime package $runtime" >&2
    exit 2
    ;;
esac
# The installed server imports, with its compiled kernel.
python -c "import mlserve, mlserve.monitoring.kernel as k; assert k.IMPLEMENTATION == 'cython', 'no compiled kernel'; print('mlserve', mlserve.__version__, 'installed')"
