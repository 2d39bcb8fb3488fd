"""Triton Python-backend model: one onnxruntime session, one batched run per execute().

Triton's dynamic batcher hands ``execute`` every request that queued up; we stack their
inputs into one onnxruntime call and split the outputs back, which is where batching pays.
Requests whose non-batch shapes differ (fully convolutional models take any H x W) are
grouped by shape, one call per group.

Memory (issue 18). onnxruntime's default CPU arena keeps the largest call's peak for the life of
the process (measured: 8 tiles of a x4 super-resolver left a stub at +1.7 GB, idle). So the arena
is off (``cpu_mem_arena`` parameter, "0" by default; "1" restores it) and the memory pattern on:
each run allocates its planned block and frees it at the end; big blocks go back to the OS at
once (glibc mmaps them), and a ``malloc_trim`` once the model has been idle ``trim_idle_s`` returns
the smaller ones. Measured on 2 cores (make memory): peak per call -30 %, nothing kept, a few per
cent slower per call. A call is also bounded: with ``bytes_per_pixel`` (export/memory.py, the
planned peak per input pixel of one row) and ``max_call_bytes``, a dynamic batch is run in
slices that each stay under the budget, and a single row above it is refused (INVALID_ARG)
rather than run: tile it (the gateway's image routes do).
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        opts.inter_op_num_threads = 1
        # Spinning threads win a little on an idle machine and lose badly when cores are shared.
        spin = params.get("allow_spinning", "0")
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_cpu_mem_arena = params.get("cpu_mem_arena", "0") == "1"
        opts.enable_mem_pattern = True  # one planned block per run (dynamic shapes: planned per shape)
        self.bytes_per_pixel = int(params.get("bytes_per_pixel", "0"))
        self.max_call_bytes = int(params.get("max_call_bytes", "0"))  # 0: no per-call budget
        self._trimmer = _IdleTrimmer(float(params.get("trim_idle_s", "0.5")))
        providers: list[str | tuple[str, dict[str, int]]] = ["CPUExecutionProvider"]
        if params.get("device") == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(
                0, ("CUDAExecutionProvider", {"device_id": int(args.get("model_instance_device_id", 0))})
            )
        path = os.path.join(
            args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx")
        )
        self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        feeds_per_request: list[dict[str, np.ndarray]] = []
        for i, request in enumerate(requests):
            feeds = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
            feeds_per_request.append(feeds)
            key = tuple(feeds[n].shape[1:] if self.batched else feeds[n].shape for n in self.input_names)
            groups.setdefault(key, []).append(i)

        for members in groups.values():
            try:
                self._run_group(members, feeds_per_request, responses)
            except _OverBudget as exc:
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                    )
            except Exception as exc:  # one bad group must not fail the others
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"onnxruntime: {exc}")
                    )
        self._trimmer.touch()
        return responses

    def _rows_per_run(self, feeds: dict[str, np.ndarray]) -> int:
        """How many rows of this shape one onnxruntime run may take under ``max_call_bytes``."""
        if not (self.bytes_per_pixel and self.max_call_bytes):
            return 1 << 30
        image = feeds[self.input_names[0]]
        row_bytes = self.bytes_per_pixel * int(np.prod(image.shape[-2:]))
        if row_bytes > self.max_call_bytes:
            raise _OverBudget(
                f"one {image.shape[-2]}x{image.shape[-1]} input needs ~{row_bytes >> 20} MiB, above this "
                f"model's per-call budget of {self.max_call_bytes >> 20} MiB: send smaller tiles"
            )
        return max(1, self.max_call_bytes // row_bytes)

    def _run_group(
        self, members: list[int], feeds_per_request: list[dict[str, np.ndarray]], responses: list[Any]
    ) -> None:
        per_run = self._rows_per_run(feeds_per_request[members[0]])
        if not self.batched:
            for i in members:
                responses[i] = self._response(self.session.run(self.output_names, feeds_per_request[i]))
            return
        sizes = [feeds_per_request[i][self.input_names[0]].shape[0] for i in members]
        if len(members) == 1 and sizes[0] <= per_run:
            responses[members[0]] = self._response(
                self.session.run(self.output_names, feeds_per_request[members[0]])
            )
            return
        feeds = {n: np.concatenate([feeds_per_request[i][n] for i in members]) for n in self.input_names}
        total = sum(sizes)
        parts = [
            self.session.run(self.output_names, {n: v[lo : lo + per_run] for n, v in feeds.items()})
            for lo in range(0, total, per_run)
        ]
        outs = parts[0] if len(parts) == 1 else [np.concatenate(p) for p in zip(*parts, strict=True)]
        offsets = np.cumsum([0, *sizes])
        for j, i in enumerate(members):
            responses[i] = self._response([o[offsets[j] : offsets[j + 1]] for o in outs])

    def _response(self, outs: list[np.ndarray]) -> Any:
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(n, np.ascontiguousarray(o))
                for n, o in zip(self.output_names, outs, strict=True)
            ]
        )

    def finalize(self) -> None:
        self._trimmer.cancel()
        self.session = None


class _OverBudget(ValueError):
    pass


class _IdleTrimmer:
    """Calls glibc's ``malloc_trim(0)`` once the model has been idle ``idle_s`` seconds.

    Off the request path on purpose: a trim walks the heap (measured 7-70 ms after a large call),
    so one daemon thread does it; ``touch`` (per execute) only stores a timestamp.
    """

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._last = 0.0
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._trim: Any = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to trim
            self._trim = None

    def touch(self) -> None:
        if self._trim is None or self.idle_s <= 0:
            return
        self._last, self._dirty = time.monotonic(), True
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="malloc-trim", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.idle_s / 2):
            if self._dirty and time.monotonic() - self._last >= self.idle_s:
                self._dirty = False
                self._trim(0)

    def cancel(self) -> None:
        self._stop.set()
