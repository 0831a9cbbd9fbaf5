"""The send job: one edition's snapshot to every reader of an audience, exactly once, resumably.

``prepare_send`` decides what is sent: the edition file is matched to the edition the ledger
knows (path + slug + date instant); the same audience's unfinished send is resumed with its
frozen snapshot (with one line when the file changed since), anything else renders the file
into a new snapshot, numbered once. ``SendJob.plan`` looks (store, ledger, transport limits) and
writes nothing; ``SendJob.run`` freezes the snapshot and the recipients into the ledger on first
run (readers an earlier send of the edition reached are skipped, unless ``again``), then always
sends the snapshot stored with the send: it claims deliveries in small batches, makes each
reader's message from the precomputed template, paces through a token bucket and sends from a
thread pool. Results go back to the ledger in batches from the main thread. A crash leaves at most
the in-flight window (``window`` rows) in ``sending``: reported as unknown afterwards.

Throttling is back-pressure: the pacing rate drops (by half the share of calls throttled in the
last second) when the provider throttles and climbs back by small steps as calls succeed (AIMD,
``pacing.AdaptiveRate``); several processes on one send (``--workers N``, or the same command
in another terminal) share the rate asked: each takes 1/N of it, N the send's live workers, counted
again every ``REBALANCE_EVERY`` seconds. A throttled message is
retried for as long as the job runs — unless nothing at all has been accepted for
``throttle_patience`` seconds, then the job stops with a clear message. Other retryable errors
are retried with jittered exponential backoff, ``max_attempts`` at most; a permanent one marks
that reader failed and the send goes on; a fatal one (or retries exhausted) stops the job with the
ledger consistent. Ctrl-C stops claiming, lets in-flight messages finish, records them, and then
raises ``KeyboardInterrupt`` (``send/interrupts.py``: the first Ctrl-C is a request taken at a safe
point, never a database call cut in half; a second one forces). Progress goes to a callback.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from newsletter.audience.segments import Audience, make_audience
from newsletter.config import Config, load_secret
from newsletter.errors import EditionError, NewsletterError, StoreError, TransportError, ValidationError
from newsletter.send.interrupts import ctrl_c_stops
from newsletter.store.ledger import Claim, DeliveryState, EditionRecord, Ledger, Outcome, SendExists, SendRecord
from newsletter.send.message import ListTemplates, MessageTemplate, SendContext
from newsletter.send.pacing import AdaptiveRate, TokenBucket, backoff
from newsletter.render.rendered import RenderedEmail
from newsletter.send.snapshot import Snapshot, content_hash, date_instant, make_snapshot, resolved, source_hash
from newsletter.store.models import MailingList, Recipient
from newsletter.send.transports import SendLimits, Transport, describe, open_transport, send_limits

REBALANCE_EVERY = 0.25  # s: how often a worker beats and counts the send's workers (its rate share)
JOIN_WAIT = 3.0  # s: at most this long a joining worker waits for the others to take their share
PROGRESS_EVERY = 0.5


class FatalStop(NewsletterError):
    """The job stopped on a fatal transport error; the ledger is consistent and resumable."""

    exit_code = 2


@dataclass(frozen=True)
class SendOptions:
    transport: str | None = None  # default: config.transport
    rate: float | None = None  # messages/s; None/0: config [send] rate, then the provider's max
    concurrency: int | None = None  # default: config [send] concurrency
    retry_unknown: bool = False
    max_attempts: int = 6  # per message, for retryable errors other than throttling
    throttle_patience: float = 900.0  # s: stop when throttled and nothing was accepted for this long
    window: int | None = None  # deliveries claimed ahead (default 4 × concurrency)
    backoff_base: float = 0.5
    backoff_cap: float = 20.0


@dataclass
class Prepared:
    """What a send command will send: the snapshot (frozen, when resuming), the edition it
    belongs to, the send it resumes, lines for the editor, and check findings of a fresh render."""

    snapshot: Snapshot
    date_utc: str = ""
    edition: EditionRecord | None = None
    resume: SendRecord | None = None
    notes: list[str] = field(default_factory=list)
    findings: list = field(default_factory=list)


def prepare_send(config: Config, path: str | Path, audience: Audience, *, essay: str | Path | None = None,
                 ledger: Ledger | None = None, sending: bool = True) -> Prepared:
    """Match the edition file to the ledger and decide what is sent (nothing is written;
    ``sending``: check as a real send, where a draft's leftovers are errors)."""
    own = ledger is None
    ledger = ledger or Ledger.open(config)
    try:
        return _prepare(config, Path(path), audience, Path(essay) if essay else None, ledger, sending)
    finally:
        if own:
            ledger.close()


def _prepare(config: Config, path: Path, audience: Audience, essay: Path | None, ledger: Ledger,
             sending: bool = True) -> Prepared:
    from newsletter.render.build import render_checked
    from newsletter.edition.parse import numbered
    from newsletter.edition.source import load_edition

    key = resolved(path)
    try:
        parsed = load_edition(path, config=config, essay_path=essay)
        problem = None
    except EditionError as err:
        parsed, problem = None, err
    if parsed is not None:
        edition = ledger.match_edition(key, parsed.slug, date_instant(parsed))
    else:  # a broken or missing file can still resume the send it started
        edition = ledger.edition_from(key)
    resume = ledger.open_send(edition.id, audience.key) if edition else None
    if resume is not None and resume.snapshot_id is not None:
        frozen = ledger.snapshot(resume.snapshot_id)
        notes = []
        if source_hash(path, essay) != frozen.source_hash or (frozen.essay_path or None) != (resolved(essay) if essay else None):  # type: ignore[union-attr]
            notes.append(f"{path} changed since this send started at {resume.created_at}; "
                         "resuming sends the version frozen then")
        if parsed is not None and parsed.slug != edition.slug:  # type: ignore[union-attr]
            notes.append(f"its slug is now {parsed.slug!r} in the file; this is still edition {edition.slug!r}")  # type: ignore[union-attr]
        return Prepared(frozen, edition.date_utc, edition, resume, notes)  # type: ignore[arg-type, union-attr]
    if parsed is None:
        raise problem  # type: ignore[misc]
    notes = []
    if edition is not None:
        number = edition.number if edition.number is not None else (parsed.number or ledger.next_number())
        if parsed.number is not None and parsed.number != number:
            notes.append(f"the file says `number: {parsed.number}`; this edition has been No. {number} "
                         "since its first send, and stays so")
        if parsed.slug != edition.slug:
            notes.append(f"its slug is now {parsed.slug!r} in the file; this is still edition {edition.slug!r} "
                         "(its archive page and number stay)")
            parsed = replace(parsed, slug=edition.slug)
    else:
        number = parsed.number or ledger.next_number()
        owner = ledger.number_owner(number)
        if owner is not None:
            raise EditionError(f"number {number} is already edition {owner.slug!r}'s: remove `number:` "
                               f"(the next free one is {ledger.next_number()})", file=path,
                               line=parsed.lines.get("number"))
    parsed, rendered, findings = render_checked(numbered(parsed, number, config), config, sending=sending)
    snap = make_snapshot(parsed, rendered, essay_path=essay)
    if edition is not None:
        before = ledger.latest_snapshot(edition.id)
        if before is not None and before.content_hash != snap.content_hash:
            notes.append(f"{path} changed since the edition's last send ({before.created_at}): "
                         "this new send sends the current version")
    return Prepared(snap, date_instant(parsed), edition, resume, notes, findings)


def _prepared_from_rendered(rendered: RenderedEmail, audience: Audience, ledger: Ledger) -> Prepared:
    """For callers with a rendered email and no file (the Python API, benchmarks)."""
    snap = Snapshot(slug=rendered.slug, number=None, title=rendered.subject, subject=rendered.subject,
                    preheader=rendered.preheader, date="", lang=rendered.lang, categories=(), items=(),
                    html=rendered.html, text=rendered.text, web_url=rendered.web_url, source_path="",
                    essay_path=None, source_hash="", content_hash=content_hash(rendered))
    edition = ledger.edition(rendered.slug)
    resume = ledger.open_send(edition.id, audience.key) if edition else None
    if resume is not None and resume.snapshot_id is not None:
        snap = ledger.snapshot(resume.snapshot_id)  # type: ignore[assignment]
    return Prepared(snap, "", edition, resume)


@dataclass(frozen=True)
class SendPlan:
    """What is about to happen (shown before confirmation; nothing written yet)."""

    slug: str
    subject: str
    list_name: str
    transport: str
    transport_description: str
    local: bool  # nothing leaves the machine
    to_send: int  # pending deliveries (or recipients, for a new send)
    already_done: int  # sent, failed or skipped by earlier runs
    unknown: int  # left in flight by a process that died
    resuming: bool
    rate: float | None  # effective messages/s (None: unpaced)
    limits: SendLimits | None
    retry_unknown: bool = False
    ref: str = ""  # SLUG or SLUG#N: the send this is (or will be)
    number: int | None = None
    steps: list[tuple[str, int]] = field(default_factory=list)  # the audience, step by step
    skipped_earlier: int = 0  # readers an earlier send of this edition reached (left out)
    again: bool = False
    in_flight: int = 0  # held right now by a live process of this send (another terminal, a worker)

    @property
    def estimated_seconds(self) -> float | None:
        return self.to_send / self.rate if self.rate else None


@dataclass
class ProgressInfo:
    total: int  # deliveries this run set out to do
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    retries: int = 0
    throttled: int = 0  # answers that said "slower, please" (each retried)
    elapsed: float = 0.0

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        left = self.total - self.done
        return left / self.rate if self.rate > 0 else None


@dataclass
class SendReport:
    slug: str
    progress: ProgressInfo
    unknown: int = 0
    released: int = 0  # claimed but given back unsent (stop, Ctrl-C, fatal)
    stopped: str | None = None  # the fatal reason, when the job stopped early
    interrupted: bool = False
    finished: bool = False  # every delivery of the send is settled
    failures: list[tuple[str, str]] = field(default_factory=list)  # (address, error), first few
    asked_rate: float | None = None  # the pacing asked for (None: unpaced)
    lowest_rate: float | None = None  # the lowest the pacing went under back-pressure
    rate_decreases: int = 0  # times throttling lowered the rate

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.stopped:
            return 2
        return 1 if (self.progress.failed or self.unknown) else 0


@dataclass
class _Result:
    outcome: Outcome
    retries: int = 0
    fatal: TransportError | None = None
    address: str = ""
    throttled: int = 0


def effective_rate(config: Config, options: SendOptions, limits: SendLimits | None) -> float | None:
    """min(--rate or [send] rate, the provider's max send rate); None means unpaced."""
    wanted = options.rate or config.send.rate or None
    cap = limits.max_rate if limits else None
    rates = [r for r in (wanted, cap) if r]
    return min(rates) if rates else None


class SendJob:
    """One edition (its snapshot) to one audience through one transport. Use ``plan`` then
    ``run``; ``close``. ``source`` is a ``Prepared`` (from ``prepare_send``) or, for the Python
    API, a ``RenderedEmail``; ``audience`` an ``Audience`` or one list's name."""

    def __init__(self, config: Config, source: Prepared | RenderedEmail, audience: Audience | str,
                 options: SendOptions = SendOptions(), *, notify: Callable[[str], None] | None = None,
                 again: bool = False):
        from newsletter.store import open_store

        self.audience = make_audience([audience]) if isinstance(audience, str) else audience
        self.list_name = self.audience.describe()
        self.config, self.options, self.again = config, options, again
        self.notify = notify
        self.concurrency = options.concurrency or config.send.concurrency
        self.window = options.window or max(8, 4 * self.concurrency)
        self.store = open_store(config)
        self.ledger = Ledger.open(config)
        self.transport: Transport | None = None
        self.report: SendReport | None = None  # set by run(), also when it is interrupted
        self._started = False  # start_send done
        try:
            self.lists = []
            for name in (*self.audience.lists, *self.audience.exclude):
                found = self.store.get_list(name)
                if found is None:
                    raise ValidationError(f"no list named {name!r} (see `newsletter lists ls`)")
                self.lists.append(found)
            self.mailing_list = self.lists[0]
            self.prepared = source if isinstance(source, Prepared) else \
                _prepared_from_rendered(source, self.audience, self.ledger)
            self.snapshot = self.prepared.snapshot
            self.rendered = self.snapshot.rendered()
            self.secret = load_secret(config, notify=notify)
            self.existing = self.prepared.resume
            self.transport_name = options.transport or (self.existing.transport if self.existing else None) \
                or config.transport
            self.transport = open_transport(config, self.transport_name, concurrency=self.concurrency)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.ledger.close()
        self.store.close()

    # -- looking before leaping ------------------------------------------------------------------
    def plan(self) -> SendPlan:
        """Counts and limits; refuses (``FatalStop``) a send larger than the 24-hour quota left."""
        limits = self._limits()
        steps: list[tuple[str, int]] = []
        if self.existing:
            progress = self.ledger.progress(self.existing.id)
            unknown = progress.unknown
            in_flight = progress.count(DeliveryState.SENDING) - unknown
            to_send = progress.pending + (unknown if self.options.retry_unknown else 0)
            done = progress.done
            earlier, ref = self.existing.skipped_earlier, self.existing.ref
        else:
            steps = self.store.audience_steps(self.audience)
            edition = self.prepared.edition
            if edition is not None and not self.again and self.ledger.edition_sends(edition.id):
                total = self.ledger.count_unreached(self.store.audience_select(self.audience), edition.id)
            else:
                total = steps[-1][1]
            earlier = steps[-1][1] - total
            to_send, done, unknown, in_flight = total, 0, 0, 0
            seq = len(self.ledger.edition_sends(edition.id)) + 1 if edition else 1
            ref = self.snapshot.slug if seq == 1 else f"{self.snapshot.slug}#{seq}"
        remaining = limits.remaining_24h if limits else None
        if remaining is not None and to_send > remaining:
            raise FatalStop(f"this send needs {to_send} messages but only {remaining} of the 24-hour sending quota "
                            f"are left ({limits.sent_24h} of {limits.max_24h} used): send later, or ask AWS "  # type: ignore[union-attr]
                            "for a higher quota")
        return SendPlan(slug=self.rendered.slug, subject=self.rendered.subject, list_name=self.list_name,
                        transport=self.transport_name, transport_description=describe(self.transport),  # type: ignore[arg-type]
                        local=self.transport_name == "outbox", to_send=to_send, already_done=done,
                        unknown=unknown, resuming=self.existing is not None,
                        rate=effective_rate(self.config, self.options, limits), limits=limits,
                        retry_unknown=self.options.retry_unknown, ref=ref, number=self.snapshot.number,
                        steps=steps, skipped_earlier=earlier, again=self.again, in_flight=in_flight)

    def _limits(self) -> SendLimits | None:
        """The provider's limits; an IAM policy that allows sending but not reading the quota is
        told to the user and the send is paced at --rate alone (any other refusal stops here)."""
        try:
            return send_limits(self.transport)  # type: ignore[arg-type]
        except TransportError as err:
            if err.code not in ("AccessDenied", "AccessDeniedException"):
                raise
            if self.notify:
                self.notify(f"warning: cannot read the sending quota ({err.message}); pacing at --rate only")
            return None

    def context(self, mailing_list: MailingList | None = None, *, subject_prefix: str = "") -> SendContext:
        """What the messages sent through ``mailing_list`` (default: the audience's first) share."""
        target = mailing_list or self.mailing_list
        return SendContext(config=self.config, secret=self.secret, list_id=target.id,  # type: ignore[union-attr]
                           list_name=target.name, subject_prefix=subject_prefix)

    def templates(self, *, subject_prefix: str = "") -> ListTemplates:
        """One compiled template per list the audience sends through (not the excluded ones), so
        each reader's List-Id names their own list, as their unsubscribe token does."""
        sending = self.lists[:len(self.audience.lists)] or [self.mailing_list]
        return ListTemplates(self.rendered, {lst.id: self.context(lst, subject_prefix=subject_prefix)
                                             for lst in sending}, self.mailing_list.id)

    def sample_message(self) -> bytes | None:
        """The first reader's message, for ``--dry-run`` (nothing sent or written)."""
        first = next(iter(self.store.audience_recipients(self.audience)), None)
        if first is None:
            return None
        return self.templates().render(first).raw

    # -- the run ---------------------------------------------------------------------------------
    def run(self, *, progress: Callable[[ProgressInfo], None] | None = None,
            stop: threading.Event | None = None, plan: SendPlan | None = None) -> SendReport:
        """Send to every pending reader. Raises ``KeyboardInterrupt`` after a clean stop on Ctrl-C
        (the report is then on ``self.report``)."""
        plan = plan or self.plan()
        send = self.start_send()
        stop = stop or threading.Event()
        info = ProgressInfo(total=self.ledger.progress(send.id).pending)
        self.report = report = SendReport(slug=send.ref, progress=info)
        worker = self.ledger.register_worker(send.id)
        template = self.templates()
        bucket = AdaptiveRate(plan.rate)
        report.asked_rate = plan.rate
        failing = False
        with ctrl_c_stops(stop) as ctrl_c:  # Ctrl-C: stop at a safe point (send/interrupts.py)
            try:
                self._join_pacing(send, worker, bucket, stop)
                self._loop(send, worker, template, bucket, stop, report, progress)
                ctrl_c.raise_if_pressed()
            except KeyboardInterrupt:
                report.interrupted = failing = True
                raise
            except BaseException:
                failing = True  # e.g. the disk is full: the ledger refuses writes (one-line StoreError)
                raise
            finally:
                report.lowest_rate, report.rate_decreases = bucket.lowest, bucket.decreases
                try:
                    self.ledger.stop_worker(worker)
                    self._settle(send, report)
                except StoreError:
                    if not failing:  # the first error is the one to tell
                        raise
                if progress:
                    progress(info)
        return report

    def start_send(self) -> SendRecord:
        """The send this job works on, in the ledger: the one it resumes or joins, else a new one
        (its snapshot and recipients frozen now); with ``retry_unknown``, its unknowns are
        pending again. Done once per send command (``run`` calls it; with ``--workers`` the
        parent does, and the workers join the send by its id)."""
        if self.existing is not None and self._started:
            return self.existing
        send = self.existing or self._create_send()
        if send.snapshot_id is None:  # a send from before snapshots whose file was missing at the upgrade
            send = self.ledger.attach_snapshot(send, replace(self.snapshot, reconstructed=True))
        if send.snapshot_id != self.snapshot.id:  # what the ledger froze, byte for byte (also when
            self.snapshot = self.ledger.snapshot(send.snapshot_id)  # joining another process's send)
            self.rendered = self.snapshot.rendered()  # type: ignore[union-attr]
        self.existing = send
        if self.options.retry_unknown:
            self.ledger.retry_unknown(send.id)
        self._started = True
        return send

    def _rebalance(self, send: SendRecord, worker: str, bucket: AdaptiveRate) -> dict[str, float]:
        """Count the send's live workers and take this one's share of the rate; then beat, with
        the time *before* the count: a heartbeat newer than a worker's joining means its share
        has been taken into account (see ``_join_pacing``)."""
        seen = self.ledger.clock()
        live = self.ledger.live_workers(send.id)
        bucket.set_share(max(1, len(live | {worker: seen})))
        self.ledger.heartbeat(worker, at=seen)
        return live

    def _join_pacing(self, send: SendRecord, worker: str, bucket: AdaptiveRate, stop: threading.Event) -> None:
        """A worker joining a send that others are sending waits (up to ``JOIN_WAIT`` s) until
        each of them has taken the smaller share that its arrival makes, so the send's total rate
        never goes above the rate asked, not even while workers join."""
        joined = self.ledger.clock()  # after the registration committed: a count started later sees it
        deadline = time.monotonic() + JOIN_WAIT
        while True:
            live = self._rebalance(send, worker, bucket)
            if bucket.rate is None or all(beat >= joined for other, beat in live.items() if other != worker):
                return
            if time.monotonic() > deadline or stop.wait(REBALANCE_EVERY / 5):
                return

    def _create_send(self) -> SendRecord:
        running = getattr(self.store, "imports_running", None)
        busy = [lst.name for lst in self.lists if running is not None and running(lst.name)]
        if busy:  # its readers would be half there
            raise ValidationError(f"an import into list {busy[0]!r} is still running: send when it has "
                                  "finished (nothing was sent)")
        audience = json.loads(self.audience.as_json(again=self.again))
        audience["list_ids"] = [lst.id for lst in self.lists[:len(self.audience.lists)]]
        try:
            return self.ledger.create_send(slug=self.snapshot.slug, subject=self.snapshot.subject,
                                           list_name=self.list_name, list_id=self.mailing_list.id,
                                           transport=self.transport_name,
                                           recipients=self.store.audience_select(self.audience),
                                           snapshot=self.snapshot, date_utc=self.prepared.date_utc,
                                           audience=json.dumps(audience, ensure_ascii=False),
                                           audience_key=self.audience.key, again=self.again)
        except SendExists as err:
            # Another process started this send a moment ago: join it (claims keep us apart).
            return err.existing

    def _loop(self, send: SendRecord, worker: str, template: ListTemplates, bucket: AdaptiveRate,
              stop: threading.Event, report: SendReport, progress: Callable[[ProgressInfo], None] | None) -> None:
        """Claim, hand out to the sending threads, record results in batches (one transaction
        each). Claimed-but-unrecorded rows never exceed ``window``: that bounds the unknowns a
        crash can leave."""
        work: queue.SimpleQueue = queue.SimpleQueue()
        results: queue.SimpleQueue = queue.SimpleQueue()
        threads = [threading.Thread(target=self._work, args=(work, results, template, bucket, stop),
                                    name=f"send-{i}", daemon=True) for i in range(self.concurrency)]
        for thread in threads:
            thread.start()
        outstanding, buffered = 0, []
        started = last_beat = last_progress = last_flush = time.monotonic()
        try:
            while True:
                held = outstanding + len(buffered)
                if not stop.is_set() and outstanding <= self.window // 2 and held < self.window:
                    claims, skipped = self.ledger.claim(send, worker, self.window - held)
                    report.progress.skipped += skipped
                    for claim in claims:
                        work.put(claim)
                    outstanding += len(claims)
                if outstanding == 0 and not buffered:
                    break
                outstanding -= _take(results, buffered, timeout=0.25 if outstanding else 0)
                now = time.monotonic()
                if buffered and (len(buffered) >= self.window // 2 or outstanding == 0 or now - last_flush > 0.2
                                 or any(r.fatal for r in buffered)):
                    self._collect(send, worker, buffered, report, stop)
                    buffered, last_flush = [], now
                report.progress.elapsed = now - started
                if now - last_beat > REBALANCE_EVERY:  # the heartbeat, and the rate shared
                    self._rebalance(send, worker, bucket)  # with the workers alive now
                    last_beat = now
                if progress and now - last_progress > PROGRESS_EVERY:
                    progress(report.progress)
                    last_progress = now
        except BaseException:
            stop.set()  # in-flight messages finish (or are given back unsent); then record them
            while outstanding:
                outstanding -= _take(results, buffered, timeout=None)
            self._collect(send, worker, buffered, report, stop)
            raise
        finally:
            for _ in threads:
                work.put(None)
            for thread in threads:
                thread.join()
            report.progress.elapsed = time.monotonic() - started

    def _work(self, work: queue.SimpleQueue, results: queue.SimpleQueue, template: ListTemplates,
              bucket: TokenBucket, stop: threading.Event) -> None:
        """A sending thread: claims in, results out, until the ``None`` sentinel."""
        while (claim := work.get()) is not None:
            try:
                results.put(self._deliver(template, claim, bucket, stop))
            except BaseException as err:  # never lose a claim: report it back unsent
                results.put(_Result(Outcome(claim.delivery_id, DeliveryState.PENDING, error=f"internal error: {err!r}"),
                                    fatal=TransportError(f"internal error while sending: {err!r}",
                                                         kind=TransportError.FATAL)))

    def _collect(self, send: SendRecord, worker: str, results: list[_Result], report: SendReport,
                 stop: threading.Event) -> None:
        self.ledger.record(send.id, worker, [r.outcome for r in results])
        info = report.progress
        for r in results:
            info.retries += r.retries
            info.throttled += r.throttled
            state = r.outcome.state
            if state is DeliveryState.SENT:
                info.sent += 1
            elif state is DeliveryState.FAILED:
                info.failed += 1
                if len(report.failures) < 20:
                    report.failures.append((r.address, r.outcome.error or ""))
            else:
                report.released += 1
            if r.fatal is not None and report.stopped is None:
                report.stopped = str(r.fatal.message)
                stop.set()

    def _settle(self, send: SendRecord, report: SendReport) -> None:
        report.finished = self.ledger.finish_if_done(send.id)
        report.unknown = self.ledger.unknown(send.id)
        self.ledger.set_last_error(send.id, report.stopped if not report.finished else None)

    def _deliver(self, template: ListTemplates, claim: Claim, bucket: TokenBucket,
                 stop: threading.Event) -> _Result:
        """Runs in a pool thread: make the message, pace, send with bounded retries."""
        address = claim.recipient.email
        try:
            message = template.render(claim.recipient)
        except ValidationError as err:
            return _Result(Outcome(claim.delivery_id, DeliveryState.FAILED, error=err.message), address=address)
        return deliver_with_retries(self.transport, message, claim.delivery_id, bucket, stop,  # type: ignore[arg-type]
                                    self.options, address)


def _take(results: queue.SimpleQueue, into: list, *, timeout: float | None) -> int:
    """Move every available result into ``into`` (waiting up to ``timeout`` for the first)."""
    taken = 0
    try:
        into.append(results.get(timeout=timeout) if timeout != 0 else results.get_nowait())
        taken = 1
        while True:
            into.append(results.get_nowait())
            taken += 1
    except queue.Empty:
        return taken


def deliver_with_retries(transport: Transport, message, delivery_id: int, bucket: TokenBucket,
                         stop: threading.Event, options: SendOptions, address: str = "") -> _Result:
    """Pace, send, retry. A throttled answer lowers the bucket's rate (when it adapts) and is
    retried without an attempt limit while anything is being accepted; other retryable errors
    have ``max_attempts``."""
    attempts = retried = throttled = streak = 0
    throttled_since: float | None = None
    adaptive = bucket if isinstance(bucket, AdaptiveRate) else None

    def result(state: DeliveryState, *, fatal: TransportError | None = None, **values) -> _Result:
        return _Result(Outcome(delivery_id, state, attempts=attempts, **values), retries=max(0, attempts - 1),
                       fatal=fatal, address=address, throttled=throttled)

    while True:
        if not bucket.acquire(stop):
            return result(DeliveryState.PENDING, error="stopped before sending")
        attempts += 1
        try:
            provider_id = transport.send(message)
        except TransportError as err:
            if err.kind == TransportError.PERMANENT:
                return result(DeliveryState.FAILED, error=err.message)
            if err.kind == TransportError.FATAL:
                return result(DeliveryState.PENDING, error=err.message, fatal=err)
            if err.throttled:
                throttled += 1
                streak += 1
                now = bucket.now()
                throttled_since = now if throttled_since is None else throttled_since
                if adaptive is not None:
                    adaptive.throttled()
                    quiet_since = max(throttled_since, adaptive.last_success or throttled_since)
                else:
                    quiet_since = throttled_since
                if now - quiet_since > options.throttle_patience:
                    return result(DeliveryState.PENDING, error=err.message, fatal=TransportError(
                        f"throttled for {now - throttled_since:.0f} s with no message accepted ({err.message}); "
                        "the provider is refusing this sending rate: lower --rate or ask for a higher sending "
                        "limit, then run the same command again to resume", kind=TransportError.FATAL, code=err.code))
                # the adaptive bucket is the back-pressure: the retry waits for its slot at the
                # lowered rate; without one, a jittered backoff spaces the retries
                wait = 0.0 if adaptive is not None else backoff(min(streak, 4), base=options.backoff_base,
                                                                 cap=options.backoff_cap)
            else:
                retried += 1
                if retried >= options.max_attempts:
                    return result(DeliveryState.PENDING, error=err.message, fatal=TransportError(
                        f"gave up after {retried} attempts ({err.message}); run the same command again to resume",
                        kind=TransportError.FATAL, code=err.code))
                wait = backoff(retried, base=options.backoff_base, cap=options.backoff_cap)
            if wait and stop.wait(wait):
                return result(DeliveryState.PENDING, error="stopped while retrying")
            continue
        if adaptive is not None:
            adaptive.succeeded()
        return result(DeliveryState.SENT, provider_message_id=provider_id)


# -- test sends ------------------------------------------------------------------------------------

def send_test(job: SendJob, addresses: Iterable[str]) -> SendReport:
    """``--test``: the edition to these addresses only, subject prefixed ``[TEST]``; the ledger is
    not touched. A subscriber's own name and attributes are used when the address is one."""
    from newsletter.send.message import check_address

    template = MessageTemplate(job.rendered, job.context(subject_prefix="[TEST] "))
    info = ProgressInfo(total=0)
    report = SendReport(slug=job.rendered.slug, progress=info)
    limits = job._limits()  # asked once (SES: one GetSendQuota); a quota SES won't show is a warning
    stop, bucket = threading.Event(), AdaptiveRate(limits.max_rate if limits else None)
    transport = job.transport
    if job.transport_name == "outbox":  # test copies never mix with the real send's Maildir
        from newsletter.send.transports.outbox import OutboxTransport

        transport = OutboxTransport(test_outbox(job.config))
    started = time.monotonic()
    for number, address in enumerate(addresses, start=1):
        info.total += 1
        recipient = _test_recipient(job, check_address(address.strip()), number)
        result = deliver_with_retries(transport, template.render(recipient), 0, bucket, stop,  # type: ignore[arg-type]
                                      job.options, address)
        if result.outcome.state is DeliveryState.SENT:
            info.sent += 1
        else:
            info.failed += 1
            report.failures.append((address, result.outcome.error or ""))
        if result.fatal is not None:
            report.stopped = result.fatal.message
            break
    info.elapsed = time.monotonic() - started
    return report


def test_outbox(config: Config) -> Path:
    """Where ``--test`` copies go with the outbox transport: ``outbox/_test/<slug>/``."""
    return config.outbox_path / "_test"


def _test_recipient(job: SendJob, address: str, number: int) -> Recipient:
    subscriber = job.store.get_subscriber(address)
    if subscriber is None:
        return Recipient(0, address, "", {})
    return Recipient(subscriber.id, address, subscriber.name, dict(subscriber.attributes), uid=subscriber.uid)
