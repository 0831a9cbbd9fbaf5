"""Other services' subscriber exports, mapped onto the import's own columns.

``subscribers import FILE --from mailchimp|substack|buttondown|listmonk|auto`` reads the header
row, picks (or, with ``auto``, recognises) the service, and maps every data row to the columns
the importer knows: ``email``, ``name``, ``status`` and attributes; the consent evidence (opt-in
and confirmation times and IPs) goes aside to become the subscriber's consent record. What was
used and what was kept as attributes is reported (``FormatReport``). Pure: no I/O here beyond
the CSV rows handed in.

- **Mailchimp** (audience export, also its localised headers: ``E-Mail-Adresse``, ``Adresse
  e-mail``, ``Dirección de correo electrónico``, ``Vorname``/``Nachname``…): ``Email Address``,
  ``First Name`` + ``Last Name`` → name, ``OPTIN_TIME``/``OPTIN_IP``/``CONFIRM_TIME``/
  ``CONFIRM_IP`` → consent; the export zip's ``subscribed``/``unsubscribed``/``cleaned`` files
  (or ``UNSUB_TIME``/``CLEAN_TIME`` columns) give the status: active / unsubscribed / bounced.
- **Substack**: ``email``, ``name``, ``created_at`` → consent (sign-up time),
  ``email_disabled`` true → unsubscribed; ``active_subscription`` (paid) stays an attribute.
- **Buttondown**: ``email`` (or ``email_address``), ``subscriber_type`` (or ``type``): regular,
  premium, gifted… → active, unactivated → unconfirmed, unsubscribed/removed → unsubscribed,
  undeliverable → bounced, complained → complained; ``creation_date``/``ip_address`` → consent;
  ``metadata`` (JSON) is spread into attributes.
- **listmonk**: ``email``, ``name``, ``attributes`` (JSON, spread into attributes), ``status``:
  enabled → active, disabled/blocklisted → unsubscribed; a list export's
  ``subscription_status`` unconfirmed/unsubscribed wins; ``created_at`` → consent.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from newsletter.audience.attributes import attr_key
from newsletter.errors import ValidationError

FORMATS = ("auto", "mailchimp", "substack", "buttondown", "listmonk", "csv")
CONSENT_FIELDS = ("optin_at", "optin_ip", "confirmed_at", "confirm_ip")


def _fold(name: str) -> str:
    """Header names compared without case, accents, punctuation or spacing."""
    text = unicodedata.normalize("NFKD", name.strip().lstrip("\ufeff")).casefold()
    return "".join(ch for ch in text if ch.isalnum())


# Mailchimp translates the labels of its default fields; its system columns stay in English.
_MC_EMAIL = {_fold(n) for n in (
    "Email Address", "E-Mail-Adresse", "E-Mail Adresse", "Adresse e-mail", "Adresse email",
    "Adresse électronique", "Dirección de correo electrónico", "Correo electrónico",
    "Endereço de e-mail", "Endereço de email", "Indirizzo email", "Indirizzo e-mail",
    "E-mailadres", "E-postadress", "E-mailadresse", "Sähköpostiosoite", "Adres e-mail")}
_MC_FIRST = {_fold(n) for n in ("First Name", "Vorname", "Prénom", "Nombre", "Nome", "Voornaam",
                                "Förnamn", "Fornavn", "Etunimi", "Imię")}
_MC_LAST = {_fold(n) for n in ("Last Name", "Nachname", "Nom", "Nom de famille", "Apellido",
                               "Apellidos", "Sobrenome", "Cognome", "Achternaam", "Efternamn",
                               "Etternavn", "Efternavn", "Sukunimi", "Nazwisko")}
_MC_SYSTEM = {_fold(n) for n in ("MEMBER_RATING", "OPTIN_TIME", "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP",
                                 "LEID", "EUID", "LAST_CHANGED", "GMTOFF", "DSTOFF")}
_MC_CONSENT = {_fold("OPTIN_TIME"): "optin_at", _fold("OPTIN_IP"): "optin_ip",
               _fold("CONFIRM_TIME"): "confirmed_at", _fold("CONFIRM_IP"): "confirm_ip"}

_BUTTONDOWN_STATUS = {
    "regular": "active", "premium": "active", "gifted": "active", "trialed": "active",
    "churning": "active", "churned": "active", "past_due": "active", "paused": "active",
    "comped": "active", "unactivated": "unconfirmed", "unpaid": "active",
    "unsubscribed": "unsubscribed", "removed": "unsubscribed", "spammy": "unsubscribed",
    "blocked": "unsubscribed", "undeliverable": "bounced", "complained": "complained",
}
_LISTMONK_STATUS = {"enabled": "active", "disabled": "unsubscribed", "blocklisted": "unsubscribed"}
_TRUE = {"true", "yes", "1", "t", "y"}


@dataclass
class FormatReport:
    """What a file's columns became: shown to the editor after the import."""

    fmt: str
    file: str
    used: list[str] = field(default_factory=list)        # "First Name + Last Name → name"
    attributes: list[str] = field(default_factory=list)  # "Address → address"
    status_from: str = ""                                  # "the file: unsubscribed_members_export…"
    rows: int = 0

    def lines(self) -> list[str]:
        out = [f"{self.file}: {self.fmt} export" + (f", status from {self.status_from}" if self.status_from else "")]
        if self.used:
            out.append("  used: " + "; ".join(self.used))
        out.append("  kept as attributes: " + ("; ".join(self.attributes) if self.attributes else "none"))
        return out


