"""``send --workers``: one worker against two, on SQLite and PostgreSQL, against a bare boto3 loop, same run.

    .venv/bin/python bench/workers.py [--readers 10000] [--bare 3000] [--rounds 3] [--quick]
                                      [--engines sqlite,postgresql]

A null SES endpoint (tests/fake_ses.py --mode null: every SendEmail answered with success at once;
account max rate 1,000,000/s, so pacing never waits) runs as its own process. Then, alternated in
each round, each in a fresh child process (helpers from bench/send.py):
1. the baseline: a bare loop of boto3 SES v2 ``send_email`` calls with the same prebuilt raw
   message (the edition's first reader's), ``--bare`` times;
2. ``--workers 1``: ``SendJob.run`` in the process (ledger on: recipients frozen in the database,
   atomic claims, per-reader messages, retries armed, pacing at the account max, concurrency 8);
3. ``--workers 2``: ``run_workers`` — the parent freezes the send and starts two worker processes
   (``python -m newsletter.send.worker``, each its own client and 8 threads) that share it through
   the ledger, as ``newsletter send … --workers 2`` does.
2 and 3 run once per engine: the project's SQLite file, and a PostgreSQL database (a throw-away
Debian server started here, fsync on; tests/pg_support.py) holding the same readers.
Messages/s: for the baseline and ``--workers 1`` the sending loop's time; for ``--workers 2`` both
the wall time from the parent's start (worker start-up included) and the steady rate (from the
first message recorded to the end, as the parent's progress sees it); and the client's CPU per
message (process time) of the baseline and of ``--workers 1``. Goals (issue 11): ≥ 1,200/s with
2 workers, ≥ 1.6× one worker, one worker ≥ 0.9× the bare loop. The load average is printed.
Ours sends through the SES transport's lean ``SendEmail`` path (``SesV2Sender``: the body built
directly, botocore's ``SigV4Auth``, the client's urllib3 pool); the baseline stays boto3's own
``client.send_email``, defaults and all.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import send as send_bench  # noqa: E402  (bench/send.py: the setup, bare loop and null endpoint)

WORKERS = r"""
import dataclasses, json, os, sys, time
os.chdir(sys.argv[1])
from newsletter.config import load_config
from newsletter.edition.source import load_edition
from newsletter.render.html import render_edition
from newsletter.send.job import SendJob, SendOptions
from newsletter.send.workers import run_workers
config = load_config()
rendered = render_edition(load_edition(sys.argv[2], config=config), config)
rendered = dataclasses.replace(rendered, slug=rendered.slug + "-" + sys.argv[5])
workers = int(sys.argv[4])
job = SendJob(config, rendered, "bench", SendOptions(transport="ses", concurrency=int(sys.argv[3])))
plan = job.plan()
samples = []
def progress(info):
    samples.append((time.perf_counter(), info.sent))
started, cpu = time.perf_counter(), time.process_time()
if workers == 1:
    report = job.run(plan=plan)
    seconds = report.progress.elapsed
    steady = seconds
    cpu = time.process_time() - cpu
else:
    report = run_workers(job, plan, workers, progress=progress, notify=lambda line: print(line, file=sys.stderr))
    seconds = time.perf_counter() - started
    first = next(((t, n) for t, n in samples if n > 0), None)
    end = samples[-1]
    steady = (end[0] - first[0]) * report.progress.sent / max(1, report.progress.sent - first[1]) if first else seconds
job.close()
p = report.progress
print(json.dumps({"sent": p.sent, "failed": p.failed, "seconds": seconds, "steady": steady, "rate": plan.rate,
                  "cpu": cpu if workers == 1 else None}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=10000)
    parser.add_argument("--bare", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternate the three this many times")
    parser.add_argument("--quick", action="store_true", help="4,000 readers, 1,500 bare sends, 2 rounds")
    parser.add_argument("--engines", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    args = parser.parse_args()
    if args.quick:
        args.readers, args.bare, args.rounds = 4000, 1500, 2
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]

    load = os.getloadavg()
    server, endpoint = send_bench.start_null_endpoint()
    pg_server = None
    results: dict[str, list] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            databases: dict[str, str | None] = {}
            for engine in engines:
                if engine == "postgresql":
                    sys.path.insert(0, str(send_bench.REPO / "tests"))
                    from pg_support import PgServer

                    pg_server = PgServer.start(durable=True)
                    databases[engine] = pg_server.database()
                else:
                    databases[engine] = None
            roots = {engine: send_bench.project(Path(tmp) / engine, endpoint, args.readers, database=url)
                     for engine, url in databases.items()}
            for number in range(args.rounds):  # alternated, so that a busy moment hits them all
                for engine, root in roots.items():
                    url = databases[engine]
                    bare = send_bench.child(send_bench.BARE, str(root), str(send_bench.EDITION), str(args.bare),
                                            database=url)
                    one = send_bench.child(WORKERS, str(root), str(send_bench.EDITION), str(args.concurrency), "1",
                                           f"a{number}", database=url)
                    two = send_bench.child(WORKERS, str(root), str(send_bench.EDITION), str(args.concurrency), "2",
                                           f"b{number}", database=url)
                    results.setdefault(engine, []).append((bare, one, two))
    finally:
        server.terminate()
        server.wait(10)
        if pg_server is not None:
            pg_server.stop()

    print(f"{os.cpu_count()} CPUs; load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}; null SES endpoint {endpoint} (separate process); "
          f"{args.readers:,} readers per send, concurrency {args.concurrency} per worker")
    for engine, rounds in results.items():
        report(engine, rounds)


def report(engine: str, rounds: list) -> None:
    name = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[engine]
    print(f"-- {name} ledger")
    best = {"bare": 0.0, "one": 0.0, "two": 0.0, "two_wall": 0.0}
    for number, (bare, one, two) in enumerate(rounds, start=1):
        b = bare["sent"] / bare["seconds"]
        o = one["sent"] / one["seconds"]
        t, tw = two["sent"] / two["steady"], two["sent"] / two["seconds"]
        for key, value in (("bare", b), ("one", o), ("two", t), ("two_wall", tw)):
            best[key] = max(best[key], value)
        print(f"round {number}: bare boto3 loop {b:6.0f}/s | --workers 1 {o:6.0f}/s ({o / b:.2f}× bare) | "
              f"--workers 2 {t:6.0f}/s steady, {tw:6.0f}/s wall with start-up ({t / o:.2f}× one worker) "
              f"[{one['sent']:,} + {two['sent']:,} sent, {one['failed'] + two['failed']} failed]; client CPU per message: "
              f"bare {bare['cpu'] / bare['sent'] * 1e3:.2f} ms, --workers 1 {one['cpu'] / one['sent'] * 1e3:.2f} ms")
    b, o, t = best["bare"], best["one"], best["two"]
    print(f"{name} best rounds: bare {b:.0f}/s, --workers 1 {o:.0f}/s, --workers 2 {t:.0f}/s steady "
          f"({best['two_wall']:.0f}/s wall)")
    print(f"{name} goals: 2 workers ≥ 1,200/s {'met' if t >= 1200 else 'MISSED'} ({t:.0f}); "
          f"2 workers ≥ 1.6× one {'met' if t / o >= 1.6 else 'MISSED'} ({t / o:.2f}×); "
          f"one worker ≥ 0.9× bare {'met' if o / b >= 0.9 else 'MISSED'} ({o / b:.2f}×)")


if __name__ == "__main__":
    main()
