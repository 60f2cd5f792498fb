"""Who the model fails: its test-split metrics per group of every metadata column, with the gaps between groups.

    result = ws.fairness(by=["camera_model"])      # or model.fairness(...); None: every column that varies
    print(result.format_table())
    result.report("camera_model").worst_group

The metrics and their intervals are :mod:`pixelmine.trust.group_metrics`; which group an image is in is
:mod:`pixelmine.discover.groups` (manifest columns, EXIF camera, capture hour, orientation, resolution,
brightness, folder, source). Groups the model fails significantly become ``group_gap`` findings, stored in a
discover run of their own, so they appear beside the other findings, in the web UI and in the association
rules. The result is saved as ``models/NAME/fairness.json`` for the report and ``GET /fairness``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

from ..fileio import atomic_write_json
from .group_metrics import GroupReport

log = logging.getLogger(__name__)

RESULT_FILE = "fairness.json"


@dataclass
class FairnessResult:
    model: str
    n: int  # test images measured
    by: list[str] | None  # the columns asked for; None: every column that splits the test images
    reports: list[GroupReport]  # one per column, in the order asked
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it has no table
    flagged: int = 0  # test images in a group the model fails
    run_id: int | None = None  # the discover run holding the group_gap findings

    def to_dict(self) -> dict:
        return {**asdict(self), "reports": [r.to_dict() for r in self.reports]}

    @classmethod
    def from_dict(cls, data: dict) -> "FairnessResult":
        return cls(**{**data, "reports": [GroupReport.from_dict(r) for r in data["reports"]]})

    def report(self, column: str) -> GroupReport:
        for report in self.reports:
            if report.column == column:
                return report
        raise KeyError(f"no table for column {column!r}; the result has {', '.join(r.column for r in self.reports)}")

    def failed_groups(self) -> list[tuple[str, str]]:
        """(column, group) of every group with a harmful significant gap."""
        return sorted({(r.column, g.group) for r in self.reports for g in r.harmful_gaps()})

    def format_table(self) -> str:
        """Plain text: per column, the group table and the significant gaps; then the skipped columns."""
        blocks = [f"model {self.model}: {self.n} test images; {self.flagged} in a group the model fails"]
        blocks += [format_report(r) for r in self.reports]
        if self.skipped:
            blocks.append("not compared: " + "; ".join(f"{c} ({why})" for c, why in self.skipped.items()))
        return "\n\n".join(blocks)


def _interval(values) -> str:
    return f" [{values[0]:.2f}, {values[1]:.2f}]" if values else ""


def format_report(report: GroupReport) -> str:
    head = f"{report.column}: {len(report.groups)} groups"
    if report.worst_group is not None:
        head += f"; worst group {report.worst_group!r}"
    if report.largest_gap:
        gap = report.largest_gap
        head += (f"; largest accuracy gap {gap['gap']:.3f}{_interval(gap['interval'])} "
                 f"({gap['best']!r} over {gap['worst']!r})")
    width = max(5, *(len(g.group) for g in report.groups))
    lines = [head, f"  {'group':<{width}}  {'n':>5}  accuracy [95 % CI]    macro-F1   ECE    recall per class"]
    for g in sorted(report.groups, key=lambda g: (not g.ranked, g.accuracy, g.group)):
        if not g.ranked:
            lines.append(f"  {g.group:<{width}}  {g.n:>5}  too few images to rank (fewer than {report.min_group})")
            continue
        recall = "  ".join(f"{c} {v:.2f}" for c, v in g.recall.items() if v is not None)
        lines.append(f"  {g.group:<{width}}  {g.n:>5}  {g.accuracy:.3f}{_interval(g.accuracy_interval):<14}  "
                     f"{g.macro_f1:8.3f}  {g.ece:5.3f}  {recall}")
    harmful = sorted(report.harmful_gaps(), key=lambda g: -abs(g.gap))
    others = sorted((g for g in report.gaps if g.significant and g not in harmful), key=lambda g: -abs(g.gap))
    if harmful:
        lines.append(f"  groups the model fails (simultaneous {report.level:.1%} interval of the gap excludes zero):")
        lines += [f"    {g.group}: {g.text()}" for g in harmful]
    else:
        lines.append(f"  the model fails no group significantly (simultaneous {report.level:.1%} intervals)")
    if others:
        lines.append(f"  {len(others)} other significant gap(s) (selection rates follow each group's class mix), e.g.:")
        lines += [f"    {g.group}: {g.text()}" for g in others[:3]]
    lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)


def assess_fairness(catalog, root, model, by=None, *, min_group: int = 20, n_bootstrap: int = 1000,
                    alpha: float = 0.05, seed: int = 0, progress=None) -> FairnessResult:
    """Measure ``model`` per group of each column of ``by`` (None: every column that splits its test images),
    store the ``group_gap`` findings in a discover run and save the result next to the model."""
    from ..discover.findings import store_findings
    from ..discover.groups import group_gap_findings, model_group_reports

    by = [by] if isinstance(by, str) else (list(by) if by else None)
    config = {"finders": ["groups"], "model": model.name, "by": by, "min_group": min_group,
              "n_bootstrap": n_bootstrap, "alpha": alpha}
    from ..progress import resolve_progress

    report, close = resolve_progress(progress, "fairness: reading groups")
    with catalog.run("discover", config, inputs={"model": model.name,
                                                 "data_fingerprint": model.info.get("data_fingerprint")}) as run:
        try:
            reports, skipped, rows, values = model_group_reports(catalog, root, model, by, min_group=min_group,
                                                                 n_bootstrap=n_bootstrap, alpha=alpha, seed=seed,
                                                                 progress=report)
        finally:
            close()
        found = group_gap_findings(reports, rows, values, model.name)
        store_findings(catalog, run.id, found)
        flagged = sum(f.is_issue for f in found)
        run.counts["group_gap"] = {"findings": len(found), "issues": flagged}
        run.metrics["failed_groups"] = [list(g) for g in sorted({(r.column, g.group) for r in reports
                                                                  for g in r.harmful_gaps()})]
        result = FairnessResult(model=model.name, n=len(rows), by=by, reports=reports, skipped=skipped,
                                flagged=flagged, run_id=run.id)
    atomic_write_json(model.dir / RESULT_FILE, result.to_dict())
    return result


def load_fairness(model) -> FairnessResult | None:
    """The last saved fairness result of ``model``, or None."""
    path = model.dir / RESULT_FILE
    if not path.exists():
        return None
    try:
        return FairnessResult.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the unreadable %s (%s); run pixelmine fairness again", path, exc)
        return None
