"""The live preview: one local page showing the email at desktop and phone widths, the text part,
the check findings and the inbox line, reloading itself when the edition or a template changes.

A small threaded HTTP server on 127.0.0.1 (stdlib) serves the page; a watchfiles thread rebuilds on
every change and bumps a version number; the page listens on a Server-Sent Events stream and
reloads when the version moves. A broken edition shows its error on the page instead of stopping
the server, so the editor can fix it and watch it come back.
"""

from __future__ import annotations

import html
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from newsletter.edition.checks import Finding
    from newsletter.config import Config
    from newsletter.render.rendered import RenderedEmail

SAMPLE_READER = {"email": "reader@example.com", "name": "", "unsubscribe_url": "#unsubscribe",
                 "preferences_url": "#preferences"}
KEEPALIVE_SECONDS = 15.0


@dataclass
class PreviewState:
    """The latest build; ``version`` moves on every rebuild."""

    version: int = 0
    rendered: RenderedEmail | None = None
    findings: list[Finding] = field(default_factory=list)
    error: str = ""
    source: str = ""
    number: str = ""  # "No. 7 (assigned at its first send)" / "No. 7 (sent)"


class Preview:
    """Builds the edition on demand and on change; shared by the HTTP handler threads."""

    def __init__(self, edition_path: Path, config: Config, essay_path: Path | None = None):
        self.edition_path = Path(edition_path).resolve()
        self.essay_path = Path(essay_path).resolve() if essay_path else None
        self.config = config
        self.state = PreviewState(source=str(edition_path))
        self.changed = threading.Condition()
        self.stop_event = threading.Event()
        self.built_from: tuple = ()
        self.rebuild()

    def fingerprint(self) -> tuple:
        """What the edition, the essay and the project's template overrides look like on disk now
        (a change the watcher missed shows here)."""
        def mark(path: Path | None):
            try:
                st = path.stat() if path else None
            except OSError:
                return None
            return (st.st_ino, st.st_size, st.st_mtime_ns) if st else None

        templates = self.config.templates_path
        overrides = tuple((str(p), mark(p)) for p in sorted(templates.rglob("*.j2"))) if templates.is_dir() else ()
        return (mark(self.edition_path), mark(self.essay_path)), overrides

    def rebuild(self) -> None:
        """Parse, render and check again; a ``NewsletterError`` becomes the page's error box."""
        from newsletter.render.build import build_edition

        rendered, findings, error, number = None, [], "", ""
        self.built_from = self.fingerprint()  # taken before reading: a later write always differs
        try:
            edition, rendered, findings = build_edition(self.edition_path, self.config, self.essay_path)
            number = f"No. {edition.number} (assigned at its first send, then kept)" \
                if edition.number else ""
        except NewsletterError as err:
            error = str(err)
        with self.changed:
            self.state = PreviewState(self.state.version + 1, rendered, findings, error, self.state.source, number)
            self.changed.notify_all()

    def watched_paths(self) -> list[Path]:
        from newsletter.render.html import BUILTIN_TEMPLATES

        templates = self.config.templates_path
        # Watch for the templates folder itself to appear: an editor may start overriding mid-session.
        project_templates = templates if templates.exists() else templates.parent
        paths = {self.edition_path.parent, project_templates, BUILTIN_TEMPLATES.resolve()}
        if self.essay_path:
            paths.add(self.essay_path.parent)
        return sorted(p for p in paths if p.exists())

    def relevant(self, changed: str) -> bool:
        """A change to the edition, the essay or any template (not to unrelated files nearby)."""
        path = Path(changed).resolve()
        if path in (self.edition_path, self.essay_path):
            return True
        from newsletter.render.html import BUILTIN_TEMPLATES

        roots = (self.config.templates_path.resolve(), BUILTIN_TEMPLATES.resolve())
        return any(path.is_relative_to(root) for root in roots)

    def watch(self) -> None:
        """Rebuild on every relevant change until ``stop_event`` is set (runs in a thread)."""
        from watchfiles import watch

        from newsletter.render.html import environment

        # Every half second without events, the edition's and essay's files are also compared with the
        # ones last built: an edit made before the watcher was in place (the first moments after
        # start) would otherwise wait for the next event.
        for changes in watch(*self.watched_paths(), stop_event=self.stop_event, debounce=150,
                             step=50, rust_timeout=500, yield_on_timeout=True):
            if not changes:
                now = self.fingerprint()
                if now != self.built_from:
                    if self.built_from and now[1] != self.built_from[1]:
                        environment.cache_clear()
                    self.rebuild()
                continue
            relevant = [p for _, p in changes if self.relevant(p)]
            if any(Path(p).suffix == ".j2" for p in relevant):
                # A new override file is only found by a fresh environment (Jinja's auto-reload
                # watches the files it has already loaded).
                environment.cache_clear()
            if relevant:
                self.rebuild()

    def wait_for_change(self, version: int, timeout: float) -> int:
        with self.changed:
            self.changed.wait_for(lambda: self.state.version != version or self.stop_event.is_set(), timeout)
            return self.state.version


def personalised(text: str, *, escape_html: bool) -> str:
    """The rendered part with the sample reader's values in place of the placeholders."""
    from newsletter.send.message import substitute

    return substitute(text, SAMPLE_READER, html=escape_html)


class PreviewServer:
    """The HTTP side: ``start()`` serves in a background thread, ``stop()`` shuts everything down."""

    def __init__(self, preview: Preview, host: str = "127.0.0.1", port: int = 0):
        self.preview = preview
        handler = type("Handler", (_Handler,), {"preview": preview})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self, *, watch: bool = True) -> None:
        self.threads = [threading.Thread(target=self.httpd.serve_forever, name="preview-http", daemon=True)]
        if watch:
            self.threads.append(threading.Thread(target=self.preview.watch, name="preview-watch", daemon=True))
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.preview.stop_event.set()
        with self.preview.changed:
            self.preview.changed.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self.threads:
            thread.join(timeout=5)


