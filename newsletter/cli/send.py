"""``send`` and ``sends ls|show``: a thin layer over ``newsletter.send.job`` and ``newsletter.store.ledger``."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from newsletter.cli.common import get_config, notice, stderr_is_terminal
from newsletter.cli.edition import EditionArgument, EssayOption


def register(app: typer.Typer) -> None:
    app.command(name="send")(send)
    sends_app = typer.Typer(name="sends", help="Delivery progress per edition.", no_args_is_help=True)
    sends_app.command(name="ls")(sends_ls)
    sends_app.command(name="show")(sends_show)
    app.add_typer(sends_app, name="sends")


def send(
    ctx: typer.Context,
    edition: EditionArgument,
    list_name: Annotated[list[str], typer.Option(
        "--list", "-l", metavar="LIST", help="A list to send to (repeatable: the union, one message per reader).")],
    transport: Annotated[Optional[str], typer.Option(
        "--transport", "-t", metavar="NAME", help="outbox, ses or smtp (default: the configured one).")] = None,
    rate: Annotated[Optional[float], typer.Option(
        "--rate", min=0, metavar="N", help="At most N messages/s (default: [send] rate; 0 = the SES account's max).")] = None,
    concurrency: Annotated[Optional[int], typer.Option(
        "--concurrency", min=1, max=64, metavar="N", help="Messages in flight at once (default: [send] concurrency).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would happen and one sample message; send and write nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    test: Annotated[Optional[list[str]], typer.Option(
        "--test", metavar="ADDR", help="Send only to this address (repeatable), subject prefixed [TEST]; not recorded.")] = None,
    retry_unknown: Annotated[bool, typer.Option(
        "--retry-unknown", help="Also re-send messages whose fate is unknown (a previous run died while sending them).")] = False,
    at: Annotated[Optional[str], typer.Option(
        "--at", metavar="WHEN", help="Wait until WHEN (e.g. 2026-11-23T07:00+08:00), counting down; Ctrl-C cancels.")] = None,
    essay: EssayOption = None,
    exclude_list: Annotated[Optional[list[str]], typer.Option(
        "--exclude-list", metavar="LIST", help="Leave out the members of this list (repeatable).")] = None,
    where: Annotated[Optional[list[str]], typer.Option(
        "--where", metavar="COND", help="Only readers whose attributes match: key=value, key!=value or has:key "
        "(repeatable: all must match).")] = None,
    again: Annotated[bool, typer.Option(
        "--again", help="Also send to readers an earlier send of this edition already reached.")] = False,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, max=64, metavar="N",
        help="Send with N processes on this machine (each with its own connection and --concurrency "
        "threads), sharing the send through the ledger and the --rate between them (default 1: this process).")] = 1,
) -> None:
    """Send an edition to an audience: checks, confirmation, then every reader exactly once (resumable).

    The same command (same edition, same --list/--exclude-list/--where) resumes that audience's
    unfinished send from its snapshot; another audience, or the same one after its send finished,
    starts another send of the edition (SLUG#2, …), skipping readers who already got it."""
    from newsletter.audience.segments import make_audience
    from newsletter.send.schedule import parse_when
    from newsletter.send.job import SendJob, SendOptions

    config = get_config(ctx)
    when = parse_when(at) if at else None
    audience = make_audience(list_name, exclude_list or (), where or ())
    prepared = _checked_prepare(config, edition, essay, audience, sending=not test)
    options = SendOptions(transport=transport, rate=rate, concurrency=concurrency, retry_unknown=retry_unknown)
    job = SendJob(config, prepared, audience, options, notify=notice, again=again)
    try:
        if test:
            _send_test(job, test, dry_run=dry_run, when=when)
            return
        plan = job.plan()
        _show_plan(plan)
        if workers > 1:
            notice(f"workers:    {workers} processes on this machine, sharing the pacing")
        if dry_run:
            _show_sample(job.sample_message())
            notice("dry run: nothing was sent or written")
            return
        if plan.to_send == 0:
            _nothing_to_do(plan)
            return
        _confirm(yes, f"send {plan.ref} to {plan.to_send} reader(s)?")
        if when is not None:
            _wait(when)
            plan = job.plan()  # hours may have passed: the quota and the readers are read again
        _run(job, plan, config.outbox_path / plan.slug, workers=workers)
    finally:
        job.close()


def _checked_prepare(config, edition: Path, essay: Path | None, audience, *, sending: bool = True):
    """What will be sent: the resumed send's frozen snapshot, or a fresh render that passed the
    checks (``sending``: those of a real send, where a draft's TODO markers and a missing postal
    address are errors). Each note (a changed file, a changed slug) is one line before the plan."""
    from newsletter.edition.checks import has_errors
    from newsletter.send.job import prepare_send

    prepared = prepare_send(config, edition, audience, essay=essay, sending=sending)
    for finding in prepared.findings:
        notice(finding.format(edition))
    if has_errors(prepared.findings):
        notice(f"refusing to send {edition}: fix the errors above (`newsletter check {edition}`)")
        raise typer.Exit(1)
    for note in prepared.notes:
        notice(note)
    return prepared


def _show_plan(plan) -> None:
    rate = f"{plan.rate:g} messages/s" if plan.rate else "unpaced"
    eta = plan.estimated_seconds
    lines = [
        f"edition:    {plan.slug}" + (f" (No. {plan.number})" if plan.number else ""),
        f"send:       {plan.ref}" + (" (resuming)" if plan.resuming else " (new)"),
        f"subject:    {plan.subject}",
        f"list:       {plan.list_name}",
    ]
    lines += [f"  {label}: {count}" for label, count in plan.steps]
    if plan.skipped_earlier:
        lines.append(f"  − already received this edition: {plan.skipped_earlier}"
                     + (" (sent again: --again)" if plan.again else " (skipped; --again sends to them too)"))
    elif plan.again:
        lines.append("  (--again: readers an earlier send reached get it again)")
    lines += [
        f"recipients: {plan.to_send}" + (f" left to send ({plan.already_done} done earlier)" if plan.resuming else ""),
        f"transport:  {plan.transport_description}",
        f"pacing:     {rate}" + (f", about {_duration(eta)}" if eta is not None else ""),
    ]
    if plan.limits and plan.limits.max_24h is not None:
        lines.append(f"quota:      {plan.limits.remaining_24h} of {plan.limits.max_24h} left in the last 24 h")
    if plan.unknown:
        lines.append(f"unknown:    {plan.unknown} message(s) a previous run may or may not have sent"
                     + (" — will be sent again (--retry-unknown)" if plan.retry_unknown else
                        " — not sent again without --retry-unknown"))
    for line in lines:
        notice(line)


def _show_sample(raw: bytes | None) -> None:
    if raw is None:
        notice("(the list has no recipients: no sample message)")
        return
    import email
    from email import policy

    msg = email.message_from_bytes(raw, policy=policy.default)
    typer.echo("--- sample message (first recipient) ---")
    for name, value in msg.items():
        if name.lower() != "content-type":
            typer.echo(f"{name}: {value}")
    text = msg.get_body(preferencelist=("plain",))
    typer.echo("")
    typer.echo(text.get_content() if text is not None else "(no text part)")
    typer.echo(f"--- {len(raw)} bytes, multipart/alternative (text + HTML) ---")


def _nothing_to_do(plan) -> None:
    if not plan.resuming:
        if plan.skipped_earlier:
            notice(f"every reader of {plan.list_name} already received {plan.slug}: nothing to send "
                   "(--again sends it to them again)")
        else:
            notice(f"list {plan.list_name} has no active readers: nothing to send")
        return
    if plan.in_flight:  # not done: another process of this send holds them right now
        notice(f"nothing left for this run: {plan.in_flight} message(s) of {plan.ref} are being sent by another "
               f"process right now (see `newsletter sends show {plan.ref}`)")
        return
    if plan.unknown:
        notice(f"nothing pending; {plan.unknown} message(s) unknown: run again with --retry-unknown to re-send them")
        raise typer.Exit(1)
    notice(f"nothing to send: every reader of {plan.ref} has been dealt with (see `newsletter sends show {plan.ref}`)")


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        notice("error: refusing to send without confirmation (no terminal): pass --yes")
        raise typer.Exit(2)
    if not typer.confirm(question, default=False, err=True):
        notice("not sent")
        raise typer.Exit(1)


def _wait(when) -> None:
    from newsletter.send.schedule import format_remaining, wait_until

    terminal = stderr_is_terminal()
    shown = when.strftime("%Y-%m-%d %H:%M:%S %z")
    last = [0.0]

    def tick(left: float) -> None:
        if terminal:
            sys.stderr.write(f"\rsending at {shown}: in {format_remaining(left)} (Ctrl-C cancels)  ")
            sys.stderr.flush()
        elif last[0] == 0.0 or last[0] - left >= 60:
            last[0] = left
            notice(f"sending at {shown}: in {format_remaining(left)} (Ctrl-C cancels)")

    try:
        wait_until(when, tick=tick)
    finally:
        if terminal:
            sys.stderr.write("\n")
    notice(f"it is {shown}: sending")


def _run(job, plan, outbox: Path, workers: int = 1) -> None:
    from newsletter.send.job import SendReport

    reporter = _progress_reporter(plan)
    stop = threading.Event()
    try:
        if workers > 1:
            from newsletter.send.workers import run_workers

            report: SendReport = run_workers(job, plan, workers, progress=reporter.update, notify=notice)
        else:
            report = job.run(progress=reporter.update, stop=stop, plan=plan)
    except KeyboardInterrupt:
        reporter.close()
        if job.report is not None:
            _summary(job.report, plan, outbox)
        notice("interrupted: the ledger is consistent; run the same command again to resume")
        raise typer.Exit(130) from None
    reporter.close()
    _summary(report, plan, outbox)
    if report.stopped:
        notice(f"error: {report.stopped}")
    raise typer.Exit(report.exit_code)


def _summary(report, plan, outbox: Path) -> None:
    p = report.progress
    rate = f" ({p.rate:.1f}/s)" if p.elapsed > 0 and p.sent else ""
    typer.echo(f"{report.slug}: sent {p.sent}, failed {p.failed}, skipped {p.skipped}"
               f"{', retried ' + str(p.retries) if p.retries else ''} in {_duration(p.elapsed)}{rate}")
    if plan.skipped_earlier and not plan.resuming:
        notice(f"  {plan.skipped_earlier} reader(s) already received this edition in an earlier send: skipped")
    if p.throttled:
        notice(_throttling_line(report))
    for address, error in report.failures[:10]:
        notice(f"  failed: {address}: {error}")
    if report.unknown:
        notice(f"{report.unknown} message(s) unknown (a run died while sending them): "
               "`--retry-unknown` re-sends them")
    if plan.local and p.sent:
        notice(f"written to the outbox: {outbox} (nothing left this machine)")


def _throttling_line(report) -> str:
    """What back-pressure did: how often the provider said "slower", the pacing's low point, and
    the rate achieved against the rate asked."""
    p = report.progress
    asked = f"{report.asked_rate:g}/s asked" if report.asked_rate else "unpaced"
    lowest = f", lowered {report.rate_decreases} time(s), to {report.lowest_rate:.1f}/s at the lowest" \
        if report.rate_decreases and report.lowest_rate else ""
    return (f"throttled {p.throttled} time(s), each retried (none counted as failures){lowest}; "
            f"achieved {p.rate:.1f}/s ({asked})")


class _PlainProgress:
    """Periodic plain lines (no terminal)."""

    def __init__(self, total: int, every: float = 5.0):
        self.total, self.every, self.last = total, every, -1.0

    def update(self, info) -> None:
        if self.last >= 0 and info.elapsed - self.last < self.every:
            return
        self.last = info.elapsed
        eta = f", ETA {_duration(info.eta)}" if info.eta is not None and info.done < info.total else ""
        notice(f"sent {info.sent}/{info.total}, failed {info.failed}, {info.rate:.1f}/s{eta}")

    def close(self) -> None:
        return None


class _RichProgress:
    """A rich progress bar on the terminal (rich imported only here)."""

    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("failed {task.fields[failed]}"), TextColumn("{task.fields[rate]}/s"),
                                 TimeRemainingColumn(), console=Console(stderr=True))
        self.task = self.progress.add_task("send", total=total, failed=0, rate="0.0")
        self.progress.start()

    def update(self, info) -> None:
        self.progress.update(self.task, completed=info.done, failed=info.failed, rate=f"{info.rate:.1f}")

    def close(self) -> None:
        self.progress.stop()


