"""Issue 18: text generation is capped - decode state per row is stated, streams per process are counted."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest

from export.tasks.text_generation import state_bytes_per_sequence
from serving.gateway import errors
from serving.gateway.routes.generate import StreamSlots, released
from tests.support.text_models import load_generator_module


def test_state_bytes_per_sequence_is_the_whole_window_for_gpt():
    gpt = {"n_layer": 4, "n_head": 4, "head_dim": 32}
    assert state_bytes_per_sequence("gpt", gpt, 128) == 2 * 4 * 4 * 128 * 32 * 4  # K and V, float32
    assert state_bytes_per_sequence("lstm_lm", {"num_layers": 2, "hidden_size": 256}, 128) == 2 * 2 * 256 * 4
    assert state_bytes_per_sequence("gpt", {}, 128) == 0  # unknown facts: no budget applied


def test_slots_refuse_with_retry_after_and_release_once():
    slots = StreamSlots(3)
    a = slots.reserve(2)
    with pytest.raises(errors.APIError) as exc:
        slots.reserve(2)
    assert exc.value.status == 429 and exc.value.headers == {"Retry-After": "1"}
    b = slots.reserve(1)
    a.release()
    a.release()  # the stream's finally and the response's background task may both run
    assert slots.used == 1
    b.release()
    assert slots.used == 0


def test_released_gives_the_slot_back_when_the_stream_is_left_early():
    slots = StreamSlots(1)

    async def events():
        for i in range(10):
            yield i

    async def consume_two() -> list[int]:
        stream = released(slots.reserve(), events())
        got = [await stream.__anext__(), await stream.__anext__()]
        await stream.aclose()  # the client went away
        return got

    assert asyncio.run(consume_two()) == [0, 1]
    assert slots.used == 0


def test_decode_loop_drops_its_state_once_idle(tmp_path):
    """After work, an idle decode loop resets the engine (its K/V or h/c buffers) and trims: nothing kept."""
    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "serving/triton/models/generator.py", tmp_path / "model.py")
    shutil.copy(root / "serving/textgen.py", tmp_path / "textgen.py")
    gen = load_generator_module(tmp_path)

    class Engine:  # pure logic under test: the loop, not onnxruntime
        def __init__(self) -> None:
            self.resets = threading.Event()

        def reset(self) -> None:
            self.resets.set()

    model = object.__new__(gen.TritonPythonModel)
    model.name, model.max_active, model.trim_idle_s = "lm", 4, 0.01
    model.engine = Engine()
    done: list[object] = []

    def iteration(new: list[object]) -> None:
        done.extend(new)  # the sequence finishes at once: the batch is empty again

    model._iteration = iteration
    model._start_threads()
    assert not model.engine.resets.is_set()  # never worked: nothing to drop
    with model.cv:
        model.pending.append("seq")
        model.cv.notify()
    try:
        assert model.engine.resets.wait(30)  # polled, generously: no timing asserted
        assert done == ["seq"]
    finally:
        with model.cv:
            model.stopping = True
            model.cv.notify()
        model.outq.put(None)  # the sender thread's stop
        model.thread.join(30)
