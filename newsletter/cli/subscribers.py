"""`newsletter lists …` and `newsletter subscribers …`: thin commands over the store API.

Data goes to stdout (tables, JSON, exports); notices, rejects and progress go to stderr. Exit
codes: 0 done, 1 done but something was refused or rejected (consent kept, rejected rows),
2 bad input, 130 interrupted (an interrupted import leaves the database as it was).
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from newsletter.cli.common import get_config, notice, stderr_is_terminal
from newsletter.errors import ValidationError
from newsletter.store.models import SubscriberStatus

lists_app = typer.Typer(name="lists", help="Create, show and delete mailing lists.",
                        no_args_is_help=True)
subscribers_app = typer.Typer(name="subscribers", no_args_is_help=True,
                              help="Add, remove, erase, list, import and export subscribers.")

ListOpt = Annotated[Optional[str], typer.Option("--list", "-l", help="Only this list.")]
StatusOpt = Annotated[Optional[SubscriberStatus],
                      typer.Option("--status", help="Only this status (on --list: the status there).")]


@contextmanager
def _store(ctx: typer.Context):
    from newsletter.store import open_store

    with open_store(get_config(ctx)) as store:
        yield store


def _confirm_or_refuse(question: str, yes: bool) -> None:
    """Destructive commands ask on a terminal; without one they need --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ValidationError("refusing without --yes (no terminal to ask)")
    if not typer.confirm(question, default=False):
        raise typer.Exit(1)


@contextmanager
def _progress(label: str):
    """A rich progress bar on a terminal; otherwise no output. Yields ``update(done, total)``."""
    if not stderr_is_terminal():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), TaskProgressColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            # the last part of an import (sorting, indexing, committing) has no steps to count
            description = label if done < total else f"{label}: saving"
            bar.update(task, completed=done, total=total, description=description)

        yield update


# -- lists --------------------------------------------------------------------------------------
@lists_app.command("create")
def lists_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="List name: letters, digits, '.', '_', '-'.")],
    description: Annotated[str, typer.Option(help="Shown to readers on the subscribe page.")] = "",
    double_opt_in: Annotated[bool, typer.Option("--double-opt-in", help="New readers confirm by email.")] = False,
    public: Annotated[bool, typer.Option("--public", help="Offered on the subscribe page.")] = False,
) -> None:
    """Create a mailing list."""
    with _store(ctx) as store:
        created = store.create_list(name, description=description, double_opt_in=double_opt_in,
                                    public=public)
    notice(f"created list {created.name} ({created.optin.value} opt-in"
           f"{', public' if created.public else ''})")