def _progress_reporter(plan):
    total = plan.to_send
    return _RichProgress(total) if stderr_is_terminal() else _PlainProgress(total)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _send_test(job, addresses: list[str], *, dry_run: bool, when) -> None:
    """``--test``: only the given addresses, so no confirmation is asked."""
    from newsletter.send.job import send_test, test_outbox

    notice(f"test send of {job.rendered.slug} to {', '.join(addresses)} via {job.transport_name} "
           "(subject prefixed [TEST]; not recorded as the edition's send)")
    if dry_run:
        notice("dry run: nothing was sent")
        return
    if when is not None:
        _wait(when)
    report = send_test(job, addresses)
    p = report.progress
    typer.echo(f"test: sent {p.sent}, failed {p.failed}")
    if job.transport_name == "outbox" and p.sent:
        notice(f"written to {test_outbox(job.config) / job.rendered.slug} (apart from the edition's real send)")
    for address, error in report.failures:
        notice(f"  failed: {address}: {error}")
    if report.stopped:
        notice(f"error: {report.stopped}")
    raise typer.Exit(report.exit_code)


# -- sends ls / show ---------------------------------------------------------------------------------

def sends_ls(ctx: typer.Context) -> None:
    """Every send, newest first, with its progress (an edition's later sends are SLUG#2, …)."""
    from newsletter.store.ledger import Ledger

    config = get_config(ctx)
    with Ledger.open(config) as ledger:
        rows = [(s, ledger.progress(s.id)) for s in ledger.sends()]
    if not rows:
        notice("no sends yet")
        return
    header = ("EDITION", "LIST", "TRANSPORT", "READERS", "SENT", "FAILED", "SKIPPED", "PENDING", "UNKNOWN",
              "EARLIER", "STATUS")
    table = [header] + [(s.ref, s.list_name, s.transport, str(s.recipients), str(p.sent), str(p.failed),
                         str(p.skipped), str(p.pending), str(p.unknown), str(s.skipped_earlier), _status(s, p))
                        for s, p in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def _status(send, progress) -> str:
    if send.finished_at:
        return f"finished {send.finished_at}"
    if progress.in_flight:
        return "sending now"
    if send.last_error:
        return "stopped (resumable)"
    return "incomplete (resumable)"


def sends_show(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(metavar="SLUG[#N]", help="An edition's slug (all its sends), e.g. 2025-10-14, "
                                        "or one send of it, e.g. 2025-10-14#2.")],
    failures: Annotated[int, typer.Option("--failures", min=0, metavar="N", help="List up to N failed readers.")] = 20,
) -> None:
    """An edition's sends, or one send in detail: progress, timing, last error, failed readers."""
    from newsletter.errors import ValidationError
    from newsletter.store.ledger import Ledger

    config = get_config(ctx)
    with Ledger.open(config) as ledger:
        if "#" in slug:
            send = ledger.find_send(slug)
            sends = [send] if send else []
        else:
            edition = ledger.edition(slug)
            sends = ledger.edition_sends(edition.id) if edition else [s for s in [ledger.find_send(slug)] if s]
        if not sends:
            raise ValidationError(f"no send for edition {slug!r} (see `newsletter sends ls`)")
        edition = ledger.edition_by_id(sends[0].edition_id) if sends[0].edition_id else None
        details = [(s, ledger.progress(s.id),
                    ledger.deliveries(s.id, states=["failed"], limit=failures) if failures else [],
                    ledger.snapshot(s.snapshot_id) if s.snapshot_id else None)
                   for s in sends]
    if len(sends) > 1:
        typer.echo(f"{slug}: {len(sends)} sends" + (f" (edition No. {edition.number})" if edition and edition.number else ""))
    for i, (send, p, failed, snapshot) in enumerate(details):
        if i:
            typer.echo("")
        _show_one(send, p, failed, edition, snapshot)


