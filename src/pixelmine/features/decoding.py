"""Decoding ahead of inference: images are decoded and cropped in worker processes (or one background
thread) while the network runs on the previous batch.

Workers return compact uint8 crops. The number of chunks in flight is bounded, so memory stays flat at
any data-set size. A decoder that crashes or hangs costs its file (reported as an error), never the run:
the broken pool is replaced and the chunks that were in flight are re-decoded one file at a time to find
the culprit.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from ..imaging.decode import load_pixels
from ..processes import kill_pool, worker_pool

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropSpec:
    """What a worker produces per image: the (input_size, input_size, 3) uint8 centre crop."""

    input_size: int
    resize: int
    interpolation: str


@dataclass
class DecodedChunk:
    ids: list[str]  # images decoded successfully, in row order of ``pixels``
    pixels: np.ndarray  # (n, S, S, 3) uint8
    errors: list[tuple[str, str, str]]  # (image_id, path, message) for images that could not be decoded


def decode_chunk(tasks: Sequence[tuple[str, str]], crop: CropSpec) -> DecodedChunk:
    """Decode ``(image_id, path)`` pairs; a file that fails becomes an error entry, not an exception."""
    size = crop.input_size
    pixels = np.empty((len(tasks), size, size, 3), dtype=np.uint8)
    ids: list[str] = []
    errors: list[tuple[str, str, str]] = []
    for image_id, path in tasks:
        try:
            pixels[len(ids)] = load_pixels(path, input_size=size, resize=crop.resize,
                                           interpolation=crop.interpolation)
        except FileNotFoundError:
            errors.append((image_id, path, "the file is gone since it was ingested; run pixelmine ingest again"))
        except PermissionError:
            errors.append((image_id, path, "permission denied reading the file; fix its permissions and run "
                                           "pixelmine extract --retry-errors"))
        except Exception as exc:  # any decoder failure: Pillow raises OSError, ValueError, SyntaxError, ...
            errors.append((image_id, path, f"could not decode the image ({type(exc).__name__}: {exc}); "
                                           "re-export it as PNG or JPEG"))
        else:
            ids.append(image_id)
    return DecodedChunk(ids, pixels[:len(ids)], errors)


def _worker_init() -> None:
    # One decode at a time per worker; extra BLAS/OpenMP threads would fight inference for the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # C decoders print their complaints straight to fd 2; each failure already becomes an error entry.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


class Decoder:
    """Iterate :class:`DecodedChunk` s for ``tasks`` in order, decoding up to ``ahead`` chunks in advance.

    ``workers`` > 0: a process pool of that size (crash-isolated). ``workers`` = 0: one background thread
    in this process (no start-up cost; Pillow releases the GIL while decoding).
    """

    def __init__(self, tasks: Sequence[tuple[str, str]], crop: CropSpec, *, workers: int, chunk_size: int,
                 ahead: int | None = None, timeout_s: float = 30.0, grace_s: float = 5.0):
        self.tasks = list(tasks)
        self.crop = crop
        self.workers = workers
        self.chunk_size = max(1, chunk_size)
        self.ahead = ahead or max(2, 2 * max(workers, 1) + 1)
        self.timeout_s = timeout_s  # per file: a chunk may take timeout_s * its length before it is a hang
        self.grace_s = grace_s  # plus this, once per chunk (worker start-up, a busy machine)
        self._pool: Executor | None = None
        self._chunks: deque = deque()
        self._in_flight: deque = deque()

    def _new_pool(self) -> Executor:
        if self.workers == 0:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixelmine-decode")
        # forkserver: workers start clean even though this process holds threads (ORT, torch, tqdm, SQLite).
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        return worker_pool(self.workers, method=method, initializer=_worker_init)

    def _kill_pool(self) -> None:
        pool, self._pool = self._pool, None
        kill_pool(pool)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def abort(self) -> None:
        """Stop at once: kill the workers without waiting for decodes in progress."""
        self._kill_pool()

    def start(self) -> "Decoder":
        """Start the workers and the first decodes now, e.g. while the network is still loading."""
        if self._pool is None:
            self._chunks = deque(self.tasks[i:i + self.chunk_size] for i in range(0, len(self.tasks), self.chunk_size))
            self._in_flight = deque()
            self._pool = self._new_pool()
            while self._chunks and len(self._in_flight) < self.ahead:
                tasks = self._chunks.popleft()
                self._in_flight.append((self._pool.submit(decode_chunk, tasks, self.crop), tasks))
        return self

    def __iter__(self) -> Iterator[DecodedChunk]:
        self.start()
        chunks, in_flight = self._chunks, self._in_flight
        isolate: deque = deque()  # single files to re-decode alone after a crash or a hang
        finished = False
        delivered = False  # has the current pool ever returned a result?
        try:
            while chunks or in_flight or isolate:
                # Isolation mode runs one file at a time, so a second crash names its file exactly.
                limit = 1 if isolate else self.ahead
                source = isolate if isolate else chunks
                broken = False
                while source and len(in_flight) < limit:
                    tasks = source.popleft()
                    try:
                        in_flight.append((self._pool.submit(decode_chunk, tasks, self.crop), tasks))
                    except BrokenProcessPool:
                        # A worker died while earlier chunks were still coming back: collect those first
                        # (the failed one names the file); this chunk is submitted again to the new pool.
                        source.appendleft(tasks)
                        broken = True
                        break
                if not in_flight:
                    if broken:
                        self._kill_pool()
                        self._pool = self._new_pool()
                    continue
                future, tasks = in_flight.popleft()
                try:
                    decoded = future.result(timeout=self.timeout_s * len(tasks) + self.grace_s)
                except BrokenProcessPool:
                    if not delivered:
                        # Workers die before doing anything when they cannot start at all, typically a
                        # script without `if __name__ == "__main__":` re-imported by the pool. Decode in a
                        # thread instead of blaming every file.
                        _log.warning("decode worker processes could not start (a script without "
                                     "`if __name__ == '__main__':`?); decoding in a thread instead")
                        chunks.extendleft(reversed([tasks, *(t for _, t in in_flight)]))
                        in_flight.clear()
                        self._kill_pool()
                        self.workers = 0
                        self._pool = self._new_pool()
                        continue
                    hang = False
                except FutureTimeout:
                    hang = True
                else:
                    delivered = True
                    yield decoded
                    continue
                survivors = [t for _, t in in_flight]
                in_flight.clear()
                self._kill_pool()
                self._pool = self._new_pool()
                if len(tasks) == 1:
                    image_id, path = tasks[0]
                    message = (f"decoding took longer than {self.timeout_s:.0f} s" if hang
                               else "the image decoder crashed on this file")
                    yield DecodedChunk([], np.empty((0, *self._shape()), np.uint8),
                                       [(image_id, path, message + "; re-export it as PNG or JPEG")])
                else:
                    isolate.extend([task] for task in tasks)
                # chunks in flight when the pool died are re-decoded too, one file at a time
                for other in survivors:
                    isolate.extend([task] for task in other)
                _log.warning("decode pool %s; re-decoding %d files one at a time",
                             "hung" if hang else "crashed", len(isolate))
            finished = True
        finally:
            if finished:
                self.close()
            else:  # interrupted or abandoned by the consumer: do not wait for decodes nobody will use
                self._kill_pool()

    def _shape(self) -> tuple[int, int, int]:
        return (self.crop.input_size, self.crop.input_size, 3)
