"""The naive alternative #2: FastAPI + onnxruntime in-process, one session run per request.

The same ONNX file Triton serves, no batching; onnxruntime's default session options (all
cores, thread spinning on) unless ``BENCH_THREADS`` sets the intra-op threads (spinning off). Only the
benchmark runs it:

    BENCH_ONNX=build/model_repository/cpu/classifier/1/model.onnx uvicorn deploy.bench.naive_ort:app
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from serving.imaging import to_model_image


def create_app() -> FastAPI:
    import onnxruntime as ort

    onnx = Path(os.environ["BENCH_ONNX"])
    opts = ort.SessionOptions()
    if os.environ.get(
        "BENCH_THREADS"
    ):  # the bench's default: 1 thread, no spinning (see its --naive-defaults)
        opts.intra_op_num_threads = int(os.environ["BENCH_THREADS"])
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx), sess_options=opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    channels, size = int(inp.shape[1]), int(inp.shape[2])
    labels_file = onnx.parent.parent / "labels.txt"
    labels = labels_file.read_text().split() if labels_file.exists() else [str(i) for i in range(10)]
    app = FastAPI(title="naive onnxruntime classifier (benchmark baseline)")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/classify")
    async def classify(file: UploadFile = File(...), top_k: int = 5) -> dict[str, Any]:
        img = Image.open(io.BytesIO(await file.read()))
        x = to_model_image(img, size, channels)[None]
        probs = session.run(None, {inp.name: x})[0][0]
        top = np.argsort(-probs)[:top_k]
        return {
            "model": "naive-ort",
            "predictions": [{"label": labels[i], "score": float(probs[i])} for i in top],
        }

    return app


app = create_app() if "BENCH_ONNX" in os.environ else None
