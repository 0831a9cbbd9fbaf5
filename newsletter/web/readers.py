"""The links in every email: unsubscribe (RFC 8058 one-click) and preferences.

A GET never changes anything (mail scanners prefetch links); a POST to the unsubscribe URL
unsubscribes at once, whatever its body (the page's button, or ``List-Unsubscribe=One-Click``),
and answers 200 without a redirect. A token that fails verification gets the same 400 page
whatever was wrong with it, and nothing is looked up.
"""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from newsletter.errors import ValidationError
from newsletter.web.i18n import quote_list_names
from newsletter.store.models import MembershipStatus, SubscriberStatus
from newsletter.tokens import TokenClaims, make_token
from newsletter.web.context import PRIVATE, WebContext, verified
from newsletter.web.signup import MAX_NAME, FormTooLarge, read_form


def mask_email(email: str) -> str:
    """``a***@example.com``: enough for the reader to recognise, little for anyone else."""
    local, _, domain = email.rpartition("@")
    if not local:
        return "***"
    return f"{local[0]}***@{domain}"


# -- unsubscribe ---------------------------------------------------------------------------

async def unsubscribe_page(request: Request) -> Response:
    ctx, lang, claims = verified(request, "unsubscribe")
    if claims is None:
        return ctx.bad_link(lang)
    return await run_in_threadpool(_unsubscribe_page, ctx, lang, claims)


def _unsubscribe_page(ctx: WebContext, lang: str, claims: TokenClaims) -> Response:
    t = ctx.t(lang)
    store = ctx.store()
    sub = store.subscriber_for_token(claims)
    lst = store.get_list_by_id(claims.list_id) if claims.list_id else None
    if sub is None or (claims.list_id and lst is None):  # erased, or the list is gone: nothing to stop
        return _unsubscribed(ctx, lang, None, lst)
    email = mask_email(sub.email)
    question = (t("unsubscribe.question_list", list=quote_list_names([lst.name], lang), email=email) if lst
                else t("unsubscribe.question_all", name=ctx.config.name, email=email))
    prefs = make_token(ctx.secret, "preferences", sub.id, 0, uid=sub.uid)
    return ctx.page(lang, "web/unsubscribe.html", title=t("unsubscribe.title"), question=question,
                    action="",  # the form posts to the page's own URL
                    preferences_url=f"{ctx.base_path}/preferences/{prefs}")


async def unsubscribe_post(request: Request) -> Response:
    """One short transaction; idempotent; 200 with a small page (never a redirect)."""
    ctx, lang, claims = verified(request, "unsubscribe")
    if claims is None:
        return ctx.bad_link(lang)
    async for _ in request.stream():  # the body says nothing we need; drain it
        pass
    lst = await ctx.write(_unsubscribe, ctx, claims)
    return _unsubscribed_page(ctx, lang, lst)


def _unsubscribed_page(ctx: WebContext, lang: str, lst) -> Response:
    """The answer to an unsubscribe POST. It holds nothing personal, so it is rendered once per
    (language, list) and reused: the burst after a big send should cost a database write each,
    not a template rendering."""
    key = ("unsubscribed", lang, lst.id if lst else 0, lst.name if lst else "")
    body = ctx.answers.get(key)
    if body is None:
        body = _unsubscribed(ctx, lang, None, lst).body
        if len(ctx.answers) > 1024:
            ctx.answers.clear()
        ctx.answers[key] = body
    return HTMLResponse(body, headers={**PRIVATE, "Content-Language": lang, "Vary": "Accept-Language"})


def _unsubscribe(ctx: WebContext, claims: TokenClaims):
    """Committed before it returns. A token whose identity names nobody now (an erased reader),
    or a list that no longer exists, changes nothing and is still answered "unsubscribed"; a
    database that refuses the write raises ``StoreError`` — answered 503 + Retry-After, never
    "done"."""
    store = ctx.store()
    if store.subscriber_for_token(claims) is None:  # erased: the identity names nobody now
        return None
    try:
        store.unsubscribe(claims.subscriber_id, claims.list_id or None)
    except ValidationError:  # the list no longer exists: nothing left to stop
        return None
    return ctx.list_by_id(claims.list_id) if claims.list_id else None


def _unsubscribed(ctx: WebContext, lang: str, email: str | None, lst) -> Response:
    t = ctx.t(lang)
    who = email or t("web.email_neutral")
    body = (t("unsubscribed.body_list", email=who, list=quote_list_names([lst.name], lang)) if lst
            else t("unsubscribed.body_all", email=who, name=ctx.config.name))
    return ctx.message(lang, "unsubscribed.title", body, t("unsubscribed.again"),
                       link={"href": f"{ctx.base_path}/subscribe", "text": t("archive.subscribe")})


