"""The store on real databases, SQLite files and a real PostgreSQL server (the ``store`` fixture
runs each test on both): migrations, lists, consent rules, recipients, erasure, the readers'
side. PostgreSQL-only behaviour (its migrations, connection errors) is in test_store_pg.py."""

from __future__ import annotations

import sqlite3

import pytest

from newsletter.config import load_config
from newsletter.errors import StoreError, ValidationError
from newsletter.store import db, open_store
from newsletter.store.base import Store
from newsletter.store.models import MembershipStatus, OptIn, SubscriberStatus
from newsletter.store.sqlite import SqliteStore


@pytest.fixture
def store(db_url):
    with open_store(db_url) as s:
        s.create_list("news", description="Daily", public=True)
        s.create_list("weekly", double_opt_in=True)
        yield s


# -- opening and migrating --------------------------------------------------------------------
def test_open_store_follows_config_env_and_sqlite_urls(project, monkeypatch, tmp_path):
    with open_store(load_config()) as s:
        assert isinstance(s, Store)
        s.create_list("x")
    assert (project / "subscribers" / "subscribers.db").is_file()
    other = tmp_path / "elsewhere" / "o.db"
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{other}")
    with open_store(load_config()) as s:
        assert s.lists() == []
    assert other.is_file()
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", "mysql://db/news")
    with pytest.raises(StoreError, match="unsupported database URL scheme 'mysql'"):
        open_store(load_config())


def test_fresh_database_has_every_table_and_is_current(tmp_path):
    with open_store(str(tmp_path / "s.db")) as s:
        tables = {r[0] for r in s.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"subscribers", "lists", "memberships", "suppressions"} <= tables
        assert db.schema_version(s.conn) == db.latest_version()


def test_upgrade_keeps_data_written_by_an_older_version(tmp_path):
    path = tmp_path / "s.db"
    raw = sqlite3.connect(path)
    raw.executescript(db.migrations()[0][2])
    raw.execute("PRAGMA user_version = 1")
    raw.execute("INSERT INTO subscribers (email, email_key, status, created_at) "
                "VALUES ('Old@Example.com', 'old@example.com', 'active', '2025-01-01T00:00:00Z')")
    raw.commit()
    raw.close()
    with open_store(str(path)) as s:
        assert db.schema_version(s.conn) == db.latest_version()
        assert s.get_subscriber("old@example.com").email == "Old@Example.com"


def test_newer_database_is_a_clear_error(tmp_path):
    path = tmp_path / "s.db"
    open_store(str(path)).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {db.latest_version() + 5}")
    raw.close()
    with pytest.raises(StoreError, match="newer than this program"):
        open_store(str(path))


# -- lists --------------------------------------------------------------------------------------
def test_lists_create_get_count_delete(store):
    news = store.get_list("news")
    assert (news.description, news.optin, news.public) == ("Daily", OptIn.SINGLE, True)
    assert store.get_list_by_id(news.id) == news
    assert store.get_list("weekly").optin == OptIn.DOUBLE
    assert [l.name for l in store.lists(public_only=True)] == ["news"]
    with pytest.raises(ValidationError, match="already exists"):
        store.create_list("news")
    with pytest.raises(ValidationError, match="list name"):
        store.create_list("bad name!")
    store.add_subscriber("a@example.com", lists=["news"])
    assert store.list_counts()["news"] == {"unconfirmed": 0, "active": 1, "unsubscribed": 0}
    store.delete_list("news")
    assert store.get_list("news") is None
    assert store.memberships(store.get_subscriber("a@example.com").id) == []
    with pytest.raises(ValidationError, match="no such list"):
        store.delete_list("news")


