"""One schema for every finder: ``image_id, kind, score (0..1, low = severe), is_issue, details``.

Finders are pure functions of arrays (features, labels, probabilities, image properties) that return a
list of :class:`Finding`. This module stores them per run in the catalog and exports them; the CLI, the
report, the API and the web UI all read the same table.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

from ..catalog import Catalog
from ..errors import InputError


@dataclass(frozen=True)
class Finding:
    image_id: str
    kind: str
    score: float  # 0..1, low = severe
    is_issue: bool
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if not (0.0 <= self.score <= 1.0) or math.isnan(self.score):
            raise ValueError(f"finding score must be in [0, 1]; got {self.score!r} for {self.kind} {self.image_id}")

    def to_dict(self) -> dict:
        return asdict(self)


def store_findings(catalog: Catalog, run_id: int, findings: Iterable[Finding]) -> int:
    rows = [(run_id, f.image_id, f.kind, float(f.score), int(bool(f.is_issue)),
             json.dumps(f.details, sort_keys=True, default=_json_default)) for f in findings]
    with catalog.transaction() as conn:
        conn.executemany("INSERT OR REPLACE INTO findings(run_id, image_id, kind, score, is_issue, details) "
                         "VALUES (?,?,?,?,?,?)", rows)
    return len(rows)


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in finding details")


def latest_discover_run(catalog: Catalog, kind: str | None = None) -> int | None:
    """The newest completed discover run (that produced ``kind``, when given)."""
    sql = ("SELECT r.id FROM runs r WHERE r.kind = 'discover' AND r.status = 'completed'"
           + (" AND EXISTS (SELECT 1 FROM findings f WHERE f.run_id = r.id AND f.kind = ?)" if kind else "")
           + " ORDER BY r.id DESC LIMIT 1")
    rows = catalog.query(sql, (kind,) if kind else ())
    return int(rows[0][0]) if rows else None


def load_findings(catalog: Catalog, *, kind: str | None = None, run_id: int | None = None,
                  issues_only: bool = False, limit: int | None = None, offset: int = 0) -> list[Finding]:
    """Findings of a run (default: the latest discover run that has ``kind``), worst (lowest score) first."""
    if run_id is None:
        run_id = latest_discover_run(catalog, kind)
        if run_id is None:
            return []
    where, params = ["run_id = ?"], [run_id]
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    if issues_only:
        where.append("is_issue = 1")
    sql = f"SELECT * FROM findings WHERE {' AND '.join(where)} ORDER BY score ASC, image_id"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        params += [limit, offset]
    return [Finding(r["image_id"], r["kind"], r["score"], bool(r["is_issue"]), json.loads(r["details"]))
            for r in catalog.query(sql, params)]


EXPORT_FORMATS = ("csv", "json", "parquet")


def export_findings(findings: Sequence[Finding], path: str | os.PathLike, fmt: str | None = None) -> str:
    """Write findings to CSV, JSON or Parquet (``details`` as a JSON string in CSV and Parquet)."""
    path = os.fspath(path)
    fmt = (fmt or os.path.splitext(path)[1].lstrip(".")).lower()
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"export format {fmt!r} is not supported; use one of {', '.join(EXPORT_FORMATS)} "
                         "(or a file name ending in .csv/.json/.parquet)")
    rows = [f.to_dict() for f in findings]
    if fmt == "json":
        with open(path, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=1, default=_json_default)
        return path
    flat = [{**r, "details": json.dumps(r["details"], sort_keys=True, default=_json_default)} for r in rows]
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=["image_id", "kind", "score", "is_issue", "details"])
            writer.writeheader()
            writer.writerows(flat)
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {name: [r[name] for r in flat] for name in ("image_id", "kind", "score", "is_issue", "details")}
    pq.write_table(pa.table(columns), path)
    return path


FinderFunction = Callable[..., list[Finding]]
