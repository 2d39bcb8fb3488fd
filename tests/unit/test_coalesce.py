"""Request coalescing (serving/gateway/coalesce.py): pure logic, with a fake Triton call."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.gateway import errors
from serving.gateway.coalesce import Coalescer
from serving.gateway.triton import InferResult


class FakeTriton:
    """Echoes each row's first pixel as its output, after ``gate`` opens; records batch sizes."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[int] = []
        self.gate = asyncio.Event()
        self.fail_on = fail_on
        self.request_ids: list[str] = []

    async def __call__(self, feeds: dict[str, np.ndarray], timeout: float, rid: str) -> InferResult:
        x = feeds["x"]
        self.batches.append(len(x))
        self.request_ids.append(rid)
        await self.gate.wait()
        if self.fail_on is not None and self.fail_on in x[:, 0].tolist():
            raise errors.APIError(502, "upstream_error", "boom")
        return InferResult("m", "1", {"y": x[:, :1].astype(np.float32) * 2})


def row(value: int) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 3), value, dtype=np.uint8)}


async def submit(
    c: Coalescer, fake: FakeTriton, value: int, max_rows: int = 8, max_calls: int = 1, timeout: float = 5.0
) -> InferResult:
    inputs = row(value)
    return await c.submit(
        Coalescer.key("m", "", inputs, ["y"]),
        inputs,
        fake,
        max_rows=max_rows,
        max_calls=max_calls,
        timeout=timeout,
        request_id=f"r{value}",
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_queued_requests_leave_as_one_call_and_get_their_own_rows() -> None:
    c, fake = Coalescer(), FakeTriton()
    tasks = [asyncio.create_task(submit(c, fake, v)) for v in range(6)]
    await settle()
    assert fake.batches == [1]  # the first goes at once, the rest wait for the slot
    fake.gate.set()
    results = await asyncio.gather(*tasks)
    assert fake.batches == [1, 5]
    assert [float(r.outputs["y"][0, 0]) for r in results] == [2.0 * v for v in range(6)]
    assert all(r.outputs["y"].shape == (1, 1) for r in results)
    assert fake.request_ids[1] == "r1+4"
    assert not c.lanes  # idle lanes are forgotten


async def test_batches_respect_max_rows_and_max_calls() -> None:
    c, fake = Coalescer(), FakeTriton()
    tasks = [asyncio.create_task(submit(c, fake, v, max_rows=3, max_calls=2)) for v in range(10)]
    await settle()
    assert fake.batches == [1, 1]
    fake.gate.set()
    await asyncio.gather(*tasks)
    assert sorted(fake.batches[2:], reverse=True)[0] <= 3
    assert sum(fake.batches) == 10


async def test_a_failed_call_fails_exactly_its_members() -> None:
    c, fake = Coalescer(), FakeTriton(fail_on=3)
    tasks = [asyncio.create_task(submit(c, fake, v, max_rows=2)) for v in range(5)]
    await settle()
    fake.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    # batches: [0], [1, 2], [3, 4]: only the batch holding 3 fails
    assert [isinstance(r, errors.APIError) for r in results] == [False, False, False, True, True]


async def test_a_cancelled_waiter_is_dropped_and_the_others_are_served() -> None:
    c, fake = Coalescer(), FakeTriton()
    tasks = [asyncio.create_task(submit(c, fake, v)) for v in range(4)]
    await settle()
    tasks[2].cancel()
    await settle()
    fake.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert fake.batches == [1, 2]
    assert float(results[3].outputs["y"][0, 0]) == 6.0


async def test_a_waiter_past_its_deadline_gets_504() -> None:
    c, fake = Coalescer(), FakeTriton()
    first = asyncio.create_task(submit(c, fake, 0))
    await settle()
    with pytest.raises(errors.APIError) as exc:
        await submit(c, fake, 1, timeout=0.01)
    assert exc.value.status == 504
    fake.gate.set()
    await first
    assert fake.batches == [1]  # the timed-out request never reached Triton


def test_different_shapes_or_versions_never_share_a_call() -> None:
    a = Coalescer.key("m", "", row(1), ["y"])
    assert a == Coalescer.key("m", "", row(2), ["y"])
    assert a != Coalescer.key("m", "2", row(1), ["y"])
    assert a != Coalescer.key("m", "", {"x": np.zeros((1, 4), np.uint8)}, ["y"])
    assert a != Coalescer.key("m", "", {"x": np.zeros((1, 3), np.float32)}, ["y"])
