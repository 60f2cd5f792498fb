"""Worker processes that never outlive the process that started them.

Every process pool pixelmine starts (ingest's validators, extraction's decoders, discovery's pixel
statistics) is made by :func:`worker_pool`, whose workers call :func:`exit_with_parent` first. Two guards,
because a worker may be stuck in a C decoder that holds the GIL:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so the kernel kills the worker when its parent dies. The
  parent here is the process that forked the worker (the forkserver, for forkserver pools; the forkserver
  itself exits when the process it serves dies).
- Everywhere: a daemon thread that waits on the parent's sentinel (a pipe that reaches EOF when the parent
  is gone, whatever killed it, SIGKILL included) and exits the worker at once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _kill_me_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (musl variants, sandboxes): the sentinel thread remains
        pass


def _watch_parent(sentinel: int) -> None:
    from multiprocessing.connection import wait

    wait([sentinel])  # returns only when the parent's end of the pipe closes: the parent has died
    os._exit(1)


def exit_with_parent() -> None:
    """Make this worker process end when its parent dies; call it first in a pool's initializer."""
    _kill_me_with_parent()
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None) if parent is not None else None
    if sentinel is not None:
        threading.Thread(target=_watch_parent, args=(sentinel,), name="pixelmine-parent-watch", daemon=True).start()
    if parent is not None and not parent.is_alive():  # it died before we got here
        os._exit(1)


def _initialise(initializer, initargs) -> None:
    exit_with_parent()
    if initializer is not None:
        initializer(*initargs)


def worker_pool(workers: int, *, method: str | None = None, initializer=None, initargs=()) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor of ``workers`` processes (start ``method``: "fork", "forkserver", "spawn";
    None: the platform's default) whose workers end when this process ends, however it ends."""
    context = multiprocessing.get_context(method)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_initialise,
                               initargs=(initializer, tuple(initargs)))


def kill_pool(pool: ProcessPoolExecutor | None) -> None:
    """Stop a pool at once: kill its workers (one stuck in a C decoder cannot be interrupted otherwise)."""
    if pool is None:
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.kill()
        except Exception:  # already gone
            pass
    pool.shutdown(wait=False, cancel_futures=True)
