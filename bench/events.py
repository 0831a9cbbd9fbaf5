"""SES event processing: parse + record, `events pull` over SQS, and `stats` on a big ledger.

    .venv/bin/python bench/events.py [--events 20000] [--messages 1000] [--readers 100000]
                                     [--postgresql]

``--postgresql`` runs the same three on a throw-away PostgreSQL server (Debian's binaries,
tests/pg_support.py, fsync on), the project's ``database`` a ``postgresql://`` URL, and the
baselines on the same server (the INSERT into a plain table of the same database).

Three figures, each a ratio against a baseline measured in the same run:
1. parse + record (dedupe check, delivery lookup, suppression effect, commit per event) of
   ``--events`` realistic notifications (a mix of deliveries, opens, clicks, bounces,
   complaints, SNS envelope and raw) against the baseline ``json.loads`` of the same bodies
   plus one plain INSERT each, committed per row the same way;
2. ``pull_events`` draining ``--messages`` queue messages from a moto server process against
   the baseline: a bare receive/delete-batch loop over the same number of messages;
3. ``stats`` (every edition) over ``--readers`` deliveries and ~2 events each against the
   baseline ``SELECT type, COUNT(DISTINCT delivery_id) FROM events GROUP BY type`` (the least
   work that yields unique counts per type).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from events_support import make_queue, notification, raw_body, sns_body  # noqa: E402

from newsletter.config import load_config  # noqa: E402
from newsletter.feedback.pull import pull_events  # noqa: E402
from newsletter.feedback.record import open_recorder  # noqa: E402
from newsletter.feedback.parse import parse_message  # noqa: E402
from newsletter.feedback.stats import all_stats  # noqa: E402
from newsletter.store import open_store  # noqa: E402
from newsletter.store.connection import connect, is_postgres, write  # noqa: E402

MIX = ["event-delivery"] * 5 + ["event-open"] * 3 + ["event-click"] * 2 + ["event-bounce", "event-complaint"]


def bodies(n: int, readers: int) -> list[str]:
    out = []
    for i in range(n):
        reader = i % readers
        doc = notification(MIX[i % len(MIX)], email=f"reader{reader}@example.com", message_id=f"m-{reader}",
                           timestamp=f"2026-11-24T{8 + i % 10:02d}:{i % 60:02d}:{(i // 60) % 60:02d}.000Z")
        out.append(sns_body(doc) if i % 2 else raw_body(doc))
    return out


DATABASES: list[str] = []  # PostgreSQL: one fresh database per project (``--postgresql``)


def project(folder: Path, readers: int, moto: str = "", queue_url: str = ""):
    folder.mkdir(parents=True, exist_ok=True)
    toml = 'name = "Bench"\nfrom = "Bench <news@example.com>"\n'
    if DATABASES:
        toml += f'database = "{DATABASES.pop()}"\n'
    if moto:
        toml += f'\n[ses]\nendpoint_url = "{moto}"\nqueue_url = "{queue_url}"\nregion = "us-east-1"\n'
    (folder / "newsletter.toml").write_text(toml, encoding="utf-8")
    config = load_config(folder / "newsletter.toml")
    with open_store(config) as store:
        store.create_list("daily")
    conn = connect(config)
    now = "2026-11-24T07:00:00Z"
    with write(conn):
        _fill(conn, readers, now)
    conn.close()
    return config


def _fill(conn, readers: int, now: str) -> None:
    conn.executemany("INSERT INTO subscribers (email, email_key, status, created_at) VALUES (?, ?, 'active', ?)",
                     ((f"reader{i}@example.com", f"reader{i}@example.com", now) for i in range(readers)))
    conn.execute("INSERT INTO sends (slug, list_name, subject, transport, recipients, created_at) "
                 "VALUES ('2026-11-24', 'daily', 'Bench', 'ses', ?, ?)", (readers, now))
    conn.executemany("INSERT INTO deliveries (send_id, subscriber_id, email, state, provider_message_id, sent_at, "
                     "updated_at) VALUES (1, ?, ?, 'sent', ?, ?, ?)",
                     ((i + 1, f"reader{i}@example.com", f"m-{i}", now, now) for i in range(readers)))


def bench_record(tmp: Path, n: int) -> tuple[float, float]:
    config = project(tmp / "record", n // 3)
    messages = bodies(n, n // 3)
    if is_postgres(conn := connect(config)):  # a plain table in the same PostgreSQL database
        conn.execute("CREATE TABLE bench_t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text)")
        start = time.perf_counter()
        for body in messages:
            conn.execute("INSERT INTO bench_t (body) VALUES (?)", (json.dumps(json.loads(body)),))
        baseline = time.perf_counter() - start
        conn.close()
    else:
        conn.close()
        base = sqlite3.connect(tmp / "baseline.db", isolation_level=None)
        base.execute("PRAGMA journal_mode = WAL")
        base.execute("PRAGMA synchronous = NORMAL")
        base.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        start = time.perf_counter()
        for body in messages:
            doc = json.loads(body)
            base.execute("BEGIN IMMEDIATE")
            base.execute("INSERT INTO t (body) VALUES (?)", (json.dumps(doc),))
            base.execute("COMMIT")
        baseline = time.perf_counter() - start
    with open_recorder(config) as recorder:
        start = time.perf_counter()
        for body in messages:
            for event in parse_message(body):
                recorder.record(event)
        ours = time.perf_counter() - start
    return baseline, ours


def start_moto() -> tuple[subprocess.Popen, str]:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/moto-api/data.json", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto did not start")


def fill(sqs, url: str, messages: list[str]) -> None:
    for i in range(0, len(messages), 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": b}
                                                      for j, b in enumerate(messages[i:i + 10])])


def bench_pull(tmp: Path, n: int) -> tuple[float, float]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    proc, moto = start_moto()
    try:
        sqs, url = make_queue(moto)
        messages = bodies(n, max(n // 3, 1))
        fill(sqs, url, messages)
        start = time.perf_counter()
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not got:
                break
            sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                            for i, m in enumerate(got)])
        baseline = time.perf_counter() - start
        fill(sqs, url, messages)
        config = project(tmp / "pull", max(n // 3, 1), moto, url)
        with open_recorder(config) as recorder:
            start = time.perf_counter()
            summary = pull_events(config, recorder, wait_seconds=0)
            ours = time.perf_counter() - start
        assert summary.messages == n, summary.line()
        return baseline, ours
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_stats(tmp: Path, readers: int) -> tuple[float, float]:
    config = project(tmp / "stats", readers)
    conn = connect(config)
    now = "2026-11-24T08:00:00Z"
    rows = []
    for i in range(readers):
        kinds = ["delivery"] + (["open", "open"] if i % 3 == 0 else []) + (["click"] if i % 7 == 0 else [])
        kinds += ["bounce"] if i % 50 == 0 else []
        rows += [(f"e-{i}-{k}-{n}", k, "Permanent" if k == "bounce" else None, f"reader{i}@example.com", i + 1,
                  f"https://example.org/{i % 9}" if k == "click" else None, now, now)
                 for n, k in enumerate(kinds)]
    with write(conn):
        conn.executemany("INSERT INTO events (message_id, type, subtype, email, delivery_id, link, occurred_at, "
                         "received_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}')", rows)
    if is_postgres(conn):
        conn.execute("ANALYZE")
    start = time.perf_counter()
    conn.execute("SELECT type, COUNT(DISTINCT delivery_id) FROM events GROUP BY type").fetchall()
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    found = all_stats(conn)
    ours = time.perf_counter() - start
    conn.close()
    assert found[0].delivered == readers
    return baseline, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--readers", type=int, default=100000)
    parser.add_argument("--postgresql", action="store_true",
                        help="run on a throw-away PostgreSQL server instead of SQLite files")
    args = parser.parse_args()
    server = None
    if args.postgresql:
        from pg_support import PgServer

        server = PgServer.start(durable=True)
        DATABASES.extend(server.database() for _ in range(3))
        print(f"PostgreSQL {server.psql('-tAc', 'SHOW server_version').strip()} (fsync on)")
    try:
        _run(args)
    finally:
        if server is not None:
            server.stop()


def _run(args) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        base, ours = bench_record(tmp, args.events)
        print(f"parse+record {args.events} events: {ours:.2f} s ({args.events / ours:,.0f}/s); baseline "
              f"json.loads + INSERT/commit {base:.2f} s; ratio {ours / base:.1f}×")
        base, ours = bench_pull(tmp, args.messages)
        print(f"events pull {args.messages} SQS messages (moto): {ours:.2f} s ({args.messages / ours:,.0f}/s); "
              f"baseline bare receive+delete {base:.2f} s; ratio {ours / base:.2f}×")
        base, ours = bench_stats(tmp, args.readers)
        print(f"stats over {args.readers:,} deliveries: {ours * 1000:.0f} ms; baseline one-pass unique count "
              f"per type {base * 1000:.0f} ms; ratio {ours / base:.1f}×")


if __name__ == "__main__":
    main()
