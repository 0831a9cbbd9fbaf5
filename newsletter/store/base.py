"""The store interface: the operations callers need, in domain terms.

Callers (CLI, send, web, events) use only this; ``SqliteStore`` implements it, and a PostgreSQL
store can follow without touching them. Every method raises ``StoreError`` or
``ValidationError`` (from ``newsletter.errors``) with a one-line message on bad input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from newsletter.errors import ValidationError
from newsletter.audience.segments import Audience, Condition
from newsletter.store.models import (
    MailingList,
    Membership,
    Recipient,
    Subscriber,
    SubscriberStatus,
)


@dataclass
class AddResult:
    """What ``add_subscriber`` did: ``outcome`` is added | updated | unchanged | kept-by-consent."""

    subscriber: Subscriber | None
    outcome: str
    notes: list[str] = field(default_factory=list)  # e.g. "stripped control characters from name"


@dataclass
class SubscribeResult:
    """What ``subscribe`` did for a web sign-up. ``pending`` lists need a confirmation email;
    ``activated`` were single opt-in and are active now (lists the reader already receives are
    in neither: nothing to confirm or welcome); ``refused`` is set when consent rules
    (unsubscribed-by-complaint, bounced, suppressed) forbid it — callers must not reveal that."""

    subscriber: Subscriber | None
    pending: list[MailingList] = field(default_factory=list)
    activated: list[MailingList] = field(default_factory=list)
    refused: bool = False


class ImportRow(NamedTuple):
    """One validated, cleaned CSV row ready for ``Store.import_rows`` (a tuple, for speed:
    the importer's hot loop yields plain tuples in this field order).

    ``status`` is ``active`` unless the file says ``unconfirmed``, ``unsubscribed``,
    ``bounced`` or ``complained`` (an exported file keeps opt-outs when imported back)."""

    key: str          # case-insensitive uniqueness key (newsletter.audience.addresses.Address.key)
    line: int         # line number in the file (for messages)
    email: str        # as entered, trimmed
    name: str
    attributes: str   # JSON object of strings ("{}" when none)
    status: str


@dataclass
class ImportSummary:
    """The counts an import reports. ``rows`` counts data rows read (rejected ones included)."""

    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: int = 0
    kept_by_consent: int = 0
    cleaned: int = 0  # rows whose name/attributes had control characters stripped
    dry_run: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        return {
            "rows": self.rows, "added": self.added, "updated": self.updated,
            "unchanged": self.unchanged, "duplicates": self.duplicates,
            "rejected": self.rejected, "kept_by_consent": self.kept_by_consent,
            "cleaned": self.cleaned, "dry_run": self.dry_run,
        }


class AudienceSelect(NamedTuple):
    """An audience as SQL on the subscriber database: ``sql`` selects ``(subscriber_id, email,
    list_id)`` of each reader once, in id order; ``args`` its parameters; ``list_ids`` the lists."""

    sql: str
    args: list
    list_ids: list[int]


class Store(ABC):
    """Subscribers, lists, memberships and the global suppression list."""

    # -- lifecycle -------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lists -----------------------------------------------------------------------------
    @abstractmethod
    def create_list(self, name: str, *, description: str = "", double_opt_in: bool = False,
                    public: bool = False) -> MailingList: ...

    @abstractmethod
    def get_list(self, name: str) -> MailingList | None: ...

    @abstractmethod
    def get_list_by_id(self, list_id: int) -> MailingList | None: ...

    def require_list(self, name: str) -> MailingList:
        """The list called ``name``, or ``ValidationError`` saying how to create it."""
        found = self.get_list(name)
        if found is None:
            raise ValidationError(f"no such list {name!r} (create it with `newsletter lists "
                                  f"create {name}`)")
        return found

    @abstractmethod
    def lists(self, *, public_only: bool = False) -> list[MailingList]: ...

    @abstractmethod
    def list_counts(self) -> dict[str, dict[str, int]]:
        """Per list name, the number of memberships per membership status."""

    @abstractmethod
    def delete_list(self, name: str) -> None: ...

    # -- subscribers -----------------------------------------------------------------------
    @abstractmethod
    def add_subscriber(self, email: str, *, name: str = "", lists: Iterable[str] = (),
                       attributes: dict[str, str] | None = None, source: str = "cli",
                       resubscribe: bool = False, check_dns: bool = False) -> AddResult:
        """Add (or update) an active subscriber and make them active on ``lists``.

        Consent is never overridden silently: an unsubscribed, bounced, complained or
        suppressed address stays as it is (outcome ``kept-by-consent``) unless ``resubscribe``,
        which never applies to complained or suppressed addresses. ``check_dns`` also asks DNS
        whether the domain receives mail."""

    @abstractmethod
    def import_rows(self, rows: Iterable[ImportRow], *, list_name: str, dry_run: bool = False,
                    source: str = "import",
                    summary: ImportSummary | None = None) -> ImportSummary:
        """Import many rows into ``list_name`` in ONE transaction (all or nothing; with
        ``dry_run`` it is rolled back). Duplicates (same key) are merged, later values winning.
        The same consent rules as ``add_subscriber`` (never ``resubscribe``). Counts go into
        ``summary`` (created if None) and it is returned. An exception from iterating ``rows``
        (bad file, KeyboardInterrupt) rolls everything back and propagates."""

    @abstractmethod
    def get_subscriber(self, email: str) -> Subscriber | None:
        """Case-insensitive lookup by address."""

    def require_subscriber(self, email: str) -> Subscriber:
        """The subscriber with this address, or ``ValidationError``."""
        found = self.get_subscriber(email)
        if found is None:
            raise ValidationError(f"no subscriber {email.strip()!r}")
        return found

    @abstractmethod
    def get_subscriber_by_id(self, subscriber_id: int) -> Subscriber | None: ...

    def subscriber_for_token(self, claims) -> Subscriber | None:
        """The reader a verified token names, or None: the row with its id must still carry its
        ``uid`` (ids and uids are never reused, so an erased reader's tokens name nobody). A
        token made before uids existed names only a reader who existed then."""
        import hmac

        found = self.get_subscriber_by_id(claims.subscriber_id)
        if found is None:
            return None
        if claims.uid:
            return found if found.uid and hmac.compare_digest(found.uid, claims.uid) else None
        return found if found.legacy_tokens else None

    @abstractmethod
    def memberships(self, subscriber_id: int) -> list[Membership]: ...

    @abstractmethod
    def unsubscribe(self, subscriber_id: int, list_id: int | None = None) -> bool:
        """Unsubscribe from one list, or from all (``None``: the subscriber becomes
        ``unsubscribed``). Idempotent; returns whether anything changed."""

    @abstractmethod
    def erase(self, email: str) -> bool:
        """Delete the personal data, keeping only a hashed suppression entry."""

    @abstractmethod
    def iter_subscribers(self, *, list_name: str | None = None,
                         status: SubscriberStatus | None = None,
                         where: Iterable[Condition] = ()) -> Iterator[Subscriber]:
        """Streams (constant memory), ordered by id; ``where``: ``--where`` conditions, ANDed."""

    @abstractmethod
    def count_subscribers(self, *, list_name: str | None = None,
                          status: SubscriberStatus | None = None,
                          where: Iterable[Condition] = ()) -> int: ...

    # -- the readers' side (web) -----------------------------------------------------------
    @abstractmethod
    def subscribe(self, email: str, *, name: str = "", list_ids: Iterable[int],
                  source: str = "web") -> SubscribeResult:
        """A sign-up: single opt-in lists become active, double opt-in ones unconfirmed."""

    @abstractmethod
    def confirm(self, subscriber_id: int, list_id: int = 0) -> bool:
        """Activate unconfirmed memberships (one list, or all with 0). Idempotent."""

    @abstractmethod
    def update_subscriber(self, subscriber_id: int, *, name: str | None = None,
                          list_ids: Iterable[int] | None = None) -> Subscriber:
        """Preferences: change the name and/or set exactly which lists are active."""

    @abstractmethod
    def export_subscriber(self, subscriber_id: int) -> dict:
        """Everything stored about one subscriber, JSON-ready ("download my data")."""

    # -- sending and events ----------------------------------------------------------------
    @abstractmethod
    def recipients(self, list_name: str) -> Iterator[Recipient]:
        """Active members of the list whose subscriber is active and not suppressed, by id."""

    @abstractmethod
    def audience_recipients(self, audience: Audience) -> Iterator[Recipient]:
        """The readers of an audience (lists' union minus excluded lists, filtered by its
        conditions), active and not suppressed, each once, by id; ``list_id`` set per reader."""

    @abstractmethod
    def audience_select(self, audience: Audience) -> AudienceSelect:
        """The audience as one SELECT the ledger freezes with ``INSERT … SELECT`` (same database)."""

    @abstractmethod
    def audience_steps(self, audience: Audience) -> list[tuple[str, int]]:
        """``(label, sendable readers so far)`` after each step of the audience, for the plan."""

    @abstractmethod
    def is_suppressed(self, email: str) -> bool: ...

    @abstractmethod
    def suppress(self, email: str, reason: str) -> None:
        """Add to the global suppression list (idempotent)."""

    @abstractmethod
    def set_status(self, email: str, status: SubscriberStatus, *, reason: str = "") -> bool:
        """Set a subscriber's status (bounced/complained also suppress). Returns whether it
        changed."""
