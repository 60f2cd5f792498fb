"""The report's "Live" section: what ``pixelmine watch`` and uploads recorded as images arrived, and whether the
arrivals drifted from the training images (the newest drift report and every alarm)."""

from __future__ import annotations

import json
from collections import Counter

from .html import cards, esc, missing, section, table

ALARMS_SHOWN = 20


def live(ctx) -> tuple[str, str, str]:
    lead = ("Images recognised as they arrived (pixelmine watch, POST /ingest): how many, what was flagged, and "
            "whether the stream drifted away from the images the model was trained on.")
    counts = {row[0]: int(row[1]) for row in ctx.catalog.query("SELECT type, COUNT(*) FROM events GROUP BY type")}
    if not counts:
        return "live", "Live", section("live", "Live arrivals and drift", lead,
                                       missing("Nothing has arrived through a watch yet.", "pixelmine watch DIR"))
    flags: Counter = Counter()
    statuses: Counter = Counter()
    for (payload,) in ctx.catalog.query("SELECT payload FROM events WHERE type = 'image' ORDER BY id DESC LIMIT 20000"):
        event = json.loads(payload)
        statuses[event.get("status") or "ok"] += 1
        flags.update(event.get("flags") or [])
    arrived = counts.get("image", 0)
    body = cards([("arrivals", arrived, ""), ("deleted", counts.get("missing", 0), ""),
                  ("flags raised", sum(flags.values()), "warn" if flags else "good"),
                  ("drift alarms", counts.get("alarm", 0), "bad" if counts.get("alarm") else "good")])
    if flags or statuses:
        rows = [[name, n, f"{n / max(arrived, 1):.1%}"] for name, n in flags.most_common()]
        rows += [[f"status {name}", n, f"{n / max(arrived, 1):.1%}"] for name, n in statuses.most_common() if name != "ok"]
        body += "<h3>Flags on arrivals (the newest 20,000)</h3>" + table(["flag", "arrivals", "share"], rows,
                                                                         numeric={1, 2})
    newest = ctx.catalog.query("SELECT payload FROM events WHERE type = 'drift' ORDER BY id DESC LIMIT 1")
    if newest:
        report = json.loads(newest[0][0])
        state = "drift: the arrivals differ from the reference" if report.get("alarm") else "no significant drift"
        body += (f"<h3>Newest drift check: {esc(state)}</h3><p>Window of {report.get('n_window')} arrivals against "
                 f"{report.get('n_reference')} reference images. Domain classifier AUC {_number(report.get('auc'))} "
                 f"(alarm above {_number(report.get('auc_threshold'))}); MMD {_number(report.get('mmd'), 4)}, "
                 f"p = {_number(report.get('mmd_p_value'))}; uncertain {_share(report.get('uncertain_share'))}, "
                 f"novel {_share(report.get('novel_share'))}.</p>")
        body += "".join(f"<p>• {esc(reason)}</p>" for reason in report.get("reasons") or [])
    alarms = ctx.catalog.query(f"SELECT created_at, payload FROM events WHERE type = 'alarm' ORDER BY id DESC "
                               f"LIMIT {ALARMS_SHOWN}")
    if alarms:
        body += "<h3>Alarms</h3>" + table(["when", "why"], [[when, "; ".join(json.loads(p).get("reasons") or [])]
                                                           for when, p in alarms])
    return "live", "Live", section("live", "Live arrivals and drift", lead, body)


def _number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def _share(value) -> str:
    return "–" if value is None else f"{float(value):.1%}"
