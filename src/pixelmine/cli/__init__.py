"""The ``pixelmine`` command. Thin: each command parses, calls one library function, prints.

Stages add their commands in their own module here and register them in :func:`_register`.
"""

from __future__ import annotations

import logging
import sys

import click

from .._version import __version__
from ..errors import PixelmineError
from ..optional import as_missing_dependency


class _Group(click.Group):
    """Turns library errors into one clear line and exit code 1; Ctrl-C into exit 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PixelmineError as exc:
            raise click.ClickException(str(exc)) from exc
        except ImportError as exc:  # an optional package of an extra this installation lacks
            missing = as_missing_dependency(exc, f"pixelmine {ctx.invoked_subcommand}")
            if missing is None:
                raise
            raise click.ClickException(str(missing)) from exc
        except KeyboardInterrupt:
            click.echo("\ninterrupted: finished work is saved; run the same command again to resume.", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pixelmine")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """pixelmine: find out what is in a pile of images and what is wrong with it.

    \b
    Start with the demo:      pixelmine demo
    Your own images:          pixelmine ingest photos/ --labels-from-folders
                              pixelmine status
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from . import demo, deploy, explore, ingest, learn, privacy, serve, show, trust, watch, words
    from . import features as feature_commands
    from . import discover as discover_commands

    for module in (ingest, feature_commands, learn, demo, serve, discover_commands, explore, words, show, trust,
                   deploy, privacy, watch):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
