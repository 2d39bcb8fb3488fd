# syntax=docker/dockerfile:1
# One-shot model builder: trains every model (PyTorch) and exports the Triton model repository,
# through the Makefile's own `train` and `export` verbs so it never drifts from `make serve`.
#   docker build -f deploy/docker/builder.Dockerfile -t tritonstack/model-builder:0.1.0 .
#   docker run --rm -v models:/models -v artifacts:/artifacts tritonstack/model-builder:0.1.0
# Everything installs from build/wheelhouse/builder (`python -m deploy.docker.wheelhouse --images
# builder`, run by `make images`): no network inside the build. torch is the wheel this host's pip
# resolves (a CPU build here; a CUDA one where the host's pip takes that).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- deps: the virtualenv with core + train dependencies (torch, onnx, onnxruntime, ...) ------------
# A stage of its own so the wheels (350 MB) stay out of the image: a COPY layer is kept even when a
# later RUN deletes its files. It depends on the wheelhouse's requirements only, not on pyproject.toml:
# an edit there (a dev dependency, a tool's settings) would otherwise reinstall torch (minutes).
FROM ${BASE_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY build/wheelhouse/builder/ /wheels/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -q --no-index --find-links /wheels -r /wheels/requirements.txt \
    && /opt/venv/bin/pip install -q --no-index --find-links /wheels --no-deps -r /wheels/nodeps.txt

# --- runtime ------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg
# make: in the local Debian base already; the public slim image needs it from apt.
RUN command -v make >/dev/null || { apt-get update && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*; }
RUN groupadd --system --gid 10001 builder \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin builder \
    && mkdir -p /models /artifacts \
    && chown 10001:10001 /models /artifacts
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# The Makefile's `$(VENV)/.installed` stamp, made newer than pyproject.toml, so `make` treats this
# virtualenv as installed instead of creating .venv.
COPY pyproject.toml Makefile ./
RUN touch /opt/venv/.installed
COPY training/ training/
COPY export/ export/
COPY serving/ serving/
USER 10001:10001
# Writes checkpoints to /artifacts and the repository to /models/{cpu,gpu} (both volumes); a re-run
# retrains only what changed (make compares the checkpoints with the recipes' sources).
CMD ["make", "--no-print-directory", "train", "export", "ART=/artifacts", "REPO=/models", "TRAIN_FLAGS=--profile quick --no-progress"]
