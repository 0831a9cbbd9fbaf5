"""Pacing accuracy: a real send at ``--rate 200`` for 30 s to the null SES endpoint.

    .venv/bin/python bench/pacing.py [--rate 200] [--seconds 30] [--quick]

Sets up ``rate × seconds`` readers, runs ``SendJob`` (ledger on, concurrency 8, SES transport to
tests/fake_ses.py in null mode, account max rate far above the target) and timestamps every call
that reaches the transport. Prints the achieved rate against the target (goal: within a few
percent, never above), and the busiest and quietest 1-second windows.
"""

from __future__ import annotations

import argparse
import bisect
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from send import EDITION, project, start_null_endpoint  # noqa: E402  (bench/send.py helpers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="10 seconds")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 10.0
    readers = int(args.rate * args.seconds)

    server, endpoint = start_null_endpoint()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = project(Path(tmp) / "pacing", endpoint, readers)
            stamps = run(folder, args.rate, args.concurrency)
    finally:
        server.terminate()
        server.wait(10)
    report(stamps, args.rate)


def run(folder: Path, rate: float, concurrency: int) -> list[float]:
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, NEWSLETTER_SECRET="b" * 40)
    os.chdir(folder)
    from newsletter.config import load_config
    from newsletter.edition.source import load_edition
    from newsletter.render.html import render_edition
    from newsletter.send.job import SendJob, SendOptions

    config = load_config()
    rendered = render_edition(load_edition(EDITION, config=config), config)
    job = SendJob(config, rendered, "bench", SendOptions(transport="ses", rate=rate, concurrency=concurrency))
    stamps: list[float] = []
    lock = threading.Lock()
    send = job.transport.send

    def timed(message):  # instrumentation only: the real transport does the sending
        with lock:
            stamps.append(time.monotonic())
        return send(message)

    job.transport.send = timed
    try:
        result = job.run()
    finally:
        job.close()
    assert result.progress.sent == len(stamps), (result.progress.sent, len(stamps))
    return sorted(stamps)


def report(stamps: list[float], rate: float) -> None:
    n = len(stamps)
    span = stamps[-1] - stamps[0]
    achieved = (n - 1) / span
    windows = [bisect.bisect_left(stamps, t + 1.0) - i for i, t in enumerate(stamps) if t + 1.0 <= stamps[-1]]
    print(f"target {rate:g} messages/s; {n:,} messages in {span:.2f} s")
    print(f"achieved {achieved:.2f} messages/s = {achieved / rate * 100:.2f}% of the target "
          f"(goal: within a few percent, never above: {'met' if 0.95 <= achieved / rate <= 1.001 else 'MISSED'})")
    print(f"any 1-second window: busiest {max(windows)} messages, quietest {min(windows)} "
          f"(the bucket allows {rate:g} per second plus a burst of 1)")


if __name__ == "__main__":
    main()
