"""Dynamic batching: concurrent requests are queued and run through the model together.

A batch closes when it holds ``max_batch`` images or when its oldest request has waited ``max_delay`` seconds
(Triton's ``max_batch_size`` and ``max_queue_delay_microseconds``, TorchServe's ``batch_size`` and
``max_batch_delay``) — or sooner, when waiting cannot help: the batcher only waits for as many images as were in
the server at once during the last few batches. A lone client (concurrency 1) therefore never waits for company
that is not coming, while 32 concurrent clients fill batches of 32.

Requests are never split: every request's images run in one batch, and each gets back exactly the rows of its own
images. Rows of a batch do not interact (the model is in eval mode), so a request's answer equals running it
alone, to float round-off. If a batch fails, its requests are retried one by one, so one request cannot fail
another.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .protocol import ProtocolError

_PEAK_BATCHES = 8  # how many recent batches' concurrency decides how long to wait


@dataclass
class _Pending:
    images: np.ndarray
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Queues image batches and runs them through ``run`` together, on one worker thread.

    Args:
        run: the model: a (B, C, H, W) float32 array -> (B, classes) float32 array.
        max_batch: the most images in one model call.
        max_delay: seconds a request may wait for others to join its batch.
        max_queue: the most requests waiting; one more is refused with 503 and Retry-After.
        on_batch: called with (images, seconds) after each model call (metrics).
        on_queue: called with the number of waiting requests whenever it changes (metrics).
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int = 32, max_delay: float = 0.005,
                 max_queue: int = 256, on_batch: Callable[[int, float], None] | None = None,
                 on_queue: Callable[[int], None] | None = None):
        self.run, self.max_batch, self.max_delay, self.max_queue = run, max_batch, max_delay, max_queue
        self._on_batch, self._on_queue = on_batch or (lambda n, s: None), on_queue or (lambda n: None)
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._in_server = 0           # images admitted and not yet answered
        self._peak = 0                # the most images in the server since the last batch closed
        self._recent_peaks: deque[int] = deque(maxlen=_PEAK_BATCHES)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mobilenet-batch")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Starts the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stops the loop (after the server has drained its requests) and refuses whatever is still queued."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(ProtocolError("the server is shutting down", 503))
        self._pool.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def infer(self, images: np.ndarray) -> np.ndarray:
        """The model's output rows for ``images`` (B, C, H, W), run in a batch with other requests.

        Raises:
            ProtocolError: 503 with Retry-After when ``max_queue`` requests are already waiting.
        """
        if len(self._queue) >= self.max_queue:
            raise ProtocolError(f"the queue is full ({self.max_queue} requests waiting); retry shortly", 503,
                                {"Retry-After": "1"})
        item = _Pending(images, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        self._on_queue(len(self._queue))
        self._in_server += len(images)
        self._peak = max(self._peak, self._in_server)
        self._arrived.set()
        try:
            return await item.future
        finally:
            self._in_server -= len(images)

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            self._on_queue(len(self._queue))
            await self._execute(batch)

    def _target(self) -> int:
        return min(self.max_batch, max([self._peak, *self._recent_peaks]))

    async def _collect(self) -> list[_Pending]:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._queue[0].arrived + self.max_delay
        target = self._target()
        while sum(len(p.images) for p in self._queue) < target and (left := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                break
        batch, size = [], 0
        while self._queue and (not batch or size + len(self._queue[0].images) <= self.max_batch):
            item = self._queue.popleft()
            if not item.future.done():  # a client that went away no longer needs its rows
                batch.append(item)
                size += len(item.images)
        self._recent_peaks.append(self._peak)
        self._peak = self._in_server
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        loop = asyncio.get_running_loop()
        images = batch[0].images if len(batch) == 1 else np.concatenate([p.images for p in batch])
        start = time.perf_counter()
        try:
            logits = await loop.run_in_executor(self._pool, self.run, images)
        except Exception as e:
            if len(batch) == 1:
                _settle(batch[0].future, error=e)
                return
            for item in batch:  # isolate the request that broke the batch
                await self._execute([item])
            return
        self._on_batch(len(images), time.perf_counter() - start)
        offset = 0
        for item in batch:
            _settle(item.future, logits[offset:offset + len(item.images)])
            offset += len(item.images)


def _settle(future: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
