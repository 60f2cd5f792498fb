"""Exported ONNX graphs, cached per user (not per workspace): exporting costs 10-30 s on a laptop CPU, and
every workspace of the same backbone and weights runs the very same graph.

    ~/.cache/pixelmine/onnx/<fp32 fingerprint>/model.onnx     ($PIXELMINE_CACHE overrides ~/.cache/pixelmine)

The graph is checked against the PyTorch model once, when it is exported (onnx_backend.export_onnx), and
stamped with its fingerprint; a reader trusts a cached file only when its stamp matches and ONNX Runtime
loads it, and exports it again otherwise. Two processes exporting the same graph at once take turns on a
lock file, and the file itself appears by an atomic rename, so nobody ever loads half a graph.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

Runner = TypeVar("Runner")

_log = logging.getLogger(__name__)

CACHE_ENV = "PIXELMINE_CACHE"
GRAPH_FILE = "model.onnx"


def user_cache_dir() -> Path:
    """pixelmine's per-user cache: $PIXELMINE_CACHE, else $XDG_CACHE_HOME/pixelmine, else ~/.cache/pixelmine."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pixelmine"


def graph_path(fingerprint: str) -> Path:
    return user_cache_dir() / "onnx" / fingerprint / GRAPH_FILE


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: the atomic rename alone keeps readers safe
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_graph(fingerprint: str, export: Callable[[Path], None], load: Callable[[Path], Runner | None]
                 ) -> tuple[Runner, bool]:
    """(the loaded graph for ``fingerprint``, whether it was exported now). ``export(path)`` writes it
    atomically; ``load(path)`` opens a cached file, or returns None when it cannot be used as it is. The
    common case, a good cached graph, costs one load and no lock."""
    path = graph_path(fingerprint)
    loaded = load(path) if path.exists() else None
    if loaded is not None:
        return loaded, False
    with _exclusive(path.parent / ".lock"):
        loaded = load(path) if path.exists() else None
        if loaded is not None:  # another process exported it while we waited
            return loaded, False
        if path.exists():
            _log.warning("the cached ONNX graph %s is damaged or outdated; exporting it again", path)
        export(path)
    loaded = load(path)
    if loaded is None:
        raise RuntimeError(f"the ONNX graph just exported to {path} cannot be loaded; use --backend torch")
    return loaded, True
