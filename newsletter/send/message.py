"""Each reader's message: an edition's rendered email, personalized and made into RFC 5322 bytes.

MJML and premailer ran once per edition (``RenderedEmail``); what differs per reader is a handful of
placeholders. ``MessageTemplate`` compiles the edition once into precomputed byte chunks — the
static parts already encoded (quoted-printable: each placeholder on a line of its own between soft
line breaks; base64, for CJK-heavy parts: see ``_Base64Body``) — so that a reader's message is a
join of those chunks and a few freshly encoded values (~15 µs). ``build_message_slow`` builds the
same message with Python's ``email`` package: the reference the fast path is tested against, and
the baseline of ``bench/message.py``.

Both produce, for each reader: multipart/alternative (text + HTML, UTF-8, each part quoted-printable
or base64 by ``body_encoding``), From, To, Reply-To, Subject, Date, Message-ID on the sender's
domain, List-Id, List-Unsubscribe (one-click https URL, + mailto when ``[unsubscribe] mailto`` is
set) and List-Unsubscribe-Post, each exactly once. Every header value goes through
``newsletter.headers`` (control characters refused after RFC 2047 decoding, the value encoded by
us) and is never handed to the ``email`` package to parse. ``simple_message`` builds
transactional mail (confirmations).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import html as html_lib
import re
import secrets
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone

from newsletter import headers
from newsletter.audience.attributes import attr_key
from newsletter.config import Config
from newsletter.render.rendered import PLACEHOLDER_RE, RenderedEmail, parse_placeholder
from newsletter.store.models import Recipient
from newsletter.tokens import make_token
from newsletter.send.transports.base import OutgoingMessage

# refold_source="none": a header we set raw (List-Unsubscribe) keeps its folding; the policy
# would otherwise turn its long URL into RFC 2047 encoded words no mail client recognises.
POLICY = SMTP.clone(refold_source="none")

_SOFT_BREAK = b"=\r\n"


@dataclass(frozen=True)
class SendContext:
    """What is the same for every reader of one send of one edition."""

    config: Config
    secret: bytes
    list_id: int = 0
    list_name: str = ""
    subject_prefix: str = ""  # "[TEST] " for test sends
    date: str = field(default_factory=lambda: format_datetime(datetime.now(timezone.utc)))
    nonce: str = field(default_factory=lambda: f"{int(time.time()):x}.{secrets.token_hex(4)}")


def check_header_value(name: str, value: str) -> str:
    """``value`` if it may go into header ``name`` (``headers.check``: no control character, not
    even one hidden in an RFC 2047 encoded word); ``ValidationError`` naming it otherwise."""
    return headers.check(name, value)


def check_address(email: str) -> str:
    """A bare envelope address (ASCII, no display parts), or ``ValidationError``."""
    return headers.address("address", email)


# -- per-reader values ----------------------------------------------------------------------

def unsubscribe_token(ctx: SendContext, recipient: Recipient) -> str:
    return make_token(ctx.secret, "unsubscribe", recipient.subscriber_id, recipient.list_id or ctx.list_id,
                      uid=recipient.uid)


class _Tokens:
    """``tokens.make_token`` for one secret, with the HMAC keys set up once (the key
    schedule is a third of the cost of a fresh ``hmac.new``). Same tokens, tested against it."""

    def __init__(self, secret: bytes):
        self._macs = {}
        for purpose in ("unsubscribe", "preferences"):
            mac = hmac.new(secret, purpose.encode("ascii") + b"|", hashlib.sha256)
            # OpenSSL's HMAC object underneath, when there is one, copies faster than the wrapper
            self._macs[purpose] = getattr(mac, "_hmac", None) or mac

    def make(self, purpose: str, subscriber_id: int, list_id: int, uid: str) -> str:
        payload = (f"{subscriber_id}.{list_id}.0.{uid}" if uid else f"{subscriber_id}.{list_id}.0").encode("ascii")
        mac = self._macs[purpose].copy()
        mac.update(payload)
        return f"{_b64url(payload)}.{_b64url(mac.digest())}"


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64url(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_URLSAFE).decode("ascii")


def reader_values(ctx: SendContext, recipient: Recipient, base: str | None = None,
                  tokens: _Tokens | None = None) -> dict[str, str]:
    """The placeholder values of one reader (``email``, ``name``, URLs, ``attr.*``)."""
    base = base if base is not None else ctx.config.base_url.rstrip("/")
    if tokens is None:
        token = unsubscribe_token(ctx, recipient)
        prefs = make_token(ctx.secret, "preferences", recipient.subscriber_id, 0, uid=recipient.uid)
    else:
        token = tokens.make("unsubscribe", recipient.subscriber_id, recipient.list_id or ctx.list_id, recipient.uid)
        prefs = tokens.make("preferences", recipient.subscriber_id, 0, recipient.uid)
    values = {
        "email": recipient.email,
        "name": recipient.name,
        "unsubscribe_url": f"{base}/unsubscribe/{token}",
        "preferences_url": f"{base}/preferences/{prefs}",
        "_token": token,
    }
    for key, value in recipient.attributes.items():
        values[f"attr.{attr_key(key)}"] = str(value)
    return values


def _value(values: dict[str, str], key: str, fallback: str) -> str:
    return values.get(key) or fallback


def substitute(template: str, values: dict[str, str], *, html: bool) -> str:
    """``template`` with every placeholder replaced (HTML-escaped when ``html``)."""
    def repl(match: re.Match[str]) -> str:
        key, fallback = parse_placeholder(match)
        value = _value(values, key, fallback)
        return html_lib.escape(value) if html else value
    return PLACEHOLDER_RE.sub(repl, template)


# -- header pieces ----------------------------------------------------------------------------

def encode_display_name(name: str) -> str:
    """A display name as it goes before ``<addr>``: atoms, a quoted string or RFC 2047 words."""
    return headers.phrase("name", name)


def to_header(name: str, email: str) -> str:
    return headers.mailbox("To", name, email) if name else headers.address("To", email)


def unsubscribe_mailbox(config: Config) -> str:
    """The address a mailto unsubscribe goes to: ``[unsubscribe] mailto`` (received by SES and
    read by ``events pull``), or "" when none is set: then no mailto is offered at all, never
    one pointing at a mailbox nobody reads."""
    mailto = config.unsubscribe.mailto.strip()
    return headers.parse_mailbox("unsubscribe.mailto", mailto)[1] if mailto else ""


def list_unsubscribe(values: dict[str, str], mailbox: str) -> str:
    """RFC 8058: the one-click https URL; then, when a mailbox that ``events pull`` reads is
    configured, a mailto for clients that unsubscribe by mail (Apple Mail…). The token goes in the
    subject (a local part would outgrow its 64 characters); it is URL-safe base64, so only the
    space needs quoting."""
    if not mailbox:
        return f"<{values['unsubscribe_url']}>"
    mailto = f"mailto:{mailbox}?subject=unsubscribe%20{values['_token']}"
    return f"<{values['unsubscribe_url']}>,\r\n <{mailto}>"


def list_id(config: Config, list_name: str) -> str:
    """RFC 2919: the newsletter's name (a phrase we encode) and ``<label.sender-domain>``."""
    label = re.sub(r"[^a-z0-9-]+", "-", (list_name or config.name).lower()).strip("-") or "list"
    domain = from_address(config)[1].rpartition("@")[2]
    return f"{headers.phrase('name', config.name)} <{label[:60].strip('-') or 'list'}.{domain}>"


