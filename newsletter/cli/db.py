"""`newsletter db …`: the database's schema, shown or brought up to date explicitly.

Every command that opens the database migrates it by itself; these are for operators (run
``db migrate`` once before starting several web workers or send processes on PostgreSQL)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from newsletter.cli.common import get_config, notice, stderr_is_terminal

db_app = typer.Typer(help="The database: schema version and migrations (SQLite or PostgreSQL).",
                     no_args_is_help=True)


def _url(ctx: typer.Context) -> str:
    from newsletter.store import database_url

    return database_url(get_config(ctx))


def _print_status(found) -> None:
    where = found.database + ("" if found.exists else " (does not exist yet)")
    typer.echo(f"database: {where} ({found.backend})")
    state = ("up to date" if not found.pending and not found.newer else
             "newer than this program" if found.newer else f"{len(found.pending)} pending")
    typer.echo(f"schema version {found.current} of {found.latest} ({state})")
    for step in found.applied:
        at = f"  applied {step['applied_at']}" if step["applied_at"] else ""
        typer.echo(f"  {step['version']:03d}  {step['name']}{at}")
    for step in found.pending:
        typer.echo(f"  {step['version']:03d}  {step['name']}  pending")


@db_app.command("status")
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the database's schema version and its applied and pending migrations. Changes
    nothing. Exits 2 when the database is newer than this program."""
    from newsletter.errors import StoreError
    from newsletter.store.schema import status as schema_status

    found = schema_status(_url(ctx))
    if as_json:
        typer.echo(json.dumps(found.as_dict(), indent=2))
    else:
        _print_status(found)
    if found.newer:
        raise StoreError(f"{found.database}: database schema version {found.current} is newer "
                         f"than this program knows ({found.latest}); upgrade newsletter")


@db_app.command("migrate")
def migrate(ctx: typer.Context) -> None:
    """Apply every pending migration (each in its own transaction; safe to run from several
    machines at once). Exits 2 when the database is newer than this program."""
    from newsletter.store.schema import migrate as schema_migrate

    before, after = schema_migrate(_url(ctx))
    for step in before.pending:
        notice(f"applied {step['version']:03d} {step['name']}")
    done = "already up to date" if not before.pending else "migrated"
    typer.echo(f"{after.database}: schema version {after.current} ({done})")


@db_app.command("copy")
def copy(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="SRC", help="Database to read: a SQLite file path, sqlite:///path or postgresql://user@host/db.")],
    target: Annotated[str, typer.Argument(metavar="DST", help="Empty database to write (same forms; created and migrated if needed).")],
) -> None:
    """Copy a whole project from SRC into the empty DST, e.g. from SQLite to PostgreSQL or back:
    every table both schemas have (readers, lists, consent, editions, snapshots, sends,
    deliveries, events, dead letters, rate limits, feeds), ids kept, in one transaction, verifying
    the row counts. Refuses a non-empty DST, a table DST lacks that holds rows in SRC, and a SRC
    with an import still running; interrupted, DST is left empty."""
    from newsletter.store import database_url
    from newsletter.store.copy import copy_database

    resolved = [database_url(get_config(ctx)) if value == "." else value
                for value in (source, target)]
    progress = None
    if stderr_is_terminal():
        progress = lambda table, done: typer.echo(f"\r{table}: {done:,}", err=True, nl=False)  # noqa: E731
    result = copy_database(*resolved, on_progress=progress)
    if progress:
        typer.echo("", err=True)
    copied = ", ".join(f"{n:,} {table}" for table, n in result.counts.items() if n) or "nothing"
    typer.echo(f"copied {copied} from {result.source} to {result.target} (counts verified)")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
