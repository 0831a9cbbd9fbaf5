"""Per-edition figures from the delivery ledger and the SES events recorded against it.

Counts are per reader (a delivery row), not per event: three opens by one reader are one
unique open. A click counts as an open too, since a reader who clicked has opened the message
even when their client blocked the tracking pixel. Bounce and complaint rates are over the
messages sent; open and click rates over the messages delivered (or, when no Delivery events
are published, over those sent that did not bounce).

Opens and clicks are split into a reader's (human) and a machine's (Apple Mail Privacy
Protection, image proxies, security scanners, clicks too soon after delivery or on every link at
once): the rules are ``newsletter.feedback.engagement``'s. ``unique_opens``/``unique_clicks`` count both.
A send through the outbox transport has no delivery events at all: ``delivery_events`` is False
and its delivery, open and click figures are not rates of anything.

The SQL is ``newsletter.store.stats``'s (either engine); this module only adds up.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from newsletter.errors import NewsletterError, ValidationError
from newsletter.store import stats as queries
from newsletter.store.connection import Connection, errors, store_error

BOUNCE_WARN = 0.02  # SES reviews an account near 5% bounces; 2% leaves room to act
COMPLAINT_WARN = 0.0005  # SES reviews near 0.1%; Gmail wants < 0.1% and never ≥ 0.3%
COMPLAINT_ALARM = 0.003
TOP_LINKS = 5


@dataclass(frozen=True)
class LinkStat:
    url: str
    clicks: int
    unique_clicks: int


@dataclass(frozen=True)
class EditionStats:
    slug: str
    subject: str
    list_name: str
    created_at: str
    finished_at: str | None
    recipients: int
    sent: int
    failed: int
    pending: int
    skipped: int = 0  # readers who left (unsubscribed, bounced, erased) while the send ran
    delivered: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    complaints: int = 0
    unique_opens: int = 0
    unique_clicks: int = 0
    delayed: int = 0
    top_links: list[LinkStat] = field(default_factory=list)
    human_opens: int = 0
    machine_opens: int = 0      # readers whose message only machines opened
    human_clicks: int = 0
    machine_clicks: int = 0     # readers whose message only machines clicked
    transport: str = "ses"
    machine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def delivery_events(self) -> bool:
        """Whether this send can have delivery, open and click events (the outbox has none)."""
        return self.transport != "outbox"

    @property
    def bounces(self) -> int:
        return self.hard_bounces + self.soft_bounces

    @property
    def engaged_base(self) -> int:
        return self.delivered or max(self.sent - self.bounces, 0)

    @property
    def rates(self) -> dict[str, float]:
        return {
            "delivery": _ratio(self.delivered, self.sent),
            "bounce": _ratio(self.bounces, self.sent),
            "hard_bounce": _ratio(self.hard_bounces, self.sent),
            "complaint": _ratio(self.complaints, self.sent),
            "open": _ratio(self.unique_opens, self.engaged_base),
            "click": _ratio(self.unique_clicks, self.engaged_base),
            "human_open": _ratio(self.human_opens, self.engaged_base),
            "human_click": _ratio(self.human_clicks, self.engaged_base),
            "machine_open": _ratio(self.machine_opens, self.engaged_base),
            "machine_click": _ratio(self.machine_clicks, self.engaged_base),
        }

    @property
    def warnings(self) -> list[str]:
        """Reputation warnings: bounces at 2% or more, complaints at 0.05% or more."""
        out, rates = [], self.rates
        if self.sent and rates["bounce"] >= BOUNCE_WARN:
            out.append(f"{self.slug}: bounce rate {rates['bounce']:.2%} ≥ {BOUNCE_WARN:.0%} — clean the list "
                       "(SES reviews accounts at about 5%)")
        if self.sent and rates["complaint"] >= COMPLAINT_WARN:
            level = "far above" if rates["complaint"] >= COMPLAINT_ALARM else "≥"
            out.append(f"{self.slug}: complaint rate {rates['complaint']:.2%} {level} {COMPLAINT_WARN:.2%} — "
                       "Gmail wants under 0.1% and never 0.3%; SES reviews accounts at about 0.1%")
        return out

    def as_dict(self) -> dict:
        data = asdict(self)
        data["bounces"] = self.bounces
        data["rates"] = {k: round(v, 6) for k, v in self.rates.items()}
        data["delivery_events"] = self.delivery_events
        if not self.delivery_events:
            for key in ("delivery", "open", "click", "human_open", "human_click", "machine_open", "machine_click"):
                data["rates"][key] = None
        data["warnings"] = self.warnings
        return data


def edition_stats(conn: Connection, slug: str) -> EditionStats:
    """Figures for one edition (``SLUG``: all its sends together) or one of its sends
    (``SLUG#2``). Raises ``ValidationError`` when it was never sent, ``StoreError`` (one line)
    when the database refuses the reads."""
    with _reading(conn):
        return _edition_stats(conn, slug)


def _edition_stats(conn: Connection, slug: str) -> EditionStats:
    name, _, seq = slug.partition("#")
    if seq:
        rows = queries.sends_of(conn, name, int(seq) if seq.isdigit() and len(seq) < 10 else -1)
    else:
        rows = queries.sends_of(conn, slug)
    if not rows:
        raise ValidationError(f"no send for edition {slug!r} (see `newsletter sends ls`)")
    return _stats(conn, rows, with_links=True, name=slug)


def all_stats(conn: Connection) -> list[EditionStats]:
    """Figures for every send, newest first (an edition's later sends as ``SLUG#2`` …)."""
    with _reading(conn):
        return [_stats(conn, [row], with_links=False,
                       name=row["slug"] if row["seq"] == 1 else f"{row['slug']}#{row['seq']}")
                for row in queries.every_send(conn)]


@contextmanager
def _reading(conn: Connection) -> Iterator[None]:
    """A driver error while reading becomes one ``StoreError`` line naming the database."""
    try:
        yield
    except NewsletterError:
        raise
    except errors() as err:
        raise store_error(err, conn, "cannot read the figures from") from None


def _stats(conn: Connection, sends: Sequence[Any], *, with_links: bool, name: str) -> EditionStats:
    """Figures over ``sends`` (one edition's); subject and title are the latest snapshot's."""
    ids = [s["id"] for s in sends]
    ledger = queries.ledger(conn, ids)
    events = queries.per_reader(conn, ids)
    human = _engagement(conn, ids)
    last = sends[-1]
    return EditionStats(
        slug=name, subject=last["subject"],
        list_name=" | ".join(dict.fromkeys(s["list_name"] for s in sends)),
        created_at=sends[0]["created_at"],
        finished_at=last["finished_at"] if all(s["finished_at"] for s in sends) else None,
        recipients=sum(s["recipients"] for s in sends), sent=ledger.sent, failed=ledger.failed,
        pending=ledger.pending, skipped=ledger.skipped,
        delivered=events.delivered, hard_bounces=events.hard,
        soft_bounces=events.soft, complaints=events.complained,
        unique_opens=events.opened, unique_clicks=events.clicked,
        delayed=events.delayed,
        top_links=_top_links(conn, ids) if with_links else [],
        transport=last["transport"], **human,
    )


def _engagement(conn: Connection, send_ids: list[int]) -> dict:
    """Human and machine unique opens and clicks over ``send_ids`` (``newsletter.feedback.
    engagement`` decides), read one reader at a time in delivery order."""
    from collections import Counter

    from newsletter.feedback.engagement import Activity, judge, parse_time

    links = queries.clicked_links(conn, send_ids)
    out = {"human_opens": 0, "machine_opens": 0, "human_clicks": 0, "machine_clicks": 0}
    reasons: Counter = Counter()
    current, opens, clicks, delivered, accepted = None, [], [], None, None

    def flush() -> None:
        if not opens and not clicks:
            return
        v = judge(opens, clicks, delivered_at=delivered or accepted, send_links=links)
        out["human_opens"] += v.human_open
        out["machine_opens"] += v.machine_open
        out["human_clicks"] += v.human_click
        out["machine_clicks"] += v.machine_click
        reasons.update(v.reasons)

    for delivery_id, kind, occurred_at, link, agent, ip, stamp, mail_stamp in queries.activity(conn, send_ids):
        if delivery_id != current:
            flush()
            current, opens, clicks, delivered, accepted = delivery_id, [], [], None, None
        if kind == "delivery":
            delivered = parse_time(occurred_at)
            continue
        if accepted is None:
            accepted = parse_time(mail_stamp)
        (opens if kind == "open" else clicks).append(
            Activity(kind, parse_time(stamp or occurred_at), str(agent or ""), str(ip or ""), link))
    flush()
    return {**out, "machine_reasons": dict(reasons.most_common())}


def _top_links(conn: Connection, send_ids: list[int]) -> list[LinkStat]:
    return [LinkStat(r.url, r.clicks, r.readers) for r in queries.top_links(conn, send_ids, TOP_LINKS)]


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