def message_id(ctx: SendContext, subscriber_id: int, domain: str | None = None) -> str:
    return f"<{ctx.nonce}.{subscriber_id}@{domain or ctx.config.from_domain}>"


def from_address(config: Config) -> tuple[str, str]:
    """``(display name, bare address)`` of the configured sender."""
    return headers.parse_mailbox("from", config.from_)


def _static_header_lines(ctx: SendContext, subject: str) -> list[tuple[str, str]]:
    """The headers every reader shares, as ``(name, encoded value)``: every value went through
    ``newsletter.headers`` (checked after decoding, encoded by us)."""
    config = ctx.config
    name, addr = from_address(config)
    lines = [("From", headers.mailbox("from", name, addr))]
    if config.reply_to:
        lines.append(("Reply-To", headers.mailbox("reply_to", *headers.parse_mailbox("reply_to", config.reply_to))))
    lines += [
        ("Subject", headers.text("Subject", ctx.subject_prefix + subject, name_length=len("Subject"))),
        ("Date", ctx.date),
        ("List-Id", list_id(config, ctx.list_name)),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    return lines


def _static_headers(ctx: SendContext, subject: str) -> EmailMessage:
    """The shared headers on an ``EmailMessage``, set raw: the ``email`` package never parses
    (and so never decodes) a value of ours."""
    msg = EmailMessage(policy=POLICY)
    for name, value in _static_header_lines(ctx, subject):
        msg.set_raw(name, value)
    return msg


# -- the slow reference -----------------------------------------------------------------------

def build_message_slow(rendered: RenderedEmail, ctx: SendContext, recipient: Recipient) -> bytes:
    """One reader's message built with the ``email`` package (the reference; ~1-3 ms)."""
    values = reader_values(ctx, recipient)
    msg = _static_headers(ctx, rendered.subject)
    msg.set_raw("To", to_header(recipient.name, recipient.email))
    msg.set_raw("Message-ID", message_id(ctx, recipient.subscriber_id))
    msg.set_raw("List-Unsubscribe", list_unsubscribe(values, unsubscribe_mailbox(ctx.config)))
    msg.set_content(substitute(_lf(rendered.text), values, html=False), cte=body_encoding(rendered.text))
    msg.add_alternative(substitute(_lf(rendered.html), values, html=True), subtype="html",
                        cte=body_encoding(rendered.html))
    return msg.as_bytes()


def body_encoding(body: str) -> str:
    """The transfer encoding of one part: whichever of quoted-printable and base64 is smaller.
    QP spells every byte of a CJK character as ``=XX`` (9 characters for 3 bytes); base64 costs
    4 for 3 on every byte. So mostly-Latin parts stay QP (readable in the raw source), CJK-heavy
    ones go base64 (the seed edition's HTML part, 35 KB of UTF-8: 52 KB as QP, 48 KB as base64; its
    text part 23 KB → 12 KB). Decided on the edition's template, the same for every reader."""
    data = _lf(body).encode("utf-8")
    qp_size = len(binascii.b2a_qp(data, istext=True)) + data.count(b"\n")
    b64_size = (len(data) + 2) // 3 * 4 * 78 // 76
    return "base64" if b64_size < qp_size else "quoted-printable"


def _lf(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


# -- the fast path ----------------------------------------------------------------------------

def _qp(data: str) -> bytes:
    """Quoted-printable body encoding with CRLF line ends (binascii: C speed)."""
    out = binascii.b2a_qp(data.encode("utf-8"), istext=True)
    if b"=20\n" in out or b"=09\n" in out or out.endswith((b"=20", b"=09")):
        out = _rewrap(out)
    return out.replace(b"\n", b"\r\n")


_NEEDS_ESCAPE = re.compile(r"[&<>\"']").search
_QP_PLAIN = re.compile(r"[ !-<>-~]*[!-<>-~]").fullmatch  # printable ASCII but "=", no trailing space


def _qp_value(value: str) -> bytes:
    """``_qp`` for one substituted value; the common case (a URL, an ASCII name) is only cut into
    lines of 75 characters with soft line breaks."""
    if not _QP_PLAIN(value):
        return _qp(value)
    if len(value) <= 75:
        return value.encode("ascii")
    return "=\r\n".join([value[i:i + 75] for i in range(0, len(value), 75)]).encode("ascii")


def _rewrap(encoded: bytes) -> bytes:
    """b2a_qp encodes a line's trailing space as =20 without checking the line's length: break
    such a line once more so that every line stays within the 76 characters of RFC 2045."""
    lines = []
    for line in encoded.split(b"\n"):
        while len(line) > 76:
            cut = 75
            if line[cut - 1:cut] == b"=":
                cut -= 1
            elif line[cut - 2:cut - 1] == b"=":
                cut -= 2
            lines.append(line[:cut] + b"=")
            line = line[cut:]
        lines.append(line)
    return b"\n".join(lines)


# A slot is a tuple (cheap to hash): (key, fallback, html). Keys are placeholder keys or the
# per-reader headers "hdr:to", "hdr:message_id", "hdr:list_unsubscribe".
_Slot = tuple


class ListTemplates:
    """A send's templates, one per list it goes through: ``List-Id`` is a static header of a
    template, so in a send to several lists each reader's message comes from the template of the
    list they are sent through (``Recipient.list_id``; their unsubscribe token names it too)."""

    def __init__(self, rendered: RenderedEmail, contexts: dict[int, SendContext], default: int):
        self._templates = {list_id: MessageTemplate(rendered, ctx) for list_id, ctx in contexts.items()}
        self._default = self._templates[default]

    def render(self, recipient: Recipient) -> OutgoingMessage:
        return self._templates.get(recipient.list_id, self._default).render(recipient)


class MessageTemplate:
    """An edition compiled once for a send; ``render(recipient)`` makes one reader's message."""

    def __init__(self, rendered: RenderedEmail, ctx: SendContext):
        self.rendered = rendered
        self.ctx = ctx
        self.sender = from_address(ctx.config)[1]
        self._base = ctx.config.base_url.rstrip("/")
        self._domain = ctx.config.from_domain
        self._mailbox = unsubscribe_mailbox(ctx.config)
        self._tokens = _Tokens(ctx.secret)
        self._b64: list[_Base64Body] = []
        self._b64_keys: dict[str, tuple[int, int]] = {}
        self._parts = self._compile()
        # A base64 part's pieces are made together and put in place with one slice assignment.
        self._b64_spans = []
        for number in range(len(self._b64)):
            at = [i for i, p in enumerate(self._parts) if isinstance(p, tuple) and p[0] in self._b64_keys
                  and self._b64_keys[p[0]][0] == number]
            self._b64_spans.append((number, at[0], at[-1] + 1))
        # Each distinct slot is encoded once per reader, then placed wherever it occurs.
        self._slots = list(dict.fromkeys(p for p in self._parts if isinstance(p, tuple)
                                         and p[0] not in self._b64_keys))
        self._positions = [(i, self._slots.index(p)) for i, p in enumerate(self._parts)
                           if isinstance(p, tuple) and p[0] not in self._b64_keys]

    def _compile(self) -> list[bytes | _Slot]:
        boundary = "=_nl_" + secrets.token_hex(12)  # "=_" can never occur in QP-encoded text
        head = self._static_head()
        parts: list[bytes | _Slot] = [head]
        for name, key in (("To", "hdr:to"), ("Message-ID", "hdr:message_id"),
                          ("List-Unsubscribe", "hdr:list_unsubscribe")):
            parts += [f"{name}: ".encode("ascii"), (key, "", False), b"\r\n"]
        parts.append(f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode("ascii"))
        for subtype, body in (("plain", self.rendered.text), ("html", self.rendered.html)):
            cte = body_encoding(body)
            parts.append((f"--{boundary}\r\nContent-Type: text/{subtype}; charset=\"utf-8\"\r\n"
                          f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode("ascii"))
            if cte == "base64":
                b64 = _Base64Body(_lf(body), html=subtype == "html")
                self._b64.append(b64)
                parts.append(b64.head)
                for j in range(2 * len(b64.steps) + 1):  # markers for its pieces (see render)
                    key = f"b64:{len(self._b64) - 1}:{j}"
                    self._b64_keys[key] = (len(self._b64) - 1, j)
                    parts.append((key, "", False))
            else:
                parts += _compile_body(_lf(body), html=subtype == "html")
                parts.append(b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode("ascii"))
        return _merge(parts)

    def _static_head(self) -> bytes:
        lines = _static_header_lines(self.ctx, self.rendered.subject) + [("MIME-Version", "1.0")]
        return "".join(headers.line(name, value) for name, value in lines).encode("ascii")

    def render(self, recipient: Recipient) -> OutgoingMessage:
        """One reader's complete message. ``ValidationError`` if their address or name can't go
        into a header."""
        values = reader_values(self.ctx, recipient, self._base, self._tokens)
        out = self._parts.copy()
        cache: dict[str, bytes] = {}
        encoded = [self._encode(slot, values, recipient, cache) for slot in self._slots]
        for index, slot_no in self._positions:
            out[index] = encoded[slot_no]
        for number, start, end in self._b64_spans:
            out[start:end] = self._b64[number].pieces(values)
        return OutgoingMessage(sender=self.sender, recipients=(recipient.email,), raw=b"".join(out),
                               slug=self.rendered.slug)

    def _encode(self, slot: _Slot, values: dict[str, str], recipient: Recipient,
                cache: dict[str, bytes]) -> bytes:
        key, fallback, html = slot
        if key == "hdr:to":
            return to_header(recipient.name, recipient.email).encode("ascii")
        if key == "hdr:message_id":
            return message_id(self.ctx, recipient.subscriber_id, self._domain).encode("ascii")
        if key == "hdr:list_unsubscribe":
            return list_unsubscribe(values, self._mailbox).encode("ascii")
        value = values.get(key) or fallback
        if html and _NEEDS_ESCAPE(value):
            value = html_lib.escape(value)
        # URLs and addresses come out the same in both parts: encode each distinct value once
        encoded = cache.get(value)
        if encoded is None:
            encoded = cache[value] = _qp_value(value)
        return encoded


def _compile_body(body: str, *, html: bool) -> list[bytes | _Slot]:
    """QP-encoded static chunks; each placeholder between soft line breaks, on its own line, so
    that no line wrapping ever splits it and its value can be encoded on its own."""
    parts: list[bytes | _Slot] = []
    pos = 0
    for match in PLACEHOLDER_RE.finditer(body):
        parts.append(_qp(body[pos:match.start()]))
        key, fallback = parse_placeholder(match)
        parts += [_SOFT_BREAK, (key, fallback, html), _SOFT_BREAK]
        pos = match.end()
    parts.append(_qp(body[pos:]))
    return parts


def _b64_lines(data: bytes) -> bytes:
    """``data`` (a multiple of 3 bytes, or the last piece) as base64 lines of ≤ 76 characters,
    each ending in CRLF."""
    if not data:
        return b""
    encoded = binascii.b2a_base64(data, newline=False)
    if len(encoded) <= 76:
        return encoded + b"\r\n"
    if len(encoded) <= 152:  # a URL: two lines
        return encoded[:76] + b"\r\n" + encoded[76:] + b"\r\n"
    return b"\r\n".join([encoded[i:i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"


class _Base64Body:
    """A base64 part compiled once: the static text between placeholders encoded ahead of time.

    base64 works on groups of 3 bytes, and a reader's value shifts what follows it by its length
    modulo 3. So each static chunk after a placeholder is pre-encoded for each of the 3 possible
    shifts: per reader, a value is encoded together with the 0-2 bytes left over before it and the
    0-2 bytes of the next chunk that complete its last group; the rest of that chunk is the
    pre-encoded piece for that shift. Every piece is a whole number of groups on lines of its own
    (a decoder ignores line breaks), so the result decodes to exactly the substituted text.

    ``head`` is static; ``pieces(values)`` gives the 2n+1 pieces after it for n placeholders
    (value, static, value, static, …, the last leftover bytes), the static ones the precomputed
    objects themselves, so that the message is joined with one copy of the body."""

    def __init__(self, body: str, *, html: bool):
        self.html = html
        body = body.replace("\n", "\r\n")  # text in base64 is encoded in its canonical CRLF form
        chunks: list[bytes] = []
        self.slots: list[tuple[str, str]] = []
        pos = 0
        for match in PLACEHOLDER_RE.finditer(body):
            chunks.append(body[pos:match.start()].encode("utf-8"))
            self.slots.append(parse_placeholder(match))
            pos = match.end()
        chunks.append(body[pos:].encode("utf-8"))
        first = chunks[0]
        cut = len(first) - len(first) % 3
        self.head, self.head_tail = _b64_lines(first[:cut]), first[cut:]
        # per placeholder: (key, fallback, the next chunk, and for each shift k — the bytes it
        # lends the value before it — (pre-encoded rest, leftover bytes), or None when the
        # chunk is shorter than k)
        self.steps: list[tuple[str, str, bytes, list[tuple[bytes, bytes] | None]]] = []
        for (key, fallback), chunk in zip(self.slots, chunks[1:]):
            variants: list[tuple[bytes, bytes] | None] = []
            for k in range(3):
                if len(chunk) < k:
                    variants.append(None)
                    continue
                rest = chunk[k:]
                cut = len(rest) - len(rest) % 3
                variants.append((_b64_lines(rest[:cut]), rest[cut:]))
            self.steps.append((key, fallback, chunk, variants))

    def pieces(self, values: dict[str, str]) -> list[bytes]:
        out = []
        pending = self.head_tail
        html = self.html
        for key, fallback, chunk, variants in self.steps:
            value = values.get(key) or fallback
            if html and _NEEDS_ESCAPE(value):
                value = html_lib.escape(value)
            data = pending + value.encode("utf-8")
            k = -len(data) % 3
            variant = variants[k]
            if variant is None:  # the next chunk is too short to complete the group: carry on
                pending = data + chunk
                out += (b"", b"")
                continue
            out += (_b64_lines(data + chunk[:k]), variant[0])
            pending = variant[1]
        out.append(_b64_lines(pending))
        return out

    def render(self, values: dict[str, str]) -> bytes:
        return self.head + b"".join(self.pieces(values))


def _merge(parts: list[bytes | _Slot]) -> list[bytes | _Slot]:
    """Join adjacent static chunks so that ``render`` joins as few pieces as possible."""
    merged: list[bytes | _Slot] = []
    for part in parts:
        if isinstance(part, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += part
        elif not (isinstance(part, bytes) and not part):
            merged.append(part)
    return merged


# -- transactional mail -----------------------------------------------------------------------

def simple_message(config: Config, *, to_email: str, to_name: str = "", subject: str, text: str,
                   html: str | None = None, extra_headers: dict[str, str] | None = None) -> OutgoingMessage:
    """A one-off message (confirmation, welcome) from the configured sender to one address.

    Every header value goes through ``newsletter.headers`` and is set raw (never parsed by the
    ``email`` package). ``ValidationError`` when a value carries a control character (even inside
    an encoded word) or the address is unusable.
    """
    name, addr = from_address(config)
    msg = EmailMessage(policy=POLICY)
    msg.set_raw("From", headers.mailbox("from", name, addr))
    msg.set_raw("To", to_header(to_name, to_email))
    if config.reply_to:
        msg.set_raw("Reply-To", headers.mailbox("reply_to", *headers.parse_mailbox("reply_to", config.reply_to)))
    msg.set_raw("Subject", headers.text("Subject", subject, name_length=len("Subject")))
    msg.set_raw("Date", format_datetime(datetime.now(timezone.utc)))
    msg.set_raw("Message-ID", make_msgid(domain=addr.rpartition("@")[2]))
    for key, value in (extra_headers or {}).items():
        msg.set_raw(headers.field_name(key), headers.text(key, value, name_length=len(key)))
    msg.set_content(_lf(text), cte=body_encoding(text))
    if html is not None:
        msg.add_alternative(_lf(html), subtype="html", cte=body_encoding(html))
    return OutgoingMessage(sender=addr, recipients=(to_email,), raw=msg.as_bytes(), slug="")
