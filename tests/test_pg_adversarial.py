"""Adversarial input and database failures, on BOTH engines (the ``backend`` fixture: SQLite, and
a real PostgreSQL 15 server): what PostgreSQL cannot store (U+0000 in text or jsonb, a lone
surrogate) and SQLite could, numbers out of range, odd ``--where`` values, a role that may not
write, a read-only transaction, and a server that dies mid-command.

The standard each test holds the product to: the same input gives the same result on both
engines; bad input is one line naming the field (or file:line) and what was expected, exit 2,
no traceback; the web answers 400 for bad input and 503 + Retry-After for a database refusal,
never a 500, never "done" unless committed; nothing is half-written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import SAMPLES
from newsletter.config import load_config, load_secret
from newsletter.errors import StoreError, UnstorableError, ValidationError
from newsletter.store import open_store
from newsletter.tokens import make_token

SURROGATE_ARG = b"x\xffy"  # bytes a Latin-1 terminal sends: Python's argv holds U+DCFF for \xff


def run(project: Path, *args, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """The CLI in a subprocess (arguments may be bytes: argv is bytes to the OS)."""
    return subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=project,
                          capture_output=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1", **env))


def one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit 2, no traceback, the error on one line (the last: a send prints its plan first)."""
    err = result.stderr.decode("utf-8", "backslashreplace")
    assert result.returncode == 2, (result.returncode, err, result.stdout)
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    if not any(a in ("send", b"send") for a in result.args):
        assert len(lines) == 1, err
    for text in expected:
        assert text in lines[-1], lines[-1]
    return lines[-1]


# -- editor input on the command line ------------------------------------------------------------

@pytest.mark.parametrize("args, field", [
    ((b"subscribers", b"add", b"a@example.com", b"-l", b"news", b"--name", SURROGATE_ARG), "the name"),
    ((b"subscribers", b"add", b"a@example.com", b"-l", b"news", b"--attr", b"city=" + SURROGATE_ARG),
     "attribute 'city'"),
    ((b"subscribers", b"add", b"a@example.com", b"-l", b"news", b"--attr", SURROGATE_ARG + b"=v"),
     "the attribute name"),
    ((b"lists", b"create", b"other", b"--description", SURROGATE_ARG), "the description"),
    ((b"subscribers", b"ls", b"--where", b"city=" + SURROGATE_ARG), "--where"),
    ((b"subscribers", b"count", b"--where", SURROGATE_ARG + b"=1"), "--where"),
    ((b"subscribers", b"ls", b"-l", SURROGATE_ARG), "no such list"),
    ((b"sends", b"show", SURROGATE_ARG), "no send for edition"),
    ((b"stats", SURROGATE_ARG), "no send for edition"),
    ((b"sends", b"show", b"x#99999999999999999999"), "no send for edition"),
    ((b"stats", b"x#99999999999999999999"), "no send for edition"),
])
def test_text_that_is_not_utf8_on_the_command_line_is_one_line_naming_the_field(backend_project, args, field):
    with open_store(load_config()) as store:
        store.create_list("news")
    line = one_line_error(run(backend_project, *args), field)
    if field not in ("no such list", "no send for edition"):
        assert "U+DCFF" in line and "not text" in line
    with open_store(load_config()) as store:  # nothing written
        assert store.get_subscriber("a@example.com") is None
        assert [l.name for l in store.lists()] == ["news"]


def test_where_values_an_attribute_cannot_hold_are_refused_the_same_on_both_engines(db_url):
    from newsletter.audience.segments import parse_condition

    for bad in ("city=Spring\x00field", "ci\x00ty=x", "city!=\ud800", "has:ci\x01ty", "ci\x7fty=x"):
        with pytest.raises(ValidationError, match="--where"):
            parse_condition(bad)
    with open_store(db_url) as store:
        store.create_list("news")
        store.add_subscriber("a@example.com", lists=["news"], attributes={"n": "99999999999999999999999"})
        # numbers past bigint, odd but storable keys: compared as text, on both engines alike
        for where, found in (("n=99999999999999999999999", 1), ("n!=99999999999999999999999", 0),
                             ("n=-9223372036854775809", 0), ("a.b=1", 0), ("$=1", 0), ("a[0]=1", 0),
                             ("ключ=1", 0), ("has:n", 1), ("n=", 0), ("it's=1", 0), ("n=%", 0),
                             ("n!=_", 1), ("n=99999999999999999999999 ", 1), ("N=99999999999999999999999", 1)):
            assert store.count_subscribers(where=[parse_condition(where)]) == found, where
            assert len(list(store.iter_subscribers(list_name="news", where=[parse_condition(where)]))) == found


