"""Options every command shares (--workspace, --quiet, --json) and how results are printed."""

from __future__ import annotations

import functools
import json
import sys

import click

from ..workspace import DEFAULT_WORKSPACE, ENV_VAR, open_workspace


def common_options(func):
    """Adds --workspace/-w, --quiet/-q and --json; passes ``ws`` (an open Workspace) and ``out`` (Output)."""

    @click.option("-w", "--workspace", envvar=ENV_VAR, default=DEFAULT_WORKSPACE, show_default=True,
                  type=click.Path(file_okay=False), help=f"Workspace directory (or set {ENV_VAR}).")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bar and no chatter.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout, for scripts.")
    @functools.wraps(func)
    def wrapper(*args, workspace, quiet, as_json, **kwargs):
        out = Output(quiet=quiet, as_json=as_json)
        with open_workspace(workspace) as ws:
            return func(*args, ws=ws, out=out, **kwargs)

    return wrapper


class Output:
    def __init__(self, *, quiet: bool, as_json: bool):
        self.quiet = quiet
        self.as_json = as_json

    @property
    def progress(self):
        """Progress bar on a terminal, unless --quiet or --json (stdout must stay parseable)."""
        return False if (self.quiet or self.as_json) else "auto"

    def say(self, message: str = "") -> None:
        """Human text on stdout, suppressed by --json (and by --quiet when it is only chatter)."""
        if not self.as_json:
            click.echo(message)

    def note(self, message: str) -> None:
        if not (self.quiet or self.as_json):
            click.echo(message, err=True)

    def result(self, data) -> None:
        if self.as_json:
            json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
            sys.stdout.write("\n")


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    """A plain aligned text table (no colour, so it pipes cleanly)."""
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in cells[1:]) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i]) for i, cell in enumerate(row))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").rstrip("%x"))
    except ValueError:
        return False
    return True
