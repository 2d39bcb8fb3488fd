# The FastAPI gateway: the project's core dependencies only (no torch, no onnxruntime, no training code).
#   make images   (collects build/wheelhouse first; no network inside the build)
#   docker build -f deploy/docker/gateway.Dockerfile -t tritonstack/gateway:0.1.0 .
# BASE_IMAGE: the public image by default; `deploy/docker/build-base.sh` makes a local one from
# Debian's archive under the same name where nothing can be pulled.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the pinned core dependencies and the `serving` package ----------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, from the wheelhouse only (--no-index), so source edits do not reinstall them.
COPY build/wheelhouse/gateway/ /wheels/
RUN /opt/venv/bin/pip install -q --no-index --find-links /wheels -r /wheels/requirements.txt
# Only the serving code goes in: training/ and export/ need torch and are not part of the gateway.
# (README.m[d] matches README.md when it exists; pyproject names it as the long description.)
COPY pyproject.toml README.m[d] ./
COPY serving/ serving/
# pip and setuptools are build tools (24 MB): the runtime venv does not carry them.
RUN /opt/venv/bin/pip install -q --no-index --find-links /wheels --no-deps . \
    && /opt/venv/bin/python -c "import importlib.util, serving.gateway.main; assert importlib.util.find_spec('torch') is None, 'torch must not be in the gateway image'" \
    && /opt/venv/bin/pip uninstall -q -y pip setuptools

# --- runtime: the virtualenv on a clean base, a non-root user, nothing else -------------------------
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080
WORKDIR /app
USER 10001:10001
# 8080: HTTP API + /metrics; 8081: the gateway's gRPC API (KServe v2).
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
# python -m serving.gateway: settings from GATEWAY_*, structured logs, and on SIGTERM a bounded
# drain of in-flight requests (GATEWAY_GRACEFUL_SHUTDOWN_S) before exiting.
CMD ["python", "-m", "serving.gateway"]
