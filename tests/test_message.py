"""Per-reader messages: the fast template against the ``email``-package reference, headers,
encodings, tokens, CR/LF refusal, and transactional ``simple_message``."""

from __future__ import annotations

import email
import email.utils
import re
from email import policy
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from newsletter.config import Config
from newsletter.errors import ValidationError
from newsletter.send.message import MessageTemplate, SendContext, build_message_slow, simple_message
from newsletter.render.rendered import RenderedEmail, placeholder
from newsletter.store.models import Recipient
from newsletter.tokens import make_token, verify_token

SECRET = b"k" * 32
ONCE = ("From", "To", "Reply-To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
        "List-Unsubscribe-Post", "MIME-Version", "Content-Type")


def config(**kw) -> Config:
    values = dict(root=Path("/tmp"), name="AI 日报", from_="AI 日报 <news@example.com>",
                  reply_to="editor@example.com", base_url="https://news.example.com")
    values.update(kw)
    return Config(**values)


def rendered(subject: str = "AI 日报：模型、芯片与监管 — the long subject line of the day, folded") -> RenderedEmail:
    unsub, prefs = placeholder("unsubscribe_url"), placeholder("preferences_url")
    name, city = placeholder("name", "朋友"), placeholder("attr.city", "somewhere")
    html = ("<!doctype html><html><head><style>p{color:#333}</style></head><body>"
            f"<p style=\"margin:0\">你好，{name}！Hello from {city}.</p>"
            + "<p>" + "今日要闻 " * 60 + "a long line of text " * 20 + "</p>"
            + f"<p>Sent to {placeholder('email')}. <a href=\"{unsub}\">Unsubscribe</a> · "
              f"<a href=\"{prefs}\">Preferences</a> · <a href=\"https://news.example.com/archive/x\">View in browser</a>"
              f"{name}{name}</p>\n<p>trailing space  \nand = signs =3D and dots\n.\n</p></body></html>")
    text = (f"你好，{name}！Hello from {city}.\n\n" + "今日要闻 " * 40 + "\n" + "word " * 30 + "\n"
            f"Unsubscribe: {unsub}\nPreferences: {prefs}\nView in browser: https://news.example.com/archive/x\n"
            "tabs\tand trailing spaces   \nFrom the start of a line\n.\n= done")
    return RenderedEmail(slug="2025-10-14", subject=subject, preheader="", lang="zh-CN", html=html, text=text,
                         web_url="https://news.example.com/archive/2025-10-14")


READERS = [
    Recipient(1, "ada@example.com", "Ada Lovelace", {"city": "London"}),
    Recipient(2, "wei@example.com", "张伟", {"city": "北京 & <上海>"}),
    Recipient(3, "noname@example.com", "", {}),
    Recipient(4, "quote@example.com", 'Zoë "Z" O\'Brien, PhD', {"city": "Dublin"}),
    Recipient(5, "long@example.com", "欧阳" * 30 + " the Third", {"city": "成都"}),
    Recipient(6, "odd@example.com", "=?utf-8?q?not-an-encoded-word?= <x>", {"city": "a=b"}),
    Recipient(7, "spaces@example.com", "  two  spaces  ", {"city": ""}),
    Recipient(8, "kana@xn--wgv71a119e.example", "まつもと ゆきひろ", {"city": "松江"}),
]


def display_name(raw: bytes) -> str:
    """The To display name decoded as RFC 2047 says (adjacent encoded words join without the
    space between them; Python's new header parser inserts one, so the legacy decoder is used)."""
    header = email.message_from_bytes(raw)["To"]  # compat32: the raw value
    phrase = re.sub(r"\r?\n[ \t]", " ", header).rpartition(" <")[0]
    if phrase.startswith('"'):
        return email.utils.unquote(phrase).replace('\\"', '"').replace("\\\\", "\\")
    return str(make_header(decode_header(phrase)))


