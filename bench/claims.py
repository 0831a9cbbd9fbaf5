"""The ledger alone: claim + record throughput with 1 and 4 concurrent workers, on PostgreSQL and SQLite.

    .venv/bin/python bench/claims.py [--readers 100000] [--batch 32] [--rounds 2] [--quick]

No transport at all: each worker is a process that opens the ledger as a sending process does
(``Ledger.open``), registers, then loops ``claim(send, worker, batch)`` → ``record(...)`` (every
claim "sent", with a provider message id) until nothing is left: the ledger's share of a send,
with the readers' names and attributes read for each claim as for a real message. ``--batch 32``
is what a sending worker with ``--concurrency 8`` claims at most (its window, 4 × concurrency).

Same run, same readers (imported through the real import code into each database), a fresh send
of all of them per measurement, alternated by round:
1. SQLite (the default file, WAL, one write lock) with 1 and with 4 workers;
2. PostgreSQL (a throw-away Debian server, fsync ON as a real one runs; claims with
   ``FOR UPDATE SKIP LOCKED``) with 1 and with 4 workers.
Deliveries/s = deliveries recorded / (last worker's end − first worker's start), the workers
released together. Goal (issue 11): ≥ 10,000 deliveries/s on PostgreSQL with 4 workers.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

SETUP = r"""
import csv, os, sys
from newsletter.config import Config
from newsletter.audience.importer import import_csv
from newsletter.store import open_store
root, database, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
path = os.path.join(root, "readers.csv")
if not os.path.exists(path):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["email", "name", "city"])
        for i in range(n):
            w.writerow([f"reader{i:07d}@example.com", "张伟" if i % 3 else "Ada", "北京" if i % 2 else "London"])
with open_store(Config(root=__import__("pathlib").Path(root), database=database)) as store:
    store.create_list("bench")
    import_csv(store, path, list_name="bench")
"""

SEND = r"""
import sys
from pathlib import Path
from newsletter.audience.segments import Audience
from newsletter.config import Config
from newsletter.store import open_store
from newsletter.store.ledger import Ledger
root, database, slug = sys.argv[1], sys.argv[2], sys.argv[3]
config = Config(root=Path(root), database=database)
with open_store(config) as store, Ledger.open(config) as ledger:
    daily = store.get_list("bench")
    send = ledger.create_send(slug=slug, subject="Bench", list_name="bench", list_id=daily.id, transport="null",
                              recipients=store.audience_select(Audience(("bench",))))
    print(send.recipients)
"""

WORKER = r"""
import json, sys, time
from pathlib import Path
from newsletter.config import Config
from newsletter.store.ledger import DeliveryState, Ledger, Outcome
root, database, slug, batch, start_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
ledger = Ledger.open(Config(root=Path(root), database=database))
send = ledger.find_send(slug)
worker = ledger.register_worker(send.id)
while time.time() < start_at:
    time.sleep(0.0005)
began = time.time()
done = 0
while True:
    claims, _ = ledger.claim(send, worker, batch)
    if not claims:
        break
    ledger.record(send.id, worker, [Outcome(c.delivery_id, DeliveryState.SENT, f"bench-{c.delivery_id}", attempts=1)
                                    for c in claims])
    done += len(claims)
ended = time.time()
ledger.stop_worker(worker)
ledger.close()
print(json.dumps({"done": done, "began": began, "ended": ended}))
"""


def run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO,
                         env={k: v for k, v in os.environ.items() if k != "NEWSLETTER_DATABASE_URL"})
    if out.returncode != 0:
        sys.exit(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out.stdout.strip()


def measure(root: Path, database: str, slug: str, workers: int, batch: int) -> tuple[float, int]:
    total = int(run(SEND, str(root), database, slug).splitlines()[-1])
    start_at = time.time() + 1.5  # every worker connected and registered by then
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(root), database, slug, str(batch), str(start_at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
             for _ in range(workers)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            sys.exit(f"worker failed ({proc.returncode}):\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    done = sum(r["done"] for r in results)
    if done != total:
        sys.exit(f"{slug}: {done} deliveries recorded, {total} frozen: the ledger lost or doubled some")
    seconds = max(r["ended"] for r in results) - min(r["began"] for r in results)
    return done / seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=32, help="deliveries per claim (a worker's window)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20,000 readers, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.readers, args.rounds = 20_000, 1
    from pg_support import PgServer

    load = os.getloadavg()
    server = PgServer.start(durable=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            databases = {"SQLite": str(root / "bench.db"), "PostgreSQL": server.database()}
            for database in databases.values():
                run(SETUP, str(root), database, str(args.readers))
            figures: dict[tuple[str, int], list[float]] = {}
            for number in range(args.rounds):
                for name, database in databases.items():
                    for workers in (1, 4):
                        slug = f"bench-{number}-{workers}"
                        rate, done = measure(root, database, slug, workers, args.batch)
                        figures.setdefault((name, workers), []).append(rate)
                        print(f"round {number + 1}: {name:10s} {workers} worker(s): {rate:8,.0f} deliveries/s "
                              f"({done:,} claimed and recorded)", flush=True)
    finally:
        server.stop()
    print(f"{os.cpu_count()} CPUs; load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
          f"{args.readers:,} deliveries per send, claims of {args.batch}, no transport")
    best = {key: max(values) for key, values in figures.items()}
    for name in ("SQLite", "PostgreSQL"):
        one, four = best[(name, 1)], best[(name, 4)]
        print(f"best: {name:10s} 1 worker {one:8,.0f}/s | 4 workers {four:8,.0f}/s ({four / one:.2f}× one worker)")
    pg4 = best[("PostgreSQL", 4)]
    print(f"PostgreSQL 4 workers vs SQLite 4 workers: {pg4 / best[('SQLite', 4)]:.2f}×")
    print(f"goal: PostgreSQL, 4 workers ≥ 10,000 deliveries/s {'met' if pg4 >= 10_000 else 'MISSED'} ({pg4:,.0f})")


if __name__ == "__main__":
    main()