def serve_preview(edition_path: Path, config: Config, *, essay_path: Path | None = None, port: int = 8025,
                  on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the preview on 127.0.0.1 until interrupted (Ctrl-C propagates as KeyboardInterrupt)."""
    preview = Preview(edition_path, config, essay_path)
    try:
        server = PreviewServer(preview, port=port)
    except OSError as err:
        raise NewsletterError(f"cannot listen on 127.0.0.1:{port}: {err.strerror}; try --port") from None
    server.start()
    try:
        if on_ready is not None:
            on_ready(server.url)
        preview.stop_event.wait()
    finally:
        server.stop()


class _Handler(BaseHTTPRequestHandler):
    preview: Preview
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        return None  # the terminal stays quiet; the page shows what matters

    def do_GET(self):  # noqa: N802 - http.server's naming
        state = self.preview.state
        route = self.path.split("?", 1)[0]
        if route == "/":
            self._send(200, "text/html; charset=utf-8", page(state))
        elif route == "/email.html":
            body = personalised(state.rendered.html, escape_html=True) if state.rendered else error_page(state)
            self._send(200, "text/html; charset=utf-8", body)
        elif route == "/email.txt":
            body = personalised(state.rendered.text, escape_html=False) if state.rendered else state.error
            self._send(200, "text/plain; charset=utf-8", body)
        elif route == "/version":
            self._send(200, "application/json", json.dumps({"version": state.version, "error": state.error}))
        elif route == "/events":
            self._events()
        else:
            self._send(404, "text/plain; charset=utf-8", "not found")

    def _send(self, status: int, content_type: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _events(self) -> None:
        """Server-Sent Events: the current version now, then each new one as it happens."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        version = self.preview.state.version
        try:
            self.wfile.write(f"data: {version}\n\n".encode())
            self.wfile.flush()
            while not self.preview.stop_event.is_set():
                new = self.preview.wait_for_change(version, KEEPALIVE_SECONDS)
                message = f"data: {new}\n\n" if new != version else ": keepalive\n\n"
                version = new
                self.wfile.write(message.encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return


def error_page(state: PreviewState) -> str:
    return f"<!doctype html><meta charset=utf-8><pre>{html.escape(state.error)}</pre>"


def page(state: PreviewState) -> str:
    """The preview page for ``state``."""
    r = state.rendered
    inbox = (f"<div class=inbox><b>{html.escape(r.subject)}</b> — <span>{html.escape(r.preheader)}</span></div>"
             if r else "")
    if state.number:
        inbox += f"<div class=meta data-number>{html.escape(state.number)}</div>"
    error = f"<div class=error>{html.escape(state.error)}</div>" if state.error else ""
    findings = "".join(
        f"<li class={f.level.value}>{html.escape(f.format(state.source))}</li>" for f in state.findings
    ) or ("<li class=ok>no problems found</li>" if r else "")
    size = f"{len(r.html.encode('utf-8')) / 1024:.1f} KB HTML · {len(r.text.encode('utf-8')) / 1024:.1f} KB text" if r else ""
    text = html.escape(personalised(r.text, escape_html=False)) if r else ""
    return _PAGE.format(title=html.escape(r.subject if r else "preview"), version=state.version, inbox=inbox,
                        error=error, findings=findings, size=size, text=text)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · preview</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.5 -apple-system, "Segoe UI", Roboto, "Noto Sans CJK SC", sans-serif; margin: 0; background: #e9ebef; color: #1f2328; }}
header {{ padding: 12px 20px; background: #fff; border-bottom: 1px solid #d0d7de; }}
.inbox {{ font-size: 15px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
.inbox span {{ color: #57606a; }}
.meta {{ color: #57606a; font-size: 12px; }}
.error {{ margin: 12px 20px; padding: 12px; background: #ffebe9; border: 1px solid #ff8182; font-family: monospace; white-space: pre-wrap; }}
ul.findings {{ margin: 8px 0 0; padding-left: 18px; }} li.error {{ color: #cf222e; }} li.warning {{ color: #9a6700; }} li.ok {{ color: #1a7f37; }}
main {{ display: flex; gap: 20px; padding: 20px; align-items: flex-start; overflow-x: auto; }}
figure {{ margin: 0; }} figcaption {{ font-size: 12px; color: #57606a; margin-bottom: 6px; }}
iframe {{ border: 1px solid #d0d7de; background: #fff; height: 1400px; }}
pre {{ background: #fff; border: 1px solid #d0d7de; padding: 12px; max-width: 640px; white-space: pre-wrap; word-break: break-word; height: 1376px; overflow: auto; margin: 0; }}
</style></head>
<body data-version="{version}">
<header>{inbox}<div class=meta>{size}</div><ul class=findings>{findings}</ul></header>
{error}
<main>
<figure><figcaption>desktop · 600 px</figcaption><iframe title="desktop" src="/email.html" width="640"></iframe></figure>
<figure><figcaption>phone · 375 px</figcaption><iframe title="phone" src="/email.html" width="375"></iframe></figure>
<figure><figcaption>plain text</figcaption><pre>{text}</pre></figure>
</main>
<script>
const shown = document.body.dataset.version;
const events = new EventSource("/events");
events.onmessage = (e) => {{ if (e.data !== shown) location.reload(); }};
</script>
</body></html>
"""