def parsed(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


def parts(msg) -> tuple[str, str]:
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.email)
def test_fast_message_parses_to_the_same_content_as_the_reference(reader):
    ctx = SendContext(config=config(), secret=SECRET, list_id=3, list_name="daily")
    edition = rendered()
    fast_raw = MessageTemplate(edition, ctx).render(reader).raw
    fast, slow = parsed(fast_raw), parsed(build_message_slow(edition, ctx, reader))
    assert parts(fast) == parts(slow)
    for name in ONCE[:-1]:
        if name != "To":
            assert str(fast[name]) == str(slow[name]), name
    if reader.name:
        assert display_name(fast_raw) == reader.name
    if "=?" not in reader.name and len(reader.name.encode()) <= 45:  # one encoded word at most (see display_name)
        # the email package collapses runs of spaces in a name; the fast path keeps them
        assert fast["To"].addresses[0].display_name.split() == slow["To"].addresses[0].display_name.split()
    assert fast["To"].addresses[0].addr_spec == slow["To"].addresses[0].addr_spec == reader.email
    assert fast.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in fast.iter_parts()] == ["text/plain", "text/html"]
    assert not fast.defects and all(not p.defects for p in fast.iter_parts())


def test_personalization_escapes_html_and_keeps_text_raw():
    ctx = SendContext(config=config(), secret=SECRET, list_id=3, list_name="daily")
    text, html = parts(parsed(MessageTemplate(rendered(), ctx).render(READERS[1]).raw))
    assert "你好，张伟！Hello from 北京 & <上海>." in text
    assert "Hello from 北京 &amp; &lt;上海&gt;." in html
    assert "Sent to wei@example.com." in html
    text, html = parts(parsed(MessageTemplate(rendered(), ctx).render(READERS[2]).raw))
    assert "你好，朋友！Hello from somewhere." in text  # fallbacks
    assert "@@nl:" not in text and "@@nl:" not in html


def test_every_header_exactly_once_and_lines_within_limits():
    ctx = SendContext(config=config(), secret=SECRET, list_id=3, list_name="daily")
    template = MessageTemplate(rendered(), ctx)
    for reader in READERS:
        raw = template.render(reader).raw
        msg = parsed(raw)
        for name in ONCE:
            assert len(msg.get_all(name, [])) == 1, name
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert str(msg["List-Id"]) == "AI 日报 <daily.example.com>"
        assert msg["Message-ID"].endswith("@example.com>")
        lines = raw.split(b"\r\n")
        assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
        body_start = lines.index(b"")
        assert all(len(line) <= 998 for line in lines[:body_start])
        assert all(len(line) <= 76 for line in lines[body_start:])  # quoted-printable limit
        assert raw.isascii()


def test_message_ids_differ_per_reader_and_per_send():
    ctx = SendContext(config=config(), secret=SECRET, list_id=3, list_name="daily")
    template = MessageTemplate(rendered(), ctx)
    ids = {parsed(template.render(r).raw)["Message-ID"] for r in READERS}
    assert len(ids) == len(READERS)
    other = MessageTemplate(rendered(), SendContext(config=config(), secret=SECRET, list_id=3, list_name="daily"))
    assert parsed(other.render(READERS[0]).raw)["Message-ID"] not in ids


def test_unsubscribe_token_is_scoped_signed_and_matches_make_token():
    ctx = SendContext(config=config(), secret=SECRET, list_id=3, list_name="daily")
    msg = parsed(MessageTemplate(rendered(), ctx).render(READERS[1]).raw)
    header = str(msg["List-Unsubscribe"])
    url = header.split("<", 1)[1].split(">", 1)[0]
    assert url.startswith("https://news.example.com/unsubscribe/")
    token = url.rsplit("/", 1)[1]
    assert token == make_token(SECRET, "unsubscribe", 2, 3, uid="")
    claims = verify_token(SECRET, "unsubscribe", token)
    assert (claims.subscriber_id, claims.list_id) == (2, 3)
    assert header == f"<{url}>", "no mailto without [unsubscribe] mailto: nobody reads Reply-To for it"
    text, html = parts(msg)
    assert url in text and url in html
    prefs = make_token(SECRET, "preferences", 2, 0, uid="")
    assert f"https://news.example.com/preferences/{prefs}" in text
    from newsletter.errors import TokenError
    with pytest.raises(TokenError):
        verify_token(b"another secret of enough length", "unsubscribe", token)


def test_mailto_unsubscribe_only_when_a_read_mailbox_is_configured():
    from newsletter.config import UnsubscribeConfig

    cfg = config(unsubscribe=UnsubscribeConfig(mailto="unsubscribe@news.example.com"))
    ctx = SendContext(config=cfg, secret=SECRET, list_id=3, list_name="daily")
    for raw in (MessageTemplate(rendered(), ctx).render(READERS[1]).raw,
                build_message_slow(rendered(), ctx, READERS[1])):
        header = str(parsed(raw)["List-Unsubscribe"])
        token = make_token(SECRET, "unsubscribe", 2, 3, uid=READERS[1].uid)
        assert header == (f"<https://news.example.com/unsubscribe/{token}>, "
                          f"<mailto:unsubscribe@news.example.com?subject=unsubscribe%20{token}>")


