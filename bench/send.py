"""End-to-end send to a local null SES endpoint, against a bare boto3 loop; and peak memory.

    .venv/bin/python bench/send.py [--readers 10000] [--big 100000] [--bare 3000] [--quick] [--no-big]

A null SES endpoint (tests/fake_ses.py --mode null: answers every SendEmail with success at once,
keeps nothing; account max rate 1,000,000/s, so pacing never waits) runs as its own process.
Then, each in a fresh child process, in the same run:
1. the baseline: a bare loop of boto3 SES v2 ``send_email`` calls sending the same prebuilt raw
   message (the edition's first reader's, ~59 KB) ``--bare`` times, one after the other;
2. ours: ``SendJob`` (ledger on, recipients frozen in SQLite, atomic claims, per-reader messages,
   retries armed, pacing at the account max, concurrency 8) sending the edition to ``--readers``;
3. the same send to ``--big`` readers, for peak RSS (``ru_maxrss``): goal ≤ 128 MB and flat.
Prints messages/s for both, their ratio (goals ≥ 1,000/s and ≥ 0.85×), and both peak RSS figures.
Ours sends through the SES transport's lean ``SendEmail`` path (``SesV2Sender``: the body built
directly, botocore's ``SigV4Auth``, the client's urllib3 pool); the baseline stays boto3's own
``client.send_email``, defaults and all.
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

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
EDITION = REPO / "editions" / "2026-11-24.md"

SETUP = r"""
import csv, sys
from newsletter.config import load_config
from newsletter.audience.importer import import_csv
from newsletter.store import open_store
folder, n = sys.argv[1], int(sys.argv[2])
path = folder + "/readers.csv"
names = ["张伟", "Ada Lovelace", "李娜", "Grace Hopper", "", "José Valim"]
with open(path, "w", newline="", encoding="utf-8") as fh:
    w = csv.writer(fh)
    w.writerow(["email", "name", "city"])
    for i in range(n):
        w.writerow([f"reader{i:07d}@example.com", names[i % len(names)], "北京" if i % 2 else "London"])
import os; os.chdir(folder)
with open_store(load_config()) as store:
    store.create_list("bench")
    import_csv(store, path, list_name="bench")
"""

SEND = r"""
import json, os, resource, sys, time
os.chdir(sys.argv[1])
from newsletter.config import load_config
from newsletter.edition.source import load_edition
from newsletter.render.html import render_edition
from newsletter.send.job import SendJob, SendOptions
config = load_config()
rendered = render_edition(load_edition(sys.argv[2], config=config), config)
if len(sys.argv) > 4:  # one send per edition: each round sends "another edition"
    import dataclasses
    rendered = dataclasses.replace(rendered, slug=rendered.slug + "-" + sys.argv[4])
