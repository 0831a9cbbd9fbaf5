"""PostgreSQL-only behaviour of the store, on a real server (tests/pg_support.py): choosing the
backend from the setting, its own migrations (versions, upgrades, a newer database, several
processes at once), libpq's credentials, connection failures as one line, `db status` /
`db migrate` on both backends, and writers that must queue up."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from newsletter.config import load_config
from newsletter.errors import ConfigError, StoreError
from newsletter.store import open_store, pg
from newsletter.store.dburl import backend, describe, has_password
from newsletter.store.postgres import PostgresStore


# -- the setting -------------------------------------------------------------------------------
@pytest.mark.parametrize("url, kind", [
    ("subscribers/s.db", "sqlite"), ("sqlite:////tmp/x.db", "sqlite"),
    ("postgresql://news@db.example.com/news", "postgresql"), ("postgres://db/news", "postgresql"),
    ("postgresql:///?service=newsletter", "postgresql"),
])
def test_the_setting_names_the_backend(url, kind):
    assert backend(url) == kind


def test_unknown_schemes_are_refused_and_messages_never_show_a_password():
    with pytest.raises(StoreError, match="unsupported database URL scheme 'mysql'"):
        backend("mysql://db/news")
    text = describe("postgresql://ann:s3cret@db.example.com:6432/news")
    assert text == "PostgreSQL database 'news' on db.example.com:6432" and "s3cret" not in text
    assert has_password("postgresql://ann:s3cret@db/news") and not has_password("postgresql://ann@db/news")
    assert has_password("postgresql://db/news?password=x")
    assert describe("postgresql:///?service=newsletter") == (
        "PostgreSQL database \"of service 'newsletter'\" on service 'newsletter'")


def test_env_url_selects_postgresql(project, monkeypatch, pg_url):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", pg_url)
    with open_store(load_config()) as store:
        assert isinstance(store, PostgresStore)
        store.create_list("news")
    assert not (project / "subscribers").exists()  # no SQLite file was made


def test_a_password_in_the_configuration_file_is_refused(project):
    toml = project / "newsletter.toml"
    toml.write_text(toml.read_text() + 'database = "postgresql://ann:s3cret@127.0.0.1/news"\n')
    with pytest.raises(ConfigError, match="must not contain a password") as err:
        open_store(load_config())
    assert "s3cret" not in str(err.value) and "newsletter.toml" in str(err.value)


# -- credentials come from libpq ---------------------------------------------------------------
@pytest.fixture
def password_url(pg_server, pg_url):
    from pg_support import PASSWORD_ROLE

    dbname = pg_url.rsplit("/", 1)[1]
    with pg_server.admin() as conn:
        conn.execute(f"DROP ROLE IF EXISTS {PASSWORD_ROLE}")
        conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'pw-from-libpq'")
        conn.execute(f'GRANT ALL ON DATABASE "{dbname}" TO {PASSWORD_ROLE}')
    raw = pg.connect(pg_url)
    raw.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {PASSWORD_ROLE}")
    raw.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {PASSWORD_ROLE}")
    raw.close()
    return f"postgresql://{PASSWORD_ROLE}@127.0.0.1:{pg_server.port}/{dbname}"


def test_pgpassword_pgpass_and_pgservice_are_how_credentials_arrive(password_url, monkeypatch,
                                                                     tmp_path, cli, project):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", password_url)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    result = cli("db", "status")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "cannot connect to PostgreSQL database" in line and "127.0.0.1" in line
    assert "password" in line

    monkeypatch.setenv("PGPASSWORD", "pw-from-libpq")
    assert cli("db", "status").exit_code == 0
    monkeypatch.delenv("PGPASSWORD")

    pgpass = tmp_path / "pgpass"
    pgpass.write_text("127.0.0.1:*:*:nl_password_user:pw-from-libpq\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    assert cli("lists", "create", "news").exit_code == 0

    host_port, dbname = password_url.split("@", 1)[1].split("/", 1)
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[newsletter]\nhost=127.0.0.1\nport={host_port.split(':')[1]}\n"
                        f"dbname={dbname}\nuser=nl_password_user\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", "postgresql:///?service=newsletter")
    result = cli("lists", "ls")
    assert result.exit_code == 0 and "news" in result.stdout, result.stderr


def test_a_server_that_is_not_there_is_one_line_naming_host_and_database(project, cli,
                                                                          monkeypatch):
    from conftest import free_port

    port = free_port()
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"postgresql://ann@127.0.0.1:{port}/letters")
    for args in (("db", "status"), ("db", "migrate"), ("lists", "ls"),
                 ("subscribers", "add", "a@example.com")):
        result = cli(*args)
        assert result.exit_code == 2, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr
        assert lines[0].startswith(f"error: cannot connect to PostgreSQL database 'letters' on "
                                   f"127.0.0.1:{port}: ")


# -- migrations --------------------------------------------------------------------------------
def test_fresh_database_has_every_table_and_each_version_once(pg_url):
    with open_store(pg_url) as store:
        tables = {r[0] for r in store.conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"subscribers", "lists", "memberships", "suppressions", "sends", "deliveries",
                "send_workers", "rate_events", "events", "dead_letters",
                "schema_migrations"} <= tables
        versions = [r[0] for r in store.conn.execute(
            "SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [v for v, _, _ in pg.migrations()]


def test_upgrade_keeps_data_written_by_an_older_version(pg_empty_url):
    import psycopg

    with psycopg.connect(pg_empty_url, autocommit=True) as raw:
        raw.execute(pg._VERSION_TABLE)
        raw.execute(pg.migrations()[0][2])
        raw.execute("INSERT INTO schema_migrations VALUES (1, '001_subscribers.sql', 'then')")
        raw.execute("INSERT INTO subscribers (email, email_key, status, created_at) VALUES "
                    "('Old@Example.com', 'old@example.com', 'active', '2025-01-01T00:00:00Z')")
    with open_store(pg_empty_url) as store:
        assert pg.schema_version(store.conn) == pg.latest_version()
        assert store.get_subscriber("old@example.com").email == "Old@Example.com"
        # the identity sequence goes on after the row written by the older version
        assert store.add_subscriber("new@example.com").subscriber.id == 2


def test_newer_database_is_a_one_line_error(pg_url, project, cli, monkeypatch):
    with open_store(pg_url) as store:
        store.conn.execute("INSERT INTO schema_migrations VALUES (?, 'from-the-future.sql', 'x')",
                           (pg.latest_version() + 3,))
    with pytest.raises(StoreError, match="newer than this program knows"):
        open_store(pg_url)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", pg_url)
    for args in (("db", "status"), ("db", "migrate"), ("lists", "ls")):
        result = cli(*args)
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1 and "newer than this program" in result.stderr


MIGRATE_CHILD = """
import sys
from newsletter.store.schema import migrate
before, after = migrate(sys.argv[1])
print(after.current)
"""


def test_several_processes_migrating_at_once_apply_each_version_once(pg_empty_url):
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE_CHILD, pg_empty_url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert {o.strip() for o, _ in outs} == {str(pg.latest_version())}
    conn = pg.connect(pg_empty_url, migrate=False)
    assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")] == \
        [v for v, _, _ in pg.migrations()]
    conn.close()


def test_a_failing_migration_leaves_the_previous_version(pg_empty_url, monkeypatch):
    shipped = pg.migrations()
    broken = shipped[:2] + [(3, "003_broken.sql", "CREATE TABLE half (x int); SELECT 1/0;")]
    monkeypatch.setattr(pg, "migrations", lambda: broken)
    with pytest.raises(StoreError, match=r"migration pg_migrations/003_broken.sql failed on "
                                         r"PostgreSQL database .*division by zero"):
        pg.connect(pg_empty_url)
    conn = pg.connect(pg_empty_url, migrate=False)
    assert pg.schema_version(conn) == 2
    assert conn.execute("SELECT to_regclass('half')").fetchone()[0] is None
    conn.close()


# -- db status / db migrate on both backends ---------------------------------------------------
def test_db_status_and_migrate(backend_project, backend, cli):
    from newsletter.store import db

    latest = pg.latest_version() if backend == "postgresql" else db.latest_version()
    if backend == "sqlite":  # nothing exists yet, and status does not create it
        result = cli("db", "status")
        assert result.exit_code == 0 and "does not exist yet" in result.stdout
        assert f"schema version 0 of {latest} ({len(db.migrations())} pending)" in result.stdout
        assert not (backend_project / "subscribers" / "subscribers.db").exists()
        result = cli("db", "migrate")
        assert result.exit_code == 0 and "(migrated)" in result.stdout
        assert "applied 001" in result.stderr
    result = cli("db", "migrate")
    assert result.exit_code == 0 and "already up to date" in result.stdout
    result = cli("db", "status", "--json")
    data = json.loads(result.stdout)
    assert data["backend"] == backend and data["version"] == data["latest"] == latest
    shipped = pg.migrations() if backend == "postgresql" else db.migrations()
    assert [a["version"] for a in data["applied"]] == [v for v, _, _ in shipped]
    assert data["pending"] == []
    if backend == "postgresql":
        assert all(a["applied_at"] for a in data["applied"])
        assert "postgres@" not in data["database"] and "PostgreSQL database" in data["database"]
    text = cli("db", "status").stdout
    assert f"schema version {latest} of {latest} (up to date)" in text


# -- concurrency ---------------------------------------------------------------------------------
def test_concurrent_writers_queue_up_instead_of_failing(pg_url):
    """Adds of the same addresses from several connections at once: every call succeeds, each
    address exists once (the consent checks read, then write: they must not interleave)."""
    with open_store(pg_url) as store:
        store.create_list("news")
    errors, outcomes = [], []

    def work():
        try:
            with open_store(pg_url) as store:
                for i in range(30):
                    outcomes.append(store.add_subscriber(f"same{i}@example.com",
                                                         lists=["news"]).outcome)
        except Exception as err:  # pragma: no cover - the assertion shows it
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(set(outcomes)) == ["added", "unchanged"] and outcomes.count("added") == 30
    with open_store(pg_url) as store:
        assert store.count_subscribers(list_name="news") == 30


def _unsubscribe_in_thread(url: str, subscriber_id: int) -> tuple[threading.Thread, threading.Event, list]:
    done, outcome = threading.Event(), []

    def work():
        with open_store(url) as other:
            outcome.append(other.unsubscribe(subscriber_id))
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, done, outcome


def test_unsubscribes_wait_for_deciding_writes_but_not_for_each_other(pg_url):
    """One-click unsubscribes take the store's write lock shared: an import's merge (or any write
    that reads, then decides) holds them off until it commits, so it never decides from a state
    the unsubscribe has already changed; unsubscribes of different readers do not queue on each
    other, those of one reader do."""
    with open_store(pg_url) as store:
        store.create_list("news")
        ann, bob = (store.add_subscriber(f"{n}@example.com", lists=["news"]).subscriber.id for n in ("ann", "bob"))
        with store.transaction():  # a deciding write in progress (exclusive lock)
            thread, done, outcome = _unsubscribe_in_thread(pg_url, ann)
            assert not done.wait(0.5)  # queued behind it
        thread.join(10)
        assert outcome == [True]
        with store.reader_transaction(ann):  # one reader's unsubscribe in progress
            thread, done, outcome = _unsubscribe_in_thread(pg_url, bob)
            assert done.wait(10) and outcome == [True]  # another reader's commits meanwhile
            thread.join(10)
            thread, done, outcome = _unsubscribe_in_thread(pg_url, ann)
            assert not done.wait(0.5)  # the same reader's waits
        thread.join(10)
        assert outcome == [False]  # already unsubscribed, once
        with store.reader_transaction(bob):  # and a deciding write waits for an unsubscribe
            waiter, waited = threading.Event(), threading.Event()

            def decide():
                with open_store(pg_url) as other, other.transaction():
                    waiter.set()
                waited.set()

            decider = threading.Thread(target=decide)
            decider.start()
            assert not waited.wait(0.5)
        decider.join(10)
        assert waited.is_set()
        assert {s.status.value for s in store.iter_subscribers(list_name="news")} == {"unsubscribed"}


def test_streaming_reads_use_a_server_side_cursor_and_allow_other_queries(pg_url):
    with open_store(pg_url) as store:
        store.create_list("news")
        store.import_rows(((f"u{i}@example.com", i + 2, f"u{i}@example.com", "", "{}", "active")
                           for i in range(5000)), list_name="news")
        seen = 0
        for sub in store.iter_subscribers(list_name="news"):
            if seen % 1000 == 0:  # another statement on the same connection mid-stream
                assert store.get_subscriber_by_id(sub.id).email == sub.email
            seen += 1
        assert seen == 5000
        assert [r.subscriber_id for r in store.recipients("news")] == sorted(
            s.id for s in store.iter_subscribers())


def test_sqlite_commands_never_import_psycopg(project):
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom newsletter.cli import app\n"
            "r = CliRunner().invoke(app, ['lists', 'create', 'news'])\nassert r.exit_code == 0\n"
            "print('psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=project, check=True).stdout.strip()
    assert out == "False"


# -- the readers' endpoints' rate limits --------------------------------------------------------
def test_rate_limits_hold_across_connections_on_both_backends(db_url):
    """Several threads (each its own connection, as several web workers would be) hitting one
    bucket at once: exactly ``limit`` actions are allowed; other buckets and old rows behave."""
    from newsletter.store import open_rate_limiter, open_store

    open_store(db_url).close()  # migrated
    limiter = open_rate_limiter(db_url)
    allowed = []

    def work():
        for _ in range(5):
            allowed.append(limiter.hit("ip:203.0.113.7", 7, 3600))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert allowed.count(True) == 7 and len(allowed) == 20
        assert limiter.count("ip:203.0.113.7", 3600) == 7
        assert limiter.hit("ip:198.51.100.1", 7, 3600)  # another bucket is not affected
        assert limiter.hit("old", 1, 60, now=1000.0) and not limiter.hit("old", 1, 60, now=1001.0)
        assert limiter.hit("old", 1, 60, now=1100.0)  # the window slid on
        assert limiter.prune() == 2  # rows from 1970 are older than any window
        assert limiter.hit("anything", 0, 60)  # limit <= 0: no limit
    finally:
        limiter.close()


def test_doctor_checks_the_postgresql_database(project, monkeypatch, pg_empty_url, pg_url):
    from newsletter.doctor import Status, check_database

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", pg_url)
    found = check_database(load_config())
    assert found.status is Status.OK and "schema version" in found.detail
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", pg_empty_url)  # reachable, not migrated
    found = check_database(load_config())
    assert found.status is Status.FAIL and "db migrate" in found.hint
    from conftest import free_port

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"postgresql://x@127.0.0.1:{free_port()}/gone")
    found = check_database(load_config())
    assert found.status is Status.FAIL and "cannot connect to PostgreSQL database 'gone'" in found.detail


def test_ledger_events_and_stats_commands_run_on_postgresql(project, cli, monkeypatch, pg_url):
    """They said "needs a SQLite database for now" until the ledger, events and stats moved
    into store/; on an empty PostgreSQL project they now answer, and no SQLite file appears."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", pg_url)
    for args in (("sends", "ls"), ("stats",), ("events", "dead-letters")):
        result = cli(*args)
        assert result.exit_code == 0, (args, result.output)
        assert "SQLite" not in result.output
    assert not (project / "subscribers" / "subscribers.db").exists()