def test_cjk_heavy_parts_go_base64_and_latin_ones_stay_quoted_printable():
    from newsletter.send.message import body_encoding

    assert body_encoding("今日要闻，模型与芯片。" * 200) == "base64"
    assert body_encoding("The day's news in models and chips. " * 200) == "quoted-printable"
    zh = RenderedEmail(slug="s", subject="s", preheader="", lang="zh-CN", web_url="https://x/",
                       html="<p>" + "今日要闻 " * 400 + f"<a href=\"{placeholder('unsubscribe_url')}\">退订</a>"
                            + f"{placeholder('name', '朋友')}{placeholder('email')}x</p>",
                       text="English text only, " * 100 + placeholder("unsubscribe_url"))
    ctx = SendContext(config=config(), secret=SECRET, list_id=3, list_name="daily")
    template = MessageTemplate(zh, ctx)
    for reader in READERS:
        raw = template.render(reader).raw
        msg = parsed(raw)
        html_part, text_part = msg.get_body(("html",)), msg.get_body(("plain",))
        assert html_part["Content-Transfer-Encoding"] == "base64"
        assert text_part["Content-Transfer-Encoding"] == "quoted-printable"
        assert parts(msg) == parts(parsed(build_message_slow(zh, ctx, reader)))
        assert all(len(line) <= 76 for line in raw.split(b"\r\n")[raw.split(b"\r\n").index(b""):])
        assert not msg.defects and all(not p.defects for p in msg.iter_parts())


@pytest.mark.parametrize("reader", [
    Recipient(9, "evil@example.com", "Mallory\r\nBcc: victim@example.com", {}),
    Recipient(9, "evil@example.com\r\nBcc: victim@example.com", "Mallory", {}),
    Recipient(9, "not an address", "Mallory", {}),
    Recipient(9, "ünicode@example.com", "x", {}),
])
def test_line_breaks_and_bad_addresses_are_refused(reader):
    ctx = SendContext(config=config(), secret=SECRET, list_id=3, list_name="daily")
    with pytest.raises(ValidationError):
        MessageTemplate(rendered(), ctx).render(reader)
    with pytest.raises(ValidationError):
        build_message_slow(rendered(), ctx, reader)


def test_subject_with_line_break_is_refused():
    ctx = SendContext(config=config(), secret=SECRET, list_id=3, list_name="daily")
    with pytest.raises(ValidationError, match="Subject"):
        MessageTemplate(rendered(subject="Hello\r\nBcc: x@example.com"), ctx)


def test_test_prefix_and_ascii_subject():
    ctx = SendContext(config=config(name="Daily", from_="Daily <news@example.com>"), secret=SECRET,
                      list_id=3, list_name="daily", subject_prefix="[TEST] ")
    msg = parsed(MessageTemplate(rendered(subject="Plain subject"), ctx).render(READERS[0]).raw)
    assert msg["Subject"] == "[TEST] Plain subject"
    assert str(msg["From"]) == "Daily <news@example.com>"


def test_simple_message_for_transactional_mail():
    out = simple_message(config(), to_email="li@example.com", to_name="李雷", subject="请确认订阅 Confirm",
                         text="Click: https://news.example.com/confirm/abc", html="<p>Click</p>",
                         extra_headers={"Auto-Submitted": "auto-generated"})
    assert out.slug == "" and out.sender == "news@example.com" and out.recipients == ("li@example.com",)
    msg = parsed(out.raw)
    assert msg["Subject"] == "请确认订阅 Confirm"
    assert msg["To"].addresses[0].display_name == "李雷"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"].endswith("@example.com>")
    assert "https://news.example.com/confirm/abc" in parts(msg)[0]
    with pytest.raises(ValidationError):
        simple_message(config(), to_email="li@example.com", subject="a\nb", text="x")
    with pytest.raises(ValidationError):
        simple_message(config(), to_email="li@example.com", subject="ok", text="x", extra_headers={"X-A": "1\r\n2"})
    text_only = parsed(simple_message(config(), to_email="li@example.com", subject="ok", text="only text").raw)
    assert text_only.get_content_type() == "text/plain"
