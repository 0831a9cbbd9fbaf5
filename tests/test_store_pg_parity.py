"""The PostgreSQL store does what the SQLite store does since migrations 005-009: audiences and
``--where`` conditions give the same readers on both engines, consent records are kept and
erased through the store, tokens resolve by uid, and upgrading an older PostgreSQL database
gives its readers an identity (uid, legacy tokens), folds attribute names and accepts the
'unsubscribe' event type."""

from __future__ import annotations

import json
import re

from newsletter.audience.formats import Consent
from newsletter.audience.segments import Audience, parse_condition
from newsletter.store import open_store, pg
from newsletter.store.consent import record_consent
from newsletter.tokens import make_token, verify_token

SECRET = b"k" * 32


def _fill(store) -> None:
    for name in ("daily", "weekly", "press"):
        store.create_list(name)
    people = [
        ("a@example.com", ["daily"], {"city": "Berlin", "plan": "Pro"}),
        ("b@example.com", ["weekly"], {"city": "BERLIN"}),
        ("c@example.com", ["daily", "weekly"], {"city": "Köln", "plan": ""}),
        ("d@example.com", ["weekly", "press"], {"city": "berlin", "plan": "free"}),
        ("e@example.com", ["daily"], {}),
        ("f@example.com", ["weekly"], {"city": "KÖLN"}),  # SQLite's NOCASE folds ASCII only
        ("g@example.com", ["daily"], {"city": "Berlin"}),
    ]
    for email, lists, attrs in people:
        store.add_subscriber(email, lists=lists, attributes=attrs)
    store.unsubscribe(store.get_subscriber("g@example.com").id)
    store.suppress("e@example.com", "manual")
    # c left press after joining it: an unsubscribed membership does not exclude
    store.add_subscriber("c@example.com", lists=["press"])
    store.unsubscribe(store.get_subscriber("c@example.com").id, store.get_list("press").id)


AUDIENCES = [
    Audience(("daily",)),
    Audience(("weekly", "daily")),
    Audience(("daily", "weekly"), ("press",)),
    Audience(("daily", "weekly"), (), (parse_condition("city=berlin"),)),
    Audience(("daily", "weekly"), (), (parse_condition("city!=Berlin"),)),
    Audience(("daily", "weekly"), (), (parse_condition("city=köln"),)),
    Audience(("daily", "weekly", "press"), ("press",), (parse_condition("has:plan"),
                                                        parse_condition("city=BERLIN"))),
]


def _answers(url: str) -> list:
    with open_store(url) as store:
        _fill(store)
        out = []
        for audience in AUDIENCES:
            recipients = [(r.subscriber_id, r.email, r.list_id, r.uid != "")
                          for r in store.audience_recipients(audience)]
            select = store.audience_select(audience)
            frozen = [tuple(r) for r in store.conn.execute(select.sql + " ORDER BY s.id", select.args)]
            where = list(audience.where)
            listed = [s.email for s in store.iter_subscribers(list_name="weekly", where=where)]
            out.append((recipients, frozen, store.audience_steps(audience), listed,
                        store.count_subscribers(where=where)))
        return out


def test_audiences_and_conditions_select_the_same_readers_on_both_engines(tmp_path, pg_url):
    sqlite = _answers(str(tmp_path / "s.db"))
    assert _answers(pg_url) == sqlite
    # and they are the right ones, not just the same
    first, union, excluded, berlin, not_berlin, koeln, both = sqlite
    assert [r[0] for r in first[0]] == [1, 3]
    assert [(r[0], r[2]) for r in union[0]] == [(1, 1), (2, 2), (3, 2), (4, 2), (6, 2)]
    assert [r[0] for r in excluded[0]] == [1, 2, 3, 6]
    assert [r[0] for r in berlin[0]] == [1, 2, 4]
    assert [r[0] for r in not_berlin[0]] == [3, 6]
    assert [r[0] for r in koeln[0]] == [3]
    assert both[2][-2:] == [("where has:plan", 1), ("where city=BERLIN", 1)]  # d is on press
    assert [f[:2] for f in union[1]] == [(r[0], r[1]) for r in union[0]]
    assert [f[2] for f in union[1]] == [r[2] for r in union[0]]


