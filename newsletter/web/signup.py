"""Sign-up: the subscribe form, double opt-in confirmation, and their abuse limits.

Whatever happens to an address (new, already subscribed, refused by consent rules, caught by a
limit), the visitor sees the same answer, decided only by the lists asked for: "check your inbox"
when one of them needs confirmation, "thank you" otherwise. Emails go out after the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter.errors import StoreError, ValidationError
from newsletter.store.models import MembershipStatus, OptIn
from newsletter.web import mail
from newsletter.web.context import WebContext, verified

MAX_FORM_BYTES = 16 * 1024
MAX_NAME = 200
HOUR, DAY = 3600, 86400


def address_bucket(kind: str, email: str) -> str:
    """A rate-limit bucket for an email address that does not store the address itself."""
    import hashlib

    digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:32]
    return f"{kind}:{digest}"


class FormTooLarge(Exception):
    pass


@dataclass
class SignupForm:
    email: str = ""
    name: str = ""
    lists: list[str] = field(default_factory=list)
    honeypot: str = ""


async def read_form(request: Request) -> list[tuple[str, str]]:
    """The posted fields (urlencoded, or multipart from a form that asked for it), bounded."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=0, max_fields=50)
        return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge()
    try:
        return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=100)
    except ValueError:  # more than 100 fields: refused like an oversized body, not a 500
        raise FormTooLarge() from None


def parse_signup(fields: list[tuple[str, str]]) -> SignupForm:
    form = SignupForm()
    for key, value in fields:
        if key == "email":
            form.email = value.strip()
        elif key == "name":
            form.name = value.strip()
        elif key == "list" and value.strip() and value.strip() not in form.lists:
            form.lists.append(value.strip())
        elif key == "website":
            form.honeypot = value
    return form


def _public_lists(ctx: WebContext) -> list:
    return ctx.store().lists(public_only=True)


async def subscribe_page(request: Request) -> Response:
    ctx: WebContext = request.app.state.ctx
    lang = ctx.lang(request)
    lists = await run_in_threadpool(_public_lists, ctx)
    return _form_page(ctx, lang, lists, SignupForm())


def _form_page(ctx: WebContext, lang: str, lists: list, form: SignupForm, error: str = "", status: int = 200) -> Response:
    t = ctx.t(lang)
    return ctx.page(lang, "web/subscribe.html", status, title=t("subscribe.title", name=ctx.config.name),
                    lists=lists, form=form, error=error)


async def subscribe_post(request: Request) -> Response:
    ctx: WebContext = request.app.state.ctx
    lang = ctx.lang(request)
    t = ctx.t(lang)
    ip = ctx.client_ip(request)
    allowed = await run_in_threadpool(ctx.limiter.hit, f"subscribe-ip:{ip}", ctx.config.web.subscribe_per_ip_per_hour, HOUR)
    if not allowed:
        return ctx.message(lang, "limited.title", t("limited.body"), status=429, headers={"Retry-After": "3600"})
    try:
        form = parse_signup(await read_form(request))
    except FormTooLarge:
        return ctx.message(lang, "bad_request.title", status=413)
    return await run_in_threadpool(_subscribe, ctx, lang, form)


def _subscribe(ctx: WebContext, lang: str, form: SignupForm) -> Response:
    t = ctx.t(lang)
    public = _public_lists(ctx)
    by_name = {l.name: l for l in public}
    if not public:
        return _form_page(ctx, lang, public, form, status=400)
    wanted = form.lists or ([public[0].name] if len(public) == 1 else [])
    if not wanted:
        return _form_page(ctx, lang, public, form, t("subscribe.err_list"), 400)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        return _form_page(ctx, lang, public, form, t("subscribe.err_unknown_list", list=unknown[0]), 400)
    if len(form.name) > MAX_NAME:
        return _form_page(ctx, lang, public, form, t("subscribe.err_name"), 400)
    chosen = [by_name[n] for n in wanted]
    needs_confirmation = any(l.optin == OptIn.DOUBLE for l in chosen)
    if form.honeypot:  # a bot filled the hidden field: answer as usual, do nothing
        return _answer(ctx, lang, form, needs_confirmation)
    try:
        result = ctx.store().subscribe(form.email, name=form.name, list_ids=[l.id for l in chosen], source="web")
    except ValidationError:
        return _form_page(ctx, lang, public, form, t("subscribe.err_email"), 400)
    task = None
    if not result.refused and result.subscriber is not None and (result.pending or result.activated):
        task = BackgroundTask(_send_signup_mail, ctx, lang, result)
    return _answer(ctx, lang, form, needs_confirmation, task)