# -- preferences ---------------------------------------------------------------------------

async def preferences_page(request: Request) -> Response:
    ctx, lang, claims = verified(request, "preferences")
    if claims is None:
        return ctx.bad_link(lang)
    saved = request.query_params.get("saved") == "1"
    return await run_in_threadpool(_preferences, ctx, lang, claims, saved, "")


def _choices(ctx: WebContext, subscriber_id: int) -> tuple[list[dict], dict[str, int]]:
    """Public lists plus any list the reader is on, each with whether it is checked."""
    store = ctx.store()
    members = {m.list_id: m for m in store.memberships(subscriber_id)}
    lists = {l.id: l for l in store.lists(public_only=True)}
    for list_id in members:
        if list_id not in lists:
            found = store.get_list_by_id(list_id)
            if found is not None:
                lists[list_id] = found
    choices = []
    for l in sorted(lists.values(), key=lambda l: l.name):
        m = members.get(l.id)
        checked = m is not None and m.status in (MembershipStatus.ACTIVE, MembershipStatus.UNCONFIRMED)
        choices.append({"name": l.name, "description": l.description, "checked": checked})
    return choices, {l.name: l.id for l in lists.values()}


def _preferences(ctx: WebContext, lang: str, claims: TokenClaims, saved: bool, error: str,
                 status: int = 200) -> Response:
    t = ctx.t(lang)
    sub = ctx.store().subscriber_for_token(claims)
    if sub is None:
        return ctx.bad_link(lang)
    choices, _ = _choices(ctx, sub.id)
    token = make_token(ctx.secret, "preferences", sub.id, 0, uid=sub.uid)
    return ctx.page(lang, "web/preferences.html", status, title=t("prefs.title"), email=sub.email, name=sub.name,
                    choices=choices, saved=saved, error=error,
                    unsubscribed=sub.status == SubscriberStatus.UNSUBSCRIBED,
                    action="", data_url=f"{ctx.base_path}/preferences/{token}/data.json")


async def preferences_post(request: Request) -> Response:
    ctx, lang, claims = verified(request, "preferences")
    if claims is None:
        return ctx.bad_link(lang)
    try:
        fields = await read_form(request)
    except FormTooLarge:
        return ctx.message(lang, "bad_request.title", status=413)
    return await run_in_threadpool(_save_preferences, ctx, lang, claims, fields)


def _save_preferences(ctx: WebContext, lang: str, claims: TokenClaims, fields: list[tuple[str, str]]) -> Response:
    t = ctx.t(lang)
    store = ctx.store()
    sub = store.subscriber_for_token(claims)
    if sub is None:
        return ctx.bad_link(lang)
    values = dict(fields)
    if values.get("action") == "unsubscribe-all":
        store.unsubscribe(sub.id, None)
        return _unsubscribed(ctx, lang, sub.email, None)
    _, ids_by_name = _choices(ctx, sub.id)
    chosen = [ids_by_name[v] for k, v in fields if k == "list" and v in ids_by_name]
    name = values.get("name", sub.name).strip()
    if len(name) > MAX_NAME:
        return _preferences(ctx, lang, claims, False, t("subscribe.err_name"), 400)
    try:
        store.update_subscriber(sub.id, name=name, list_ids=chosen)
    except ValidationError as err:
        return _preferences(ctx, lang, claims, False, err.message, 400)
    token = make_token(ctx.secret, "preferences", sub.id, 0, uid=sub.uid)
    # Post/redirect/get: reloading the page afterwards does not post the form again.
    return RedirectResponse(f"{ctx.base_path}/preferences/{token}?saved=1", status_code=303, headers=PRIVATE)


async def my_data(request: Request) -> Response:
    ctx, lang, claims = verified(request, "preferences")
    if claims is None:
        return ctx.bad_link(lang)
    data = await run_in_threadpool(_export, ctx, claims)
    if data is None:
        return ctx.bad_link(lang)
    body = json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n"
    return Response(body, media_type="application/json", headers={
        **PRIVATE, "Content-Disposition": 'attachment; filename="my-newsletter-data.json"'})


def _export(ctx: WebContext, claims: TokenClaims) -> dict | None:
    store = ctx.store()
    sub = store.subscriber_for_token(claims)
    if sub is None:  # erased since the link was sent: its identity names nobody now
        return None
    try:
        return store.export_subscriber(sub.id)
    except ValidationError:  # erased since the link was sent
        return None


async def use_email_link(request: Request) -> Response:
    """Where the web version's unsubscribe/preferences links lead: no token, an explanation."""
    ctx: WebContext = request.app.state.ctx
    lang = ctx.lang(request)
    t = ctx.t(lang)
    return ctx.message(lang, "use_email.title", t("use_email.body"))
