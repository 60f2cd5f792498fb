"""Micro-batching: concurrent requests are queued and one worker runs them together.

Each request submits a list of items; the worker takes the first waiting request, then keeps taking
requests that are already queued or arrive within ``max_wait_s``, until ``max_batch`` items are
gathered, and runs them as one batch in its executor (so the event loop keeps accepting requests while
the model works). Up to ``concurrency`` batches run at once (one per executor thread, e.g. one model
session per core). Under load, batches fill up while the previous ones run, so served throughput
approaches the model's batch throughput; a lone request waits at most ``max_wait_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

log = logging.getLogger(__name__)


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list], Sequence], executor: Executor, *, max_batch: int = 32,
                 max_wait_s: float = 0.004, concurrency: int = 1,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1; got {max_batch!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1; got {concurrency!r}")
        self.concurrency = concurrency
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._running: set[asyncio.Task] = set()
        self._worker = asyncio.create_task(self._loop(), name="pixelmine-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        for task in list(getattr(self, "_running", ())):
            task.cancel()

    async def submit(self, items: list) -> list:
        """Run ``items`` in the next batch; returns their results in order (or raises the batch's error)."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((items, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # a free executor slot first: requests keep queueing meanwhile
            first = await self._queue.get()
            batch = [first]
            size = len(first[0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), remaining)
                    except (asyncio.TimeoutError, TimeoutError):
                        break
                batch.append(nxt)
                size += len(nxt[0])
            task = asyncio.create_task(self._run(loop, batch, size))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, loop, batch: list, size: int) -> None:
        try:
            await self._run_one(loop, batch, size)
        finally:
            self._slots.release()

    async def _run_one(self, loop, batch: list, size: int) -> None:
        items = [item for request, _ in batch for item in request]
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._run_batch, items)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error, the worker lives on
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            if self._on_batch is not None:
                self._on_batch(size, time.perf_counter() - started)
        position = 0
        for request, future in batch:
            if not future.done():  # a client that went away cancelled its future
                future.set_result(list(results[position:position + len(request)]))
            position += len(request)
