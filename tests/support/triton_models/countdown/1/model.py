"""Decoupled test model: for an input N (at most 1000), N responses counting down, then FINAL."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):  # noqa: ANN001, ANN201 - Triton's Python-backend interface
        for request in requests:
            sender = request.get_response_sender()
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy().reshape(-1)[0])
            if not 0 <= n <= 1000:
                sender.send(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"N={n} is outside [0, 1000]")),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
                continue
            for i in range(n - 1, -1, -1):
                if request.is_cancelled():
                    break
                out = pb_utils.Tensor("OUT", np.array([i], dtype=np.int32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
