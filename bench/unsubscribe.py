"""One-click unsubscribe throughput: RFC 8058 POSTs per second against the real server.

Sets up a throw-away project with one list of N active readers, starts ``newsletter serve``
(uvicorn) in a separate process on a free 127.0.0.1 port, and drives it from a
concurrent keep-alive HTTP/1.1 client (asyncio streams; a lean client so that the figure is the
server's, not the client's). Each reader's distinct one-click POST is sent once, then the whole
batch is replayed (idempotent: already unsubscribed). The baseline, in the same run against the
same server with the same client: ``GET /healthz``, the app's trivial endpoint. Afterwards the
database is checked: every reader is unsubscribed.

    .venv/bin/python bench/unsubscribe.py [--requests 3000] [--concurrency 32] [--workers N] [--postgresql]

``--workers N`` runs N server processes (``serve --workers N``: uvicorn's supervisor);
``--postgresql`` keeps the project's database on a throw-away PostgreSQL server
(tests/pg_support.py, fsync on) instead of the SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from newsletter.config import load_config, load_secret
from newsletter.store import open_store
from newsletter.tokens import make_token

TOML = 'name = "Bench Daily"\nfrom = "Bench <news@example.com>"\nbase_url = "{url}"\nlang = "en"\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(root: Path, url: str, readers: int) -> tuple[list[str], object]:
    """A project with one list of ``readers`` active readers; their one-click request paths."""
    (root / "newsletter.toml").write_text(TOML.format(url=url), encoding="utf-8")
    (root / ".newsletter-secret").write_text("bench-secret-" + "7" * 40 + "\n", encoding="utf-8")
    config = load_config(root / "newsletter.toml")
    secret = load_secret(config)
    with open_store(config) as store:
        daily = store.create_list("daily", public=True)
        with store.transaction() as conn:  # one transaction for the set-up, not the measured part
            for i in range(readers):
                (subscriber_id,) = conn.execute(
                    "INSERT INTO subscribers (email, email_key, name, status, source, created_at) "
                    "VALUES (?, ?, '', 'active', 'bench', '2026-01-01T00:00:00Z') RETURNING id",
                    (f"reader{i}@example.org", f"reader{i}@example.org")).fetchone()
                conn.execute(
                    "INSERT INTO memberships (subscriber_id, list_id, status, created_at) "
                    "VALUES (?, ?, 'active', '2026-01-01T00:00:00Z')", (subscriber_id, daily.id))
        ids = [(r[0], r[1].hex()) for r in store.conn.execute("SELECT id, uid FROM subscribers ORDER BY id")]
    paths = [f"/unsubscribe/{make_token(secret, 'unsubscribe', sid, daily.id, uid=uid)}" for sid, uid in ids]
    return paths, config


def post(path: str) -> bytes:
    body = b"List-Unsubscribe=One-Click"
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("ascii")


async def _response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def drive(port: int, requests: list[bytes], concurrency: int) -> tuple[float, list[float], dict[int, int]]:
    """Send every request once over ``concurrency`` keep-alive connections; wall time,
    per-request latencies and the status counts."""
    queue = iter(requests)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in queue:
                t0 = time.perf_counter()
                writer.write(request)
                status = await _response(reader)
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies, statuses


def report(label: str, count: int, wall: float, latencies: list[float], statuses: dict[int, int]) -> float:
    rate = count / wall
    q = statistics.quantiles(latencies, n=100)
    print(f"{label:<34} {count:>6} req  {rate:>8.0f} req/s  p50 {q[49] * 1000:6.2f} ms  "
          f"p99 {q[98] * 1000:6.2f} ms  status {dict(sorted(statuses.items()))}")
    return rate


def start_server(root: Path, port: int, workers: int = 1) -> subprocess.Popen:
    env = dict(os.environ, NEWSLETTER_CONFIG=str(root / "newsletter.toml"))
    # `newsletter serve` (uvicorn on a socket it binds itself; with --workers, uvicorn's supervisor)
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--workers", str(workers)],
        cwd=root, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("error: the server did not start")
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="distinct readers / POSTs per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--postgresql", action="store_true", help="the database on a throw-away PostgreSQL server")
    args = parser.parse_args()
    os.environ.pop("NEWSLETTER_DATABASE_URL", None)
    server = None
    if args.postgresql:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from pg_support import PgServer

        server = PgServer.start(durable=True)
        os.environ["NEWSLETTER_DATABASE_URL"] = server.database()
    try:
        run(args)
    finally:
        if server is not None:
            server.stop()


def run(args) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp:
        root = Path(tmp)
        paths, config = make_project(root, f"http://127.0.0.1:{port}", args.requests)
        proc = start_server(root, port, args.workers)
        try:
            asyncio.run(drive(port, [get("/healthz")] * 200, 8))  # warm-up (threads, caches)
            engine = "PostgreSQL" if args.postgresql else "SQLite"
            print(f"newsletter serve --workers {args.workers}, {engine}; client: "
                  f"{args.concurrency} keep-alive connections on loopback; {os.cpu_count()} CPUs "
                  "shared by client, server (and database)")
            base = report("baseline GET /healthz", args.requests,
                          *asyncio.run(drive(port, [get("/healthz")] * args.requests, args.concurrency)))
            first = report("one-click POST /unsubscribe/<t>", args.requests,
                           *asyncio.run(drive(port, [post(p) for p in paths], args.concurrency)))
            again = report("same POSTs replayed (idempotent)", args.requests,
                           *asyncio.run(drive(port, [post(p) for p in paths], args.concurrency)))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        with open_store(config) as store:
            left = store.count_subscribers(list_name="daily", status="active")
        print(f"unsubscribe / baseline: {first / base:.2f}x (first pass), {again / base:.2f}x (replay); "
              f"goal ≥ 1,000 req/s: {'met' if min(first, again) >= 1000 else 'NOT met'}; "
              f"active readers left: {left}")
        if left:
            raise SystemExit("error: some readers are still subscribed")


if __name__ == "__main__":
    main()
