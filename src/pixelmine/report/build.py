"""Assemble the report from what the workspace holds and write it atomically."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

from .._version import __version__
from . import sections
from .fairness import groups_and_privacy
from .live import live
from .trust import trust
from .html import page
from .thumbs import Thumbnails
from ..fileio import atomic_write_text

log = logging.getLogger(__name__)

REPORT_FILE = ("reports", "report.html")


def render(catalog, root, *, model=None, models: list[dict] | None = None, anonymise_paths: bool = False) -> str:
    """The report of the workspace at ``root`` as one HTML string; ``model`` (a trained Model, or None) is
    the one whose evaluation it shows, ``models`` the workspace's model listing. ``anonymise_paths``: images
    are named by id and the workspace's location is left out, for sharing."""
    images = {row["id"]: row for row in catalog.images(status=None)}
    kinds = [r[0] for r in catalog.query("SELECT DISTINCT kind FROM findings ORDER BY kind")]
    ctx = sections.Context(catalog, Path(root), images, Thumbnails({i: r.get("path") for i, r in images.items()}),
                           model, list(models or []), kinds, anonymise_paths=anonymise_paths)
    parts = [sections.overview(ctx), *sections.findings(ctx), sections.duplicates(ctx), sections.clusters(ctx),
             sections.model(ctx), trust(ctx), groups_and_privacy(ctx), live(ctx), sections.rules(ctx), sections.thresholds(ctx)]
    nav = [(anchor, name) for anchor, name, _ in parts]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = "A workspace" if anonymise_paths else f"Workspace {Path(root).resolve()}"
    subtitle = f"{where} · {len(images):,} catalogued images · generated {now}"
    return page("pixelmine report", subtitle, nav, [html for _, _, html in parts],
                f"pixelmine {__version__} · one self-contained file: no network needed to view it")


def write_report(catalog, root, output=None, *, model=None, models: list[dict] | None = None,
                 anonymise_paths: bool = False) -> Path:
    """Write the report to ``output`` (default ``reports/report.html`` in the workspace); returns the path."""
    started = time.monotonic()
    target = Path(output) if output is not None else Path(root).joinpath(*REPORT_FILE)
    text = render(catalog, root, model=model, models=models, anonymise_paths=anonymise_paths)
    atomic_write_text(target, text)
    log.info("report: %s (%.1f MB) in %.1f s", target, len(text) / 1e6, time.monotonic() - started)
    return target
