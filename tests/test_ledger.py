"""The delivery ledger on both engines (a real SQLite file and a real PostgreSQL server):
frozen recipients, atomic claims across connections, unknown rows of dead workers, skipping
readers who left, sent_editions."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from newsletter.config import Config
from newsletter.errors import ValidationError
from newsletter.store.ledger import DeliveryState, Ledger, Outcome, sent_editions, sent_snapshots
from newsletter.render.rendered import RenderedEmail
from newsletter.send.snapshot import Snapshot, content_hash
from newsletter.store import open_store


@pytest.fixture
def config(tmp_path, db_url) -> Config:
    config = Config(root=tmp_path, database=db_url)
    with open_store(config) as store:
        store.create_list("daily")
        for i in range(1, 51):
            store.add_subscriber(f"r{i}@example.com", name=f"Reader {i}", lists=["daily"], attributes={"n": str(i)})
    return config


def snapshot_of(slug: str) -> Snapshot:
    rendered = RenderedEmail(slug=slug, subject="Subject", preheader="", lang="en", html="<p>x</p>", text="x",
                             web_url=f"https://example.com/archive/{slug}")
    return Snapshot(slug=slug, number=None, title="Title", subject="Subject", preheader="", date="2025-10-14T08:00:00+00:00",
                    lang="en", categories=(), items=({"number": 1, "title": "One", "url": "https://example.org/1"},),
                    html=rendered.html, text=rendered.text, web_url=rendered.web_url, source_path="",
                    essay_path=None, source_hash="", content_hash=content_hash(rendered))


def new_send(ledger: Ledger, config: Config, slug: str = "2025-10-14"):
    with open_store(config) as store:
        daily = store.get_list("daily")
        return ledger.create_send(slug=slug, subject="Subject", list_name="daily", list_id=daily.id,
                                  transport="outbox", recipients=list(store.recipients("daily")),
                                  snapshot=snapshot_of(slug))


def test_create_send_freezes_recipients_once(config):
    with Ledger.open(config) as ledger:
        send = new_send(ledger, config)
        assert send.recipients == 50 and send.finished_at is None
        assert ledger.progress(send.id).pending == 50
        with pytest.raises(ValidationError, match="already has an unfinished send to this audience"):
            new_send(ledger, config)
        with open_store(config) as store:  # joining later does not join this send
            store.add_subscriber("late@example.com", lists=["daily"])
        assert ledger.progress(send.id).total == 50


def test_claims_are_exclusive_across_connections_and_threads(config):
    with Ledger.open(config) as first:
        send = new_send(first, config)
    claimed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with Ledger.open(config) as ledger:
            me = ledger.register_worker(send.id)
            while True:
                claims, _ = ledger.claim(send, me, 3)
                if not claims:
                    return
                with lock:
                    claimed.extend(c.delivery_id for c in claims)
                ledger.record(send.id, me, [Outcome(c.delivery_id, DeliveryState.SENT, f"id-{c.delivery_id}", attempts=1)
                                            for c in claims])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == len(set(claimed)) == 50
    with Ledger.open(config) as ledger:
        assert ledger.progress(send.id).sent == 50
        assert ledger.finish_if_done(send.id)
        assert ledger.find_send("2025-10-14").finished_at


def test_claim_hands_out_names_and_attributes(config):
    with Ledger.open(config) as ledger:
        send = new_send(ledger, config)
        me = ledger.register_worker(send.id)
        claims, skipped = ledger.claim(send, me, 2)
        assert skipped == 0
        assert [(c.recipient.email, c.recipient.name, c.recipient.attributes) for c in claims] == [
            ("r1@example.com", "Reader 1", {"n": "1"}), ("r2@example.com", "Reader 2", {"n": "2"})]


def test_readers_who_left_meanwhile_are_skipped(config):
    with Ledger.open(config) as ledger:
        send = new_send(ledger, config)
        with open_store(config) as store:
            store.unsubscribe(store.get_subscriber("r1@example.com").id)
            store.erase("r2@example.com")
            store.unsubscribe(store.get_subscriber("r3@example.com").id, store.get_list("daily").id)
        me = ledger.register_worker(send.id)
        claims, skipped = ledger.claim(send, me, 2)  # those who left are never handed out
        assert [c.recipient.email for c in claims] == ["r4@example.com", "r5@example.com"]
        claims, skipped = ledger.claim(send, me, 100)  # the last batch marks them skipped
        assert len(claims) == 45 and skipped == 3
        assert ledger.progress(send.id).skipped == 3
        reasons = {r["email"]: r["last_error"] for r in ledger.deliveries(send.id, states=["skipped"])}
        assert reasons == {"r1@example.com": "subscriber unsubscribed since the send started",
                           None: "subscriber erased since the send started",
                           "r3@example.com": "left the list since the send started"}


def test_rows_of_a_dead_worker_are_unknown_until_retried(config):
    with Ledger.open(config) as ledger:
        send = new_send(ledger, config)
    # a separate process claims 5 rows and dies without recording anything
    code = ("import sys, os; from pathlib import Path; from newsletter.config import Config;"
            "from newsletter.store.ledger import Ledger;"
            "l = Ledger.open(Config(root=Path(sys.argv[1]), database=sys.argv[2]));"
            "s = l.find_send('2025-10-14'); w = l.register_worker(s.id); l.claim(s, w, 5); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(config.root), config.database], check=True)
    with Ledger.open(config) as ledger:
        progress = ledger.progress(send.id)
        assert progress.unknown == 5 and progress.pending == 45 and progress.in_flight == 0
        me = ledger.register_worker(send.id)
        claims, _ = ledger.claim(send, me, 100)
        assert len(claims) == 45  # unknown rows are not handed out
        assert ledger.unknown(send.id) == 5  # a live worker's own rows are in flight, not unknown
        ledger.record(send.id, me, [Outcome(c.delivery_id, DeliveryState.SENT, "x", attempts=1) for c in claims])
        assert not ledger.finish_if_done(send.id)
        assert ledger.retry_unknown(send.id) == 5
        claims, _ = ledger.claim(send, me, 100)
        assert len(claims) == 5


def test_live_workers_rows_are_not_unknown(config):
    with Ledger.open(config) as ledger:
        send = new_send(ledger, config)
        other = ledger.register_worker(send.id)  # this very process: alive, beating
        ledger.claim(send, other, 4)
    with Ledger.open(config) as ledger:
        assert ledger.unknown(send.id) == 0
        assert ledger.progress(send.id).in_flight == 4
        assert ledger.retry_unknown(send.id) == 0
        ledger.stop_worker(other)  # a worker that stopped with rows in 'sending' left them unknown
        assert ledger.unknown(send.id) == 4


def test_record_only_touches_rows_this_worker_holds(config):
    with Ledger.open(config) as ledger:
        send = new_send(ledger, config)
        a, b = ledger.register_worker(send.id), ledger.register_worker(send.id)
        claims, _ = ledger.claim(send, a, 1)
        ledger.record(send.id, b, [Outcome(claims[0].delivery_id, DeliveryState.SENT, "stolen")])
        assert ledger.progress(send.id).sent == 0
        ledger.record(send.id, a, [Outcome(claims[0].delivery_id, DeliveryState.FAILED, error="rejected", attempts=1)])
        row = ledger.deliveries(send.id, states=["failed"])[0]
        assert (row["email"], row["last_error"], row["attempts"]) == ("r1@example.com", "rejected", 1)


def test_sent_editions_newest_first(config):
    with Ledger.open(config) as ledger:
        first = new_send(ledger, config, "2025-10-14")
        second = new_send(ledger, config, "2025-10-15")
        never = new_send(ledger, config, "2025-10-16")
        me = ledger.register_worker(first.id)
        for send in (first, second):
            claims, _ = ledger.claim(send, me, 1)
            ledger.record(send.id, me, [Outcome(claims[0].delivery_id, DeliveryState.SENT, "p", attempts=1)])
        ledger.conn.execute("UPDATE sends SET first_sent_at = '2025-10-14T07:00:00Z' WHERE id = ?", (first.id,))
        assert never.id
    editions = sent_editions(config)
    assert [e.slug for e in editions] == ["2025-10-15", "2025-10-14"]
    assert editions[1] == ("2025-10-14", "Subject", "2025-10-14T07:00:00Z")
    with Ledger.open(config) as ledger:
        assert sent_editions(ledger.conn) == editions
    recent = sent_snapshots(config, days=30)
    assert [s.slug for s in recent] == ["2025-10-15"]  # the first one went out over a year ago
    assert recent[0].items == [{"number": 1, "title": "One", "url": "https://example.org/1"}]
    assert [s.slug for s in sent_snapshots(config)] == ["2025-10-15", "2025-10-14"]


def test_provider_message_id_finds_the_delivery(config):
    with Ledger.open(config) as ledger:
        send = new_send(ledger, config)
        me = ledger.register_worker(send.id)
        claims, _ = ledger.claim(send, me, 1)
        ledger.record(send.id, me, [Outcome(claims[0].delivery_id, DeliveryState.SENT, "ses-123", attempts=1)])
        row = ledger.conn.execute("SELECT email, state, sent_at FROM deliveries WHERE provider_message_id = ?",
                                  ("ses-123",)).fetchone()
        assert row["email"] == "r1@example.com" and row["state"] == "sent" and row["sent_at"]
    assert "://" in config.database_url or os.path.exists(config.database_url)


# -- liveness: a worker on this host is asked directly; one elsewhere is judged by its heartbeat ------

def _worker_row(ledger: Ledger, send_id: int, worker: str, *, host: str, pid: int, key, beat: float) -> None:
    ledger.conn.execute("INSERT INTO send_workers (id, send_id, host, pid, started_at, heartbeat_at, process_key) "
                        "VALUES (?, ?, ?, ?, '2025-10-14T00:00:00Z', ?, ?)", (worker, send_id, host, pid, beat, key))


def test_a_paused_process_on_this_host_is_alive_however_old_its_heartbeat(config):
    import signal
    import socket
    import time

    from newsletter.store.ledger import process_key

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sleeper.send_signal(signal.SIGSTOP)
        with Ledger.open(config) as ledger:
            send = new_send(ledger, config)
            key = process_key(sleeper.pid)
            assert key is not None
            host = socket.gethostname()
            an_hour_ago = time.time() - 3600
            _worker_row(ledger, send.id, "paused", host=host, pid=sleeper.pid, key=key, beat=an_hour_ago)
            ledger.claim(send, "paused", 3)
            assert ledger.unknown(send.id) == 0 and ledger.retry_unknown(send.id) == 0
            # the same pid with another start time is another process (pid reuse): the worker is gone
            boot, namespace, started = key.split("/")
            _worker_row(ledger, send.id, "reused", host=host, pid=sleeper.pid,
                        key=f"{boot}/{namespace}/{int(started) - 1}", beat=time.time())
            ledger.claim(send, "reused", 2)
            # the same host name after a reboot: gone too
            _worker_row(ledger, send.id, "rebooted", host=host, pid=sleeper.pid,
                        key=f"00000000-other-boot/{namespace}/{started}", beat=time.time())
            ledger.claim(send, "rebooted", 1)
            assert ledger.unknown(send.id) == 3
    finally:
        sleeper.kill()
        sleeper.wait()
    with Ledger.open(config) as ledger:
        assert ledger.unknown(send.id) == 6  # now the paused one is gone as well


def test_a_worker_on_another_host_is_judged_by_its_heartbeat(config):
    import time

    with Ledger.open(config) as ledger:
        send = new_send(ledger, config)
        _worker_row(ledger, send.id, "fresh", host="elsewhere.example", pid=os.getpid(), key="b/n/1", beat=time.time())
        ledger.claim(send, "fresh", 2)
        _worker_row(ledger, send.id, "silent", host="elsewhere.example", pid=os.getpid(), key="b/n/1",
                    beat=time.time() - 120)
        ledger.claim(send, "silent", 3)
        assert ledger.unknown(send.id) == 3  # silent past STALE_AFTER: unknown; the fresh one is in flight
        assert ledger.progress(send.id).in_flight == 2


@pytest.mark.parametrize("backend", ["postgresql"])  # one SQLite file has one host: its clock is the host's
def test_heartbeats_are_judged_by_the_database_clock_not_this_hosts(config, backend, monkeypatch):
    """Workers on several hosts share a PostgreSQL ledger: a heartbeat is written and judged by
    the server's clock, so a host whose own clock runs an hour ahead (or behind) neither takes a
    live worker elsewhere for dead nor a dead one for alive."""
    import time

    with Ledger.open(config) as ledger:
        send = new_send(ledger, config)
        _worker_row(ledger, send.id, "elsewhere", host="elsewhere.example", pid=1, key="b/n/1", beat=0.0)
        ledger.heartbeat("elsewhere")  # by the server's clock
        ledger.claim(send, "elsewhere", 4)
        real = time.time
        for skew in (3600.0, -3600.0):
            monkeypatch.setattr(time, "time", lambda skew=skew: real() + skew)
            assert ledger.unknown(send.id) == 0 and ledger.progress(send.id).in_flight == 4
            assert "elsewhere" in ledger.live_workers(send.id)
        monkeypatch.setattr(time, "time", real)
        ledger.conn.execute("UPDATE send_workers SET heartbeat_at = heartbeat_at - 120 WHERE id = 'elsewhere'")
        monkeypatch.setattr(time, "time", lambda: real() - 3600.0)  # this host's clock is behind
        assert ledger.unknown(send.id) == 4  # silent for 120 s by the server's clock: unknown


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite plans EXISTS as a probe anyway
def test_claims_probe_each_reader_whatever_the_statistics_say(config, backend):
    """With statistics taken before a list was imported (the list "has 2 members"), PostgreSQL
    planned the claim's list check as one scan of the list's memberships, materialised and
    rescanned for every pending row: claims slowed from 0.3 ms to 230 ms as a send went on. The
    checks are index probes per claimed row, whatever the statistics."""
    with open_store(config) as store:
        store.conn.execute("ALTER TABLE memberships SET (autovacuum_enabled = false)")
        store.conn.execute("ALTER TABLE subscribers SET (autovacuum_enabled = false)")
        store.conn.execute("ANALYZE memberships")  # 50 members now
        store.conn.execute("ANALYZE subscribers")
        store.import_rows(((f"u{i}@example.com", i + 2, f"u{i}@example.com", "", "{}", "active")
                           for i in range(20000)), list_name="daily")
    with Ledger.open(config) as ledger:
        send = new_send(ledger, config)
        from newsletter.store.ledger import _claim_with_readers_pg
        from newsletter.store.pg import to_pg

        sql = to_pg(_claim_with_readers_pg(True))
        args = ("w", "2026-01-01T00:00:00Z", send.id, 32, [send.list_id])
        for mode in ("force_custom_plan", "force_generic_plan"):
            ledger.conn.execute(f"SET plan_cache_mode = {mode}")
            ledger.conn.raw.execute("BEGIN")
            plan = "\n".join(r[0] for r in ledger.conn.raw.execute("EXPLAIN " + sql, args).fetchall())
            ledger.conn.raw.execute("ROLLBACK")
            assert "Materialize" not in plan and "Semi Join" not in plan, plan  # EXISTS not made a join
            assert "Index Scan using memberships" in plan and "SubPlan" in plan, plan
