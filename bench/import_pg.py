"""Benchmark: `subscribers import` into PostgreSQL (COPY) against psql's `\\copy` of the same file.

    .venv/bin/python bench/import_pg.py [--rows 1000000] [--small 100000]

Starts a throw-away PostgreSQL server (Debian's binaries, tests/pg_support.py; fsync ON, as a
real server would run), generates an ``email,name`` CSV (the generator of bench/import_csv.py),
then in the same run:
1. the baseline: ``psql -c "\\copy plain FROM file CSV HEADER"`` into a plain two-column table
   (no index, no checks; best of three);
2. newsletter's real import code (``newsletter.importer.import_csv`` on a ``PostgresStore``)
   into an empty, migrated database, in a child process that reports its wall time and peak
   RSS (``resource.getrusage``), and the time its statements spent in the server;
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
import json, resource, sys, time
from pathlib import Path
from newsletter.importer import import_csv, read_rows
from newsletter.store import open_store
from newsletter.store.base import ImportSummary
path, url = sys.argv[1], sys.argv[2]
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
    start = time.perf_counter()
    summary = import_csv(store, path, list_name="bench")
    elapsed = time.perf_counter() - start
    count = store.count_subscribers(list_name="bench") - start_count
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "peak_kib": peak, "before_kib": before,
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


def main() -> int:
    from import_csv import generate, head
    from pg_support import PgServer, PgUnavailable

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--populated", action=argparse.BooleanOptionalAction, default=True)
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
            url = server.database()
            result = newsletter_import(big, url)
            ratio = result["seconds"] / base
            print(f"newsletter import_csv ({result['count']:,} subscribers): "
                  f"{result['seconds']:7.2f} s  = {ratio:.2f}x psql \\copy  (goal <= 3x)  "
                  f"[{args.rows / result['seconds']:,.0f} rows/s]")
            print(f"  of which reading+parsing+validating in Python alone: "
                  f"{result['parse_seconds']:.2f} s ({result['parse_seconds'] / base:.2f}x "
                  f"\\copy); COPY runs while Python parses, then the merge: subscribers, the "
                  f"address index, memberships")
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
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
