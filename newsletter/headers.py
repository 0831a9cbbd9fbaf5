"""The one gate for every value that becomes a mail header.

Names, subjects, list names, addresses, Reply-To, List-Id: whatever reaches a header of any
message we build (an edition to its readers, a confirmation, a welcome note, a test copy) goes
through this module, which

1. looks at the value *after* decoding any RFC 2047 encoded words in it (``=?utf-8?q?=0D=0A?=``
   is a line break once a mail library decodes it), repeatedly, so nested encodings do not
   hide anything either;
2. refuses (``check``: editor and configuration input, a ``ValidationError`` naming the field)
   or neutralises (``neutralise``: reader input, stored cleaned) CR, LF and every other control
   character (C0, DEL, C1, U+2028/U+2029);
3. encodes the value itself (``text``, ``phrase``, ``mailbox``): plain printable ASCII stays as
   it is, anything else becomes base64 encoded words that we wrote, so no value is ever handed
   to a mail library that could re-interpret it (a literal ``=?…?=`` is encoded too, and reads
   as itself in every client). Lines are folded under 78 characters where the value allows and
   never exceed 998.

Pure functions: no I/O, no configuration.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata

from newsletter.errors import ValidationError

# Cc (C0, DEL, C1) plus the Unicode line and paragraph separators some mail software honours.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_RUNS_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# An RFC 2047 encoded word as lenient decoders (Python's email package among them) find it:
# anywhere, even inside a word or a quoted string.
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]*)\?([QqBb])\?([^?]*)\?=")
_ATOMS_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*")
_PRINTABLE_ASCII_RE = re.compile(r"[ -~]*")
# An addr-spec we can put on an envelope and in a header as it is: ASCII, no display parts.
ADDR_SPEC_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_FIELD_NAME_RE = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_MAILBOX_RE = re.compile(r'\s*(?:(?P<name>(?:"(?:[^"\\]|\\.)*"|[^<>"])*?)\s*<(?P<angle>[^<>]*)>'
                         r'|(?P<bare>[^<>\s",]+))\s*', re.DOTALL)
_MAX_DECODE_ROUNDS = 8
_WORD_BYTES = 45  # 45 bytes -> 60 base64 characters: an encoded word of 72, a line under 78
_FOLD = 78
MAX_LINE = 998


def decode_words(value: str) -> str:
    """``value`` with every RFC 2047 encoded word decoded, as a lenient mail reader would, until
    nothing more decodes. Undecodable words stay as they are."""
    for _ in range(_MAX_DECODE_ROUNDS):
        if "=?" not in value:
            return value
        decoded = _ENCODED_WORD_RE.sub(_decode_word, value)
        if decoded == value:
            return value
        value = decoded
    return value


def _decode_word(match: re.Match[str]) -> str:
    charset, encoding, payload = match.group(1).split("*", 1)[0], match.group(2).upper(), match.group(3)
    try:
        if encoding == "Q":
            data = binascii.a2b_qp(payload.encode("ascii", "replace"), header=True)
        else:
            data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=False)
    except (binascii.Error, ValueError):
        return match.group(0)
    try:
        if not codecs.lookup(charset)._is_text_encoding:  # rot13, base64…: not a charset
            raise LookupError(charset)
        text = data.decode(charset, "replace")
    except (LookupError, ValueError, UnicodeError, TypeError):  # unknown, "\0" in the name, idna…
        text = data.decode("latin-1")
    # A byte that is a control character in ASCII is one whatever the label says.
    if re.search(rb"[\x00-\x1f\x7f]", data) and not CONTROL_RE.search(text):
        text += "\n"
    return text


def problem(value: str) -> str | None:
    """What makes ``value`` unfit for a header (a control character, maybe hidden in an encoded
    word), or None."""
    for label, text in (("", value), (" once its RFC 2047 encoded words are decoded", decode_words(value))):
        found = CONTROL_RE.search(text)
        if found:
            char = found.group(0)
            what = {"\r": "a line break (CR)", "\n": "a line break (LF)", "\t": "a tab"}.get(
                char, f"a control character (U+{ord(char):04X})")
            return what + label
    return None


def check(field: str, value: str) -> str:
    """``value`` if it may go into a header; ``ValidationError`` naming ``field`` otherwise.
    For values an editor or the configuration supplies: they are refused, not altered."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text, not {type(value).__name__}")
    if value.isprintable() and "=?" not in value:  # the common case (no Cc, Zl, Zp at all)
        return value
    found = problem(value)
    if found:
        raise ValidationError(f"{field} contains {found}: it goes into a mail header; remove it")
    return value


