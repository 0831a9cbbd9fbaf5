"""Benchmark: `newsletter db copy` of a large project, SQLite → PostgreSQL and back, against a bare
loop that moves the same rows (``sqlite3`` SELECT → psycopg ``COPY``, no schema reading, no
counts, no sequences) in the same run.

    .venv/bin/python bench/db_copy.py [--subscribers 200000] [--deliveries 400000] [--snapshots 200]

Starts a throw-away PostgreSQL server (tests/pg_support.py; fsync ON, as a real server runs),
makes a SQLite project (subscribers by the store's bulk import; sends, deliveries and events
written with SQL in the ledger's shape; ``--snapshots`` snapshots of ~300 KB of HTML each), then:
1. the baseline: the bare loop into an empty migrated database (one transaction);
2. ``copy_database`` SQLite → PostgreSQL, in a child process reporting its peak RSS;
3. ``copy_database`` PostgreSQL → SQLite, likewise.
Prints rows/s, the ratio to the baseline and the peak memory of each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import json, resource, sys, time
from newsletter.store.copy import copy_database
start = time.perf_counter()
result = copy_database(sys.argv[1], sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - start, "rows": sum(result.counts.values()),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_project(path: str, subscribers: int, deliveries: int, snapshots: int) -> None:
    import sqlite3

    from newsletter.store import open_store

    with open_store(path) as store:
        store.create_list("news")
        store.import_rows(((f"reader{i}@example.com", i + 2, f"reader{i}@example.com", f"R {i}",
                            json.dumps({"city": "Köln"}), "active") for i in range(subscribers)),
                          list_name="news")
    conn = sqlite3.connect(path)
    html = "<p>" + "An edition paragraph with <b>words</b>. " * 7000 + "</p>"  # ~300 KB
    with conn:
        for e in range(1, snapshots + 1):
            conn.execute("INSERT INTO editions (id, slug, number, source_path, date_utc, created_at) "
                         "VALUES (?, ?, ?, 'e.md', '2026-01-01T00:00:00Z', 'now')", (e, f"e{e}", e))
            conn.execute("INSERT INTO snapshots (id, edition_id, content_hash, source_hash, slug, title, "
                         "subject, preheader, date, lang, html, text, web_url, source_path, created_at) "
                         "VALUES (?, ?, ?, 'h', ?, 'T', 'S', 'P', 'd', 'en', ?, ?, 'u', 'e.md', 'now')",
                         (e, e, f"c{e}", f"e{e}", html + str(e), html[:50_000]))
            conn.execute("INSERT INTO sends (id, edition_id, snapshot_id, slug, list_name, subject, "
                         "transport, created_at) VALUES (?, ?, ?, ?, 'news', 'S', 'ses', 'now')",
                         (e, e, e, f"e{e}"))
        per_send = max(1, deliveries // max(snapshots, 1))
        conn.executemany(
            "INSERT INTO deliveries (id, send_id, subscriber_id, email, state, provider_message_id, "
            "attempts, sent_at, updated_at, list_id) VALUES (?, ?, ?, ?, 'sent', ?, 1, 'now', 'now', 1)",
            ((d, min(d // per_send + 1, snapshots), d % subscribers + 1,
              f"reader{d % subscribers}@example.com", f"0100-{d:012d}") for d in range(deliveries)))
        payload = json.dumps({"eventType": "Open", "mail": {"messageId": "x" * 60}})
        conn.executemany(
            "INSERT INTO events (message_id, type, email, delivery_id, provider_message_id, occurred_at, "
            "received_at, payload) VALUES (?, 'open', ?, ?, ?, 'now', 'now', ?)",
            ((f"ev{d}", f"reader{d % subscribers}@example.com", d, f"0100-{d:012d}", payload)
             for d in range(0, deliveries, 2)))
    conn.close()


def bare_copy(source: str, url: str) -> tuple[float, int]:
    """Every table's rows moved with no checks: the floor of what a copy can cost."""
    import sqlite3

    import psycopg

    from newsletter.store.copy import KNOWN_ORDER

    src = sqlite3.connect(source)
    dst = psycopg.connect(url)
    total = 0
    start = time.perf_counter()
    theirs = {r[0] for r in dst.execute("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema = current_schema()")}
    with dst.transaction():
        cur = dst.cursor()
        for table in KNOWN_ORDER:
            columns = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
            if not columns or table not in theirs:
                continue
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in src.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                    copy.write_row(row)
                    total += 1
    seconds = time.perf_counter() - start
    src.close()
    dst.close()
    return seconds, total


def child(source: str, target: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, source, target], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument("--deliveries", type=int, default=400_000)
    parser.add_argument("--snapshots", type=int, default=200)
    args = parser.parse_args()
    from pg_support import PgServer

    from newsletter.store import pg

    server = PgServer.start(durable=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = str(Path(tmp) / "project.db")
            make_project(source, args.subscribers, args.deliveries, args.snapshots)
            size = Path(source).stat().st_size / 1e6
            baseline_url = server.database()
            pg.connect(baseline_url).close()
            seconds, rows = bare_copy(source, baseline_url)
            print(f"project: {size:.0f} MB SQLite file, {rows:,} rows "
                  f"({args.snapshots} snapshots of ~300 KB HTML)")
            print(f"baseline (bare sqlite3 → COPY loop): {seconds:.2f} s, {rows / seconds:,.0f} rows/s")
            to_pg = server.database()
            found = child(source, to_pg)
            print(f"db copy SQLite → PostgreSQL: {found['seconds']:.2f} s, "
                  f"{found['rows'] / found['seconds']:,.0f} rows/s, "
                  f"{found['seconds'] / seconds:.2f}x the baseline, peak RSS {found['rss_mb']:.0f} MB")
            back = str(Path(tmp) / "back.db")
            found = child(to_pg, back)
            print(f"db copy PostgreSQL → SQLite: {found['seconds']:.2f} s, "
                  f"{found['rows'] / found['seconds']:,.0f} rows/s, "
                  f"{found['seconds'] / seconds:.2f}x the baseline, peak RSS {found['rss_mb']:.0f} MB")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
