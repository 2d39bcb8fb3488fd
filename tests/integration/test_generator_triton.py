"""A real tritonserver streaming text from the decoupled ``lstm`` and ``gpt`` generators (tiny models)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving.textgen import CharVocab, SamplingParams
from tests.support import models, procs
from tests.support.text_models import ARCHS, SERVED, text_checkpoint
from training.common import Checkpoint, load_checkpoint
from training.generate import Generation, generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def text_checkpoints() -> dict[str, Path]:
    return {SERVED[arch]: text_checkpoint(arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def text_triton(
    tmp_path_factory: pytest.TempPathFactory, text_checkpoints: dict[str, Path]
) -> Iterator[procs.TritonHandle]:
    repo = models.build_repository(tmp_path_factory.mktemp("text-repo"), text_checkpoints, targets=("cpu",))
    handle = procs.start_triton(repo / "cpu", tmp_path_factory.mktemp("text-triton"))
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def offline(text_checkpoints: dict[str, Path]) -> dict[str, tuple[Checkpoint, CharVocab]]:
    out = {}
    for name, path in text_checkpoints.items():
        ckpt = load_checkpoint(path)
        out[name] = (ckpt, CharVocab.from_dict(ckpt.meta["vocabulary"]))
    return out


def request_inputs(
    prompt: str,
    max_new: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = -1,
    stop: tuple[str, ...] = (),
) -> list[grpcclient.InferInput]:
    values = [
        ("PROMPT", np.array([prompt.encode()], dtype=np.object_), "BYTES"),
        ("MAX_NEW_TOKENS", np.array([max_new], np.int32), "INT32"),
        ("TEMPERATURE", np.array([temperature], np.float32), "FP32"),
        ("TOP_K", np.array([top_k], np.int32), "INT32"),
        ("TOP_P", np.array([top_p], np.float32), "FP32"),
        ("SEED", np.array([seed], np.int64), "INT64"),
        ("STOP", np.array([s.encode() for s in stop], dtype=np.object_).reshape(-1), "BYTES"),
    ]
    inputs = []
    for name, arr, dtype in values:
        inp = grpcclient.InferInput(name, list(arr.shape), dtype)
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    return inputs


@dataclass
class Stream:
    text: str = ""
    ids: list[int] = field(default_factory=list)
    responses: int = 0
    finish: str = ""
    error: str = ""


class StreamClient:
    """One gRPC bidirectional stream; responses are sorted by request id."""

    def __init__(self, url: str) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.queue: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.queue.put((result, error)))

    def send(self, model: str, request_id: str, **kw: Any) -> None:
        self.client.async_stream_infer(model, request_inputs(**kw), request_id=request_id)

    def collect(self, ids: list[str], timeout: float = 30.0) -> dict[str, Stream]:
        streams = {i: Stream() for i in ids}
        open_ids = set(ids)
        deadline = time.monotonic() + timeout
        while open_ids:
            result, error = self.queue.get(timeout=max(0.1, deadline - time.monotonic()))
            if error is not None:
                raise error
            rid = result.get_response().id
            s = streams[rid]
            s.responses += 1
            s.text += result.as_numpy("TEXT")[0].decode()
            s.ids += result.as_numpy("TOKEN_IDS").tolist()
            s.finish = result.as_numpy("FINISH_REASON")[0].decode()
            if s.finish:
                open_ids.discard(rid)
        return streams

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


def reference(
    offline: dict[str, tuple[Checkpoint, CharVocab]],
    model: str,
    prompt: str,
    max_new: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = -1,
    stop: tuple[str, ...] = (),
) -> Generation:
    ckpt, vocab = offline[model]
    params = SamplingParams(temperature, top_k, top_p, seed if seed >= 0 else None)
    return generate(ckpt.model, vocab, prompt, max_new, params, stop)


def test_config_declares_a_decoupled_text_generator(text_triton: procs.TritonHandle) -> None:
    c = grpcclient.InferenceServerClient(text_triton.grpc_url)
    for name in ("lstm", "gpt"):
        cfg = c.get_model_config(name).config
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        assert cfg.model_transaction_policy.decoupled and cfg.max_batch_size == 0
        assert params["task"] == "text_generation" and int(params["vocab_size"]) > 50


@pytest.mark.parametrize("model", ["lstm", "gpt"])
def test_greedy_stream_equals_offline_pytorch(
    text_triton: procs.TritonHandle, offline: dict, model: str
) -> None:
    prompt, n = "KING.\nWhat news?\n", 70  # tiny gpt has 32 positions: 70 tokens re-feed its window twice
    client = StreamClient(text_triton.grpc_url)
    try:
        client.send(model, "g", prompt=prompt, max_new=n)
        got = client.collect(["g"])["g"]
    finally:
        client.close()
    want = reference(offline, model, prompt, n)
    # one response per token while the sender keeps up, bigger chunks when it lags (e.g. the model's
    # first send): the count varies, the concatenation may not
    assert 1 <= got.responses <= n and got.finish == "length" and len(got.ids) == n
    assert got.ids == want.token_ids and got.text == want.text


@pytest.mark.parametrize("model", ["lstm", "gpt"])
def test_seeded_sampling_and_stop_strings_equal_offline(
    text_triton: procs.TritonHandle, offline: dict, model: str
) -> None:
    kw = {"prompt": "Enter ", "max_new": 60, "temperature": 0.9, "top_k": 20, "top_p": 0.95, "seed": 1234}
    free = reference(offline, model, **kw)
    stop = free.text[25:28]
    stopped = reference(offline, model, **kw, stop=(stop, "@@"))
    client = StreamClient(text_triton.grpc_url)
    try:
        client.send(model, "free", **kw)
        client.send(model, "stop", **kw, stop=(stop, "@@"))
        got = client.collect(["free", "stop"])
    finally:
        client.close()
    assert got["free"].text == free.text and got["free"].ids == free.token_ids
    assert (
        got["stop"].finish == "stop" and got["stop"].text == stopped.text == free.text[: free.text.find(stop)]
    )


@pytest.mark.parametrize("model", ["lstm", "gpt"])
def test_eight_concurrent_streams_complete_and_match_offline(
    text_triton: procs.TritonHandle, offline: dict, model: str
) -> None:
    """Different prompt lengths and sampling settings share the batch; each equals its own offline run."""
    jobs = {
        f"r{i}": {
            "prompt": "ROMEO.\n" * (i % 3) + "Good morrow"[: i + 1],
            "max_new": 30 + 5 * i,
            "temperature": 0.0 if i % 2 else 0.8,
            "seed": i,
        }
        for i in range(8)
    }
    clients = [StreamClient(text_triton.grpc_url) for _ in range(2)]  # two gRPC streams, four requests each
    try:
        for i, (rid, kw) in enumerate(jobs.items()):
            clients[i % 2].send(model, rid, **kw)
        got = {**clients[0].collect(list(jobs)[0::2]), **clients[1].collect(list(jobs)[1::2])}
    finally:
        for c in clients:
            c.close()
    for rid, kw in jobs.items():
        want = reference(offline, model, **kw)
        assert got[rid].finish == "length" and got[rid].ids == want.token_ids, rid


def test_invalid_inputs_get_an_error_response(text_triton: procs.TritonHandle) -> None:
    client = StreamClient(text_triton.grpc_url)
    try:
        client.send("gpt", "bad", prompt="x", max_new=0)
        with pytest.raises(InferenceServerException, match="MAX_NEW_TOKENS"):
            client.collect(["bad"], timeout=10)
        client.send("gpt", "bad2", prompt="x", max_new=5, top_p=0.0)
        with pytest.raises(InferenceServerException, match="top_p"):
            client.collect(["bad2"], timeout=10)
    finally:
        client.close()


def test_cancelling_a_stream_stops_its_generation(text_triton: procs.TritonHandle, offline: dict) -> None:
    cap = 1024
    client = StreamClient(text_triton.grpc_url)
    client.send("lstm", "cancel-me", prompt="KING.\n", max_new=cap, temperature=1.0, seed=3)
    result, error = client.queue.get(timeout=10)  # streaming: a first chunk long before the end
    assert error is None and not result.as_numpy("FINISH_REASON")[0]
    client.close(cancel=True)  # cancels the gRPC stream, hence the request inside Triton

    def logged() -> bool:
        return "'cancel-me' cancelled after" in text_triton.log.read_text()

    procs.poll(logged, 15, "cancellation in the Triton log")
    line = next(ln for ln in text_triton.log.read_text().splitlines() if "'cancel-me' cancelled after" in ln)
    generated = int(line.split("cancelled after ")[1].split()[0])
    assert 1 <= generated < cap
    after = StreamClient(text_triton.grpc_url)  # the model keeps serving
    try:
        after.send("lstm", "next", prompt="KING.\n", max_new=5)
        assert after.collect(["next"])["next"].text == reference(offline, "lstm", "KING.\n", 5).text
    finally:
        after.close()
