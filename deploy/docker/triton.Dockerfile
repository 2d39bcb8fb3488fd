# syntax=docker/dockerfile:1
# GPU hosts: Triton Inference Server 24.10 (CPU hosts: triton-cpu.Dockerfile, no NGC image)
# Triton Inference Server 24.10 (Triton 2.51, the release the nvidia-pytriton wheel embeds for local runs)
# plus what the Python-backend models import: onnxruntime (GPU build by default) and numpy.
#   docker build -f deploy/docker/triton.Dockerfile -t tritonstack/triton:24.10-gpu .
#   docker build -f deploy/docker/triton.Dockerfile --build-arg ORT_PACKAGE=onnxruntime -t tritonstack/triton:24.10-cpu .
# The image's Python is 3.10: onnxruntime 1.23.2 is the newest release with cp310 wheels (the project's
# own pin, 1.32.0, has none), and numpy stays on 1.x like the project (the backend stub's numpy ABI).
ARG BASE_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${BASE_IMAGE}
ARG ORT_PACKAGE=onnxruntime-gpu
ARG ORT_VERSION=1.23.2
ARG NUMPY_VERSION=1.26.4
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python3 -m pip install --no-cache-dir "${ORT_PACKAGE}==${ORT_VERSION}" "numpy==${NUMPY_VERSION}" \
    && python3 -c "import numpy, onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_available_providers(), 'numpy', numpy.__version__)"
# HOME on the /tmp tmpfs: the root filesystem is mounted read-only in compose and Kubernetes.
ENV HOME=/tmp \
    OMP_NUM_THREADS=1
# Numeric so Kubernetes' runAsNonRoot can verify it (the image's own triton-server user is uid 1000).
USER 1000:1000
# 8000 HTTP (KServe v2), 8001 gRPC, 8002 Prometheus metrics: reached only from inside the stack.
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status == 200 else 1)"]
CMD ["tritonserver", "--model-repository=/models/gpu", "--model-control-mode=explicit", "--load-model=*", \
     "--backend-config=python,shm-default-byte-size=16777216", "--backend-config=python,shm-growth-byte-size=16777216"]
