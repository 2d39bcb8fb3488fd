# syntax=docker/dockerfile:1
# The FastAPI gateway: the project's core dependencies only (no torch, no onnxruntime, no training code).
#   docker build -f deploy/docker/gateway.Dockerfile -t tritonstack/gateway:0.1.0 .

# --- build: a virtualenv with the pinned core dependencies and the `serving` package ----------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, from pyproject's core list (no extras), so source edits do not reinstall them.
COPY pyproject.toml ./
RUN /opt/venv/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt
# Only the serving code goes in: training/ and export/ need torch and are not part of the gateway.
# (README.m[d] matches README.md when it exists; pyproject names it as the long description.)
COPY README.m[d] ./
COPY serving/ serving/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/python -c "import importlib.util, serving.gateway.main; assert importlib.util.find_spec('torch') is None, 'torch must not be in the gateway image'"

# --- runtime: the virtualenv on a clean base, a non-root user, nothing else -------------------------
FROM python:3.11-slim-bookworm
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
# 8080: HTTP API + /metrics; 8081: reserved for the gateway's gRPC API.
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
# python -m serving.gateway: settings from GATEWAY_*, structured logs, and on SIGTERM a bounded
# drain of in-flight requests (GATEWAY_GRACEFUL_SHUTDOWN_S) before exiting.
CMD ["python", "-m", "serving.gateway"]
