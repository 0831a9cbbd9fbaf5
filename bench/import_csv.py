"""Benchmark: `subscribers import` of a generated CSV against sqlite3's own `.import`.

    .venv/bin/python bench/import_csv.py [--rows 1000000] [--small 100000]

Generates an ``email,name`` CSV in a temporary folder, then in the same run:
1. the baseline: the sqlite3 command-line shell's ``.import`` of the same file into a plain table
   (best of three);
2. newsletter's real import code (``newsletter.audience.importer.import_csv``) into an empty database,
   in a child process that reports its wall time and peak RSS (``resource.getrusage``);
3. the same import of a ``--small`` prefix of the file, to show memory stays flat;
4. (``--populated``, the default) as many other addresses imported into the database from 2:
   the general path every later import takes (a first import into an empty database
   appends and indexes afterwards; see newsletter/store/sqlite_bulk.py).
Prints both times, their ratio (goal ≤ 5×), and the peak memory of both import sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, shutil, sys, time
from pathlib import Path
from newsletter.audience.importer import import_csv, read_rows
from newsletter.store import open_store
from newsletter.store.base import ImportSummary
path, db = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:  # start from a copy of a populated database
    shutil.copy(sys.argv[3], db)
# the Python half alone (read, parse, validate), streamed and discarded: where the time goes
start = time.perf_counter()
with open(path, "rb") as raw:
    for _ in read_rows(raw, Path(path), ImportSummary()):
        pass
parse_seconds = time.perf_counter() - start
phases = {}  # SQL statement (shortened) -> seconds spent in execute/executemany

class Timed:  # the store's connection, timing each statement (per call, not per row)
    def __init__(self, conn):
        self._conn = conn
    @property
    def __class__(self):  # still a sqlite3 connection to isinstance (connection.is_postgres)
        return type(self._conn)
    def __getattr__(self, name):
        return getattr(self._conn, name)
    def _timed(self, method, sql, *args):
        start = time.perf_counter()
        try:
            return getattr(self._conn, method)(sql, *args)
        finally:
            label = " ".join(sql.split())[:48]
            phases[label] = phases.get(label, 0.0) + time.perf_counter() - start
    def execute(self, sql, *args):
        return self._timed("execute", sql, *args)
    def executemany(self, sql, *args):
        return self._timed("executemany", sql, *args)

with open_store(db) as store:
    if store.get_list("bench") is None:
        store.create_list("bench")
    start_count = store.count_subscribers()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.conn, conn = Timed(store.conn), store.conn
    start = time.perf_counter()
    summary = import_csv(store, path, list_name="bench")
    elapsed = time.perf_counter() - start
    store.conn = conn
    count = store.count_subscribers(list_name="bench") - start_count
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "peak_kib": peak, "before_kib": before,
                  "parse_seconds": parse_seconds, "phases": phases,
                  "summary": summary.as_dict(), "count": count}))
"""

WORDS = ["ada", "grace", "alan", "edsger", "barbara", "donald", "ken", "dennis", "margaret",
         "linus", "guido", "bjarne", "frances", "john", "radia", "tim", "vint", "sophie"]


def generate(path: Path, rows: int, seed: int = 7, tag: str = "") -> None:
    """``rows`` distinct plain addresses with names; a few mixed-case ones, like real lists."""
    rnd = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("email,name\n")
        for i in range(rows):
            first, last = rnd.choice(WORDS), rnd.choice(WORDS)
            local = f"{first}.{last}{tag}{i}"
            if i % 50 == 0:
                local = local.capitalize()
            domain = f"mail{i % 997}.example.com"
            fh.write(f"{local}@{domain},{first.title()} {last.title()}\n")


