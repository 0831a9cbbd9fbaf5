"""The Starlette application: routes, error pages and the archive endpoints."""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from newsletter.web import archive
from newsletter.config import Config
from newsletter.errors import StoreError, ValidationError
from newsletter.web import readers, signup
from newsletter.web.context import SECURITY_HEADERS, WebContext

log = logging.getLogger("newsletter.web")

# The web version is the email's HTML: inline styles and remote images, no scripts, no forms.
EDITION_CSP = ("default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
PUBLIC = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=300"}


async def home(request: Request) -> Response:
    return RedirectResponse(f"{request.app.state.ctx.base_path}/subscribe", status_code=302)


async def health(request: Request) -> Response:
    """Liveness for load balancers (and the benchmark's baseline endpoint)."""
    return PlainTextResponse("ok\n", headers={"Cache-Control": "no-store"})


async def archive_index(request: Request) -> Response:
    ctx: WebContext = request.app.state.ctx
    lang = ctx.lang(request)
    entries = await run_in_threadpool(archive.sent_entries, ctx.config)
    html = archive.index_page(ctx.config, entries, lang)
    return HTMLResponse(html, headers={**PUBLIC, "Content-Language": lang, "Vary": "Accept-Language"})


async def archive_edition(request: Request) -> Response:
    ctx: WebContext = request.app.state.ctx
    slug = request.path_params["slug"]
    rendered = await run_in_threadpool(_sent_edition, request.app.state.editions, ctx.config, slug)
    if rendered is None:
        raise HTTPException(404)
    html = archive.web_version(ctx.config, rendered)
    return HTMLResponse(html, headers={**PUBLIC, "Content-Security-Policy": EDITION_CSP})


def _sent_edition(cache: archive.SnapshotCache, config: Config, slug: str):
    return cache.get(slug)  # None for an edition never sent: unsent editions stay private


async def feed(request: Request) -> Response:
    ctx: WebContext = request.app.state.ctx
    xml = await run_in_threadpool(_feed, request.app.state.editions, ctx.config)
    return Response(xml, media_type="application/atom+xml; charset=utf-8", headers=PUBLIC)


def _feed(cache: archive.SnapshotCache, config: Config) -> str:
    entries = archive.sent_entries(config)[:50]
    rendered = {e.slug: cache.entry(e) for e in entries if archive.valid_slug(e.slug)}
    return archive.feed_xml(config, [e for e in entries if rendered.get(e.slug)], rendered)


async def http_error(request: Request, exc: HTTPException) -> Response:
    ctx: WebContext = request.app.state.ctx
    lang = ctx.lang(request)
    t = ctx.t(lang)
    if exc.status_code == 404:
        twin = _slash_twin(request)
        if twin is not None:
            # Starlette's own slash redirect builds the Location from the Host header (anyone's
            # host); ours is always under base_url.
            query = request.url.query
            return RedirectResponse(f"{ctx.base_url}{twin}{'?' + query if query else ''}", status_code=307)
        return ctx.message(lang, "not_found.title", t("not_found.body"), status=404)
    headers = dict(exc.headers or {})
    return ctx.message(lang, "bad_request.title", str(exc.detail), status=exc.status_code, headers=headers)


def _slash_twin(request: Request) -> str | None:
    """The path with its trailing slash removed (or added) when that one has a route."""
    from starlette.routing import Match

    path = request.scope.get("path", "")
    if path == "/" or "//" in path:
        return None
    twin = path[:-1] if path.endswith("/") else path + "/"
    scope = {**request.scope, "path": twin}
    for route in request.app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return twin
    return None
STORE_RETRY_AFTER = 30  # seconds; RFC 8058 one-click senders and browsers retry a 503


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """The database refused a write (busy past the timeout, disk full…): nothing was committed,
    so the answer must not say "done". 503 with Retry-After: the reader's click, or a mailbox
    provider's one-click POST, is tried again and then recorded."""
    ctx: WebContext = request.app.state.ctx
    log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc)
    lang = ctx.lang(request)
    t = ctx.t(lang)
    return ctx.message(lang, "busy.title", t("busy.body"), status=503,
                       headers={"Retry-After": str(STORE_RETRY_AFTER)})


async def bad_input(request: Request, exc: Exception) -> Response:
    """A value the reader sent that cannot be kept (``ValidationError`` past the handler's own
    checks, e.g. the database refusing it: ``UnstorableError``): 400, nothing written. Before
    ``StoreError`` in the exception's MRO, so an ``UnstorableError`` is a 400, not a 503."""
    ctx: WebContext = request.app.state.ctx
    log.info("refused input for %s %s: %s", request.method, request.url.path, exc)
    lang = ctx.lang(request)
    return ctx.message(lang, "bad_request.title", status=400)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("error serving %s", request.url.path)
    return PlainTextResponse("Internal Server Error\n", status_code=500)


def routes() -> list[Route]:
    return [
        Route("/", home),
        Route("/healthz", health),
        Route("/subscribe", signup.subscribe_page, methods=["GET"]),
        Route("/subscribe", signup.subscribe_post, methods=["POST"]),
        Route("/confirm/{token}", signup.confirm, methods=["GET"]),
        Route("/unsubscribe", readers.use_email_link, methods=["GET"]),
        Route("/unsubscribe/{token}", readers.unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe/{token}", readers.unsubscribe_post, methods=["POST"]),
        Route("/preferences", readers.use_email_link, methods=["GET"]),
        Route("/preferences/{token}", readers.preferences_page, methods=["GET"]),
        Route("/preferences/{token}", readers.preferences_post, methods=["POST"]),
        Route("/preferences/{token}/data.json", readers.my_data, methods=["GET"]),
        Route("/archive", archive_index, methods=["GET"]),
        Route("/archive/{slug}", archive_edition, methods=["GET"]),
        Route("/feed.xml", feed, methods=["GET"]),
    ]


def build_app(config: Config) -> Starlette:
    """The application for ``config``. Raises ``ConfigError`` when there is no signing secret."""
    ctx = WebContext.from_config(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            yield
        finally:
            ctx.close()

    app = Starlette(routes=routes(), lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, StoreError: store_unavailable,
                                        ValidationError: bad_input,
                                        Exception: server_error})
    app.router.redirect_slashes = False  # see http_error: redirects stay under base_url
    app.state.ctx = ctx
    app.state.editions = archive.SnapshotCache(config)
    return app
