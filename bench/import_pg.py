"""Benchmark: `subscribers import` into PostgreSQL (COPY) against psql's `\\copy` of the same file.

    .venv/bin/python bench/import_pg.py [--rows 1000000] [--small 100000]

Starts a throw-away PostgreSQL server (Debian's binaries, tests/pg_support.py; fsync ON, as a
real server would run), generates an ``email,name`` CSV (the generator of bench/import_csv.py),
then in the same run:
1. the baseline: ``psql -c "\\copy plain FROM file CSV HEADER"`` into a plain two-column table
   (no index, no checks; best of three);
2. newsletter's real import code (``newsletter.audience.importer.import_csv`` on a ``PostgresStore``)
   into an empty, migrated database, in a child process that reports its wall time and peak
   RSS (``resource.getrusage``), and the time its statements spent in the server (best of
   ``--runs``, 3 by default, as for the baseline);
3. the same import of a ``--small`` prefix of the file, to show memory stays flat;
4. (``--populated``, the default) as many other addresses into the database from 2 (rows are
   then checked against the subscribers already there).
Prints the times, their ratio (goal <= 3x) and the peak memory of both import sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
from newsletter.audience.importer import import_csv, read_rows
from newsletter.store import open_store
from newsletter.store.base import ImportSummary
from newsletter.store import pg
path, url = sys.argv[1], sys.argv[2]
# SQL statement (shortened) -> [wall seconds, the server backend's CPU seconds, this process's
# CPU seconds] spent in it; a COPY's include Python producing its rows
phases = {}
_TICK = os.sysconf("SC_CLK_TCK")
def backend_cpu(conn):
    # CPU seconds of this connection's server process so far (its parallel workers aside);
    # 0 when /proc does not show it (another user's process)
    try:
        with open(f"/proc/{conn.raw.info.backend_pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except OSError:
        return 0.0
def record(label, conn, start, server, python):
    entry = phases.setdefault(label, [0.0, 0.0, 0.0])
    entry[0] += time.perf_counter() - start
    entry[1] += backend_cpu(conn) - server
    entry[2] += time.process_time() - python
_execute = pg.PgConnection.execute
def timed(self, sql, params=None):
    start, server, python = time.perf_counter(), backend_cpu(self), time.process_time()
    try:
        return _execute(self, sql, params)
    finally:
        record(" ".join(sql.split())[:56], self, start, server, python)
_copy_rows = pg.copy_rows
def timed_copy(conn, sql, rows, *args):
    start, server, python = time.perf_counter(), backend_cpu(conn), time.process_time()
    try:
        return _copy_rows(conn, sql, rows, *args)
    finally:
        record(" ".join(sql.split())[:56], conn, start, server, python)
start = time.perf_counter()
with open(path, "rb") as raw:
    for _ in read_rows(raw, Path(path), ImportSummary()):
        pass
parse_seconds = time.perf_counter() - start
with open_store(url) as store:
    if store.get_list("bench") is None:
        store.create_list("bench")
    start_count = store.count_subscribers()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, python = time.perf_counter(), time.process_time()
    pg.PgConnection.execute, pg.copy_rows = timed, timed_copy
    summary = import_csv(store, path, list_name="bench")
    elapsed, python = time.perf_counter() - start, time.process_time() - python
    pg.PgConnection.execute, pg.copy_rows = _execute, _copy_rows
    count = store.count_subscribers(list_name="bench") - start_count
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "python_cpu": python, "peak_kib": peak, "before_kib": before, "phases": phases,
                  "parse_seconds": parse_seconds, "summary": summary.as_dict(), "count": count}))
"""


def psql_copy(server, csv_path: Path, runs: int = 3) -> float:
    """The best of ``runs`` (the machine may be shared: the baseline gets the benefit)."""
    best = float("inf")
    for _ in range(runs):
        url = server.database()
        dbname = url.rsplit("/", 1)[1]
        server.psql("-c", "CREATE TABLE plain (email text, name text)", dbname=dbname)
        start = time.perf_counter()
        server.psql("-c", f"\\copy plain (email, name) FROM '{csv_path}' WITH (FORMAT csv, "
                          "HEADER true)", dbname=dbname)
        best = min(best, time.perf_counter() - start)
        server.drop(url)
    return best


