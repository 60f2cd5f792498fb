"""Assemble the report from what the workspace holds and write it atomically."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

from .._version import __version__
from . import sections
from .html import page
from .thumbs import Thumbnails
from ..defaults import DEFAULT_BACKBONE
from ..fileio import atomic_write_text

log = logging.getLogger(__name__)

REPORT_FILE = ("reports", "report.html")


def render(ws, *, backbone: str = DEFAULT_BACKBONE, model: str | None = None) -> str:
    """The report as one HTML string."""
    images = {row["id"]: row for row in ws.catalog.images(status=None)}
    kinds = [r[0] for r in ws.catalog.query("SELECT DISTINCT kind FROM findings ORDER BY kind")]
    ctx = sections.Context(ws, images, Thumbnails({i: r.get("path") for i, r in images.items()}), backbone, model,
                           kinds)
    parts = [sections.overview(ctx), *sections.findings(ctx), sections.duplicates(ctx), sections.clusters(ctx),
             sections.model(ctx), sections.rules(ctx), sections.thresholds(ctx)]
    nav = [(anchor, name) for anchor, name, _ in parts]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"Workspace {ws.root.resolve()} · {len(images):,} catalogued images · generated {now}"
    return page("pixelmine report", subtitle, nav, [html for _, _, html in parts],
                f"pixelmine {__version__} · one self-contained file: no network needed to view it")


def write_report(ws, output=None, *, backbone: str = DEFAULT_BACKBONE, model: str | None = None) -> Path:
    """Write the report to ``output`` (default ``reports/report.html`` in the workspace); returns the path."""
    started = time.monotonic()
    target = Path(output) if output is not None else ws.path(*REPORT_FILE)
    text = render(ws, backbone=backbone, model=model)
    atomic_write_text(target, text)
    log.info("report: %s (%.1f MB) in %.1f s", target, len(text) / 1e6, time.monotonic() - started)
    return target
