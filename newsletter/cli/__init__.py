"""The ``newsletter`` command: a thin layer over the Python API.

Each command group lives in its own module and registers itself on the root app. Errors: every
``NewsletterError`` is caught once, here, printed as one line on stderr, and turned into its exit
code (2 for bad input); Ctrl-C exits 130.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from newsletter import __version__
from newsletter.errors import NewsletterError


class NewsletterGroup(TyperGroup):
    """The root group: turns library errors into one line and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NewsletterError as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)  # in registration order, not alphabetical


app = typer.Typer(
    cls=NewsletterGroup,
    name="newsletter",
    help="Write a daily edition, build it into email, and send it to your readers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"newsletter {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="newsletter.toml to use (default: the nearest one).",
                     dir_okay=False),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Write a daily edition, build it into email, and send it to your readers."""
    ctx.obj = {"config_path": config}


def _register() -> None:
    from newsletter.cli import db, edition, gather, ops, send, subscribers, web

    for module in (edition, gather, subscribers, send, web, ops, db):
        module.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # outside a command (e.g. while parsing)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
