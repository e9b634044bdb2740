#!/bin/sh
# Build stage of the Dockerfile: a wheel of mlserve (the Cython kernel compiled) from the
# source tree $1 into the directory $2. Needs a C compiler and the package index.
set -eu
src=${1:?source directory}
out=${2:?wheel directory}
python -m pip install --no-cache-dir --upgrade pip
python -m pip wheel --no-cache-dir --no-deps --wheel-dir "$out" "$src"
# A wheel without the compiled kernel would run the numpy twin: refuse it here.
python - "$out" <<'PY'
import sys, zipfile, pathlib
wheels = list(pathlib.Path(sys.argv[1]).glob("mlserve-*.whl"))
assert len(wheels) == 1, wheels
names = zipfile.ZipFile(wheels[0]).namelist()
assert any(n.startswith("mlserve/monitoring/_kernel") and n.endswith(".so") for n in names), (
    "the wheel has no compiled monitoring kernel"
)
print(f"built {wheels[0].name}")
PY
