"""The recipient freeze of a send to several lists, against ``SELECT DISTINCT`` over the same
memberships.

    .venv/bin/python bench/audience.py [--readers 100000] [--rounds 3]

Sets up (not measured) a SQLite database with ``--readers`` active subscribers in two lists of
60% each (A: the first 60%, B: the last 60%; 20% of the readers in both), a third list of 2% to
leave out, and a ``plan`` attribute that is ``free`` for one reader in ten. Then, in the same run:
1. the baseline: ``SELECT DISTINCT subscriber_id FROM memberships WHERE list_id IN (A, B) AND
   status = 'active'``, every row fetched;
2. ours: the freeze a send does at its start (``Ledger.create_send`` fed by
   ``SqliteStore.audience_select``, one INSERT … SELECT): union deduplicated by reader, the excluded list, the
   ``--where plan!=free`` condition, active and not suppressed, each reader's list, readers an
   earlier send of the edition reached left out, and every delivery row inserted, in one
   transaction. Each round freezes a new edition.
Prints both times and their ratio. Goal: the freeze ≤ 1.5 s for 100,000 readers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.audience.segments import make_audience  # noqa: E402
from newsletter.config import Config  # noqa: E402
from newsletter.store.ledger import Ledger  # noqa: E402
from newsletter.store import open_store  # noqa: E402


def setup(config: Config, n: int) -> None:
    with open_store(config) as store:
        a, b, press = (store.create_list(name) for name in ("a", "b", "press"))
        now = "2026-12-01T00:00:00Z"
        with store.transaction() as conn:
            conn.executemany(
                "INSERT INTO subscribers (id, email, email_key, name, attributes, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, 'active', ?)",
                ((i, f"reader{i:07d}@example.com", f"reader{i:07d}@example.com", f"Reader {i}",
                  '{"plan": "free"}' if i % 10 == 0 else '{"plan": "pro", "city": "Berlin"}', now)
                 for i in range(1, n + 1)))
            cut_a, cut_b = int(n * 0.6), int(n * 0.4)
            rows = [(i, a.id) for i in range(1, cut_a + 1)] + [(i, b.id) for i in range(cut_b + 1, n + 1)] \
                + [(i, press.id) for i in range(1, n + 1, 50)]
            conn.executemany("INSERT INTO memberships (subscriber_id, list_id, status, created_at) "
                             "VALUES (?, ?, 'active', ?)", ((s, l, now) for s, l in rows))
        print(f"  ({n:,} readers: list a {cut_a:,}, list b {n - cut_b:,}, both {cut_a - cut_b:,}, "
              f"press {len(range(1, n + 1, 50)):,})")


def baseline(config: Config) -> tuple[float, int]:
    with open_store(config) as store:
        ids = [store.get_list("a").id, store.get_list("b").id]
        started = time.perf_counter()
        rows = store.conn.execute("SELECT DISTINCT subscriber_id FROM memberships WHERE list_id IN (?, ?) "
                                  "AND status = 'active'", ids).fetchall()
        return time.perf_counter() - started, len(rows)


def freeze(config: Config, slug: str, audience=None) -> tuple[float, int]:
    audience = audience or make_audience(["a", "b"], ["press"], ["plan!=free"])
    with open_store(config) as store, Ledger.open(config) as ledger:
        first = store.get_list("a")
        started = time.perf_counter()
        send = ledger.create_send(slug=slug, subject="Bench", list_name=audience.describe(), list_id=first.id,
                                  transport="outbox", recipients=store.audience_select(audience),
                                  audience=audience.as_json(), audience_key=audience.key)
        return time.perf_counter() - started, send.recipients - send.skipped_earlier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = Config(root=Path(folder))
        setup(config, args.readers)
        base_times, ours_times = [], []
        for r in range(1, args.rounds + 1):
            base, distinct = baseline(config)
            ours, frozen = freeze(config, f"bench-{r}")
            base_times.append(base)
            ours_times.append(ours)
            print(f"round {r}: baseline SELECT DISTINCT {base * 1000:7.1f} ms ({distinct:,} readers) | "
                  f"ours freeze {ours * 1000:7.1f} ms ({frozen:,} frozen) -> {ours / base:.1f}×")
        again, frozen = freeze(config, "bench-1", make_audience(["a", "b"]))
        print(f"(for information) a second send of bench-1 to a + b, its earlier recipients recorded as skipped: "
              f"{again * 1000:.1f} ms ({frozen:,} to send)")
        best, median = min(ours_times), statistics.median(ours_times)
        print(f"best: baseline {min(base_times) * 1000:.1f} ms, freeze {best * 1000:.1f} ms "
              f"({best / min(base_times):.1f}× the bare SELECT DISTINCT); median freeze {median * 1000:.1f} ms   "
              f"goal: freeze ≤ 1.5 s {'met' if best <= 1.5 else 'NOT met'}")
        return 0 if best <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