# -- adding and consent ------------------------------------------------------------------------
def test_add_then_update_then_unchanged(store):
    first = store.add_subscriber(" Ada@Example.com ", name="Ada\r\nL", lists=["news"],
                                 attributes={"city": "Paris"})
    assert first.outcome == "added"
    assert first.notes == ["stripped control characters from name"]
    assert (first.subscriber.email, first.subscriber.name) == ("Ada@Example.com", "Ada L")
    again = store.add_subscriber("ada@EXAMPLE.com", lists=["news"], attributes={"lang": "en"})
    assert again.outcome == "updated"
    assert again.subscriber.attributes == {"city": "Paris", "lang": "en"}
    assert again.subscriber.email == "Ada@Example.com"  # kept as first entered
    assert store.add_subscriber("ADA@example.com", lists=["news"]).outcome == "unchanged"
    assert store.count_subscribers() == 1
    with pytest.raises(ValidationError, match="no such list"):
        store.add_subscriber("b@example.com", lists=["nope"])


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained"])
def test_opted_out_addresses_are_kept_by_consent(store, status):
    store.add_subscriber("a@example.com", lists=["news"])
    store.set_status("a@example.com", SubscriberStatus(status))
    result = store.add_subscriber("A@example.com", lists=["news", "weekly"], name="New")
    assert result.outcome == "kept-by-consent"
    kept = store.get_subscriber("a@example.com")
    assert kept.status.value == status and kept.name == ""
    resubscribed = store.add_subscriber("a@example.com", lists=["news"], resubscribe=True)
    if status == "unsubscribed":
        assert resubscribed.outcome == "updated"
        assert store.get_subscriber("a@example.com").status == SubscriberStatus.ACTIVE
    else:  # bounced and complained addresses are suppressed: never brought back
        assert resubscribed.outcome == "kept-by-consent"
        assert store.is_suppressed("a@example.com")


def test_leaving_one_list_is_respected_and_resubscribe_reverses_it(store):
    sub = store.add_subscriber("a@example.com", lists=["news", "weekly"]).subscriber
    assert store.unsubscribe(sub.id, store.get_list("news").id)
    assert not store.unsubscribe(sub.id, store.get_list("news").id)  # idempotent
    assert store.get_subscriber_by_id(sub.id).status == SubscriberStatus.ACTIVE
    result = store.add_subscriber("a@example.com", lists=["news"])
    assert result.outcome == "kept-by-consent"
    assert [r.subscriber_id for r in store.recipients("news")] == []
    assert store.add_subscriber("a@example.com", lists=["news"], resubscribe=True).outcome == "updated"
    assert [r.subscriber_id for r in store.recipients("news")] == [sub.id]


def test_suppressed_address_is_never_added(store):
    store.suppress("Spam.Trap@Example.com", "manual")
    store.suppress("spam.trap@example.com", "again")  # idempotent
    assert store.is_suppressed("SPAM.TRAP@example.com")
    result = store.add_subscriber("spam.trap@example.com", lists=["news"], resubscribe=True)
    assert result.outcome == "kept-by-consent" and result.subscriber is None
    assert store.count_subscribers() == 0


# -- recipients ---------------------------------------------------------------------------------
def test_recipients_are_active_unsuppressed_members_in_id_order_with_ascii_domains(store):
    ids = [store.add_subscriber(e, lists=["news"], name=n, attributes={"k": n}).subscriber.id
           for e, n in [("a@example.com", "A"), ("b@bücher.de", "B"), ("c@example.com", "C"),
                        ("d@example.com", "D"), ("e@example.com", "E")]]
    store.add_subscriber("f@example.com", lists=["weekly"])
    store.unsubscribe(ids[2])
    store.suppress("d@example.com", "manual")
    store.set_status("e@example.com", SubscriberStatus.BOUNCED, reason="hard bounce")
    got = list(store.recipients("news"))
    assert [r.email for r in got] == ["a@example.com", "b@xn--bcher-kva.de"]
    assert [r.subscriber_id for r in got] == ids[:2]
    assert got[1].name == "B" and got[1].attributes == {"k": "B"}
    with pytest.raises(ValidationError):
        list(store.recipients("missing"))


