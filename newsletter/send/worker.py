"""One worker process of ``send --workers N`` (started by ``newsletter.send.workers``; not a
user command). Reads its spec (JSON: configuration file, send id, options, parent pid) from stdin,
joins that send as a ``SendJob`` with its own transport client, sends until nothing is left to
claim, and prints its report as one JSON line on stdout. SIGTERM or SIGINT, or its parent going
away, stop it cleanly: no new claims, in-flight messages finish and are recorded. A one-line error
(exit 2) on stderr for anything that stops it before or while sending.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path


def join_send(config, send_id: int, options):
    """A ``SendJob`` on the existing send ``send_id`` (its frozen snapshot and audience)."""
    from newsletter.audience.segments import from_json
    from newsletter.errors import ValidationError
    from newsletter.send.job import Prepared, SendJob
    from newsletter.store.ledger import Ledger

    with Ledger.open(config) as ledger:
        send = ledger.send_by_id(send_id)
        if send is None or send.snapshot_id is None:
            raise ValidationError(f"no send with id {send_id} to join (see `newsletter sends ls`)")
        snapshot = ledger.snapshot(send.snapshot_id)
        edition = ledger.edition_by_id(send.edition_id) if send.edition_id else None
    audience, again = from_json(send.audience)
    prepared = Prepared(snapshot, edition.date_utc if edition else "", edition, send)  # type: ignore[arg-type]
    return SendJob(config, prepared, audience, options, again=again)


def main() -> int:
    from newsletter.config import load_config
    from newsletter.errors import NewsletterError
    from newsletter.send.job import SendOptions
    from newsletter.send.workers import report_json

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    spec = json.loads(sys.stdin.read())
    parent = int(spec["parent"])

    def watch_parent() -> None:  # the parent died (kill -9): stop as on Ctrl-C, nothing is lost
        while not stop.wait(0.5):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch_parent, daemon=True, name="parent-watch").start()
    job = None
    try:
        config = load_config(spec["config"], cwd=Path(spec["root"]))
        job = join_send(config, int(spec["send_id"]), SendOptions(**spec["options"]))
        report = job.run(stop=stop)
    except NewsletterError as err:
        print(str(err), file=sys.stderr)
        return getattr(err, "exit_code", 2) or 2
    finally:
        if job is not None:
            job.close()
    print(report_json(report), flush=True)
    return report.exit_code if report.stopped else 0


if __name__ == "__main__":
    sys.exit(main())
