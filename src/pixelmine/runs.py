"""Every run is recorded one way: ``with catalog.run(kind, config, inputs=...) as run:``.

    with catalog.run("extract", config, inputs={"images": image_set(ids)}) as run:
        ...                                  # the stage's work
        run.counts["computed"] = n           # what the stage wants stored with the run
        run.metrics["elapsed_s"] = 1.2

The same rules everywhere: the block ends normally -> ``completed``; Ctrl-C (KeyboardInterrupt) or a
SystemExit -> ``interrupted``, never ``failed``; any other exception -> ``failed`` with the error; a
process killed outright leaves ``running``, which the next run on that host marks ``interrupted``.
Counts and metrics set before an exception are stored too. ``inputs`` fingerprints what the run read
(a feature fingerprint, the set of image ids, a model), so two runs can be compared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

INTERRUPTED_BY = (KeyboardInterrupt, SystemExit)


@dataclass
class RunRecord:
    """The run being recorded: its id, and what the stage stores with it when it ends."""

    id: int
    kind: str
    inputs: dict = field(default_factory=dict)  # what the run read; a stage may add to it as it learns more
    counts: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    status: str = "running"
    error: str | None = None


def image_set(ids: Iterable[str]) -> dict:
    """A fingerprint of a set of image ids: how many, and the sha256 of the sorted ids."""
    ordered = sorted(set(ids))
    digest = hashlib.sha256("\n".join(ordered).encode()).hexdigest()
    return {"count": len(ordered), "sha256": digest}


def outcome(exc: BaseException | None) -> tuple[str, str | None]:
    """(status, error) of a run that ended with ``exc`` (None: it completed)."""
    if exc is None:
        return "completed", None
    if isinstance(exc, INTERRUPTED_BY):
        return "interrupted", "interrupted" if isinstance(exc, KeyboardInterrupt) else f"exit {exc}"
    return "failed", f"{type(exc).__name__}: {exc}"
