"""Crash figures: a send SIGKILLed again and again, then resumed; and SIGSTOPped past the stale time.

    .venv/bin/python bench/kills.py [--readers 2000] [--kills 8] [--quick]

A recording fake SES endpoint (tests/fake_ses.py, in this process; 5 ms a call). The real CLI,
``newsletter send … --transport ses --yes``, is started ``--kills`` times and SIGKILLed at a
random moment each time (after at least one new message was accepted). Then one run finishes
the send, ``sends show`` reports the unknown rows, and a last run with
``--retry-unknown`` re-sends the unknowns. Then the same with SIGSTOP instead of SIGKILL: the
paused sender is left stopped for three times the stale time while another run with
``--retry-unknown`` goes on, then continued. Prints kills, readers, duplicates outside the
reported unknowns (goal 0) and readers never sent (goal 0). Last, a large import (chunked and
journalled) SIGKILLed ``--kills`` times at random moments: after each, the next command that
opens the database must find it exactly as before the import (goal: 0 other states).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(BENCH))

from fake_ses import FakeSes  # noqa: E402
from send import EDITION, SETUP, TOML, child  # noqa: E402


def env(**extra: str) -> dict:
    e = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
             AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, NEWSLETTER_SECRET="b" * 40, **extra)
    e.pop("NEWSLETTER_DATABASE_URL", None)
    return e


def command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "newsletter", "send", str(EDITION), "--list", "bench", "--transport", "ses",
            "--yes", "--concurrency", "8", "--rate", "400", *extra]


def unknown(folder: Path) -> int:
    out = subprocess.run([sys.executable, "-m", "newsletter", "sends", "show", "2026-11-24"], cwd=folder, env=env(),
                         capture_output=True, text=True).stdout
    found = re.search(r"^unknown:\s+(\d+)", out, re.M)
    return int(found.group(1)) if found else 0


def committed(db: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute("SELECT count(*) FROM subscribers").fetchone()[0]
    except sqlite3.Error:
        return 0


def readers_state(folder: Path) -> tuple[int, int]:
    """(subscribers, of them renamed by an import) after the store's recovery ran."""
    code = ("import sys, os; os.chdir(sys.argv[1]); from newsletter.config import load_config; "
            "from newsletter.store import open_store; s = open_store(load_config()); "
            "print(s.conn.execute(\"SELECT count(*), count(*) FILTER (WHERE name LIKE 'Renamed %') "
            "FROM subscribers\").fetchone()[:], s.conn.execute('SELECT count(*) FROM imports').fetchone()[0])")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], env=env(), capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.split(")")
    count, renamed = (int(x) for x in out[0].strip(" (").split(","))
    assert out[1].strip() == "0", out  # no journal left
    return count, renamed