def _answer(ctx: WebContext, lang: str, form: SignupForm, needs_confirmation: bool, background=None) -> Response:
    t = ctx.t(lang)
    if needs_confirmation:
        return ctx.message(lang, "check.title", t("check.body", email=form.email, hours=ctx.config.web.confirm_ttl_hours),
                           background=background)
    return ctx.message(lang, "subscribed.title", t("subscribed.body", email=form.email, name=ctx.config.name),
                       background=background)


def _send_signup_mail(ctx: WebContext, lang: str, result) -> None:
    """After the answer: a confirmation request for pending lists, else a welcome note; both
    count against the per-address daily limit so nobody can mail-bomb a victim."""
    sub = result.subscriber
    bucket = address_bucket("mail", sub.email)
    try:
        allowed = ctx.limiter.hit(bucket, ctx.config.web.confirmations_per_address_per_day, DAY)
    except StoreError as err:  # after the answer: nobody to tell but the log (no mail sent)
        mail.log.warning("cannot count mail for subscriber %s (%s); no email sent", sub.id, err)
        return
    if not allowed:
        mail.log.warning("per-address mail limit reached; no email sent for subscriber %s", sub.id)
        return
    if result.pending:
        message = mail.confirmation_message(
            ctx.config, ctx.secret, ctx.env, subscriber_id=sub.id, uid=sub.uid, email=sub.email, name=sub.name,
            list_ids=[l.id for l in result.pending], list_names=[l.name for l in result.pending], lang=lang)
    elif ctx.config.web.welcome_email:
        message = mail.welcome_message(ctx.config, ctx.secret, ctx.env, subscriber_id=sub.id, uid=sub.uid, email=sub.email,
                                       name=sub.name, list_names=[l.name for l in result.activated], lang=lang)
    else:
        return
    mail.deliver(ctx.config, message)


async def confirm(request: Request) -> Response:
    ctx, lang, claims = verified(request, "confirm")
    if claims is None:
        return ctx.bad_link(lang)
    return await run_in_threadpool(_confirm, ctx, lang, claims)


def _confirm(ctx: WebContext, lang: str, claims) -> Response:
    t = ctx.t(lang)
    store = ctx.store()
    sub = store.subscriber_for_token(claims)
    if sub is None:  # erased (its identity is never reused), or never existed
        return ctx.bad_link(lang)
    subscriber_id, list_id = sub.id, claims.list_id
    try:
        changed = store.confirm(subscriber_id, list_id)
    except ValidationError:  # the list or subscriber is gone (a refused write is StoreError: 503)
        return ctx.bad_link(lang)
    active = [m.list_name for m in store.memberships(subscriber_id) if m.status == MembershipStatus.ACTIVE]
    if not active:  # unsubscribed or refused since: the link no longer means anything
        return ctx.bad_link(lang)
    from newsletter.web.i18n import quote_list_names

    task = None
    if changed and ctx.config.web.welcome_email:
        message = mail.welcome_message(ctx.config, ctx.secret, ctx.env, subscriber_id=sub.id, uid=sub.uid, email=sub.email,
                                       name=sub.name, list_names=active, lang=lang)
        task = BackgroundTask(mail.deliver, ctx.config, message)
    return ctx.message(lang, "confirmed.title", t("confirmed.body", email=sub.email, lists=quote_list_names(active, lang)),
                       link={"href": f"{ctx.base_path}/archive", "text": t("mail.archive").rstrip(":：")},
                       background=task)
