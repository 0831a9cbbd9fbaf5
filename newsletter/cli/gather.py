"""`newsletter gather`: numbered candidates from the configured feeds, and `gather --add`."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from newsletter.cli.common import get_config, notice, stderr_is_terminal
from newsletter.errors import ValidationError


def gather(
    ctx: typer.Context,
    args: Annotated[Optional[list[str]], typer.Argument(
        metavar="[N... EDITION]", help="With --add: the candidate numbers, then the edition file.")] = None,
    add: Annotated[bool, typer.Option("--add", help="Append candidates N… of the last list to EDITION.")] = False,
    since: Annotated[Optional[str], typer.Option("--since", metavar="DATE",
                                                 help="Entries newer than this (YYYY-MM-DD or ISO 8601; default: the last send).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Poll the feeds in [sources] feeds (concurrently, with conditional GET) and list the
    entries newer than the last sent edition that no edition or send has yet.

    `gather --add 3 5 8 EDITION` appends those candidates of the last list as items."""
    from newsletter.sources.gather import add_candidates, gather as run_gather
    from newsletter.store.connection import connect

    config = get_config(ctx)
    if add:
        numbers, edition = _add_args(args or [])
        conn = connect(config)
        try:
            items = add_candidates(config, conn, numbers, edition)
        finally:
            conn.close()
        for item in items:
            typer.echo(f"added item {item.number} to {edition}: {item.title} ({item.domain})")
        return
    if args:
        raise ValidationError("numbers and an edition go with --add: `newsletter gather --add 3 5 EDITION`")
    if not config.sources.feeds:
        where = config.file or "newsletter.toml"
        raise ValidationError(f"no feeds: add [sources] feeds = [\"https://…/rss\"] to {where}")
    conn = connect(config)
    try:
        with _progress(len(config.sources.feeds)) as on_done:
            result = run_gather(config, conn, since=_since(since), on_done=on_done)
    finally:
        conn.close()
    for warning in result.warnings:
        notice(f"warning: {warning}")
    if as_json:
        typer.echo(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
        return
    if not result.candidates:
        notice("no new entries" + (f" since {result.since:%Y-%m-%d %H:%M} UTC" if result.since else ""))
        return
    from newsletter.sources.gather import first_sentence

    width = len(str(len(result.candidates)))
    for c in result.candidates:
        e = c.entry
        when = e.published.strftime("%Y-%m-%d %H:%M") if e.published else "undated"
        typer.echo(f"{c.number:>{width}}. {e.title}")
        typer.echo(f"{'':>{width}}  {e.domain} · {when}" + (f" · {first_sentence(e)}" if e.summary else ""))
    notice(f"add some with: newsletter gather --add {' '.join(str(c.number) for c in result.candidates[:3])} EDITION")


def _add_args(args: list[str]) -> tuple[list[int], Path]:
    if len(args) < 2:
        raise ValidationError("--add needs candidate numbers and an edition: `newsletter gather --add 3 5 EDITION`")
    *numbers, edition = args
    bad = [n for n in numbers if not n.isdigit() or int(n) < 1]
    if bad:
        raise ValidationError(f"--add: {bad[0]!r} is not a candidate number (expected e.g. 3 5 8, then the edition)")
    return [int(n) for n in numbers], Path(edition)


def _since(value: Optional[str]) -> Optional[datetime]:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(f"--since {value!r} is not a date: expected YYYY-MM-DD or ISO 8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@contextmanager
def _progress(total: int):
    """A progress bar over the feeds on a terminal; nothing otherwise."""
    if not stderr_is_terminal():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("fetching feeds", total=total)
        yield lambda result: bar.advance(task)


def register(app: typer.Typer) -> None:
    app.command("gather")(gather)
