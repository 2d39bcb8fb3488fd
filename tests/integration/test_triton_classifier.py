"""A real tritonserver (from the nvidia-pytriton wheel) serving the exported classifier."""

from __future__ import annotations

import concurrent.futures as cf

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.support.procs import TritonHandle, poll

pytestmark = pytest.mark.slow


def digits_batch(n: int) -> tuple[np.ndarray, np.ndarray]:
    from training.data.digits import load_digits_splits

    data = load_digits_splits(32)
    return data.x_test[:n], data.y_test[:n]


def test_repository_index_and_config(triton: TritonHandle) -> None:
    c = grpcclient.InferenceServerClient(triton.grpc_url)
    index = {m.name: m.state for m in c.get_model_repository_index().models}
    assert index["classifier"] == "READY"
    cfg = c.get_model_config("classifier").config
    assert cfg.backend == "python" and cfg.parameters["task"].string_value == "classification"


def test_grpc_and_http_agree_with_labels(triton: TritonHandle) -> None:
    x, y = digits_batch(32)
    g = grpcclient.InferenceServerClient(triton.grpc_url)
    inp = grpcclient.InferInput("image", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    probs_grpc = g.infer("classifier", [inp]).as_numpy("probs")
    h = httpclient.InferenceServerClient(triton.http_url)
    hin = httpclient.InferInput("image", list(x.shape), "UINT8")
    hin.set_data_from_numpy(x, binary_data=True)
    probs_http = h.infer("classifier", [hin]).as_numpy("probs")
    np.testing.assert_allclose(probs_grpc, probs_http, atol=1e-6)
    assert (probs_grpc.argmax(1) == y).mean() > 0.9
    np.testing.assert_allclose(probs_grpc.sum(1), 1.0, atol=1e-5)


def test_classification_extension_returns_labels(triton: TritonHandle) -> None:
    x, _ = digits_batch(1)
    g = grpcclient.InferenceServerClient(triton.grpc_url)
    inp = grpcclient.InferInput("image", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    out = g.infer("classifier", [inp], outputs=[grpcclient.InferRequestedOutput("probs", class_count=3)])
    top = out.as_numpy("probs")[0]
    assert len(top) == 3 and top[0].decode().count(":") == 2  # "score:index:label"


def test_dynamic_batching_groups_concurrent_requests(triton: TritonHandle) -> None:
    x, _ = digits_batch(1)
    g = grpcclient.InferenceServerClient(triton.grpc_url)
    before = g.get_inference_statistics("classifier").model_stats[0]

    def one(_: int) -> None:
        client = grpcclient.InferenceServerClient(triton.grpc_url)
        inp = grpcclient.InferInput("image", list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        client.infer("classifier", [inp])

    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(160)))
    # Triton updates its statistics just after sending a response: poll until all 160 are counted.
    counted: list[int] = []

    def all_counted() -> bool:
        after = g.get_inference_statistics("classifier").model_stats[0]
        counted[:] = [
            after.inference_count - before.inference_count,
            after.execution_count - before.execution_count,
        ]
        return counted[0] >= 160

    poll(all_counted, 10, "triton statistics")
    requests, executions = counted
    assert requests == 160
    assert executions < requests  # some executions served several requests at once
