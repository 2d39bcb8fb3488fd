"""The naive alternative #1: FastAPI running the PyTorch model in-process, one forward per request.

What a first version of a model service usually looks like: the route decodes the upload and
calls the model inline, no batching, no separate inference server. Only the benchmark runs it:

    BENCH_CHECKPOINT=build/artifacts/classifier/model.pt uvicorn deploy.bench.naive_torch:app

It uses the gateway's own image conversion, so every server compares on identical pixels.
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


def load_uint8_model(checkpoint: Path | str) -> Any:
    """The checkpoint's network wrapped exactly like the exported graph: uint8 (N,C,H,W) -> probabilities."""
    from export.tasks.classification import UInt8Classifier
    from training.common import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    wrapped = UInt8Classifier(
        ckpt.model, float(ckpt.meta.get("mean", 0.5)), float(ckpt.meta.get("std", 0.5))
    ).eval()
    wrapped.meta = ckpt.meta  # type: ignore[attr-defined]
    return wrapped


def create_app() -> FastAPI:
    import torch

    if os.environ.get("BENCH_THREADS"):  # the bench's --naive-threads; default: torch's own
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    model = load_uint8_model(os.environ["BENCH_CHECKPOINT"])
    meta = model.meta
    channels, size = int(meta["channels"]), int(meta["image_size"])
    labels = [str(x) for x in meta.get("labels", range(10))]
    app = FastAPI(title="naive PyTorch classifier (benchmark baseline)")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/classify")
    async def classify(file: UploadFile = File(...), top_k: int = 5) -> dict[str, Any]:
        img = Image.open(io.BytesIO(await file.read()))
        x = torch.from_numpy(to_model_image(img, size, channels)[None])
        with torch.inference_mode():
            probs = model(x)[0].numpy()
        top = np.argsort(-probs)[:top_k]
        return {
            "model": "naive-torch",
            "predictions": [{"label": labels[i], "score": float(probs[i])} for i in top],
        }

    return app


app = create_app() if "BENCH_CHECKPOINT" in os.environ else None
