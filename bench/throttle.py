"""Throttling as back-pressure: a 5,000-reader send with 30% of SES calls throttled.

    .venv/bin/python bench/throttle.py [--readers 5000] [--percent 30] [--rate 200] [--quick]

A recording fake SES endpoint (tests/fake_ses.py, in this process) answers a random
``--percent`` of SendEmail calls with TooManyRequestsException (HTTP 429). The real CLI,
``newsletter send … --transport ses --rate R --yes``, runs as a child process, twice in the same
run: the baseline with no throttling, then with it. For each: the exit code, readers sent
exactly once / more than once / never, failures, throttled answers, and the rate achieved
against the rate asked (and against the baseline's). Goal: exit 0, 0 duplicates, 0 lost,
0 failures under throttling.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
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
from send import EDITION, TOML, child, SETUP  # noqa: E402  (bench/send.py helpers)


def run(folder: Path, fake: FakeSes, readers: int, percent: float, rate: float, concurrency: int) -> dict:
    fake.reset()
    fake.configure(keep_raw=False, max_send_rate=10 * rate, throttle_percent=percent, seed=2026)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, NEWSLETTER_SECRET="b" * 40)
    env.pop("NEWSLETTER_DATABASE_URL", None)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "newsletter", "send", str(EDITION), "--list", "bench",
                          "--transport", "ses", "--rate", f"{rate:g}", "--concurrency", str(concurrency), "--yes"],
                         cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    got = collections.Counter(to for m in fake.messages for to in m["to"])
    expected = {f"reader{i:07d}@example.com" for i in range(readers)}
    summary = re.search(r"sent (\d+), failed (\d+)", out.stdout)
    return {"exit": out.returncode, "seconds": seconds, "once": sum(1 for r in expected if got[r] == 1),
            "duplicates": sum(n - 1 for r, n in got.items() if n > 1), "lost": sum(1 for r in expected if got[r] == 0),
            "failed": int(summary.group(2)) if summary else -1, "throttled": fake.faults_answered.get("throttle", 0),
            "calls": fake.calls, "output": (out.stdout + out.stderr).strip()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=5000)
    parser.add_argument("--percent", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="1,000 readers")
    args = parser.parse_args()
    if args.quick:
        args.readers = 1000
    fake = FakeSes().start()
    try:
        with tempfile.TemporaryDirectory(prefix="nl-throttle-") as tmp:
            results = []
            for label, percent in (("baseline, no throttling", 0.0), (f"{args.percent:g}% throttled", args.percent)):
                folder = Path(tmp) / f"p{int(percent)}"
                folder.mkdir()
                (folder / "newsletter.toml").write_text(TOML.format(endpoint=fake.url), encoding="utf-8")
                child(SETUP, str(folder), str(args.readers))
                result = run(folder, fake, args.readers, percent, args.rate, args.concurrency)
                results.append((label, result))
    finally:
        fake.stop()
    base = results[0][1]
    for label, r in results:
        achieved = r["once"] / r["seconds"]
        print(f"{label:>24}: exit {r['exit']}, {args.readers:,} readers: {r['once']:,} exactly once, "
              f"{r['duplicates']} duplicates, {r['lost']} lost, {r['failed']} failed; "
              f"{r['throttled']:,} of {r['calls']:,} calls throttled; {r['seconds']:.1f} s, "
              f"{achieved:.1f}/s achieved vs {args.rate:g}/s asked ({achieved / args.rate:.2f}×, "
              f"{r['seconds'] / base['seconds']:.2f}× the baseline's time)")
        for line in r["output"].splitlines():
            if line.startswith(("throttled", "error", "2026")):
                print(f"{'':>26}{line}")
    r = results[1][1]
    ok = r["exit"] == 0 and r["duplicates"] == 0 and r["lost"] == 0 and r["failed"] == 0
    print(f"goal (exit 0, 0 duplicates, 0 lost, 0 failures under {args.percent:g}% throttling): "
          f"{'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