# -- the store's API: reader input neutralised, editor input refused, the rest one line ------------

def test_reader_text_with_nul_or_a_lone_surrogate_is_neutralised_identically(db_url):
    with open_store(db_url) as store:
        news = store.create_list("news", description="Daily\x00news")
        assert news.description == "Daily news"  # a NUL is a control character: stripped
        result = store.subscribe("reader@example.com", name="Ada\x00Lovelace", list_ids=[news.id])
        assert result.subscriber.name == "Ada Lovelace"
        result = store.subscribe("other@example.com", name="B\ud800b", list_ids=[news.id])
        assert result.subscriber.name == "B\ufffdb"
        updated = store.update_subscriber(result.subscriber.id, name="C\x00\udcffc")
        assert updated.name == "C \ufffdc"
        added = store.add_subscriber("cli@example.com", name="N\x00ame", lists=["news"],
                                     attributes={"ci\x00ty": "Spring\x00field"})
        assert added.subscriber.name == "N ame" and added.subscriber.attributes == {"ci_ty": "Spring field"}
        assert added.notes  # says what was stripped
        for email in ("a\x00b@example.com", "a\ud800@example.com", "\x00", "x" * 300 + "@example.com"):
            with pytest.raises(ValidationError):
                store.subscribe(email, list_ids=[news.id])
            with pytest.raises(ValidationError):
                store.add_subscriber(email, lists=["news"])
            assert store.get_subscriber(email) is None and not store.is_suppressed(email)
        with pytest.raises(ValidationError, match="the name"):
            store.add_subscriber("x@example.com", name="\udcff", lists=["news"])
        with pytest.raises(ValidationError, match="the name is 201 characters"):
            store.add_subscriber("x@example.com", name="n" * 201, lists=["news"])
        assert store.get_list("news\x00") is None and store.get_list("n\ud800") is None
        with pytest.raises(ValidationError, match="no such list"):
            store.require_list("news\x00")
        assert store.count_subscribers() == 3


def test_a_value_the_driver_refuses_is_one_unstorable_line_and_rolls_back(db_url):
    """Past every check, in the store itself: a lone surrogate (both drivers refuse it), an int
    past 64 bits (sqlite3 refuses it; PostgreSQL's integer column too) — UnstorableError (a
    ValidationError and a StoreError), nothing of the transaction kept."""
    with open_store(db_url) as store:
        for column, bad in (("description", "l\ud800"), ("id", 2**70), ("id", -2**64)):
            with pytest.raises(UnstorableError) as caught:
                with store.transaction() as conn:
                    conn.execute("INSERT INTO lists (name, description, optin, public, created_at) "
                                 "VALUES ('first', '', 'single', 0 = 1, '2026-01-01')")
                    conn.execute(f"INSERT INTO lists (name, {column}, optin, public, created_at) "
                                 "VALUES ('second', ?, 'single', 0 = 1, '2026-01-01')", (bad,))
            assert isinstance(caught.value, ValidationError) and isinstance(caught.value, StoreError)
            assert "\n" not in str(caught.value) and "refused a value" in str(caught.value)
            assert store.lists() == []


