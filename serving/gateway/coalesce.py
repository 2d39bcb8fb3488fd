"""Request coalescing: concurrent calls to the same batched model leave the gateway as one Triton call.

Why: every gRPC call costs the gateway (~150 us of grpc.aio), Triton's frontend (~150 us) and
its Python backend (a request object, an output tensor, a response) CPU time, whatever its batch
size. Under load the gateway holds many requests for the same model at once; sending them as
one request of batch N pays those costs once (deploy/bench measures the difference:
``python -m deploy.bench --gateway-coalesce off``). Triton still batches across our calls.

No timer and no added latency: a request goes out at once while fewer than ``max_calls`` calls
to its model are in flight; otherwise it waits for the next free slot and leaves with every
request that queued meanwhile (up to the model's batch limit). With one client nothing waits.
Only requests with identical non-batch shapes, dtypes, outputs and version are merged. A
failed call fails exactly the requests it carried; a cancelled waiter (client gone) is dropped
before its batch is built.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from serving.gateway import errors
from serving.gateway.triton import InferResult

Key = tuple[object, ...]
Call = Callable[[dict[str, np.ndarray], float, str], Awaitable[InferResult]]


@dataclass(eq=False)
class _Waiter:
    inputs: dict[str, np.ndarray]
    rows: int
    timeout: float
    request_id: str
    future: asyncio.Future[InferResult]


@dataclass
class _Lane:
    """The in-flight count and queue of one (model, version, shapes, outputs) combination."""

    in_flight: int = 0
    queue: list[_Waiter] = field(default_factory=list)


class Coalescer:
    def __init__(self, observe_batch: Callable[[str, int], None] | None = None) -> None:
        self.lanes: dict[Key, _Lane] = {}
        self.observe_batch = observe_batch  # (model, rows per Triton call), for a metrics histogram

    @staticmethod
    def key(model: str, version: str, inputs: dict[str, np.ndarray], outputs: list[str] | None) -> Key:
        shapes = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items()))
        return (model, version, shapes, tuple(outputs or ()))

    async def submit(
        self,
        key: Key,
        inputs: dict[str, np.ndarray],
        call: Call,
        *,
        max_rows: int,
        max_calls: int,
        timeout: float,
        request_id: str,
    ) -> InferResult:
        """``call(inputs, timeout, request_id)`` does one Triton call; this decides what it carries."""
        rows = int(next(iter(inputs.values())).shape[0])
        lane = self.lanes.setdefault(key, _Lane())
        if lane.in_flight < max_calls and not lane.queue:
            lane.in_flight += 1
            if self.observe_batch is not None:
                self.observe_batch(str(key[0]), rows)
            try:
                return await call(inputs, timeout, request_id)
            finally:
                self._release(key, lane, call, max_rows, max_calls)
        waiter = _Waiter(inputs, rows, timeout, request_id, asyncio.get_running_loop().create_future())
        lane.queue.append(waiter)
        try:
            return await asyncio.wait_for(waiter.future, timeout)  # timed out or cancelled: the future is too
        except TimeoutError:
            raise errors.APIError(
                504, "upstream_timeout", "the inference server did not answer within the deadline"
            ) from None
        finally:
            if not waiter.future.done() or waiter.future.cancelled():
                with contextlib.suppress(
                    ValueError
                ):  # still queued: leave the queue (else its batch is in flight)
                    lane.queue.remove(waiter)

    def _release(self, key: Key, lane: _Lane, call: Call, max_rows: int, max_calls: int) -> None:
        """A call finished: start the next batch from the queue, or forget an idle lane."""
        lane.in_flight -= 1
        while lane.queue and lane.in_flight < max_calls:
            batch: list = []
            rows = 0
            while lane.queue and (not batch or rows + lane.queue[0].rows <= max_rows):
                waiter = lane.queue.pop(0)
                if waiter.future.done():  # cancelled meanwhile
                    continue
                batch.append(waiter)
                rows += waiter.rows
            if not batch:
                break
            lane.in_flight += 1
            asyncio.get_running_loop().create_task(
                self._run_batch(key, lane, batch, call, max_rows, max_calls)
            )
        if lane.in_flight == 0 and not lane.queue:
            self.lanes.pop(key, None)

    async def _run_batch(
        self, key: Key, lane: _Lane, batch: list[_Waiter], call: Call, max_rows: int, max_calls: int
    ) -> None:
        try:
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = {n: np.concatenate([w.inputs[n] for w in batch]) for n in batch[0].inputs}
            ids = [w.request_id for w in batch if w.request_id]
            request_id = ids[0] + (f"+{len(batch) - 1}" if len(batch) > 1 else "") if ids else ""
            if self.observe_batch is not None:
                self.observe_batch(str(key[0]), sum(w.rows for w in batch))
            try:
                result = await call(inputs, max(w.timeout for w in batch), request_id)
            except Exception as exc:  # noqa: BLE001 - the members get the very error the call raised
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(exc)
                return
            start = 0
            for w in batch:
                part = {n: a[start : start + w.rows] for n, a in result.outputs.items()}
                start += w.rows
                if not w.future.done():
                    w.future.set_result(InferResult(result.model_name, result.model_version, part))
        finally:
            self._release(key, lane, call, max_rows, max_calls)