def _show_one(send, p, failed, edition, snapshot) -> None:
    rows = [("send", send.ref), ("edition", send.slug), ("number", (edition.number if edition else None) or "-"),
            ("title", snapshot.title if snapshot else "-"),
            ("subject", send.subject), ("audience", send.list_name), ("transport", send.transport),
            ("readers", send.recipients), ("sent", p.sent), ("failed", p.failed), ("skipped", p.skipped),
            ("earlier", f"{send.skipped_earlier} (of the skipped: already received this edition in an earlier send)"),
            ("pending", p.pending), ("in flight", p.in_flight), ("unknown", p.unknown), ("started", send.created_at),
            ("first sent", send.first_sent_at or "-"), ("finished", send.finished_at or "-"),
            ("status", _status(send, p))]
    if snapshot is not None:
        rows.append(("snapshot", f"{snapshot.content_hash[:12]} from {snapshot.source_path or '(no file)'}"
                     + (" (reconstructed from the file at the upgrade)" if snapshot.reconstructed else "")))
    for label, value in rows:
        typer.echo(f"{label + ':':<12}{value}")
    if send.last_error:
        typer.echo(f"{'last error:':<12}{send.last_error}")
    if p.unknown:
        typer.echo(f"{p.unknown} unknown: the same `newsletter send EDITION …` command with --retry-unknown re-sends them")
    for row in failed:
        typer.echo(f"failed: {row['email'] or '(erased)'}: {row['last_error']}")