def test_a_connection_lost_mid_session_is_one_line(pg_server, pg_url, project, cli, monkeypatch):
    with open_store(pg_url) as store:
        store.create_list("news")
        pid = store.conn.raw.info.backend_pid
        with pg_server.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError, match=r"^error: cannot use PostgreSQL database 't\d+_\d+' "
                                             r"on 127\.0\.0\.1:\d+: ") as err:
            store.get_list("news")
        assert "\n" not in str(err.value)


def test_db_status_then_migrate_on_an_empty_postgresql_database(pg_empty_url, project, cli,
                                                                 monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", pg_empty_url)
    latest = pg.latest_version()
    result = cli("db", "status")
    assert result.exit_code == 0
    assert f"schema version 0 of {latest} ({len(pg.migrations())} pending)" in result.stdout
    assert "001  001_subscribers.sql  pending" in result.stdout
    conn = pg.connect(pg_empty_url, migrate=False)
    assert pg.schema_version(conn) == 0  # status changed nothing
    conn.close()
    result = cli("db", "migrate")
    assert result.exit_code == 0 and "(migrated)" in result.stdout
    assert [l for l in result.stderr.splitlines() if l.startswith("applied")] == [
        f"applied {v:03d} {n}" for v, n, _ in pg.migrations()]
    assert f"schema version {latest} of {latest} (up to date)" in cli("db", "status").stdout


def test_writers_are_not_held_up_while_an_import_reads_its_file(pg_url):
    """The rows are staged before the import takes the write lock: a sign-up arriving while
    the file is still being read goes through at once, and both end up in the database."""
    from newsletter.store.base import ImportRow

    with open_store(pg_url) as store:
        store.create_list("news")
        store.add_subscriber("first@example.com", lists=["news"])  # not empty: the general path
    halfway, written, failures = threading.Event(), threading.Event(), []

    def rows():
        for i in range(2000):
            if i == 1000:
                halfway.set()
                if not written.wait(10):
                    raise AssertionError("the sign-up waited for the import")
            yield ImportRow(f"u{i}@example.com", i + 2, f"u{i}@example.com", "", "{}", "active")

    def run_import():
        try:
            with open_store(pg_url) as store:
                store.import_rows(rows(), list_name="news")
        except BaseException as err:  # pragma: no cover - shown by the assertion
            failures.append(err)

    importer = threading.Thread(target=run_import)
    importer.start()
    assert halfway.wait(10)
    with open_store(pg_url) as web:
        web.add_subscriber("web@example.com", lists=["news"])
    written.set()
    importer.join(30)
    assert failures == []
    with open_store(pg_url) as store:
        assert store.count_subscribers(list_name="news") == 2002


def test_migration_numbers_may_have_gaps(pg_empty_url, monkeypatch):
    """Branches reserve their numbers (merged, they are contiguous): a jump of three works,
    and status shows exactly the versions shipped."""
    from newsletter.store.schema import status

    later = pg.latest_version() + 3
    shipped = pg.migrations() + [(later, f"{later:03d}_later.sql", "CREATE TABLE later (x int);")]
    versions = [v for v, _, _ in shipped]
    monkeypatch.setattr(pg, "migrations", lambda: shipped)
    before = status(pg_empty_url)
    assert before.latest == later and [p["version"] for p in before.pending] == versions
    conn = pg.connect(pg_empty_url)
    assert pg.schema_version(conn) == later
    assert conn.execute("SELECT to_regclass('later') IS NOT NULL").fetchone()[0]
    conn.close()
    after = status(pg_empty_url)
    assert [a["version"] for a in after.applied] == versions and after.pending == []


def test_a_migration_numbered_below_one_applied_is_still_applied(pg_empty_url, monkeypatch):
    """Branches merged in another order: a database already at the latest version that lacks a
    lower-numbered migration (010 arriving after 013 was applied) gets it at the next connect,
    once; status lists it pending until then."""
    from newsletter.store.schema import status

    shipped = pg.migrations()
    missing = shipped[-3]  # below the latest
    monkeypatch.setattr(pg, "migrations", lambda: [m for m in shipped if m[0] != missing[0]])
    pg.connect(pg_empty_url).close()
    monkeypatch.setattr(pg, "migrations", lambda: shipped)
    assert [p["version"] for p in status(pg_empty_url).pending] == [missing[0]]
    conn = pg.connect(pg_empty_url)
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [v for v, _, _ in shipped]
    conn.close()
    assert status(pg_empty_url).pending == []


def test_the_sql_address_hash_is_address_hash(pg_url):
    """The general import road hashes addresses on the server (postgres_import.ADDRESS_HASH_SQL)
    to match them with the suppression list: it must be ``addresses.address_hash`` exactly."""
    from newsletter.audience.addresses import address_hash
    from newsletter.store.postgres_import import ADDRESS_HASH_SQL

    keys = ["ann@example.com", "o'neil+tag@sub.example.org", "a@xn--bcher-kva.example",
            "ünï@bücher.de", ""]
    with open_store(pg_url) as store:
        got = [store.conn.execute(f"SELECT {ADDRESS_HASH_SQL.format('?')}", (k,)).fetchone()[0]
               for k in keys]
    assert got == [address_hash(k) for k in keys]