def test_an_import_with_nul_past_the_sniffed_start_is_cleaned_the_same_on_both_engines(backend_project):
    """A NUL in the first bytes makes the file "not a text file" (exit 2, nothing written); one
    further down, in names, attributes or a service's consent evidence, is stripped like any
    control character — on PostgreSQL too, where it used to refuse the whole import."""
    with open_store(load_config()) as store:
        store.create_list("news")
    (backend_project / "head.csv").write_bytes(b"email,na\x00me\nh@example.com,H\n")
    one_line_error(run(backend_project, "subscribers", "import", "head.csv", "-l", "news"), "head.csv", "not a text file")
    rows = "".join(f"mc{i}@example.com,F{i},L,2024-01-01 10:00:00,192.0.2.1,2024-01-01 10:05:00,192.0.2.1,n\n"
                   for i in range(3000))
    (backend_project / "mc.csv").write_text(
        "Email Address,First Name,Last Name,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,NOTES\n" + rows
        + "z@example.com,Ze\x00d,L,2024-01-01 10:00:00,192.0\x00.2.1,2024-01-01 10:05:00,19\x00,no\x00te\n"
        + "bad\x00@example.com,B,L,,,,,\n", encoding="utf-8")
    done = run(backend_project, "subscribers", "import", "mc.csv", "-l", "news", "--from", "mailchimp")
    assert done.returncode == 1, done.stderr.decode()  # one row rejected, named by its line
    assert b"mc.csv:3003: rejected" in done.stderr and b"Traceback" not in done.stderr
    with open_store(load_config()) as store:
        assert store.count_subscribers(list_name="news") == 3001
        found = store.get_subscriber("z@example.com")
        assert found.name == "Ze d L" and found.attributes == {"notes": "no te"}
        consent = store.export_subscriber(found.id)["consent"]
    assert consent[0]["optin_ip"] == "192.0 .2.1" and consent[0]["confirm_ip"] == "19"
    assert "\x00" not in json.dumps(consent, ensure_ascii=False)
    # the consent record names its file: one whose name is not UTF-8 is named with U+FFFD
    os.rename(backend_project / "mc.csv", os.fsencode(backend_project) + b"/m\xff.csv")
    again = run(backend_project, b"subscribers", b"import", b"m\xff.csv", b"-l", b"news", b"--from", b"mailchimp")
    assert again.returncode == 1 and b"Traceback" not in again.stderr, again.stderr.decode(errors="replace")
    with open_store(load_config()) as store:
        sources = [c["source"] for c in store.export_subscriber(found.id)["consent"]]
    assert sources == ["mailchimp export (mc.csv)", "mailchimp export (m\ufffd.csv)"]


@pytest.mark.parametrize("table, insert, named", [
    ("subscribers", "INSERT INTO subscribers (email, email_key, name, attributes, status, source, created_at) "
     "VALUES ('l@example.com', 'l@example.com', 'Le' || char(0) || 'gacy', '{}', 'active', 'cli', '2024-01-01')",
     "subscribers row id 1: name holds a NUL character"),
    ("subscribers", "INSERT INTO subscribers (email, email_key, name, attributes, status, source, created_at) "
     "VALUES ('l@example.com', 'l@example.com', 'L', '{\"k\": \"v\\u0000\"}', 'active', 'cli', '2024-01-01')",
     "subscribers row id 1: attributes holds a NUL character"),
    ("dead_letters", "INSERT INTO dead_letters (message_id, reason, body, received_at) "
     "VALUES ('m1', 'r', 'b' || char(0), '2024-01-01')", "dead_letters row id 1: body holds a NUL character"),
])
def test_db_copy_of_a_sqlite_project_holding_a_nul_names_the_row_and_copies_nothing(
        tmp_path, pg_url, table, insert, named):
    """SQLite kept NULs an older version let through; PostgreSQL cannot: `db copy` says which row
    and column, exit 2, and leaves the destination empty."""
    import sqlite3

    from newsletter.store.connection import connect

    src = tmp_path / "old.db"
    connect(str(src)).close()  # created and migrated
    with sqlite3.connect(src) as conn:
        conn.execute(insert)
    one_line_error(run(tmp_path, "db", "copy", str(src), pg_url), named, "nothing was copied")
    conn = connect(pg_url)
    try:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
    finally:
        conn.close()


# -- the web -----------------------------------------------------------------------------------

@pytest.fixture
def site(web_server, backend_project):
    url, config = web_server()
    with open_store(config) as store:
        store.create_list("daily", public=True)
    client = httpx.Client(base_url=url, timeout=10, follow_redirects=False)
    yield url, config, client
    client.close()