@dataclass
class Consent:
    """One row's consent evidence, as the service recorded it."""

    email: str
    line: int
    optin_at: str | None = None
    optin_ip: str | None = None
    confirmed_at: str | None = None
    confirm_ip: str | None = None
    evidence: dict[str, str] = field(default_factory=dict)


def detect(header: list[str]) -> str:
    """The service whose export has this header row (``csv``: the importer's own format)."""
    folded = {_fold(h) for h in header if h.strip()}
    if folded & _MC_EMAIL and (folded & _MC_SYSTEM or folded & _MC_FIRST or folded & _MC_LAST
                               or _fold("Email Address") in folded):
        return "mailchimp"
    if folded & _MC_SYSTEM and folded & _MC_EMAIL:
        return "mailchimp"
    if "email" in folded and folded & {"activesubscription", "emaildisabled", "firstpaymentat"}:
        return "substack"
    if folded & {"email", "emailaddress"} and folded & {"subscribertype", "creationdate"}:
        return "buttondown"
    if "email" in folded and "attributes" in folded and folded & {"uuid", "status", "subscriptionstatus"}:
        return "listmonk"
    if "email" in folded:
        return "csv"
    shown = ", ".join(repr(h) for h in header if h.strip()) or "nothing"
    raise ValidationError(f"cannot tell which service exported this file (header: {shown}); "
                          "use --from mailchimp|substack|buttondown|listmonk, or a CSV with an 'email' column")


