"""Dynamic batching: concurrent requests are queued and run through the model together.

The model runs one batch at a time on a worker thread; requests that arrive meanwhile queue up. When the model is
free, the next batch takes the queued requests in arrival order, up to ``max_batch`` images (Triton's
``max_batch_size``, TorchServe's ``batch_size``). If they make fewer images than the previous batch had, it first
waits for more, until that size is reached or the oldest request has waited ``max_delay`` seconds (Triton's
``max_queue_delay_microseconds``, TorchServe's ``max_batch_delay``). So under steady load batches keep their size
instead of running whatever trickled in, load above what the model can take grows batches by itself (the queue
fills while a batch runs), and a lone client (concurrency 1, previous batch 1) never waits for company that is not
coming.

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

# A model call expected to take less than this runs on the event loop itself: handing it to the worker thread and
# back costs a good part of it. Longer calls run on the worker, so the server keeps reading requests meanwhile.
_INLINE_SECONDS = 0.001

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
        self._last_size = 1  # images in the previous batch: how many the next one waits for
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mobilenet-batch")
        self._task: asyncio.Task | None = None
        self._inline: dict[int, float] = {}  # batch size -> running mean seconds per call

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
        self._arrived.set()
        return await item.future

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            self._on_queue(len(self._queue))
            await self._execute(batch)

    async def _collect(self) -> list[_Pending]:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._queue[0].arrived + self.max_delay
        target = min(self.max_batch, self._last_size)
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
        self._last_size = max(size, 1)
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        loop = asyncio.get_running_loop()
        images = batch[0].images if len(batch) == 1 else np.concatenate([p.images for p in batch])
        start = time.perf_counter()
        try:
            if self._inline.get(len(images), 1.0) < _INLINE_SECONDS:
                logits = self.run(images)
            else:
                logits = await loop.run_in_executor(self._pool, self.run, images)
        except Exception as e:
            if len(batch) == 1:
                _settle(batch[0].future, error=e)
                return
            for item in batch:  # isolate the request that broke the batch
                await self._execute([item])
            return
        seconds = time.perf_counter() - start
        self._inline[len(images)] = seconds if len(images) not in self._inline else (
            0.8 * self._inline[len(images)] + 0.2 * seconds)
        self._on_batch(len(images), seconds)
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