def test_iter_and_count_filter_by_list_and_effective_status(store):
    for e in ("a@example.com", "b@example.com", "c@example.com"):
        store.add_subscriber(e, lists=["news"])
    b = store.get_subscriber("b@example.com")
    store.unsubscribe(b.id, store.get_list("news").id)
    assert store.count_subscribers(list_name="news") == 3
    assert store.count_subscribers(list_name="news", status=SubscriberStatus.ACTIVE) == 2
    unsub = list(store.iter_subscribers(list_name="news", status=SubscriberStatus.UNSUBSCRIBED))
    assert [s.email for s in unsub] == ["b@example.com"]
    assert store.count_subscribers(status=SubscriberStatus.ACTIVE) == 3  # globally still active
    assert [s.id for s in store.iter_subscribers()] == sorted(s.id for s in store.iter_subscribers())


# -- status changes and erasure -----------------------------------------------------------------
def test_set_status_bounced_and_complained_suppress(store):
    store.add_subscriber("a@example.com", lists=["news"])
    assert store.set_status("a@example.com", SubscriberStatus.COMPLAINED, reason="abuse report")
    assert not store.set_status("a@example.com", SubscriberStatus.COMPLAINED)
    assert store.is_suppressed("a@example.com")
    assert store.get_subscriber("a@example.com").unsubscribed_at is not None
    assert not store.set_status("nobody@example.com", SubscriberStatus.BOUNCED)
    assert store.is_suppressed("nobody@example.com")  # a bounce is remembered even so


def test_erase_removes_personal_data_everywhere_and_blocks_reimport(store, request):
    sub = store.add_subscriber("Erase.Me@Bücher.de", name="Zebulon", lists=["news"]).subscriber
    other = store.add_subscriber("keep@example.com", lists=["news"]).subscriber
    conn = store.conn
    conn.execute("INSERT INTO sends (slug, list_name, subject, transport, created_at) "
                 "VALUES ('2025-10-14', 'news', 'S', 'outbox', 'now')")
    for sid, email in ((sub.id, "Erase.Me@xn--bcher-kva.de"), (other.id, "keep@example.com")):
        conn.execute("INSERT INTO deliveries (send_id, subscriber_id, email, last_error, "
                     "updated_at) VALUES (1, ?, ?, ?, 'now')", (sid, email, f"550 {email} unknown"))
    conn.execute("INSERT INTO dead_letters (message_id, reason, body, received_at) VALUES "
                 "('d1', 'unparsable', '{\"to\": \"ERASE.ME@xn--bcher-kva.de\"}', 'now')")
    conn.execute("INSERT INTO events (message_id, type, email, occurred_at, received_at, payload) "
                 "VALUES ('m1', 'bounce', 'erase.me@xn--bcher-kva.de', 'now', 'now', "
                 "'{\"mail\": \"erase.me@xn--bcher-kva.de\"}')")
    assert store.erase("erase.me@BÜCHER.de")
    assert store.get_subscriber("erase.me@bücher.de") is None
    assert conn.execute("SELECT count(*) FROM memberships WHERE subscriber_id = ?",
                        (sub.id,)).fetchone()[0] == 0
    emails = [r[0] for r in conn.execute("SELECT email FROM deliveries ORDER BY id")]
    assert emails == [None, "keep@example.com"]
    event = conn.execute("SELECT email, payload FROM events").fetchone()
    assert event["email"] is None and "erase.me" not in event["payload"]
    row = conn.execute("SELECT email_hash, email, reason FROM suppressions").fetchone()
    assert row["email"] is None and len(row["email_hash"]) == 64
    dump = _dump(store, request).lower()
    assert "erase.me" not in dump and "zebulon" not in dump
    assert store.add_subscriber("erase.me@bücher.de", lists=["news"]).outcome == "kept-by-consent"
    assert not store.erase("never.seen@example.com")


# -- the readers' side --------------------------------------------------------------------------
def test_subscribe_single_and_double_opt_in_then_confirm(store):
    news, weekly = store.get_list("news"), store.get_list("weekly")
    result = store.subscribe("reader@example.com", name="Rea", list_ids=[news.id, weekly.id])
    assert [l.name for l in result.activated] == ["news"]
    assert [l.name for l in result.pending] == ["weekly"]
    assert not result.refused and result.subscriber.status == SubscriberStatus.ACTIVE
    sub_id = result.subscriber.id
    assert store.confirm(sub_id, weekly.id)
    assert not store.confirm(sub_id, weekly.id)  # idempotent
    statuses = {m.list_name: m.status for m in store.memberships(sub_id)}
    assert statuses == {"news": MembershipStatus.ACTIVE, "weekly": MembershipStatus.ACTIVE}
    again = store.subscribe("READER@example.com", list_ids=[news.id, weekly.id])
    assert (again.activated, again.pending, again.refused) == ([], [], False)  # no mail again