def test_consent_records_are_kept_exported_and_erased_through_the_store(pg_url):
    with open_store(pg_url) as store:
        store.create_list("news")
        for email in ("a@example.com", "b@example.com"):
            store.add_subscriber(email, lists=["news"])
        records = [Consent("A@Example.com", 2, optin_at="2026-01-01T00:00:00Z", optin_ip="192.0.2.1",
                           evidence={"OPTIN_TIME": "2026-01-01 00:00:00"}),
                   Consent("b@example.com", 3, confirmed_at="2026-01-02T00:00:00Z"),
                   Consent("nobody@example.com", 4, optin_ip="192.0.2.9"),
                   Consent("not an address", 5)]
        assert record_consent(store, records, "mailchimp export") == 2
        # a later import from the same source replaces the record, another source adds one
        assert record_consent(store, records[:1], "mailchimp export") == 1
        assert record_consent(store, records[:1], "substack export") == 1
        a = store.get_subscriber("a@example.com")
        consent = store.export_subscriber(a.id)["consent"]
        assert [(c["source"], c["optin_ip"], c["evidence"]) for c in consent] == [
            ("mailchimp export", "192.0.2.1", {"OPTIN_TIME": "2026-01-01 00:00:00"}),
            ("substack export", "192.0.2.1", {"OPTIN_TIME": "2026-01-01 00:00:00"})]
        assert store.erase("a@example.com")
        assert store.conn.execute("SELECT count(*) FROM consent_records").fetchone()[0] == 1


def test_tokens_name_a_reader_by_uid_and_an_erased_readers_name_nobody(pg_url):
    with open_store(pg_url) as store:
        store.create_list("news")
        ada = store.add_subscriber("ada@example.com", lists=["news"]).subscriber
        assert re.fullmatch(r"[0-9a-f]{32}", ada.uid) and not ada.legacy_tokens
        other = store.add_subscriber("bob@example.com", lists=["news"]).subscriber
        assert other.uid != ada.uid
        good = verify_token(SECRET, "preferences", make_token(SECRET, "preferences", ada.id, 0, uid=ada.uid))
        assert store.subscriber_for_token(good).email == "ada@example.com"
        legacy = verify_token(SECRET, "preferences", make_token(SECRET, "preferences", ada.id, 0, uid=""))
        assert store.subscriber_for_token(legacy) is None  # a new reader has no pre-uid links
        wrong = verify_token(SECRET, "preferences", make_token(SECRET, "preferences", ada.id, 0, uid=other.uid))
        assert store.subscriber_for_token(wrong) is None
        store.erase("ada@example.com")
        assert store.subscriber_for_token(good) is None
        assert store.add_subscriber("ada@example.com", lists=["news"]).outcome == "kept-by-consent"
        carol = store.add_subscriber("carol@example.com", lists=["news"]).subscriber
        assert carol.id == other.id + 1 and carol.uid not in (ada.uid, other.uid)  # nothing reused
        assert store.subscriber_for_token(good) is None


def test_upgrading_a_version_4_database_gives_readers_an_identity_and_folds_attribute_names(pg_empty_url):
    import psycopg

    with psycopg.connect(pg_empty_url, autocommit=True) as raw:
        raw.execute(pg._VERSION_TABLE)
        for version, name, sql in pg.migrations():
            if version <= 4:
                raw.execute(sql)
                raw.execute("INSERT INTO schema_migrations VALUES (%s, %s, 'then')", (version, name))
        for i, attrs in enumerate([{"City": "Berlin", "city": "", " Home  Town ": "X"},
                                   {"city": "Köln", "CITY": "Bonn"}, {"plain": "y"}], 1):
            raw.execute("INSERT INTO subscribers (email, email_key, attributes, status, created_at) "
                        "VALUES (%s, %s, %s, 'active', '2025-01-01T00:00:00Z')",
                        (f"old{i}@example.com", f"old{i}@example.com", json.dumps(attrs)))
        raw.execute("INSERT INTO lists (name, created_at) VALUES ('daily', 'then')")
        raw.execute("INSERT INTO sends (slug, list_name, list_id, subject, transport, created_at) "
                    "VALUES ('2025-01-01', 'daily', 1, 'S', 'outbox', 'then')")
        raw.execute("INSERT INTO deliveries (send_id, subscriber_id, email, state, updated_at) "
                    "VALUES (1, 1, 'old1@example.com', 'sent', 'then')")
    with open_store(pg_empty_url) as store:
        assert pg.schema_version(store.conn) == pg.latest_version()
        old = [store.get_subscriber(f"old{i}@example.com") for i in (1, 2, 3)]
        assert all(s.legacy_tokens and re.fullmatch(r"[0-9a-f]{32}", s.uid) for s in old)
        assert len({s.uid for s in old}) == 3
        # a non-empty value wins, then the key already in normal form
        assert [s.attributes for s in old] == [{"city": "Berlin", "home_town": "X"},
                                               {"city": "Köln"}, {"plain": "y"}]
        assert not store.add_subscriber("new@example.com").subscriber.legacy_tokens
        send = store.conn.execute("SELECT s.seq, s.audience, e.slug, e.reconstruct FROM sends s "
                                  "JOIN editions e ON e.id = s.edition_id").fetchone()
        assert (send[0], json.loads(send[1])["list_ids"], send[2], send[3]) == (1, [1], "2025-01-01", "pending")
        assert store.conn.execute("SELECT list_id FROM deliveries").fetchone()[0] == 1
        store.conn.execute("INSERT INTO events (message_id, type, subtype, occurred_at, received_at, payload) "
                           "VALUES ('m1', 'unsubscribe', 'mailto', 'now', 'now', '{}')")
        assert store.imports_running("daily") == []


