# Triton for CPU hosts, without NGC: a slim Python 3.11 base plus the nvidia-pytriton wheel's
# tritonserver 2.51 (the NGC 24.10 release) and onnxruntime, the same engine `make serve` runs.
# The models run in the Python backend through onnxruntime (the `cpu` repository target).
#   make images   (collects build/wheelhouse first; no network inside the build)
#   docker build -f deploy/docker/triton-cpu.Dockerfile -t tritonstack/triton:0.1.0-cpu .
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- deps: the virtualenv, in a stage of its own so the wheels' COPY layer stays out of the image ----
FROM ${BASE_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY build/wheelhouse/triton/ /wheels/
# numpy + onnxruntime for the Python-backend models; nvidia-pytriton --no-deps: only its binary,
# its libraries and the Python-backend stubs are used, not its Python API.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -q --no-index --find-links /wheels -r /wheels/requirements.txt \
    && /opt/venv/bin/pip install -q --no-index --find-links /wheels --no-deps -r /wheels/nodeps.txt \
    && rm -rf /opt/venv/lib/python3.11/site-packages/pytriton/tritonserver/python_backend_stubs/3.[!1]* \
              /opt/venv/lib/python3.11/site-packages/pytriton/tritonserver/python_backend_stubs/3.1[!1]

# --- runtime ------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    OMP_NUM_THREADS=1
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY serving/__init__.py serving/
COPY serving/triton/ serving/triton/
# The backend folder (backend library + the stub for this Python) is assembled once, here: the root
# filesystem is read-only at run time.
RUN python -c "from pathlib import Path; from serving.triton.launcher import prepare_backends; prepare_backends(Path('/opt/triton-backends'))"
RUN groupadd --system --gid 10001 triton \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin triton
USER 10001:10001
# 8000 HTTP (KServe v2), 8001 gRPC, 8002 Prometheus metrics: reached only from inside the stack.
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=5s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["python", "-m", "serving.triton.launcher", "--exec", "--host", "0.0.0.0", "--backend-dir", "/opt/triton-backends"]
CMD ["--model-repository", "/models/cpu", "--model-control", "explicit", "--load-model", "*", "--strict-readiness=true"]