def newsletter_import(csv_path: Path, url: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CHILD, str(csv_path), url],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


def print_phases(result: dict, top: int = 8) -> None:
    """Where the import's time went, statement by statement: wall time, the server backend's
    CPU time (its parallel index-build workers not counted) and this process's CPU time (a
    COPY's: reading, parsing, validating and encoding the rows). On a shared machine the CPU
    times are the steadier figures."""
    phases = sorted(result["phases"].items(), key=lambda kv: -kv[1][0])
    print("  statements (slowest first):   wall   server CPU  Python CPU")
    for sql, (wall, server, python) in phases[:top]:
        print(f"    {wall:6.2f} s {server:6.2f} s {python:6.2f} s  {sql}")
    wall = result["seconds"] - sum(w for w, _, _ in result["phases"].values())
    server = sum(s for _, s, _ in result["phases"].values())
    print(f"    {wall:6.2f} s  elsewhere (the rest of the statements, Python between them); "
          f"totals: server CPU {server:.2f} s, Python CPU {result['python_cpu']:.2f} s")


def best(runs: int, fn) -> dict:
    """The fastest of ``runs`` results (the baseline gets best of 3 too)."""
    return min((fn(i) for i in range(runs)), key=lambda r: r["seconds"])


def main() -> int:
    from import_csv import generate, head
    from pg_support import PgServer, PgUnavailable

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--populated", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--runs", type=int, default=3, help="newsletter imports (best counts)")
    args = parser.parse_args()
    try:
        server = PgServer.start(durable=True)
    except PgUnavailable as err:
        print(f"cannot start PostgreSQL: {err}", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp:
            tmp = Path(tmp)
            os.chmod(tmp, 0o755)
            big, small = tmp / "big.csv", tmp / "small.csv"
            generate(big, args.rows)
            head(big, small, args.small)
            print(f"CSV: {args.rows:,} rows, {big.stat().st_size / 1e6:.1f} MB; "
                  f"PostgreSQL {server.psql('-tAc', 'SHOW server_version').strip()} (fsync on)")
            base = psql_copy(server, big)
            print(f"baseline  psql \\copy (plain table, no index, no checks, best of 3): "
                  f"{base:7.2f} s")
            urls = [server.database() for _ in range(args.runs)]
            result = best(args.runs, lambda i: {**newsletter_import(big, urls[i]), "url": urls[i]})
            url = result["url"]
            ratio = result["seconds"] / base
            print(f"newsletter import_csv ({result['count']:,} subscribers): "
                  f"{result['seconds']:7.2f} s  = {ratio:.2f}x psql \\copy  (goal <= 3x)  "
                  f"[{args.rows / result['seconds']:,.0f} rows/s]")
            print(f"  reading+parsing+validating in Python alone (before the import, not part "
                  f"of its time): {result['parse_seconds']:.2f} s ({result['parse_seconds'] / base:.2f}x "
                  f"\\copy); the COPY runs while Python parses; then the address index, the "
                  f"memberships, their indexes and foreign keys")
            print(f"  load average at the start: {os.getloadavg()[0]:.2f} (the machine's 2 cores "
                  "are shared)")
            print_phases(result)
            small_url = server.database()
            small_result = newsletter_import(small, small_url)
            print(f"peak RSS  {args.rows:>9,} rows: {result['peak_kib'] / 1024:6.1f} MiB "
                  f"(after start-up {result['before_kib'] / 1024:.1f} MiB)")
            print(f"peak RSS  {args.small:>9,} rows: {small_result['peak_kib'] / 1024:6.1f} MiB "
                  f"(after start-up {small_result['before_kib'] / 1024:.1f} MiB)")
            print(f"summary: {json.dumps(result['summary'])}")
            if args.populated:
                other = tmp / "other.csv"
                generate(other, args.rows, seed=11, tag="x")
                again = newsletter_import(other, url)
                print(f"populated: {args.rows:,} new addresses into the database that now holds "
                      f"{result['count']:,}: {again['seconds']:.2f} s = "
                      f"{again['seconds'] / base:.2f}x psql \\copy; peak RSS "
                      f"{again['peak_kib'] / 1024:.1f} MiB")
                print_phases(again)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
