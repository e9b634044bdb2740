# mlserve: multi-stage image. The build stage compiles the wheel (with the Cython monitoring
# kernel); the runtime stage installs it into a slim Python with no compiler, as a non-root
# user. Models are read from /mnt/models, KServe's mount path.
#
#   docker build -t mlserve .
#   docker build --build-arg ONNXRUNTIME=onnxruntime-gpu -t mlserve:gpu .   # CUDA provider
#   scripts/lock        # after changing a dependency: the locks from the tested environment
#   docker run -p 8080:8080 -p 8081:8081 -v "$PWD/registry:/mnt/models:ro" mlserve
#
# The install steps live in deploy/docker/*.sh so the test suite runs the very same steps in
# a fresh virtual environment (no Docker engine is needed for that).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Build-stage compiler only (never in the runtime image); Debian security updates replace
# exact versions, so pinning them would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
COPY deploy/docker/build-wheel.sh /usr/local/bin/
RUN build-wheel.sh /src /wheels

FROM ${PYTHON_IMAGE} AS runtime
# onnxruntime (CPU) or onnxruntime-gpu (CUDA provider; needs a CUDA base image and driver).
ARG ONNXRUNTIME=onnxruntime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/mlserve \
    PATH=/opt/mlserve/bin:$PATH
COPY --from=build /wheels /tmp/wheels
# Dependencies from the lock (exact versions and hashes, written by scripts/lock from the
# environment the tests ran in): an image built next month installs what was tested.
COPY deploy/docker/requirements.lock deploy/docker/onnxruntime-gpu.lock /tmp/locks/
COPY deploy/docker/install-wheel.sh /usr/local/bin/
RUN python -m venv /opt/mlserve \
    && install-wheel.sh /tmp/wheels "${ONNXRUNTIME}" /tmp/locks \
    && rm -rf /tmp/wheels /tmp/locks \
    && useradd --create-home --uid 10001 --user-group mlserve \
    && mkdir -p /mnt/models /var/lib/mlserve \
    && chown mlserve:mlserve /var/lib/mlserve
USER 10001:10001
WORKDIR /home/mlserve
# Listen on every interface inside the container, HTTP on 8080 and gRPC (the Open Inference
# Protocol's GRPCInferenceService and grpc.health.v1.Health) on 8081; models from KServe's
# mount path; audit and payload logs on a writable path (the model mount is usually read-only).
ENV MLSERVE_HOST=0.0.0.0 \
    MLSERVE_PORT=8080 \
    MLSERVE_GRPC_PORT=8081 \
    MLSERVE_REGISTRY=/mnt/models \
    MLSERVE_AUDIT_LOG=/var/lib/mlserve/audit.jsonl \
    MLSERVE_DRAIN_SECONDS=25
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["mlserve-healthcheck"]
ENTRYPOINT ["mlserve", "serve"]
