"""Triton Python-backend model: one onnxruntime session, one batched run per execute().

Triton's dynamic batcher hands ``execute`` every request that queued up; we stack their
inputs into one onnxruntime call and split the outputs back, which is where batching pays.
Requests whose non-batch shapes differ (fully convolutional models take any H x W) are
grouped by shape, one call per group.
"""

from __future__ import annotations

import json
import os
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
            except Exception as exc:  # one bad group must not fail the others
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"onnxruntime: {exc}")
                    )
        return responses

    def _run_group(
        self, members: list[int], feeds_per_request: list[dict[str, np.ndarray]], responses: list[Any]
    ) -> None:
        if len(members) == 1 or not self.batched:
            for i in members:
                outs = self.session.run(self.output_names, feeds_per_request[i])
                responses[i] = self._response(outs)
            return
        sizes = [feeds_per_request[i][self.input_names[0]].shape[0] for i in members]
        feeds = {n: np.concatenate([feeds_per_request[i][n] for i in members]) for n in self.input_names}
        outs = self.session.run(self.output_names, feeds)
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
        self.session = None