def test_double_opt_in_only_sign_up_stays_unconfirmed_until_confirmed(store):
    weekly = store.get_list("weekly")
    result = store.subscribe("r@example.com", list_ids=[weekly.id])
    assert result.subscriber.status == SubscriberStatus.UNCONFIRMED
    assert list(store.recipients("weekly")) == []
    assert store.confirm(result.subscriber.id)
    assert [r.email for r in store.recipients("weekly")] == ["r@example.com"]


def test_sign_up_after_unsubscribing_needs_confirmation_and_refuses_complaints(store):
    news = store.get_list("news")
    sub = store.add_subscriber("a@example.com", lists=["news"]).subscriber
    store.unsubscribe(sub.id)
    again = store.subscribe("a@example.com", list_ids=[news.id])
    assert again.activated == [] and [l.name for l in again.pending] == ["news"]
    assert list(store.recipients("news")) == []
    assert store.confirm(sub.id)
    assert [r.subscriber_id for r in store.recipients("news")] == [sub.id]
    store.set_status("a@example.com", SubscriberStatus.COMPLAINED)
    assert store.subscribe("a@example.com", list_ids=[news.id]).refused
    assert not store.confirm(sub.id)
    assert store.subscribe("x@example.com", list_ids=[news.id]).refused is False
    store.suppress("y@example.com", "manual")
    assert store.subscribe("y@example.com", list_ids=[news.id]).refused


def test_update_subscriber_sets_exactly_the_active_lists(store):
    news, weekly = store.get_list("news"), store.get_list("weekly")
    sub = store.add_subscriber("a@example.com", lists=["news"]).subscriber
    updated = store.update_subscriber(sub.id, name="New\nName", list_ids=[weekly.id])
    assert updated.name == "New Name"
    statuses = {m.list_name: m.status for m in store.memberships(sub.id)}
    assert statuses == {"news": MembershipStatus.UNSUBSCRIBED, "weekly": MembershipStatus.ACTIVE}
    assert store.update_subscriber(sub.id, list_ids=[]).status == SubscriberStatus.UNSUBSCRIBED
    assert store.update_subscriber(sub.id, list_ids=[news.id]).status == SubscriberStatus.ACTIVE
    with pytest.raises(ValidationError):
        store.update_subscriber(sub.id, list_ids=[9999])
    store.set_status("a@example.com", SubscriberStatus.COMPLAINED)
    with pytest.raises(ValidationError, match="cannot be subscribed"):
        store.update_subscriber(sub.id, list_ids=[news.id])


def test_export_subscriber_is_json_ready_and_complete(store):
    import json

    sub = store.add_subscriber("a@example.com", name="A", lists=["news"],
                               attributes={"city": "Oslo"}).subscriber
    data = store.export_subscriber(sub.id)
    json.dumps(data)
    assert data["email"] == "a@example.com" and data["attributes"] == {"city": "Oslo"}
    assert data["lists"][0]["list"] == "news" and data["suppressed"] is None
    assert data["deliveries"] == [] and data["events"] == []


def _dump(store, request) -> str:
    """Everything in the database as SQL text (sqlite3's iterdump; pg_dump for PostgreSQL)."""
    if isinstance(store, SqliteStore) and store.path is not None:
        return "\n".join(store.conn.iterdump())
    import subprocess

    server = request.getfixturevalue("pg_server")
    return subprocess.run([str(server.bin / "pg_dump"), "--data-only", "-d", store.url],
                          capture_output=True, text=True, check=True).stdout


def test_store_is_a_sqlitestore_with_wal_and_foreign_keys(tmp_path):
    store = open_store(str(tmp_path / "s.db"))
    assert type(store) is SqliteStore
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    store.close()