job = SendJob(config, rendered, "bench", SendOptions(transport="ses", concurrency=int(sys.argv[3])))
plan = job.plan()
cpu = time.process_time()
report = job.run(plan=plan)
cpu = time.process_time() - cpu
job.close()
p = report.progress
print(json.dumps({"sent": p.sent, "failed": p.failed, "seconds": p.elapsed, "rate": plan.rate, "cpu": cpu,
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

BARE = r"""
import json, os, resource, sys, time
os.chdir(sys.argv[1])
import boto3
from botocore.config import Config as BotoConfig
from newsletter.config import load_config, load_secret
from newsletter.edition.source import load_edition
from newsletter.send.message import MessageTemplate, SendContext
from newsletter.render.html import render_edition
from newsletter.store import open_store
config = load_config()
rendered = render_edition(load_edition(sys.argv[2], config=config), config)
with open_store(config) as store:
    first = next(iter(store.recipients("bench")))
    list_id = store.get_list("bench").id
raw = MessageTemplate(rendered, SendContext(config=config, secret=load_secret(config), list_id=list_id,
                                            list_name="bench")).render(first).raw
client = boto3.Session(region_name="us-east-1").client(
    "sesv2", endpoint_url=config.ses.endpoint_url, config=BotoConfig(retries={"total_max_attempts": 1}))
n = int(sys.argv[3])
client.send_email(FromEmailAddress="news@example.com", Destination={"ToAddresses": [first.email]},
                  Content={"Raw": {"Data": raw}})  # warm up: connection, endpoint resolution
start, cpu = time.perf_counter(), time.process_time()
for _ in range(n):
    client.send_email(FromEmailAddress="news@example.com", Destination={"ToAddresses": [first.email]},
                      Content={"Raw": {"Data": raw}})
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"sent": n, "seconds": seconds, "bytes": len(raw), "cpu": cpu,
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

TOML = """\
name = "AI 日报"
from = "AI 日报 <news@example.com>"
reply_to = "editor@example.com"
postal_address = "1 Example Street, Springfield"
base_url = "https://news.example.com"
transport = "ses"

[ses]
region = "us-east-1"
endpoint_url = "{endpoint}"
"""


def child(script: str, *args: str, database: str | None = None) -> dict:
    """Run ``script`` in a fresh interpreter; its last stdout line is JSON. ``database``: a
    PostgreSQL URL for the project (NEWSLETTER_DATABASE_URL), else its SQLite file."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, NEWSLETTER_SECRET="b" * 40)
    env.pop("NEWSLETTER_DATABASE_URL", None)
    if database:
        env["NEWSLETTER_DATABASE_URL"] = database
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        sys.exit(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def project(root: Path, endpoint: str, readers: int, database: str | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "newsletter.toml").write_text(TOML.format(endpoint=endpoint), encoding="utf-8")
    started = time.perf_counter()
    child(SETUP, str(root), str(readers), database=database)
    print(f"  (set up {readers:,} readers in {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return root


def start_null_endpoint() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fake_ses.py"), "--mode", "null",
                             "--max-send-rate", "1000000"], stdout=subprocess.PIPE, text=True)
    port = proc.stdout.readline().strip()
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=10000)
    parser.add_argument("--big", type=int, default=100000)
    parser.add_argument("--bare", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternate baseline and ours this many times")
    parser.add_argument("--quick", action="store_true", help="3,000 / 30,000 readers, 1,500 bare sends")
    parser.add_argument("--no-big", action="store_true", help="skip the big memory run")
    args = parser.parse_args()
    if args.quick:
        args.readers, args.big, args.bare, args.rounds = 3000, 30000, 1500, 2

    server, endpoint = start_null_endpoint()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            small = project(Path(tmp) / "small", endpoint, args.readers)
            rounds = []
            for number in range(args.rounds):  # alternated, so that a busy moment hits both
                bare = child(BARE, str(small), str(EDITION), str(args.bare))
                ours = child(SEND, str(small), str(EDITION), str(args.concurrency), f"r{number}")
                rounds.append((bare, ours))
            big_run = None
            if not args.no_big:
                big = project(Path(tmp) / "big", endpoint, args.big)
                big_run = child(SEND, str(big), str(EDITION), str(args.concurrency))
    finally:
        server.terminate()
        server.wait(10)

    print(f"message size {rounds[0][0]['bytes']:,} B; null SES endpoint {endpoint} (separate process)")
    for number, (bare, ours) in enumerate(rounds, start=1):
        b_rate, o_rate = bare["sent"] / bare["seconds"], ours["sent"] / ours["seconds"]
        print(f"round {number}: baseline bare boto3 loop (same prebuilt bytes) {b_rate:6.0f} messages/s | "
              f"ours SendJob (ledger on, concurrency {args.concurrency}) {o_rate:6.0f} messages/s "
              f"[{ours['sent']:,} readers, {ours['failed']} failed] -> {o_rate / b_rate:.2f}×; client CPU per message "
              f"{bare['cpu'] / bare['sent'] * 1e3:.2f} ms vs {ours['cpu'] / ours['sent'] * 1e3:.2f} ms")
    bare_rate = max(b["sent"] / b["seconds"] for b, _ in rounds)
    our_rate = max(o["sent"] / o["seconds"] for _, o in rounds)
    ours = rounds[-1][1]
    print(f"best rounds: baseline {bare_rate:.0f}/s, ours {our_rate:.0f}/s -> {our_rate / bare_rate:.2f}× the bare loop   "
          f"goals: ≥ 1,000/s {'met' if our_rate >= 1000 else 'MISSED'}, "
          f"≥ 0.85× {'met' if our_rate / bare_rate >= 0.85 else 'MISSED'}")
    small_mb = ours["peak_kib"] / 1024
    print(f"peak RSS: {args.readers:,}-reader send {small_mb:.1f} MB", end="")
    if big_run:
        big_mb = big_run["peak_kib"] / 1024
        print(f"; {args.big:,}-reader send {big_mb:.1f} MB ({big_run['sent'] / big_run['seconds']:.0f} messages/s)"
              f" -> {big_mb / small_mb:.2f}× (goals: ≤ 128 MB {'met' if big_mb <= 128 else 'MISSED'}, "
              f"within 10% {'met' if big_mb / small_mb <= 1.10 else 'MISSED'})")
    else:
        print()


if __name__ == "__main__":
    main()
