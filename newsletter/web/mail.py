"""Transactional mail for the readers' side: the confirmation request and the welcome note.

Building a message is pure (templates in, ``OutgoingMessage`` out); ``deliver`` is the one place
that talks to the configured transport. Sent after the HTTP answer has gone out, so the answer
takes the same time whether or not an email was due (no enumeration by timing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from jinja2 import Environment

from newsletter.config import Config
from newsletter.web.i18n import quote_list_names, translator
from newsletter.tokens import make_token
from newsletter.web.templating import base_url, page_values

log = logging.getLogger("newsletter.web")


def confirm_url(config: Config, secret: bytes, subscriber_id: int, list_id: int, *, uid: str,
                now: float | None = None) -> str:
    """The signed confirmation link, valid for ``web.confirm_ttl_hours``."""
    now = time.time() if now is None else now
    expires = int(now + config.web.confirm_ttl_hours * 3600)
    token = make_token(secret, "confirm", subscriber_id, list_id, expires=expires, uid=uid)
    return f"{base_url(config)}/confirm/{token}"


def preferences_url(config: Config, secret: bytes, subscriber_id: int, *, uid: str) -> str:
    return f"{base_url(config)}/preferences/{make_token(secret, 'preferences', subscriber_id, 0, uid=uid)}"


def _greeting(lang: str, name: str) -> str:
    t = translator(lang)
    return t("mail.hello", name=name) if name.strip() else t("mail.hello_anon")


def _mail(config: Config, env: Environment, lang: str, kind: str, *, email: str, name: str,
          list_names: Sequence[str], values: dict):
    """One transactional message: ``transactional/{kind}.txt`` and ``.html`` rendered with the
    subject ``mail.{kind}_subject``, the greeting, the quoted list names and ``values``."""
    from newsletter.send.message import simple_message

    subject = translator(lang)(f"mail.{kind}_subject", name=config.name)
    context = page_values(config, lang, subject=subject, greeting=_greeting(lang, name),
                          lists=quote_list_names(list(list_names), lang), **values)
    text = env.get_template(f"transactional/{kind}.txt").render(context)
    html = env.get_template(f"transactional/{kind}.html").render(context)
    return simple_message(config, to_email=email, to_name=name, subject=subject, text=text, html=html,
                          extra_headers={"Auto-Submitted": "auto-generated"})


def confirmation_message(config: Config, secret: bytes, env: Environment, *, subscriber_id: int,
                         uid: str, email: str, name: str, list_ids: Sequence[int], list_names: Sequence[str],
                         lang: str, now: float | None = None):
    """The double opt-in request: one link confirming the lists in ``list_ids``."""
    list_id = list_ids[0] if len(list_ids) == 1 else 0  # 0: every pending list of this reader
    return _mail(config, env, lang, "confirm", email=email, name=name, list_names=list_names, values={
        "hours": config.web.confirm_ttl_hours,
        "confirm_url": confirm_url(config, secret, subscriber_id, list_id, uid=uid, now=now),
    })


def welcome_message(config: Config, secret: bytes, env: Environment, *, subscriber_id: int,
                    uid: str, email: str, name: str, list_names: Sequence[str], lang: str):
    """The note sent once a subscription is active."""
    return _mail(config, env, lang, "welcome", email=email, name=name, list_names=list_names, values={
        "archive_url": f"{base_url(config)}/archive",
        "preferences_url": preferences_url(config, secret, subscriber_id, uid=uid),
    })


def deliver(config: Config, message) -> None:
    """Send one transactional message through the configured transport; failures are logged,
    never shown to the visitor (the answer page went out already)."""
    from newsletter.errors import NewsletterError
    from newsletter.send.transports import open_transport

    try:
        with open_transport(config) as transport:
            transport.send(message)
    except NewsletterError as err:
        log.error("transactional mail not sent: %s", err)
