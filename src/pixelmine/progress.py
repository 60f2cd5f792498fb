"""Progress reporting. Library code takes a ``progress`` callable ``(done, total)``; this module turns the
user's choice (True, False, a callable) into one, drawing a tqdm bar (files/s, ETA) on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable

ProgressCallback = Callable[[int, int], None]


class TerminalProgress:
    """A tqdm bar on stderr, created on the first update so that an empty job draws nothing."""

    def __init__(self, description: str, unit: str = "file"):
        self.description = description
        self.unit = unit
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.description, unit=self.unit, file=sys.stderr,
                             dynamic_ncols=True, smoothing=0.1)
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _silent(done: int, total: int) -> None:
    return None


def resolve_progress(progress, description: str, unit: str = "file") -> tuple[ProgressCallback, Callable[[], None]]:
    """(callback, close). ``"auto"`` draws a bar only when stderr is a terminal."""
    if progress == "auto":
        progress = sys.stderr.isatty()
    if progress is True:
        bar = TerminalProgress(description, unit)
        return bar, bar.close
    if not progress:
        return _silent, lambda: None
    if callable(progress):
        return progress, lambda: None
    from .errors import InputError

    raise InputError(f"progress must be True, False, 'auto' or a callable(done, total); got {progress!r}")
