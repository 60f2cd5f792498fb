"""``discover``: run the finders over a workspace as one recorded run.

The finders are the table of :mod:`.finders`; ``discover(catalog, root, features, only=[...])`` accepts
finder names or kinds (``Workspace.discover`` resolves the features and the model).
The run is recorded in the catalog (``runs`` row of kind ``discover`` with the config, counts per kind and
summary metrics; ``findings`` rows), and the same data give the same findings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import InputError
from ..optional import check_stage
from .context import build_context
from .finders import FINDERS, resolve_only
from .findings import Finding, store_findings
from ..runs import image_set

log = logging.getLogger(__name__)


# -- the run -----------------------------------------------------------------------------------------
@dataclass
class DiscoverResult:
    run_id: int
    counts: dict[str, dict[str, int]]  # kind -> {"findings": n, "issues": m}
    summary: dict = field(default_factory=dict)  # class tables, label-error estimate, notes
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "counts": self.counts, "summary": self.summary,
                "elapsed_s": round(self.elapsed_s, 3)}


def discover(catalog, root, features, *, only: Iterable[str] | str | None = None, model=None, workers: int = 2,
             progress="auto") -> DiscoverResult:
    """Run the finders (all, or those ``only`` names) on ``features`` (a FeatureSet) of the workspace at
    ``root`` with its ``catalog``; ``model`` (a trained Model, or None) gives the out-of-fold probabilities
    label issues start from. Stores the findings and counts them in a recorded run."""
    from ..progress import resolve_progress

    check_stage("discover")
    names = resolve_only(only)
    if not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a positive integer; got {workers!r}")
    started = time.perf_counter()
    report, close = resolve_progress(progress, "quality statistics", unit="image")
    try:
        ctx = build_context(catalog, root, features, trained=model, workers=workers, progress=report)
        model_name = getattr(model, "name", None)
        config = {"backbone": features.backbone, "finders": names, "model": model_name, "images": len(ctx.ids)}
        inputs = {"fingerprint": features.fingerprint, "images": image_set(ctx.ids), "model": model_name}
        with catalog.run("discover", config, inputs=inputs) as run:
            ctx.run_id = run.id
            findings: list[Finding] = []
            timings = {}
            for name in names:
                t0 = time.perf_counter()
                findings.extend(FINDERS[name].run(ctx))
                timings[name] = round(time.perf_counter() - t0, 3)
            store_findings(catalog, run.id, findings)
            counts = _counts(names, findings)
            summary = {k: v for k, v in ctx.summary.items() if not k.startswith("_")}
            summary.update(images=len(ctx.ids), without_features=ctx.without_features, ignored_by_person=ctx.ignored,
                           timings_s=timings)
            elapsed = time.perf_counter() - started
            run.counts.update(counts)
            run.metrics.update(summary, elapsed_s=round(elapsed, 3))
    finally:
        close()
    return DiscoverResult(run.id, counts, summary, elapsed)


def _counts(names: list[str], findings: list[Finding]) -> dict[str, dict[str, int]]:
    """kind -> {"findings": n, "issues": m}, with a zero row for every kind the finders can produce."""
    counts = {kind: {"findings": 0, "issues": 0} for name in names for kind in FINDERS[name].kinds}
    for f in findings:
        entry = counts.setdefault(f.kind, {"findings": 0, "issues": 0})
        entry["findings"] += 1
        entry["issues"] += int(f.is_issue)
    return counts
