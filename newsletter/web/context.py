"""What every request handler shares: configuration, secret, templates, a store per thread,
the rate limiter, and the small helpers that turn a template into a safe response."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse

from newsletter.config import Config, load_secret
from newsletter.web.i18n import pick_lang, translator
from newsletter.errors import TokenError
from newsletter.store.connection import PerThread
from newsletter.tokens import TokenClaims, verify_token
from newsletter.web.templating import base_path, base_url, page_values, template_env

# Token pages must not leak their URL (Referer), be framed, or be cached by a shared proxy.
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": PAGE_CSP,
}
LIST_CACHE_SECONDS = 30
WEB_BUSY_MS = 10000  # under common HTTP client timeouts; past it the answer is 503 + Retry-After
PRIVATE = {"Cache-Control": "no-store", **SECURITY_HEADERS}
PG_WRITER_THREADS = 8  # per web process, on PostgreSQL (a connection each)


@dataclass
class WebContext:
    config: Config
    secret: bytes
    env: Environment
    limiter: Any  # store.open_rate_limiter: SqliteRateLimiter or PostgresRateLimiter
    _list_cache: dict = field(default_factory=dict)
    answers: dict = field(default_factory=dict)  # rendered pages that hold nothing personal
    # The hot write path (one-click unsubscribe) runs on its own threads. SQLite: one, so requests
    # queue here instead of contending for the write lock, whose busy handler sleeps in steps of
    # up to 100 ms. PostgreSQL: several, each with its own connection, so that unsubscribes of
    # different readers commit side by side (``PostgresStore.reader_transaction``).
    _writer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="newsletter-web-writer"))
    _stores: PerThread = field(init=False)

    def __post_init__(self) -> None:
        self._stores = PerThread(self._open_store, conn_of=lambda store: store.conn)

    @classmethod
    def from_config(cls, config: Config) -> "WebContext":
        secret = load_secret(config, create=False)
        from newsletter.store import database_url, open_rate_limiter
        from newsletter.store.dburl import is_postgres

        limiter = open_rate_limiter(config, busy_ms=WEB_BUSY_MS)  # SQLite's RateLimiter or PostgresRateLimiter
        writers = PG_WRITER_THREADS if is_postgres(database_url(config)) else 1
        return cls(config=config, secret=secret, env=template_env(config), limiter=limiter,
                   _writer=ThreadPoolExecutor(max_workers=writers, thread_name_prefix="newsletter-web-writer"))

    @property
    def base_url(self) -> str:
        return base_url(self.config)

    @property
    def base_path(self) -> str:
        """Links and form targets on our own pages are absolute paths, so they work on whatever
        host and port the pages are served from."""
        return base_path(self.config)

    def store(self) -> Any:
        """This thread's store (SQLite connections must not be shared across threads), opened
        again when the database dropped its connection (a restart)."""
        return self._stores.get()

    def _open_store(self) -> Any:
        from newsletter.store import open_store

        store = open_store(self.config)
        if getattr(store, "backend", "sqlite") == "sqlite":  # a web write waits WEB_BUSY_MS for the lock, then 503
            store.conn.execute(f"PRAGMA busy_timeout = {WEB_BUSY_MS}")
        return store

    async def write(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the writer thread (with its own store) and await the result."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    def list_by_id(self, list_id: int) -> Any:
        """A list by id, cached briefly: list names change rarely and the one-click
        unsubscribe path should not pay a query for them."""
        now = time.monotonic()
        cached = self._list_cache.get(list_id)
        if cached is not None and now - cached[0] < LIST_CACHE_SECONDS:
            return cached[1]
        found = self.store().get_list_by_id(list_id)
        self._list_cache[list_id] = (now, found)
        return found

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._stores.close()
        self.limiter.close()

    # -- request helpers -------------------------------------------------------------------
    def lang(self, request: Request) -> str:
        return pick_lang(self.config.lang, request.headers.get("accept-language"))

    def t(self, lang: str):
        return translator(lang)

    def client_ip(self, request: Request) -> str:
        """The visitor's address: the socket peer, or the nearest X-Forwarded-For hop when the
        configuration says a trusted reverse proxy sits in front (never trust it otherwise)."""
        peer = request.client.host if request.client else "unknown"
        if self.config.web.trust_proxy_headers:
            forwarded = request.headers.get("x-forwarded-for", "")
            hops = [h.strip() for h in forwarded.split(",") if h.strip()]
            if hops:
                try:
                    return str(ipaddress.ip_address(hops[-1]))
                except ValueError:
                    pass
        return peer

    def page(self, lang: str, template: str, status: int = 200, *, headers: dict | None = None,
             background: Any = None, **values: Any) -> HTMLResponse:
        """Render ``template`` into an HTML response with the security headers."""
        html = self.env.get_template(template).render(page_values(self.config, lang, **values))
        all_headers = {**PRIVATE, "Content-Language": lang, "Vary": "Accept-Language", **(headers or {})}
        return HTMLResponse(html, status_code=status, headers=all_headers, background=background)

    def message(self, lang: str, title_key: str, *paragraphs: str, status: int = 200,
                link: dict | None = None, headers: dict | None = None, background: Any = None) -> HTMLResponse:
        """A page with a title and a few paragraphs (answers, errors)."""
        t = translator(lang)
        return self.page(lang, "web/message.html", status, headers=headers, background=background,
                         title=t(title_key), paragraphs=list(paragraphs), link=link)

    def bad_link(self, lang: str) -> HTMLResponse:
        """The one answer to every forged, tampered, expired or wrong-purpose token."""
        t = translator(lang)
        return self.message(lang, "bad_link.title", t("bad_link.body"), status=400,
                            link={"href": f"{self.base_path}/subscribe", "text": t("archive.subscribe")})


def verified(request: Request, purpose: str) -> tuple[WebContext, str, TokenClaims | None]:
    """The context, the reader's language and the token's claims (None when it fails
    verification: the caller answers ``ctx.bad_link(lang)`` and looks nothing up)."""
    ctx: WebContext = request.app.state.ctx
    lang = ctx.lang(request)
    try:
        return ctx, lang, verify_token(ctx.secret, purpose, request.path_params["token"])
    except TokenError:
        return ctx, lang, None
