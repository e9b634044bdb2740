#!/bin/sh
# Runtime stage of the Dockerfile: install the wheel from directory $1 into the active
# Python environment, its dependencies from the locks in directory $3 (exact versions, every
# file's sha256 checked: requirements.lock, written by scripts/lock from the tested
# environment), with onnxruntime package $2: onnxruntime, or onnxruntime-gpu (the CUDA build,
# onnxruntime-gpu.lock, in place of onnxruntime: both provide the "onnxruntime" module and
# cannot be installed side by side).
set -eu
wheels=${1:?wheel directory}
runtime=${2:-onnxruntime}
locks=${3:?lock directory}
deps=$(mktemp)
case "$runtime" in
onnxruntime) cp "$locks/requirements.lock" "$deps" ;;
onnxruntime-gpu)
    # The lock without onnxruntime's own entry (its name line and the lines indented under it).
    awk '/^onnxruntime==/ {skip = 1; next} skip && /^ / {next} {skip = 0; print}' \
        "$locks/requirements.lock" > "$deps"
    cat "$locks/onnxruntime-gpu.lock" >> "$deps"
    ;;
*)
    echo "install-wheel.sh: unknown onnxruntime package $runtime" >&2
    exit 2
    ;;
esac
python -m pip install --no-cache-dir --require-hashes --no-deps -r "$deps"
rm -f "$deps"
python -m pip install --no-cache-dir --no-deps "$wheels"/mlserve-*.whl
# Every dependency present at a version mlserve accepts (the CUDA build stands in for the
# onnxruntime distribution, which pip check cannot know).
problems=$(python -m pip check 2>/dev/null || true)  # warnings on stderr are not problems
if [ "$runtime" = onnxruntime-gpu ]; then
    problems=$(printf '%s\n' "$problems" | grep -v "requires onnxruntime, which is not installed" || true)
fi
case "$problems" in
"" | "No broken requirements found.") ;;
*)
    echo "install-wheel.sh: the lock does not satisfy mlserve: $problems" >&2
    exit 1
    ;;
esac
# The installed server imports, with its compiled kernel.
python -c "import mlserve, mlserve.monitoring.kernel as k; assert k.IMPLEMENTATION == 'cython', 'no compiled kernel'; print('mlserve', mlserve.__version__, 'installed')"
