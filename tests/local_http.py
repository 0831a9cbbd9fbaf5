"""A real HTTP server on 127.0.0.1 for the link fetcher, the feed gatherer and bench/gather.py.

``LocalSite`` serves a dict of routes ``path -> Route`` from a thread (ThreadingHTTPServer) and
records every request's path and headers. A route answers with a body, a status, headers, a
redirect, or — for feeds — 304 Not Modified when the client sends the ETag or Last-Modified it
was given.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    location: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    repeat: int = 1          # the body is sent this many times (a huge page without the memory)
    delay: float = 0.0       # seconds before answering (a slow feed)
    headers: dict = field(default_factory=dict)


class LocalSite:
    def __init__(self, routes: dict[str, Route] | None = None):
        self.routes: dict[str, Route] = dict(routes or {})
        self.requests: list[tuple[str, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests being answered at once
        lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave at once (no 40 ms delayed-ACK stall)

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                with lock:
                    site.in_flight += 1
                    site.max_in_flight = max(site.max_in_flight, site.in_flight)
                try:
                    self._get()
                finally:
                    with lock:
                        site.in_flight -= 1

            def _get(self):
                site.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = site.routes.get(self.path) or site.routes.get(self.path.split("?")[0])
                if route is None:
                    self._send(404, b"not found", "text/plain")
                    return
                if route.delay:
                    import time

                    time.sleep(route.delay)
                if route.location is not None:
                    self.send_response(route.status or 302)
                    self.send_header("Location", route.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                inm, ims = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
                if (route.etag and inm == route.etag) or (route.last_modified and ims == route.last_modified):
                    self.send_response(304)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                if route.etag:
                    self.send_header("ETag", route.etag)
                if route.last_modified:
                    self.send_header("Last-Modified", route.last_modified)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(route.body) * route.repeat))
                self.end_headers()
                try:
                    for _ in range(route.repeat):
                        self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading (the size cap): expected

            def _send(self, status, body, kind):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default backlog of 5 drops concurrent connects (1 s SYN retry)
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> "LocalSite":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# -- feed documents ----------------------------------------------------------------------------
def _entries(base: str, name: str, count: int, start: datetime):
    for i in range(count):
        when = start + timedelta(minutes=10 * i)
        yield (f"{name} story {i + 1}", f"{base}/{name}/story-{i + 1}?utm_source=rss&id={i + 1}", when,
               f"<p>The <b>{name}</b> story number {i + 1}. More <a href=\"{base}/more\">here</a>"
               f"<script>alert(1)</script>.</p><p>Second paragraph.</p>")


def rss(base: str, name: str, count: int, start: datetime) -> bytes:
    items = "".join(
        f"<item><title>{escape(t)}</title><link>{escape(u)}</link><guid>{escape(u)}</guid>"
        f"<pubDate>{format_datetime(w)}</pubDate><description>{escape(d)}</description></item>"
        for t, u, w, d in _entries(base, name, count, start))
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{name}</title>'
            f"<link>{base}/{name}</link><description>{name} feed</description>{items}</channel></rss>").encode()


def atom(base: str, name: str, count: int, start: datetime) -> bytes:
    entries = "".join(
        f"<entry><title>{escape(t)}</title><link href=\"{escape(u)}\"/><id>{escape(u)}</id>"
        f"<updated>{w.isoformat()}</updated><summary type=\"html\">{escape(d)}</summary></entry>"
        for t, u, w, d in _entries(base, name, count, start))
    return (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>{name}</title><id>{base}/{name}</id><updated>{start.isoformat()}</updated>"
            f"{entries}</feed>").encode()


def rdf(base: str, name: str, count: int, start: datetime) -> bytes:
    items = "".join(
        f'<item rdf:about="{escape(u)}"><title>{escape(t)}</title><link>{escape(u)}</link>'
        f"<dc:date>{w.isoformat()}</dc:date><description>{escape(d)}</description></item>"
        for t, u, w, d in _entries(base, name, count, start))
    return ('<?xml version="1.0" encoding="utf-8"?>'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            'xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
            f'<channel rdf:about="{base}/{name}"><title>{name}</title><link>{base}/{name}</link>'
            f"<description>{name}</description></channel>{items}</rdf:RDF>").encode()


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)