RICH = ("email,Name,status,City, Home  Town ,PLAN\n"
        "b@example.com,B,,Oslo,,\n"
        "A@example.com,A,,,x,\n"
        "a@EXAMPLE.com,,,Rome,,gold\n"
        "f@example.com,'=1+2,,'-3,'@SUM(A1),+x\n"
        "g@example.com,=HYPERLINK(\"http://x\"),,,,\n"
        "h@example.com," + "N" * 300 + ",,,,\n"
        "i@example.com,I\x07ll,unconfirmed,,,\n"
        "c@bücher.de,C,unsubscribed,,,\n"
        "d@example.com,D,bounced,,,\n"
        "b@example.com,,unsubscribed,,,\n"
        "not-valid,X,,,,\n")
AGAIN = ("email,name,status,city,plan\n"
         "b@example.com,B2,,Bergen,\n"          # opted out: kept by consent
         "a@example.com,A2,,,silver\n"          # updated, its spelling stays the stored one
         "A@EXAMPLE.COM,A3,,Milan,\n"           # … the last row's values
         "i@example.com,,unsubscribed,,\n"      # an opt-out in the file is applied
         "new@example.com,New,,Turin,\n"
         "New@Example.com,,,,\n")


def _full_state(store) -> tuple:
    # in id order, without the ids themselves: SQLite's upsert burns an AUTOINCREMENT number on
    # every duplicate it merges on the general path, PostgreSQL numbers the new rows without gaps
    subscribers = [(s.email, s.name, s.attributes, s.status.value, s.source,
                    s.confirmed_at is not None, s.unsubscribed_at is not None,
                    tuple((m.list_name, m.status.value) for m in store.memberships(s.id)))
                   for s in store.iter_subscribers()]
    suppressed = [store.is_suppressed(e) for e in ("d@example.com", "b@example.com", "x@example.com")]
    return subscribers, [r.email for r in store.recipients("news")], suppressed


def _import_both_ways(url: str, tmp_path, suppression: bool) -> list:
    from newsletter.audience.importer import import_csv

    rich, again = tmp_path / "rich.csv", tmp_path / "again.csv"
    rich.write_text(RICH, encoding="utf-8")
    again.write_text(AGAIN, encoding="utf-8")
    with open_store(url) as store:
        store.create_list("news")
        if suppression:  # something on record: the general path instead of the bulk one
            store.suppress("x@example.com", "manual")
        first = import_csv(store, rich, list_name="news").as_dict()
        after_first = _full_state(store)
        second = import_csv(store, again, list_name="news").as_dict()
        return [first, after_first, second, _full_state(store)]


def test_imports_keep_the_same_rows_formulas_names_and_attribute_keys_on_both_engines(tmp_path, pg_url):
    for suppression in (False, True):
        sqlite_url = str(tmp_path / f"s{int(suppression)}.db")
        sqlite = _import_both_ways(sqlite_url, tmp_path, suppression)
        postgres = _import_both_ways(pg_url, tmp_path, suppression)
        assert postgres == sqlite, f"suppression={suppression}"
        with open_store(pg_url) as store:  # empty it for the next round
            store.conn.execute("TRUNCATE subscribers, lists, memberships, suppressions, "
                               "consent_records RESTART IDENTITY CASCADE")
    first, (subscribers, _, _), second, (final, recipients, suppressed) = sqlite
    by_email = {s[0]: s for s in subscribers}
    # duplicates: the last row kept whole (spelling, name, attributes), an opt-out wins
    assert by_email["a@EXAMPLE.com"][1:3] == ("", {"city": "Rome", "plan": "gold"})
    assert by_email["b@example.com"][3] == "unsubscribed"
    assert by_email["f@example.com"][1:3] == ("=1+2", {"city": "-3", "home_town": "@SUM(A1)", "plan": "+x"})
    assert len(by_email["h@example.com"][1]) == 200
    assert by_email["i@example.com"][1] == "I ll"
    final_by_email = {s[0]: s for s in final}
    assert final_by_email["a@EXAMPLE.com"][1] == "A3"
    # the last row whole (not its predecessor's "silver"), over what was stored
    assert final_by_email["a@EXAMPLE.com"][2] == {"city": "Milan", "plan": "gold"}
    assert final_by_email["b@example.com"][1] == "" and second["kept_by_consent"] == 1
    assert final_by_email["i@example.com"][3] == "unsubscribed"
    assert "New@Example.com" in final_by_email and suppressed[0]
