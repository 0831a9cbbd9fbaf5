"""Operations: ``events pull``, ``events dead-letters``, ``stats`` and ``doctor``."""

from __future__ import annotations

import json
import signal
import sys
from contextlib import contextmanager
from typing import Annotated, Optional

import typer

from newsletter.cli.common import get_config, notice

events_app = typer.Typer(help="SES notifications (bounces, complaints, deliveries, opens, clicks).",
                         no_args_is_help=True)


@events_app.command("pull")
def pull(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option("--watch", help="Keep polling until Ctrl-C (or SIGTERM).")] = False,
    wait: Annotated[Optional[int], typer.Option("--wait", min=0, max=20, metavar="SECONDS",
                    help="Long-poll seconds per request (default 20 with --watch, else 2).")] = None,
) -> None:
    """Read SES notifications from the SQS queue (ses.queue_url), store each once, apply
    suppressions, and delete each queue message after it is committed."""
    from newsletter.feedback.pull import PullSummary, pull_events
    from newsletter.feedback.record import open_recorder

    config = get_config(ctx)
    summary, stopped = PullSummary(), False
    with open_recorder(config) as recorder, _sigterm_as_interrupt():
        try:
            pull_events(config, recorder, watch=watch, wait_seconds=wait, report=_reporter(), summary=summary)
        except KeyboardInterrupt:
            stopped = True
    notice(summary.line())
    if stopped:
        notice("stopped: everything recorded so far is kept; the rest stays in the queue")
        raise typer.Exit(130)
    if summary.kept_aside:
        notice("see them with `newsletter events dead-letters`")


@events_app.command("dead-letters")
def dead_letters_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (with each message body).")] = False,
    retry: Annotated[bool, typer.Option("--retry", help="Parse them again; record those understood now.")] = False,
) -> None:
    """List the queue messages that could not be understood and were kept aside."""
    from newsletter.feedback.record import dead_letters, open_recorder, retry_dead_letters

    with open_recorder(get_config(ctx)) as recorder:
        if retry:
            resolved, still = retry_dead_letters(recorder)
            notice(f"{resolved} recorded now, {still} still kept aside")
        kept = dead_letters(recorder.conn)
    if as_json:
        typer.echo(json.dumps([vars(d) for d in kept], indent=2, ensure_ascii=False))
        return
    for d in kept:
        typer.echo(f"{d.received_at}  {d.message_id}  {d.reason}")
    if not kept and not retry:
        notice("no messages kept aside")


def stats(
    ctx: typer.Context,
    slug: Annotated[Optional[str], typer.Argument(metavar="SLUG", help="Edition slug (default: every edition sent).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per-edition figures: recipients, sent, delivered, bounces, complaints, opens, clicks,
    their rates and the top links. Warns at 2% bounces or 0.05% complaints."""
    from newsletter.feedback.stats import all_stats, edition_stats
    from newsletter.store.connection import connect, errors, store_error

    conn = connect(get_config(ctx))  # the project's database, SQLite or PostgreSQL
    try:
        found = [edition_stats(conn, slug)] if slug else all_stats(conn)
    except errors() as err:  # a query the database refused: one line, exit 2
        raise store_error(err, conn, "cannot read the figures from") from None
    finally:
        conn.close()
    if as_json:
        data = found[0].as_dict() if slug else [s.as_dict() for s in found]
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        _render_stats(found, detailed=bool(slug))
    for stat in found:
        if not stat.delivery_events and (slug or not as_json):
            notice(f"note: {stat.slug} was sent through the outbox, which produces no delivery, bounce, "
                   "open or click events (nothing left the machine)")
        for warning in stat.warnings:
            notice(f"warning: {warning}")


def doctor(ctx: typer.Context) -> None:
    """Check the configuration, secret, database, SES identity and DKIM, sandbox or production,
    send rate and 24-hour quota, configuration set and event destination, and the SQS queue.
    Exits 1 when a check fails."""
    from newsletter.doctor import failed, run_checks

    checks = run_checks(get_config(ctx))
    for check in checks:
        typer.echo(check.line())
    if failed(checks):
        raise typer.Exit(1)


def _pct(value: float) -> str:
    return f"{value:.1%}" if value >= 0.001 or value == 0 else f"{value:.2%}"


def _stats_rows(found) -> list[list[str]]:
    rows = []
    for s in found:
        r = s.rates
        if not s.delivery_events:  # the outbox: nothing can come back, so no figures to show
            rows.append([s.slug, str(s.recipients), str(s.sent), "n/a (outbox)", "n/a", "n/a", "n/a", "n/a"])
            continue
        rows.append([s.slug, str(s.recipients), str(s.sent), f"{s.delivered} ({_pct(r['delivery'])})",
                     f"{s.hard_bounces}+{s.soft_bounces} ({_pct(r['bounce'])})",
                     f"{s.complaints} ({_pct(r['complaint'])})",
                     f"{s.human_opens} ({_pct(r['human_open'])}) +{s.machine_opens} machine",
                     f"{s.human_clicks} ({_pct(r['human_click'])}) +{s.machine_clicks} machine"])
    return rows


_HEADERS = ["edition", "recipients", "sent", "delivered", "bounced hard+soft", "complaints",
            "unique opens (human)", "unique clicks (human)"]


def _render_stats(found, *, detailed: bool) -> None:
    """A rich table on a terminal; plain aligned columns otherwise (pipes, cron mail)."""
    if not found:
        notice("no editions sent yet")
        return
    rows = _stats_rows(found)
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*_HEADERS)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    else:
        widths = [max(len(x) for x in col) for col in zip(_HEADERS, *rows)]
        for row in [_HEADERS, *rows]:
            typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if detailed:
        s = found[0]
        typer.echo(f"subject: {s.subject}  list: {s.list_name}  failed: {s.failed}  pending: {s.pending}"
                   f"  skipped: {s.skipped}"
                   f"  delayed: {s.delayed}")
        if s.machine_reasons:
            typer.echo("machine activity: " + ", ".join(f"{why} {n}" for why, n in s.machine_reasons.items()))
        for link in s.top_links:
            typer.echo(f"  {link.unique_clicks:>5} readers {link.clicks:>5} clicks  {link.url}")


def _reporter():
    def report(level: str, message: str) -> None:
        notice(f"warning: {message}" if level == "warning" else message)

    return report


@contextmanager
def _sigterm_as_interrupt():
    """``systemctl stop`` sends SIGTERM: stop the way Ctrl-C does, between two commits."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
    app.command("stats")(stats)
    app.command("doctor")(doctor)