@lists_app.command("ls")
def lists_ls(ctx: typer.Context,
             as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Show the lists with their members per status."""
    with _store(ctx) as store:
        counts = store.list_counts()
        data = [{"name": l.name, "description": l.description, "optin": l.optin.value,
                 "public": l.public, "created_at": l.created_at, **counts[l.name]}
                for l in store.lists()]
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    if not data:
        notice("no lists yet (create one with `newsletter lists create NAME`)")
        return
    typer.echo(f"{'LIST':<20} {'OPT-IN':<7} {'PUBLIC':<6} {'ACTIVE':>8} {'UNCONFIRMED':>11} "
               f"{'UNSUBSCRIBED':>12}  DESCRIPTION")
    for d in data:
        typer.echo(f"{d['name']:<20} {d['optin']:<7} {'yes' if d['public'] else 'no':<6} "
                   f"{d['active']:>8} {d['unconfirmed']:>11} {d['unsubscribed']:>12}  "
                   f"{d['description']}")


@lists_app.command("rm")
def lists_rm(ctx: typer.Context, name: str,
             yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False) -> None:
    """Delete a list and its memberships (the subscribers stay)."""
    with _store(ctx) as store:
        target = store.require_list(name)
        members = store.count_subscribers(list_name=name)
        _confirm_or_refuse(f"delete list {name} and its {members} memberships?", yes)
        store.delete_list(target.name)
    notice(f"deleted list {name} ({members} memberships)")


# -- subscribers --------------------------------------------------------------------------------
def _attributes(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValidationError(f"--attr {pair!r}: expected KEY=VALUE")
        from newsletter.audience.attributes import attr_key

        if attr_key(key) in ("email", "name", "status"):
            raise ValidationError(f"--attr {key.strip()!r}: that name is reserved")
        out[attr_key(key)] = value
    return out


@subscribers_app.command("add")
def subscribers_add(
    ctx: typer.Context,
    email: str,
    name: Annotated[str, typer.Option(help="The reader's name.")] = "",
    list_: Annotated[Optional[list[str]], typer.Option("--list", "-l", help="Add to this list (repeatable).")] = None,
    attr: Annotated[Optional[list[str]], typer.Option("--attr", help="KEY=VALUE attribute (repeatable).")] = None,
    resubscribe: Annotated[bool, typer.Option("--resubscribe", help="Reactivate an address that unsubscribed or bounced (never a complaint or a suppressed address).")] = False,
    check_dns: Annotated[bool, typer.Option("--check-dns", help="Also check that the domain receives mail.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Add a subscriber (or update one), active on the given lists.

    An address that unsubscribed, bounced, complained or is suppressed is kept as it is
    (exit 1) unless --resubscribe, which never applies to complaints or suppressed addresses."""
    with _store(ctx) as store:
        result = store.add_subscriber(email, name=name, lists=list_ or [], attributes=_attributes(attr or []),
                                      resubscribe=resubscribe, check_dns=check_dns)
    for note in result.notes:
        notice(f"note: {note}")
    if as_json:
        typer.echo(json.dumps({"outcome": result.outcome, "notes": result.notes,
                               "id": result.subscriber.id if result.subscriber else None}))
    if result.outcome == "kept-by-consent":
        notice(f"kept {email.strip()} as it is: consent is never overridden"
               + ("" if resubscribe else " (use --resubscribe if the reader asked to come back)"))
        raise typer.Exit(1)
    if not as_json:
        notice(f"{result.outcome} {result.subscriber.email}"
               + (f" on {', '.join(list_)}" if list_ else ""))


@subscribers_app.command("rm")
def subscribers_rm(ctx: typer.Context, email: str, list_: ListOpt = None) -> None:
    """Unsubscribe from one list, or from all lists (the record is kept; see `erase`)."""
    with _store(ctx) as store:
        subscriber = store.require_subscriber(email)
        list_id = store.require_list(list_).id if list_ else None
        changed = store.unsubscribe(subscriber.id, list_id)
    where = f"from {list_}" if list_ else "from all lists"
    notice(f"unsubscribed {subscriber.email} {where}" if changed
           else f"{subscriber.email} was already unsubscribed {where}")


@subscribers_app.command("erase")
def subscribers_erase(ctx: typer.Context, email: str) -> None:
    """Delete all personal data of an address; keep only a hash so no import brings it back."""
    with _store(ctx) as store:
        found = store.erase(email)
    notice(f"erased {email.strip()}" if found
           else f"no data stored for {email.strip()}; it is now blocked from future imports")


def _row(s) -> str:
    return f"{s.id:>7}  {s.status.value:<12} {s.email:<40} {s.name}"


WhereOpt = Annotated[Optional[list[str]], typer.Option(
    "--where", metavar="COND", help="Only subscribers whose attributes match: key=value, key!=value or has:key "
    "(repeatable: all must match; the same conditions as `send --where`).")]


def _conditions(where: list[str] | None):
    from newsletter.audience.segments import parse_condition

    return [parse_condition(w) for w in where or ()]


@subscribers_app.command("ls")
def subscribers_ls(ctx: typer.Context, list_: ListOpt = None, status: StatusOpt = None,
                   as_json: Annotated[bool, typer.Option("--json", help="JSON Lines output.")] = False,
                   where: WhereOpt = None) -> None:
    """List subscribers (streamed, by id)."""
    from newsletter.audience.importer import _json_record

    conditions = _conditions(where)
    with _store(ctx) as store:
        for s in store.iter_subscribers(list_name=list_, status=status, where=conditions):
            typer.echo(json.dumps({"id": s.id, **_json_record(s)}, ensure_ascii=False)
                       if as_json else _row(s))


@subscribers_app.command("show")
def subscribers_show(ctx: typer.Context, email: str,
                     as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Everything stored about one subscriber."""
    with _store(ctx) as store:
        data = store.export_subscriber(store.require_subscriber(email).id)
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for key in ("email", "name", "status", "source", "created_at", "confirmed_at", "unsubscribed_at"):
        typer.echo(f"{key + ':':<17}{data[key] or '-'}")
    for key, value in data["attributes"].items():
        typer.echo(f"{'attr ' + key + ':':<17}{value}")
    for m in data["lists"]:
        typer.echo(f"{'list:':<17}{m['list']} ({m['status']} since "
                   f"{m['unsubscribed_at'] or m['confirmed_at'] or m['created_at']})")
    if data["suppressed"]:
        typer.echo(f"{'suppressed:':<17}{data['suppressed']['reason']} "
                   f"({data['suppressed']['created_at']})")
    for c in data.get("consent", []):
        parts = [f"opted in {c['optin_at']}" if c["optin_at"] else "",
                 f"from {c['optin_ip']}" if c["optin_ip"] else "",
                 f"confirmed {c['confirmed_at']}" if c["confirmed_at"] else "",
                 f"from {c['confirm_ip']}" if c["confirm_ip"] else ""]
        typer.echo(f"{'consent:':<17}{' '.join(p for p in parts if p)} ({c['source']})")
    typer.echo(f"{'deliveries:':<17}{len(data['deliveries'])}")


@subscribers_app.command("count")
def subscribers_count(ctx: typer.Context, list_: ListOpt = None, status: StatusOpt = None,
                      where: WhereOpt = None) -> None:
    """How many subscribers (on a list, with a status, matching --where)."""
    conditions = _conditions(where)
    with _store(ctx) as store:
        typer.echo(store.count_subscribers(list_name=list_, status=status, where=conditions))


@subscribers_app.command("import")
def subscribers_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV with a header row and an 'email' column, or a service's export (.csv or .zip).")],
    list_: Annotated[str, typer.Option("--list", "-l", help="Import into this list.")],
    from_: Annotated[str, typer.Option("--from", metavar="SERVICE",
                                       help="Whose export: mailchimp, substack, buttondown, listmonk, csv (this program's), or auto (read the header).")] = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and count, write nothing.")] = False,
    rejects: Annotated[Optional[Path], typer.Option("--rejects", help="Write rejected rows here as CSV (line,email,reason).")] = None,
    check_dns: Annotated[bool, typer.Option("--check-dns", help="Also check each domain in DNS (slow).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Import subscribers from CSV in one transaction; print a summary.

    The header row needs an 'email' column (any case); 'name' and 'status' are optional and
    every other column becomes an attribute. UTF-8 with or without BOM. Duplicates are merged;
    unsubscribed, bounced, complained, suppressed or erased addresses are never reactivated
    (counted as kept-by-consent). Rejected rows are listed on stderr with their line numbers;
    the exit code is then 1. A bad file changes nothing (exit 2); so does Ctrl-C (exit 130).

    --from maps another service's export (Mailchimp's .zip included) and keeps its consent
    evidence (opt-in/confirm times and IPs) as the subscriber's consent record."""
    from newsletter.audience.importer import import_export, write_rejects

    sink, finish = write_rejects(rejects) if rejects else (None, None)

    def on_reject(reject) -> None:
        notice(f"{reject.file or file}:{reject.line}: rejected: {reject.reason}")
        if sink:
            sink(reject)

    ok = False
    try:
        with _store(ctx) as store, _progress("importing") as update:
            result = import_export(store, file, list_name=list_, fmt=from_, dry_run=dry_run,
                                   check_dns=check_dns, on_reject=on_reject, on_progress=update)
        ok = True
    finally:
        if finish:
            finish(ok)
    summary = result.summary
    for report in result.reports:
        if report.fmt != "csv" or len(result.reports) > 1:
            for line in report.lines():
                notice(line)
    for member, why in result.skipped_files:
        notice(f"{file}:{member}: skipped: {why}")
    if result.consent_records:
        notice(f"kept {result.consent_records} consent records (opt-in and confirmation evidence)")
    if as_json:
        typer.echo(json.dumps({**summary.as_dict(), "consent_records": result.consent_records,
                               "files": [{"file": r.file, "format": r.fmt, "rows": r.rows, "used": r.used,
                                          "attributes": r.attributes} for r in result.reports]}
                              if result.reports else summary.as_dict()))
    else:
        typer.echo(("dry run, nothing written: " if dry_run else "")
                   + f"added {summary.added}, updated {summary.updated}, unchanged "
                   f"{summary.unchanged}, duplicates {summary.duplicates}, rejected "
                   f"{summary.rejected}, kept-by-consent {summary.kept_by_consent}")
        if summary.cleaned:
            notice(f"note: control characters were stripped from names or attributes in "
                   f"{summary.cleaned} rows")
    if summary.rejected:
        raise typer.Exit(1)


@subscribers_app.command("export")
def subscribers_export(
    ctx: typer.Context,
    list_: ListOpt = None,
    status: StatusOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "csv",
) -> None:
    """Export subscribers as CSV (imports back to the same state) or JSON Lines, streaming."""
    from newsletter.audience.importer import export_subscribers

    if fmt not in ("csv", "jsonl"):
        raise ValidationError(f"--format must be csv or jsonl, not {fmt!r}")
    with _store(ctx) as store, _progress("exporting") as update:
        if output is None:
            count = export_subscribers(store, sys.stdout, fmt=fmt, list_name=list_, status=status)
        else:
            count = _export_to_file(store, output, fmt, list_, status, update)
    if output is not None:
        notice(f"exported {count} subscribers to {output}")


def _export_to_file(store, output: Path, fmt: str, list_name, status, update) -> int:
    """Write to a temporary file and rename, so a failed export never leaves half a file."""
    from newsletter.audience.importer import export_subscribers

    tmp = output.with_name(output.name + ".part")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            count = export_subscribers(store, fh, fmt=fmt, list_name=list_name, status=status,
                                       on_progress=update)
        tmp.replace(output)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ValidationError(f"cannot write: {err.strerror or err}", file=output) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def register(app: typer.Typer) -> None:
    app.add_typer(lists_app)
    app.add_typer(subscribers_app)
