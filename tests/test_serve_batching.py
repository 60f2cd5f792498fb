"""Micro-batching: requests that arrive while the model is busy are answered together, in order."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pixelmine.serve.batching import MicroBatcher


def run(coro):
    return asyncio.run(coro)


def test_waiting_requests_form_one_batch_and_get_their_own_results():
    release = threading.Event()
    calls = []

    def model(items):
        calls.append(list(items))
        if len(calls) == 1:
            release.wait(10)  # the first batch is "busy" while the others queue up
        return [item * 10 for item in items]

    async def scenario():
        batcher = MicroBatcher(model, ThreadPoolExecutor(1), max_batch=32, max_wait_s=0.001)
        await batcher.start()
        first = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0.05)
        later = [asyncio.create_task(batcher.submit([i, i + 100])) for i in range(2, 6)]
        await asyncio.sleep(0.05)
        release.set()
        results = [await first] + [await task for task in later]
        await batcher.stop()
        return results

    results = run(scenario())
    assert results == [[10], [20, 1020], [30, 1030], [40, 1040], [50, 1050]]
    assert calls == [[1], [2, 102, 3, 103, 4, 104, 5, 105]]


def test_batches_never_exceed_max_batch():
    sizes = []
    gate = threading.Event()

    def model(items):
        sizes.append(len(items))
        gate.wait(10)
        return list(items)

    async def scenario():
        batcher = MicroBatcher(model, ThreadPoolExecutor(1), max_batch=4, max_wait_s=0.001)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit([i])) for i in range(10)]
        await asyncio.sleep(0.05)
        gate.set()
        results = [await t for t in tasks]
        await batcher.stop()
        return results

    assert run(scenario()) == [[i] for i in range(10)]
    assert max(sizes) <= 4 and sum(sizes) == 10


def test_an_error_reaches_every_request_of_the_batch_and_the_worker_survives():
    def model(items):
        if "bad" in items:
            raise ValueError("broken batch")
        return [item.upper() for item in items]

    async def scenario():
        batcher = MicroBatcher(model, ThreadPoolExecutor(1), max_batch=8, max_wait_s=0.02)
        await batcher.start()
        outcomes = await asyncio.gather(batcher.submit(["bad"]), batcher.submit(["ok"]), return_exceptions=True)
        after = await batcher.submit(["fine"])
        await batcher.stop()
        return outcomes, after

    outcomes, after = run(scenario())
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert after == ["FINE"]


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        MicroBatcher(lambda items: items, ThreadPoolExecutor(1), max_batch=0)


def test_concurrency_runs_that_many_batches_at_once():
    inside = []
    both_inside = threading.Event()
    lock = threading.Lock()

    def model(items):
        with lock:
            inside.append(items[0])
            if len(inside) == 2:
                both_inside.set()
        assert both_inside.wait(10), "the second batch never started while the first was running"
        return list(items)

    async def scenario():
        batcher = MicroBatcher(model, ThreadPoolExecutor(2), max_batch=1, max_wait_s=0.001, concurrency=2)
        await batcher.start()
        results = await asyncio.gather(batcher.submit(["x"]), batcher.submit(["y"]))
        await batcher.stop()
        return results

    assert run(scenario()) == [["x"], ["y"]]
    assert sorted(inside) == ["x", "y"]
