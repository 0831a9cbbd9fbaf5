"""`newsletter gather` over local feeds: concurrent polling + parsing against fetching the same
feeds one after the other with httpx.

    .venv/bin/python bench/gather.py [--feeds 20] [--entries 50] [--latency 0.05] [--postgresql]

A ThreadingHTTPServer on 127.0.0.1 serves ``--feeds`` RSS/Atom/RDF feeds of ``--entries``
entries each, every answer held back ``--latency`` seconds (a round trip to a real site).
Figures, each measured in this run:
1. ``gather()`` (fetch all feeds concurrently, parse with feedparser, clean the summaries,
   filter, store) — the target is ≤ 1 s wall;
2. the baseline: the same feeds fetched one after the other with ``httpx.Client`` (no parsing);
3. a second ``gather()``, where every feed answers 304 Not Modified to the conditional GET.
With ``--postgresql`` the two ``gather()`` runs are repeated with the project's database on a
throw-away PostgreSQL server (tests/pg_support.py), in the same run against the same baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.local_http import LocalSite, Route, atom, rdf, rss, utc  # noqa: E402

from newsletter.config import load_config  # noqa: E402
from newsletter.sources.gather import gather  # noqa: E402
from newsletter.store.connection import connect  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=20)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--postgresql", action="store_true", help="also on a throw-away PostgreSQL server")
    args = parser.parse_args()
    server = None
    if args.postgresql:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from pg_support import PgServer

        server = PgServer.start()
    try:
        run(args, server)
    finally:
        if server is not None:
            server.stop()


def run(args, server) -> None:
    makers = [(rss, "application/rss+xml"), (atom, "application/atom+xml"), (rdf, "application/rdf+xml")]
    with LocalSite() as site, tempfile.TemporaryDirectory() as tmp:
        urls = []
        for i in range(args.feeds):
            make, kind = makers[i % 3]
            path = f"/feed{i}"
            site.routes[path] = Route(make(site.base, f"f{i}", args.entries, utc(2026, 11, 20)),
                                      content_type=kind, etag=f'"e{i}"', delay=args.latency)
            urls.append(site.url(path))
        root = Path(tmp)
        (root / "newsletter.toml").write_text(
            'name = "Bench Daily"\n[sources]\nconcurrency = 20\nfeeds = [' + ", ".join(f'"{u}"' for u in urls) + "]\n",
            encoding="utf-8")
        (root / "editions").mkdir()
        config = load_config(root / "newsletter.toml")

        import httpx

        t = time.perf_counter()
        with httpx.Client() as client:
            sizes = [len(client.get(u).content) for u in urls]
        baseline = time.perf_counter() - t

        figures = {"sqlite": twice(config, config.database_url)}
        if server is not None:
            figures["postgresql"] = twice(config, server.database(template=None))
    print(f"{args.feeds} feeds × {args.entries} entries ({sum(sizes) / 1024:.0f} KB), "
          f"{args.latency * 1000:.0f} ms latency per answer")
    print(f"baseline  sequential httpx GETs (no parsing)       {baseline:6.3f} s")
    for engine, (first, second) in figures.items():
        print(f"gather    concurrent fetch + feedparser + store     {first:6.3f} s  "
              f"(baseline ÷ gather = {baseline / first:.2f}; target ≤ 1 s: "
              f"{'met' if first <= 1 else 'NOT met'}; {engine})")
        print(f"gather    again, every feed 304 Not Modified       {second:6.3f} s  "
              f"(baseline ÷ gather = {baseline / second:.2f}; {engine})")


def twice(config, database: str) -> tuple[float, float]:
    """Two ``gather()`` runs on ``database`` (created and migrated first, not timed): all
    candidates, then every feed 304."""
    import os

    os.environ["NEWSLETTER_DATABASE_URL"] = database
    try:
        conn = connect(config)
        try:
            t = time.perf_counter()
            result = gather(config, conn)
            first = time.perf_counter() - t
            t = time.perf_counter()
            again = gather(config, conn)
            second = time.perf_counter() - t
        finally:
            conn.close()
    finally:
        del os.environ["NEWSLETTER_DATABASE_URL"]
    expected = len(config.sources.feeds) * len(result.feeds[0].entries)
    assert len(result.candidates) == expected, len(result.candidates)
    assert all(f.status == "304" for f in again.feeds)
    return first, second


if __name__ == "__main__":
    main()