def neutralise(value: str | None) -> tuple[str, bool]:
    """Reader input made safe to store: encoded words that hide control characters are decoded,
    each run of control characters becomes one space, the result is trimmed and NFC. Returns
    ``(text, changed)``; ``changed`` is true when control characters were removed."""
    if value is None:
        return "", False
    text = str(value)
    from newsletter import text as storable

    text, unstorable = storable.replace_surrogates(text)  # NUL is a control character
    if "=?" in text:
        decoded = decode_words(text)
        if CONTROL_RE.search(decoded):
            text = decoded
    cleaned, count = _CONTROL_RUNS_RE.subn(" ", text)
    cleaned = cleaned.strip()
    for _ in range(_MAX_DECODE_ROUNDS):  # whatever is left must pass ``check``
        if problem(cleaned) is None:
            break
        cleaned, more = _CONTROL_RUNS_RE.subn(" ", decode_words(cleaned))
        cleaned, count = cleaned.strip(), count + more
    if not cleaned.isascii():
        cleaned = unicodedata.normalize("NFC", cleaned)
    return cleaned, count > 0 or unstorable


# -- encoding ---------------------------------------------------------------------------------

def _plain(value: str) -> bool:
    return "=?" not in value and _PRINTABLE_ASCII_RE.fullmatch(value) is not None


def _encoded_words(value: str, first: int = 0) -> list[str]:
    """Base64 encoded words of at most 45 bytes each (never splitting a character); the first
    one shorter when ``first`` characters (``Subject: ``) precede it on its line."""
    data = value.encode("utf-8")
    budget = min(_WORD_BYTES, max(3, (_FOLD - first - 12) // 4 * 3)) if first else _WORD_BYTES
    if len(data) <= budget:
        return ["=?utf-8?b?" + binascii.b2a_base64(data, newline=False).decode("ascii") + "?="]
    words, chunk = [], b""
    for char in value:
        encoded = char.encode("utf-8")
        if chunk and len(chunk) + len(encoded) > budget:
            words.append(chunk)
            chunk, budget = b"", _WORD_BYTES
        chunk += encoded
    words.append(chunk)
    return ["=?utf-8?b?" + base64.b64encode(w).decode("ascii") + "?=" for w in words]


def text(field: str, value: str, *, name_length: int | None = None) -> str:
    """An unstructured header body (Subject…), checked and encoded, folded with CRLF + space.
    ``name_length`` is the header name's length (for the first line's fold)."""
    check(field, value)
    first = (name_length if name_length is not None else len(field)) + 2
    if _plain(value) and value == value.strip() and "  " not in value:
        if first + len(value) <= _FOLD:
            return value
        folded = _fold_words(value.split(" "), first)
        if folded is not None:
            return folded
    return "\r\n ".join(_encoded_words(value, first))


def _fold_words(words: list[str], first: int) -> str | None:
    """Plain words folded at spaces; None when one word cannot fit a line."""
    lines, line = [], ""
    width = first
    for word in words:
        if len(word) + 1 + first > _FOLD:  # a word no line can hold: encoded words can be cut
            return None
        if line and width + len(line) + 1 + len(word) > _FOLD:
            lines.append(line)
            line, width = word, 1
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n ".join(lines)


def phrase(field: str, name: str) -> str:
    """A display name as it goes before ``<addr>``: atoms, a quoted string or encoded words."""
    check(field, name)
    if len(name) <= 60 and _ATOMS_RE.fullmatch(name) and "=?" not in name:
        return name
    if _plain(name) and len(name) <= 60:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "\r\n ".join(_encoded_words(name))


def address(field: str, addr: str) -> str:
    """A bare envelope address (ASCII, no display parts), or ``ValidationError`` naming ``field``."""
    check(field, addr)
    if not addr.isascii() or not ADDR_SPEC_RE.fullmatch(addr) or ".." in addr or len(addr) > 254:
        raise ValidationError(f"{field}: not a deliverable address (an ASCII address like "
                              f"news@example.com expected): {addr[:80]!r}")
    return addr


def mailbox(field: str, name: str, addr: str) -> str:
    """``phrase <addr>`` (or the bare address when there is no name)."""
    address(field, addr)
    return f"{phrase(field, name)} <{addr}>" if name else addr


def parse_mailbox(field: str, value: str) -> tuple[str, str]:
    """``(display name, address)`` of one configured mailbox (``Name <a@b>`` or ``a@b``), strict:
    one mailbox, the name unquoted; ``ValidationError`` naming ``field`` on anything else."""
    check(field, value)
    found = _MAILBOX_RE.fullmatch(value)
    if not found:
        raise ValidationError(f"{field} must be one address like 'Name <news@example.com>' or "
                              f"'news@example.com', not {value[:80]!r}")
    addr = (found.group("angle") if found.group("angle") is not None else found.group("bare")).strip()
    name = (found.group("name") or "").strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    address(field, addr)
    return name, addr


def field_name(name: str) -> str:
    """A header field name (printable ASCII, no colon or space)."""
    if not _FIELD_NAME_RE.fullmatch(name or ""):
        raise ValidationError(f"not a header field name: {name[:40]!r}")
    return name


def line(name: str, body: str) -> str:
    """``Name: body\\r\\n`` for a body this module encoded (or one made only of checked parts)."""
    field_name(name)
    if CONTROL_RE.search(body.replace("\r\n ", "")):
        raise ValidationError(f"{name} header value contains a control character")
    return f"{name}: {body}\r\n"
