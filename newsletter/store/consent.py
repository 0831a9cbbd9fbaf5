"""Consent records: the evidence of a subscriber's opt-in that an import brought along
(``consent_records``, migration 008). Erasing the subscriber deletes them (foreign key)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from newsletter.audience.addresses import fast_key, parse_address
from newsletter.errors import ValidationError

if TYPE_CHECKING:
    from newsletter.audience.formats import Consent
    from newsletter.store.sqlite import SqliteStore

_BATCH = 1000


def record_consent(store: "SqliteStore", records: Iterable["Consent"], source: str) -> int:
    """Keep each record for the subscriber its address names (one per subscriber and source;
    a later import from the same source replaces it). Returns how many were kept; addresses
    that were rejected or are not stored are left out."""
    from newsletter.store.db import utc_now

    now = utc_now()
    merged: dict[str, dict] = {}  # an address on several rows (a zip's files): later values win
    for r in records:
        key = fast_key(r.email)
        if key is None:
            try:
                key = parse_address(r.email).key
            except ValidationError:
                continue
        entry = merged.setdefault(key, {"evidence": {}})
        for name in ("optin_at", "optin_ip", "confirmed_at", "confirm_ip"):
            if getattr(r, name):
                entry[name] = _text(getattr(r, name))
        entry["evidence"].update((_text(k), _text(v)) for k, v in r.evidence.items())
    source = _text(source)  # it names the file, whose name may not be UTF-8
    rows = [(key, source, e.get("optin_at"), e.get("optin_ip"), e.get("confirmed_at"), e.get("confirm_ip"),
             json.dumps(e["evidence"], ensure_ascii=False, sort_keys=True), now) for key, e in merged.items()]
    kept = 0
    with store.transaction() as conn:
        for start in range(0, len(rows), _BATCH):
            cur = conn.executemany(
                "INSERT INTO consent_records (subscriber_id, source, optin_at, optin_ip, confirmed_at, "
                "confirm_ip, evidence, recorded_at) "
                "SELECT s.id, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM subscribers s WHERE s.email_key = ?1 "
                "ON CONFLICT (subscriber_id, source) DO UPDATE SET optin_at = excluded.optin_at, "
                "optin_ip = excluded.optin_ip, confirmed_at = excluded.confirmed_at, "
                "confirm_ip = excluded.confirm_ip, evidence = excluded.evidence, "
                "recorded_at = excluded.recorded_at", rows[start:start + _BATCH])
            kept += cur.rowcount
    return kept


def _text(value):
    """A file's value as the store keeps imported text: control characters (a NUL among them,
    which PostgreSQL's text cannot hold) stripped, a lone surrogate U+FFFD — the same on both
    engines."""
    from newsletter.audience.addresses import clean_text

    return clean_text(value)[0] if isinstance(value, str) else value


def consent_records(conn, subscriber_id: int) -> list[dict]:
    """A subscriber's consent records, oldest first, JSON-ready."""
    rows = conn.execute("SELECT source, optin_at, optin_ip, confirmed_at, confirm_ip, evidence, recorded_at "
                        "FROM consent_records WHERE subscriber_id = ? ORDER BY id", (subscriber_id,))
    return [{"source": r[0], "optin_at": r[1], "optin_ip": r[2], "confirmed_at": r[3],
             "confirm_ip": r[4], "evidence": json.loads(r[5]), "recorded_at": r[6]} for r in rows]