class MappedReader:
    """A ``csv.reader`` stand-in yielding rows in the importer's columns (``header``), for a
    service's export read by ``reader``. Consent evidence goes to ``on_consent``."""

    def __init__(self, reader, header: list[str], fmt: str, *, file: str, file_status: str | None = None,
                 on_consent: Callable[[Consent], None] | None = None):
        self.reader = reader
        self.fmt = fmt
        self.on_consent = on_consent
        self.file_status = file_status
        self.report = FormatReport(fmt, file)
        self._plan(header)

    @property
    def line_num(self) -> int:
        return self.reader.line_num

    # -- the header -------------------------------------------------------------------------
    def _plan(self, header: list[str]) -> None:
        folded = [_fold(h) for h in header]
        find = lambda *names: next((i for i, f in enumerate(folded) if f in names), None)  # noqa: E731
        r = self.report
        self.width = len(header)
        self.first = self.last = self.name = self.status = self.sub_status = None
        self.json_columns: list[int] = []
        self.consent: dict[int, str] = {}
        used: set[int] = set()
        if self.fmt == "mailchimp":
            self.email = next((i for i, f in enumerate(folded) if f in _MC_EMAIL), None)
            self.first = next((i for i, f in enumerate(folded) if f in _MC_FIRST), None)
            self.last = next((i for i, f in enumerate(folded) if f in _MC_LAST), None)
            if self.first is None and self.last is None:
                self.name = find("name", "fullname")  # a merge field holding the whole name
            self.consent = {i: _MC_CONSENT[f] for i, f in enumerate(folded) if f in _MC_CONSENT}
            self.unsub = find("unsubtime")
            self.clean = find("cleantime")
            expected = "'Email Address' (or its translation)"
        elif self.fmt == "substack":
            self.email, self.name = find("email"), find("name")
            self.disabled = find("emaildisabled")
            self.consent = {i: "optin_at" for i in (find("createdat"),) if i is not None}
            expected = "'email'"
        elif self.fmt == "buttondown":
            self.email = find("email", "emailaddress")
            self.name = find("name")
            self.status = find("subscribertype", "type")
            self.consent = {i: k for i, k in ((find("creationdate", "subscribedate"), "optin_at"),
                                              (find("ipaddress"), "optin_ip")) if i is not None}
            self.json_columns = [i for i in (find("metadata"),) if i is not None]
            expected = "'email' or 'email_address'"
        elif self.fmt == "listmonk":
            self.email, self.name = find("email"), find("name")
            self.status, self.sub_status = find("status"), find("subscriptionstatus")
            self.consent = {i: "optin_at" for i in (find("createdat"),) if i is not None}
            self.json_columns = [i for i in (find("attributes"),) if i is not None]
            expected = "'email'"
        else:
            raise ValueError(self.fmt)
        if self.email is None:
            shown = ", ".join(repr(h) for h in header if h.strip()) or "nothing"
            raise ValidationError(f"not a {self.fmt} export: no {expected} column (found {shown})",
                                  file=r.file, line=self.reader.line_num or 1)
        used |= {self.email}
        r.used.append(f"{header[self.email].strip()} → email")
        names = [i for i in (self.first, self.last) if i is not None]
        if names:
            r.used.append(" + ".join(header[i].strip() for i in names) + " → name")
            used |= set(names)
        if self.name is not None:
            r.used.append(f"{header[self.name].strip()} → name")
            used.add(self.name)
        for i in (self.status, self.sub_status, getattr(self, "disabled", None),
                  getattr(self, "unsub", None), getattr(self, "clean", None)):
            if i is not None:
                r.used.append(f"{header[i].strip()} → status")
                used.add(i)
        if self.consent:
            r.used.append(", ".join(header[i].strip() for i in self.consent) + " → consent record")
            used |= set(self.consent)
        if self.file_status:
            r.status_from = f"the file name ({self.file_status})"
        for i in self.json_columns:
            r.used.append(f"{header[i].strip()} (JSON) → attributes")
            used.add(i)
        self.attr_columns: list[tuple[int, str]] = []
        taken = {"email", "name", "status"}
        for i, h in enumerate(header):
            if i in used or not h.strip():
                continue
            key = attr_key(h.lstrip("\ufeff"))
            if key in taken:
                key = f"{self.fmt}_{key}"
            if key in {k for _, k in self.attr_columns}:
                continue  # a second column folding into the same name: the first one counts
            self.attr_columns.append((i, key))
            r.attributes.append(f"{h.strip()} → {key}")
        self.extra_keys: list[str] = []  # keys found inside JSON columns, in first-seen order
        self.header = ["email", "name", "status", *(k for _, k in self.attr_columns), "__json__"]

    # -- the rows ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[list[str]]:
        width = len(self.header)
        for fields in self.reader:
            if not any(f.strip() for f in fields):
                yield []  # a blank line: the importer skips it
                continue
            self.report.rows += 1
            get = lambda i: fields[i].strip() if i is not None and i < len(fields) else ""  # noqa: E731
            email = get(self.email)
            out = [email, self._name(get), self._status(get)]
            out += [get(i) for i, _ in self.attr_columns]
            extra = {}
            for i in self.json_columns:
                extra.update(_json_attributes(get(i)))
            out.append(json.dumps(extra, ensure_ascii=False) if extra else "")
            if self.on_consent is not None and self.consent:
                self._consent(email, get)
            yield out if len(out) == width else out[:width]

    def _name(self, get) -> str:
        if self.name is not None:
            return get(self.name)
        first, last = get(self.first), get(self.last)
        if first and last and _is_cjk(first + last):
            return last + first  # 姓 + 名, no space
        return " ".join(p for p in (first, last) if p)

    def _status(self, get) -> str:
        if self.fmt == "mailchimp":
            if self.file_status:
                return self.file_status
            if get(self.clean):
                return "bounced"
            return "unsubscribed" if get(self.unsub) else "active"
        if self.fmt == "substack":
            return "unsubscribed" if get(self.disabled).lower() in _TRUE else "active"
        if self.fmt == "buttondown":
            value = get(self.status).lower()
            return _BUTTONDOWN_STATUS.get(value, value) if value else "active"
        if self.fmt == "listmonk":
            sub = get(self.sub_status).lower()
            if sub in ("unconfirmed", "unsubscribed"):
                status = _LISTMONK_STATUS.get(get(self.status).lower(), "active")
                return "unsubscribed" if status == "unsubscribed" else sub
            value = get(self.status).lower()
            return _LISTMONK_STATUS.get(value, value) if value else "active"
        return ""

    def _consent(self, email: str, get) -> None:
        record = Consent(email, self.reader.line_num)
        for i, what in self.consent.items():
            value = get(i)
            if not value:
                continue
            record.evidence[what] = value
            setattr(record, what, normal_time(value) if what.endswith("_at") else value)
        if record.evidence:
            self.on_consent(record)


def _json_attributes(text: str) -> dict[str, str]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {"attributes": text}
    if not isinstance(data, dict):
        return {}
    return {attr_key(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for k, v in data.items() if attr_key(k) and v not in (None, "", [], {})}


def _is_cjk(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in text)


def normal_time(value: str) -> str:
    """A service's timestamp as ISO 8601 UTC (``2023-04-01T10:22:33Z``); naive times are taken
    as UTC (Mailchimp exports them so); anything unreadable is kept as it was."""
    text = value.strip().replace(" UTC", "")
    text = re.sub(r"([+-]\d{2})$", r"\1:00", text)  # listmonk/PostgreSQL "…+00"
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return value.strip()
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def mailchimp_member_status(name: str) -> str | None:
    """The status a Mailchimp export zip member stands for; ``None`` to skip it (its
    ``nonsubscribed`` contacts never subscribed)."""
    base = name.rsplit("/", 1)[-1].lower()
    if base.startswith("nonsubscribed") or "non_subscribed" in base or "transactional" in base:
        return None
    if base.startswith("unsubscribed"):
        return "unsubscribed"
    if base.startswith("cleaned"):
        return "bounced"
    if base.startswith("subscribed"):
        return "active"
    return ""  # another file: its columns say