def figures(fake: FakeSes, readers: int, unknowns: int) -> tuple[int, int, int]:
    got = collections.Counter(to for m in fake.messages for to in m["to"])
    duplicates = sum(n - 1 for n in got.values() if n > 1)
    lost = sum(1 for i in range(readers) if got[f"reader{i:07d}@example.com"] == 0)
    return duplicates, max(0, duplicates - unknowns), lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--import-rows", type=int, default=300_000)
    parser.add_argument("--quick", action="store_true", help="1,000 readers, 4 kills, a 150,000-row import")
    args = parser.parse_args()
    if args.quick:
        args.readers, args.kills, args.import_rows = 1000, 4, 150_000
    rnd = random.Random(11)
    fake = FakeSes().start()
    ok = True
    try:
        with tempfile.TemporaryDirectory(prefix="nl-kills-") as tmp:
            # 1. SIGKILL, again and again
            folder = Path(tmp) / "kill"
            folder.mkdir()
            (folder / "newsletter.toml").write_text(TOML.format(endpoint=fake.url), encoding="utf-8")
            child(SETUP, str(folder), str(args.readers))
            fake.reset()
            fake.configure(keep_raw=False, latency=0.005)
            kills = 0
            for _ in range(args.kills):
                before = fake.accepted
                proc = subprocess.Popen(command(), cwd=folder, env=env(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + 60
                while fake.accepted <= before and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(rnd.uniform(0.0, 0.8))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                proc.wait()
            subprocess.run(command(), cwd=folder, env=env(), capture_output=True)
            unknowns = unknown(folder)  # what the user is told may or may not have left
            last = subprocess.run(command("--retry-unknown"), cwd=folder, env=env(), capture_output=True, text=True)
            duplicates, outside, lost = figures(fake, args.readers, unknowns)
            print(f"SIGKILL: {kills} kills, {args.readers:,} readers; unknown rows reported after the kills: {unknowns}; "
                  f"duplicates {duplicates} (all among the reported unknowns re-sent with --retry-unknown), "
                  f"outside the reported unknowns: {outside} (goal 0), lost: {lost} (goal 0); "
                  f"final --retry-unknown run exit {last.returncode}")
            ok &= outside == 0 and lost == 0 and last.returncode == 0

            # 2. SIGSTOP past the stale time, --retry-unknown meanwhile, SIGCONT
            folder = Path(tmp) / "stop"
            folder.mkdir()
            (folder / "newsletter.toml").write_text(TOML.format(endpoint=fake.url), encoding="utf-8")
            child(SETUP, str(folder), str(args.readers))
            fake.reset()
            fake.configure(keep_raw=False, latency=0.005)
            stale = env(NEWSLETTER_STALE_AFTER="1")
            paused = subprocess.Popen(command("--rate", "100"), cwd=folder, env=stale, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            while fake.accepted < 50:
                time.sleep(0.01)
            paused.send_signal(signal.SIGSTOP)
            time.sleep(3.0)
            other = subprocess.run(command("--retry-unknown"), cwd=folder, env=stale, capture_output=True, text=True)
            paused.send_signal(signal.SIGCONT)
            paused.wait(120)
            duplicates, _, lost = figures(fake, args.readers, 0)
            print(f"SIGSTOP 3 s (stale time 1 s), --retry-unknown meanwhile: {args.readers:,} readers; other run exit "
                  f"{other.returncode}, paused run exit {paused.returncode} after SIGCONT; duplicates {duplicates} "
                  f"(goal 0), lost {lost} (goal 0)")
            ok &= duplicates == 0 and lost == 0 and other.returncode == 0 and paused.returncode == 0
            # 3. SIGKILL during a large (chunked, journalled) import: each time undone by the next command
            big = Path(tmp) / "import.csv"
            with open(big, "w", encoding="utf-8") as fh:
                fh.write("email,name\n")
                fh.writelines(f"new{i:07d}@example.com,New {i}\n" for i in range(args.import_rows))
                fh.writelines(f"reader{i:07d}@example.com,Renamed {i}\n" for i in range(0, args.readers, 3))
            import_kills, partial = 0, 0
            for _ in range(args.kills):
                proc = subprocess.Popen([sys.executable, "-m", "newsletter", "subscribers", "import", str(big),
                                         "--list", "bench"], cwd=folder, env=env(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                db = folder / "subscribers" / "subscribers.db"
                while proc.poll() is None and committed(db) <= args.readers:  # a first chunk is in
                    time.sleep(0.005)
                time.sleep(rnd.uniform(0.0, 0.6))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    import_kills += 1
                proc.wait()
                state = readers_state(folder)  # opening the store undoes the dead import
                if proc.returncode == 0:  # it finished before the kill: take it back out for the next round
                    break
                partial += state != (args.readers, 0)
            final = subprocess.run([sys.executable, "-m", "newsletter", "subscribers", "import", str(big), "--list",
                                    "bench"], cwd=folder, env=env(), capture_output=True, text=True)
            count, renamed = readers_state(folder)
            complete = final.returncode == 0 and count == args.readers + args.import_rows
            print(f"import SIGKILL: {import_kills} kills of a {args.import_rows:,}-row import (chunks of 50,000 "
                  f"addresses) into {args.readers:,} readers; states after recovery other than 'exactly as "
                  f"before': {partial} (goal 0); then the same command: exit {final.returncode}, "
                  f"{count:,} subscribers ({'complete' if complete else 'INCOMPLETE'}, {renamed:,} renamed)")
            ok &= partial == 0 and complete
    finally:
        fake.stop()
    print(f"goals: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