def sqlite_import(sqlite3: str, csv_path: Path, db_path: Path, runs: int = 3) -> float:
    """The best of ``runs`` (the machine may be shared: the baseline gets the benefit)."""
    best = float("inf")
    for run in range(runs):
        target = db_path.with_name(f"{db_path.stem}-{run}.db")
        start = time.perf_counter()
        subprocess.run([sqlite3, str(target), ".mode csv", f".import {csv_path} plain"],
                       check=True)
        best = min(best, time.perf_counter() - start)
    return best


def newsletter_import(csv_path: Path, db_path: Path, populated: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    args = [sys.executable, "-c", CHILD, str(csv_path), str(db_path)]
    out = subprocess.run(args + ([str(populated)] if populated else []),
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


def head(src: Path, dst: Path, rows: int) -> None:
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for i, line in enumerate(fin):
            if i > rows:
                break
            fout.write(line)


def print_phases(result: dict, top: int = 5) -> None:
    """Where the import's time went: the slowest SQL statements (summed over calls; the WAL
    checkpoint runs inside COMMIT), and the rest: Python reading, parsing, validating and
    binding rows (the appends' executemany includes SQLite's side of the binding)."""
    phases = sorted(result["phases"].items(), key=lambda kv: -kv[1])
    print("  time in SQL statements (slowest first; the rest is Python):")
    for sql, seconds in phases[:top]:
        print(f"    {seconds:6.2f} s  {sql}")
    rest = result["seconds"] - sum(result["phases"].values())
    print(f"    {rest:6.2f} s  Python: reading, parsing, validating, batching rows")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--populated", action=argparse.BooleanOptionalAction, default=True,
                        help="also import as many new addresses into the populated database "
                             "(the general path: staged, sorted, checked against what is there)")
    args = parser.parse_args()
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        print("sqlite3 command-line shell not found: install it (Debian: apt-get install sqlite3) "
              "to run the baseline", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp:
        tmp = Path(tmp)
        big, small = tmp / "big.csv", tmp / "small.csv"
        generate(big, args.rows)
        head(big, small, args.small)
        size_mb = big.stat().st_size / 1e6
        print(f"CSV: {args.rows:,} rows, {size_mb:.1f} MB ({big})")
        base = sqlite_import(sqlite3, big, tmp / "plain.db")
        print(f"baseline  sqlite3 .import (plain table, no checks, best of 3): {base:7.2f} s")
        result = newsletter_import(big, tmp / "big.db")
        ratio = result["seconds"] / base
        print(f"newsletter import_csv ({result['count']:,} subscribers): {result['seconds']:7.2f} s"
              f"  = {ratio:.2f}x sqlite3 .import  (goal <= 5x)  "
              f"[{args.rows / result['seconds']:,.0f} rows/s]")
        print(f"  of which reading+parsing+validating in Python alone: {result['parse_seconds']:.2f} s"
              f" ({result['parse_seconds'] / base:.2f}x .import); the rest is SQLite: rows, the "
              f"address index, memberships, the WAL commit")
        print_phases(result)
        small_result = newsletter_import(small, tmp / "small.db")
        print(f"peak RSS  {args.rows:>9,} rows: {result['peak_kib'] / 1024:6.1f} MiB "
              f"(after start-up {result['before_kib'] / 1024:.1f} MiB)")
        print(f"peak RSS  {args.small:>9,} rows: {small_result['peak_kib'] / 1024:6.1f} MiB "
              f"(after start-up {small_result['before_kib'] / 1024:.1f} MiB)")
        print(f"summary: {json.dumps(result['summary'])}")
        if args.populated:
            other = tmp / "other.csv"
            generate(other, args.rows, seed=11, tag="x")
            again = newsletter_import(other, tmp / "again.db", populated=tmp / "big.db")
            print(f"general path: {args.rows:,} new addresses into the database that now holds "
                  f"{result['count']:,}: {again['seconds']:.2f} s = "
                  f"{again['seconds'] / base:.2f}x sqlite3 .import; peak RSS "
                  f"{again['peak_kib'] / 1024:.1f} MiB")
            print_phases(again)
    return 0


if __name__ == "__main__":
    sys.exit(main())
