"""A deliberately slow "classifier" for fault tests: it holds each request for ``sleep_ms``.

Reliability tests need requests that are provably *in flight* inside Triton (to kill Triton
under them, to disconnect the client, to SIGTERM the gateway, to overflow max_in_flight)
without relying on timing luck. This Python-backend model looks like a classification model to
the gateway (same task parameters as the real classifier) and:

* sleeps in small steps, checking ``request.is_cancelled()``, so a cancelled gRPC call ends early;
* appends one line per request to ``event_log`` ("<request id> done|cancelled"), so a test can
  see what Triton saw, including the request id the gateway passed.
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_PY = """
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.sleep_s = float(params.get("sleep_ms", "1000")) / 1000.0
        self.event_log = params.get("event_log", "")
        self.classes = len(json.loads(params["labels"]))

    def _log(self, line):
        if self.event_log:
            with open(self.event_log, "a") as f:
                f.write(line + "\\n")

    def execute(self, requests):
        deadline = time.monotonic() + self.sleep_s
        while time.monotonic() < deadline and not all(r.is_cancelled() for r in requests):
            time.sleep(0.01)
        responses = []
        for r in requests:
            if r.is_cancelled():
                self._log(f"{r.request_id()} cancelled")
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)))
                continue
            n = pb_utils.get_input_tensor_by_name(r, "image").as_numpy().shape[0]
            probs = np.full((n, self.classes), 1.0 / self.classes, dtype=np.float32)
            probs[:, 0] += 1e-3  # a stable top-1 label
            self._log(f"{r.request_id()} done")
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probs", probs)]))
        return responses
"""


def _param(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}" value {{ string_value: {json.dumps(value)} }} }}\n'


def write_slow_model(
    repo: Path, event_log: Path, name: str = "slow_classifier", sleep_ms: int = 1000, max_batch_size: int = 16
) -> Path:
    """Write ``repo/<name>/`` (config.pbtxt + 1/model.py); return the model folder."""
    labels = [str(i) for i in range(10)]
    config = (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
        'input { name: "image" data_type: TYPE_UINT8 dims: [1, 32, 32] }\n'
        'output { name: "probs" data_type: TYPE_FP32 dims: [10] }\n'
        "instance_group { count: 1 kind: KIND_CPU }\n"
        "dynamic_batching { }\n"
        + _param("task", "classification")
        + _param("channels", "1")
        + _param("image_size", "32")
        + _param("labels", json.dumps(labels))
        + _param("sleep_ms", str(sleep_ms))
        + _param("event_log", str(event_log.resolve()))
    )
    folder = repo / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config)
    (folder / "1" / "model.py").write_text(MODEL_PY)
    return folder