def test_web_forms_with_nul_and_undecodable_bytes_answer_400_or_store_clean_text(site):
    _, config, client = site
    ok = client.post("/subscribe", data={"email": "eve@example.com", "name": "Eve\x00Bcc: x", "list": "daily"})
    assert ok.status_code == 200
    raw = client.post("/subscribe", content=b"email=raw%40example.com&name=R%00%ED%A0%80%FFr&list=daily",
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert raw.status_code == 200
    for email in ("e\x00ve@example.com", "%00", "eve@exa\x00mple.com"):
        bad = client.post("/subscribe", data={"email": email, "list": "daily"})
        assert bad.status_code == 400
    bad_list = client.post("/subscribe", data={"email": "l@example.com", "list": "dai\x00ly"})
    assert bad_list.status_code == 400
    long_name = client.post("/subscribe", data={"email": "n@example.com", "name": "n" * 5000, "list": "daily"})
    assert long_name.status_code == 400
    with open_store(config) as store:
        assert store.get_subscriber("eve@example.com").name == "Eve Bcc: x"
        assert "\x00" not in store.get_subscriber("raw@example.com").name
        assert store.count_subscribers() == 2
        sub = store.get_subscriber("eve@example.com")
    url = f"/preferences/{make_token(load_secret(config), 'preferences', sub.id, 0, uid=sub.uid)}"
    saved = client.post(url, data={"name": "Eve\x00\r\nL.", "list": ["daily", "dai\x00ly"], "action": "save"})
    assert saved.status_code == 303
    with open_store(config) as store:
        assert store.get_subscriber("eve@example.com").name == "Eve L."
    assert client.get(url + "/data.json").status_code == 200
    for path in ("/archive/%00", "/archive/a%ED%A0%80b", "/confirm/%00.%00", "/unsubscribe/x%00",
                 "/preferences/%ED%A0%80.x", "/archive/" + "9" * 30):
        assert client.get(path).status_code in (400, 404), path
    assert client.post("/unsubscribe/x%00", data={"List-Unsubscribe": "One-Click"}).status_code == 400


def test_a_genuine_token_naming_an_id_past_64_bits_is_a_bad_link_not_a_500(site):
    """Only a leaked secret (or a bug) could sign one; sqlite3 cannot even bind such an id
    (OverflowError) where PostgreSQL compares it: both answer the one bad-link page."""
    _, config, client = site
    secret = load_secret(config)
    for sid, lid in ((2**70, 0), (1, 2**64), (2**63, 0)):
        for purpose, path in (("preferences", "/preferences/{}"), ("unsubscribe", "/unsubscribe/{}"),
                              ("confirm", "/confirm/{}"), ("preferences", "/preferences/{}/data.json")):
            token = make_token(secret, purpose, sid, lid, uid="0" * 32)
            assert client.get(path.format(token)).status_code == 400, (purpose, sid, lid)
        answer = client.post(f"/unsubscribe/{make_token(secret, 'unsubscribe', sid, lid, uid='0' * 32)}",
                             data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 400


def _role(pg_server, url: str, *, read_only: bool) -> str:
    """A role on ``url``'s database that may read but not write: without INSERT/UPDATE/DELETE
    rights, or with every right but in read-only transactions."""
    import psycopg

    role = f"nl_ro_{uuid.uuid4().hex[:8]}"
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.url(dbname), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        if read_only:
            conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
            conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
            conn.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
        else:
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    return url.replace(f"{pg_server.url('x').split('@')[0]}@", f"postgresql://{role}@")


@pytest.mark.parametrize("read_only", [False, True], ids=["no-insert-rights", "read-only-transaction"])
def test_a_role_that_may_not_write_is_one_line_in_the_cli_and_503_on_the_web(
        pg_server, pg_url, project, monkeypatch, web_server, read_only):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", pg_url)
    with open_store(load_config()) as store:
        store.create_list("daily", public=True)
        store.add_subscriber("old@example.com", lists=["daily"])
        sub = store.get_subscriber("old@example.com")
    limited = _role(pg_server, pg_url, read_only=read_only)
    (project / "r.csv").write_text("email,name\nn1@example.com,N1\nn2@example.com,N2\n", encoding="utf-8")
    (project / "editions").mkdir()
    (project / "editions" / "2025-10-14.md").write_bytes((SAMPLES / "2025-10-14-ai-digest.md").read_bytes())
    refused = "permission denied" if not read_only else "read-only transaction"
    for args in (("subscribers", "add", "new@example.com", "-l", "daily"), ("lists", "create", "other"),
                 ("subscribers", "import", "r.csv", "-l", "daily"), ("subscribers", "rm", "old@example.com"),
                 ("subscribers", "erase", "old@example.com"),
                 ("send", "editions/2025-10-14.md", "-l", "daily", "--yes")):
        one_line_error(run(project, *args, NEWSLETTER_DATABASE_URL=limited), refused)
    listed = run(project, "subscribers", "ls", NEWSLETTER_DATABASE_URL=limited)
    assert listed.returncode == 0 and b"old@example.com" in listed.stdout  # reading still works

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", limited)
    url, config = web_server()
    with httpx.Client(base_url=url, timeout=10, follow_redirects=False) as client:
        answer = client.post("/subscribe", data={"email": "web@example.com", "list": "daily"})
        assert answer.status_code == 503 and answer.headers["retry-after"].isdigit()
        token = make_token(load_secret(config), "unsubscribe", sub.id, 0, uid=sub.uid)
        answer = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 503 and answer.headers["retry-after"].isdigit()
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", pg_url)
    with open_store(load_config()) as store:  # nothing was written
        assert store.count_subscribers() == 1
        assert store.get_subscriber("old@example.com").status.value == "active"
        assert [l.name for l in store.lists()] == ["daily"]


# -- events: a payload no database can store is kept aside, the pull goes on ----------------------

def test_events_with_nul_or_lone_surrogates_are_kept_aside_and_the_pull_goes_on(backend_project, moto):
    from events_support import make_queue, notification, query, queue_depth, raw_body, sns_body
    from newsletter.feedback.pull import pull_events
    from newsletter.feedback.record import open_recorder

    sqs, url = make_queue(moto)
    with open(backend_project / "newsletter.toml", "a", encoding="utf-8") as fh:
        fh.write(f'\n[ses]\nendpoint_url = "{moto}"\nqueue_url = "{url}"\nregion = "us-east-1"\n')
    config = load_config()
    with open_store(config) as store:
        store.create_list("daily")
        for email in ("jane@example.com", "mary@example.com"):
            store.add_subscriber(email, lists=["daily"])
    nul_detail = notification("event-bounce", email="jane@example.com")
    nul_detail["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = "smtp; 550\u0000 unknown"
    nul_id = notification("event-delivery", email="jane@example.com", message_id="id-\u0000-1")
    surrogate = notification("event-complaint", email="mary@example.com")
    surrogate["mail"]["commonHeaders"] = {"subject": "\ud800 hello"}
    noise = os.urandom(2000).hex()  # past PostgreSQL's btree row limit (~2700 bytes): both indexed
    long_id = notification("event-delivery", email="mary@example.com", message_id=noise)
    long_address = notification("event-bounce", email=f"{noise}@example.com")
    bodies = [json.dumps(nul_detail), sns_body(nul_id), raw_body(surrogate), raw_body(long_id),
              sns_body(long_address), raw_body(notification("event-bounce", email="mary@example.com"))]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    notes = []
    with open_recorder(config) as recorder:
        summary = pull_events(config, recorder, wait_seconds=0, report=lambda lvl, msg: notes.append((lvl, msg)))
    assert (summary.messages, summary.kept_aside, summary.recorded) == (6, 5, 1)
    warnings = [m for lvl, m in notes if lvl == "warning"]
    assert len(warnings) == 5 and sum("not text a database can store" in w for w in warnings) == 3
    assert sum("NUL" in w for w in warnings) == 2 and sum("U+D800" in w for w in warnings) == 1
    assert sum("4000 characters" in w for w in warnings) == 1 and sum("4012 characters" in w for w in warnings) == 1
    assert queue_depth(sqs, url) == (0, 0)
    assert query(config, "SELECT count(*) FROM dead_letters")[0][0] == 5
    assert query(config, "SELECT count(*) FROM events")[0][0] == 1
    with open_store(config) as store:  # the kept-aside bounce did nothing; the good one did
        assert store.get_subscriber("jane@example.com").status.value == "active"
        assert store.get_subscriber("mary@example.com").status.value == "bounced"
    with open_recorder(config) as recorder:  # a dead letter holding a NUL and a surrogate is kept
        assert recorder.keep_aside("m-\x00", "body \x00 \udcff", "why \x00")
        kept = recorder.log.kept_aside()
    assert kept[-1].message_id == "m-\\x00" and kept[-1].body == "body \\x00 \\udcff"


# -- sends: a provider's reply holding a NUL --------------------------------------------------------

def test_an_smtp_server_replying_with_nul_is_recorded_escaped_and_the_send_finishes(backend_project, cli):
    """The ledger keeps each failure's text (PostgreSQL: through ``jsonb``, which refuses
    ``\\u0000``): a server's reply holding a NUL is kept as ``\\x00`` on both engines, and the send
    goes on to every other reader instead of stopping at the record."""
    from aiosmtpd.controller import Controller

    from conftest import free_port

    class Hostile:
        def __init__(self):
            self.delivered = []

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address.startswith("gone"):
                return "550 5.1.1 no\x00 such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            self.delivered.extend(envelope.rcpt_tos)
            return "250 Ok: queued as Q\x00Z"

    handler = Hostile()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with open(backend_project / "newsletter.toml", "a", encoding="utf-8") as fh:
            fh.write(f'\n[smtp]\nhost = "127.0.0.1"\nport = {controller.port}\nsecurity = "none"\n')
        (backend_project / "editions").mkdir()
        (backend_project / "editions" / "2025-10-14.md").write_bytes((SAMPLES / "2025-10-14-ai-digest.md").read_bytes())
        with open_store(load_config()) as store:
            store.create_list("daily")
            for email in ("a@example.com", "gone@example.com", "b@example.com"):
                store.add_subscriber(email, lists=["daily"])
        result = cli("send", "editions/2025-10-14.md", "--list", "daily", "--transport", "smtp", "--yes")
    finally:
        controller.stop()
    assert "Traceback" not in result.output
    assert sorted(handler.delivered) == ["a@example.com", "b@example.com"]
    shown = cli("sends", "show", "2025-10-14")
    assert shown.exit_code == 0 and "\x00" not in shown.output
    from events_support import query

    errors = [r[0] for r in query(load_config(), "SELECT last_error FROM deliveries WHERE last_error IS NOT NULL")]
    assert len(errors) == 1 and "no\\x00 such user" in errors[0]
    states = sorted(r[0] for r in query(load_config(), "SELECT state FROM deliveries"))
    assert states == ["failed", "sent", "sent"]


# -- editions and feeds --------------------------------------------------------------------------

EDITION = """---
title: "{title}"
date: 2026-11-24T08:00:00+00:00
{extra}---

Lede{lede}.

---

1.  [A story](https://example.com/story)

    Summary.
"""


@pytest.mark.parametrize("title, extra, lede, where", [
    ("Daily\\u0000 news", "", "", ":2: title contains a NUL character"),
    ("Daily\\ud800 news", "", "", ":2: bad YAML in front matter"),  # libyaml refuses it itself
    ("Daily", 'subject: "S\\0"\n', "", ":4: subject contains a NUL character"),
    ("Daily", 'categories: ["a\\0"]\n', "", ":4: categories contains a NUL character"),
    ("Daily", "number: 99999999999\n", "", ":4: number must be a positive whole number (at most 2147483647)"),
    ("Daily", "", " with a \x00 in it", ":6: contains a NUL character (U+0000)"),
])
def test_an_edition_holding_what_no_database_stores_is_refused_at_its_line(backend_project, title, extra, lede, where):
    with open_store(load_config()) as store:
        store.create_list("daily")
        store.add_subscriber("r@example.com", lists=["daily"])
    (backend_project / "editions").mkdir()
    path = backend_project / "editions" / "2026-11-24.md"
    path.write_text(EDITION.format(title=title, extra=extra, lede=lede), encoding="utf-8")
    one_line_error(run(backend_project, "check", "editions/2026-11-24.md"), "editions/2026-11-24.md" + where)
    one_line_error(run(backend_project, "send", "editions/2026-11-24.md", "-l", "daily", "--yes"),
                   "editions/2026-11-24.md" + where)
    listed = run(backend_project, "sends", "ls")
    assert listed.returncode == 0 and b"2026-11-24" not in listed.stdout + listed.stderr


def test_an_edition_whose_path_is_not_utf8_is_refused_before_the_ledger_sees_it(backend_project):
    """The ledger records each edition's source path: a folder name of bytes that are not UTF-8
    (U+DCFE in Python) would be a traceback on SQLite and a refused value on PostgreSQL."""
    with open_store(load_config()) as store:
        store.create_list("daily")
        store.add_subscriber("r@example.com", lists=["daily"])
    folder = os.fsencode(backend_project) + b"/d\xfe"
    os.mkdir(folder)
    with open(folder + b"/2026-11-24.md", "w", encoding="utf-8") as fh:
        fh.write(EDITION.format(title="Daily", extra="", lede=""))
    for args in ((b"check", b"d\xfe/2026-11-24.md"), (b"send", b"d\xfe/2026-11-24.md", b"-l", b"daily", b"--yes"),
                 (b"add", b"d\xfe/2026-11-24.md", b"https://example.com/x", b"--title", b"T", b"--no-fetch")):
        one_line_error(run(backend_project, *args), "d\\udcfe/2026-11-24.md: the path is not UTF-8 text")
    os.rename(folder, os.fsencode(backend_project) + b"/ok")
    for args in ((b"add", b"ok/2026-11-24.md", b"https://example.com/" + SURROGATE_ARG), "the URL"), \
                ((b"add", b"ok/2026-11-24.md", b"https://example.com/x", b"--title", SURROGATE_ARG), "--title"), \
                ((b"add", b"ok/2026-11-24.md", b"https://example.com/x", b"--title", b"T", b"--summary",
                  SURROGATE_ARG), "--summary"):
        one_line_error(run(backend_project, *args[0]), args[1], "U+DCFF")
    assert "example.com/x" not in (backend_project / "ok" / "2026-11-24.md").read_text(encoding="utf-8")
    sent = run(backend_project, "send", "ok/2026-11-24.md", "-l", "daily", "--yes")
    assert sent.returncode == 0, sent.stderr.decode()


def test_a_feed_serving_nul_characters_gives_clean_candidates(cli, backend_project):
    from tests.local_http import LocalSite, Route

    feed = (b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Fe&#0;ed</title>'
            b"<item><title>Bad&#0; link</title><link>http://127.0.0.1/a&#0;b</link></item>"
            b"<item><title>Long link</title><link>http://127.0.0.1/" + os.urandom(1500).hex().encode()
            + b"</link></item>"
            b"<item><title>Good&#0; title\x00</title><link>http://127.0.0.1/good</link>"
            b"<description>&lt;p&gt;One&#0; two&lt;/p&gt;&lt;p&gt;Three\x00&lt;/p&gt;</description></item>"
            b"</channel></rss>")
    with LocalSite() as site:
        site.routes["/feed"] = Route(feed, content_type="application/rss+xml")
        with open(backend_project / "newsletter.toml", "a", encoding="utf-8") as fh:
            fh.write(f'\n[sources]\nfeeds = ["{site.url("/feed")}"]\n')
        result = cli("gather", "--json")
    assert result.exit_code == 0, result.output
    candidates = json.loads(result.stdout)["candidates"]
    assert [c["title"] for c in candidates] == ["Good title"]
    assert "\x00" not in json.dumps(candidates, ensure_ascii=False)
    assert candidates[0]["url"] == "http://127.0.0.1/good"
    toml = (backend_project / "newsletter.toml").read_text(encoding="utf-8")
    toml = toml.replace(f'feeds = ["{site.url("/feed")}"]', 'feeds = ["http://127.0.0.1:1/fe\\u0000ed"]')
    (backend_project / "newsletter.toml").write_text(toml, encoding="utf-8")
    one_line_error(run(backend_project, "gather"), "newsletter.toml: sources.feeds:", "is not an http(s) URL")


# -- the PostgreSQL server dies mid-command (its own server: this one is killed) ------------------

@pytest.fixture
def own_pg():
    """A PostgreSQL server of this test's own, durable (fsync and synchronous commits on: what
    was committed before the crash must survive it)."""
    from pg_support import PgServer, PgUnavailable

    try:
        server = PgServer.start(durable=True)
    except PgUnavailable as err:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL is required in CI: {err}", pytrace=False)
        pytest.skip(f"PostgreSQL not available: {err}")
    try:
        yield server
    finally:
        server.stop()


def _waiting_on_a_lock(server, timeout: float = 30) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'newsletter' "
                            "AND wait_event_type = 'Lock'").fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError("the command never waited for the lock")


@pytest.mark.parametrize("command", ["import", "add", "send"])
def test_the_server_stopped_mid_command_is_one_line_nothing_half_written_and_the_rerun_finishes(
        own_pg, project, monkeypatch, command):
    """The command is held at a lock (another session holds it), the server is stopped with
    ``pg_ctl stop -m immediate`` under it, then restarted: one line, exit 2, nothing of the
    command in the database; the same command run again does it all, once."""
    import psycopg

    from newsletter.store.connection import LEDGER_LOCK
    from newsletter.store.postgres import WRITE_LOCK

    url = own_pg.url()
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    with open_store(load_config()) as store:
        store.create_list("daily")
        for i in range(30):
            store.add_subscriber(f"r{i}@example.com", lists=["daily"])
    with open(project / "r.csv", "w", encoding="utf-8") as fh:
        fh.write("email,name\n" + "".join(f"n{i}@example.com,N {i}\n" for i in range(5000)))
    (project / "editions").mkdir()
    (project / "editions" / "2025-10-14.md").write_bytes((SAMPLES / "2025-10-14-ai-digest.md").read_bytes())
    args, lock = {
        "import": (("subscribers", "import", "r.csv", "-l", "daily"), WRITE_LOCK),
        "add": (("subscribers", "add", "new@example.com", "-l", "daily"), WRITE_LOCK),
        "send": (("send", "editions/2025-10-14.md", "-l", "daily", "--yes"), LEDGER_LOCK),
    }[command]
    holder = psycopg.connect(url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (lock,))
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", *args], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        _waiting_on_a_lock(own_pg)
        own_pg.crash()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        holder.close()
    one_line_error(subprocess.CompletedProcess(args, proc.returncode, out, err), "PostgreSQL database")
    own_pg.restart()
    with open_store(load_config()) as store:
        assert store.count_subscribers() == 30
    again = run(project, *args)
    assert again.returncode == 0, again.stderr.decode()
    with open_store(load_config()) as store:
        assert store.count_subscribers() == {"import": 5030, "add": 31, "send": 30}[command]
    if command == "send":
        boxed = list((project / "outbox" / "2025-10-14" / "new").iterdir())
        assert len(boxed) == 30


def test_the_web_answers_503_while_the_server_is_down_and_recovers_after(own_pg, project, monkeypatch, web_server):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", own_pg.url())
    with open_store(load_config()) as store:
        store.create_list("daily", public=True)
    url, _ = web_server()
    with httpx.Client(base_url=url, timeout=20, follow_redirects=False) as client:
        assert client.post("/subscribe", data={"email": "a@example.com", "list": "daily"}).status_code == 200
        own_pg.crash()
        for path in ("/subscribe", "/archive"):
            down = client.get(path)
            assert down.status_code == 503 and down.headers["retry-after"].isdigit(), (path, down.status_code)
        down = client.post("/subscribe", data={"email": "b@example.com", "list": "daily"})
        assert down.status_code == 503 and down.headers["retry-after"].isdigit()
        own_pg.restart()
        # a connection learns it was cut only when next used: that request is a 503 (nothing
        # written), the connection is opened again, and the retry the 503 asked for succeeds
        codes = []
        while len(codes) < 20 and 200 not in codes:
            last = client.post("/subscribe", data={"email": "c@example.com", "list": "daily"})
            codes.append(last.status_code)
        assert codes[-1] == 200 and set(codes) <= {200, 503}, (codes, last.text)
    with open_store(load_config()) as store:
        assert store.get_subscriber("a@example.com") and store.get_subscriber("c@example.com")
        assert store.get_subscriber("b@example.com") is None


def test_the_server_stopped_mid_send_is_one_line_and_the_rerun_never_sends_twice(own_pg, project, monkeypatch):
    """Stopped while messages are being written (the outbox has some, not all): one line, exit 2;
    restarted, the same send resumes and every reader gets the edition at most once — a message
    whose outcome the crash lost is reported unknown, never sent again unasked."""
    import mailbox

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", own_pg.url())
    (project / "r.csv").write_text("email,name\n" + "".join(f"r{i}@example.com,R {i}\n" for i in range(4000)),
                                   encoding="utf-8")
    (project / "editions").mkdir()
    (project / "editions" / "2025-10-14.md").write_bytes((SAMPLES / "2025-10-14-ai-digest.md").read_bytes())
    assert run(project, "lists", "create", "daily").returncode == 0
    assert run(project, "subscribers", "import", "r.csv", "-l", "daily").returncode == 0
    box = project / "outbox" / "2025-10-14" / "new"
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "send", "editions/2025-10-14.md", "-l", "daily",
                             "--yes"], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (box.is_dir() and len(os.listdir(box)) >= 200):
            time.sleep(0.005)
        own_pg.crash()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = len(os.listdir(box))
    assert 200 <= first < 4000, first
    one_line_error(subprocess.CompletedProcess(["send"], proc.returncode, out, err), "PostgreSQL database")
    own_pg.restart()
    again = run(project, "send", "editions/2025-10-14.md", "-l", "daily", "--yes")
    assert b"Traceback" not in again.stderr and again.returncode in (0, 1), again.stderr.decode()
    recipients = [m["To"] for m in mailbox.Maildir(project / "outbox" / "2025-10-14", create=False)]
    assert len(recipients) == len(set(recipients)) and len(recipients) > first
    if again.returncode == 1:  # outcomes the crash lost: said, and left for --retry-unknown
        assert b"--retry-unknown" in again.stderr
