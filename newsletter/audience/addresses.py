"""Email addresses and the free-text fields that travel with them.

``parse_address`` trims and validates an address for sending through SES:
- syntax is checked by email-validator (DNS only when asked); a strict regular expression
  recognises the common plain-ASCII case first, because email-validator costs ~18 µs an address
  and a large import is mostly plain addresses; anything unusual goes to email-validator;
- non-ASCII local parts are refused (SES has no SMTPUTF8);
- an IDN domain is accepted and kept as entered, with its ASCII (IDNA) form for the envelope;
- ``key`` (lower-cased local part @ lower-cased ASCII domain) makes uniqueness case-insensitive,
  and ``hash`` (SHA-256 of the key) is what the suppression list remembers after an erasure.

``clean_text`` strips CR, LF and other control characters from names and attribute values
(after decoding RFC 2047 encoded words that hide them), because they end up in mail headers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from newsletter.errors import ValidationError

# Plain ASCII dot-atom local part and an LDH domain with an alphabetic TLD: the shape of nearly
# every real address. ``fast_key`` adds the label rules (no leading/trailing hyphen, at most 63
# characters); anything with "--" (xn-- labels) is left to email-validator, which knows IDNA.
# Possessive quantifiers: no character class here contains "." or "@", so there is nothing to
# backtrack into, and the match costs a third less.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]++"
# the pattern as text too: the importer's line-at-a-time fast path embeds it in a whole-line one
PLAIN_ADDRESS = rf"{_ATOM}(?:\.{_ATOM})*+@(?:[A-Za-z0-9-]++\.)++[A-Za-z]{{2,63}}+"
_FAST_MATCH = re.compile(PLAIN_ADDRESS).fullmatch
# the special-use TLDs email-validator refuses, as suffixes of a lower-cased address
_SPECIAL_TLDS = tuple(f".{tld}" for tld in ("arpa", "invalid", "local", "localhost", "onion", "test"))
_MAX_LOCAL = 64
_MAX_ADDRESS = 254



@dataclass(frozen=True)
class Address:
    """A validated address: ``email`` as entered (trimmed), ``ascii_email`` for the envelope."""

    email: str
    ascii_email: str
    key: str

    @property
    def hash(self) -> str:
        return address_hash(self.key)


def address_hash(key: str) -> str:
    """Hex SHA-256 of a normalised address key: what survives an erasure."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_address(text: str, *, check_dns: bool = False) -> Address:
    """Validate one address; raise ``ValidationError`` saying what is wrong."""
    if not isinstance(text, str):
        raise ValidationError("an email address must be text")
    email = text.strip()
    if not email:
        raise ValidationError("the email address is empty")
    if not check_dns:
        fast = _fast_path(email)
        if fast is not None:
            return fast
    return _slow_path(email, check_dns)


def fast_key(email: str) -> str | None:
    """The key of a trimmed, plain ASCII address, or None when it needs the full check.

    The import's hot loop calls this instead of ``parse_address`` (no object per row)."""
    if _FAST_MATCH(email) is None:
        return None
    return matched_key(email)


def matched_key(email: str) -> str | None:
    """``fast_key`` of an address already known to match ``PLAIN_ADDRESS``: the length and
    label rules the pattern cannot say, then the key (None: it needs the full check)."""
    # Up to 68 characters no part can be too long (the shortest domain is "a.bc": the local
    # part has at most 63, a label at most 63 of "a@" plus 66), and without a hyphen no label
    # can start or end with one: the common case skips the split.
    if len(email) > 68 or "-" in email:
        local, _, domain = email.rpartition("@")
        if (len(email) > _MAX_ADDRESS or len(local) > _MAX_LOCAL or domain[0] == "-"
                or "-." in domain or ".-" in domain
                or "--" in domain  # "--": xn-- labels are IDNA's to judge
                or (len(domain) > 63 and max(map(len, domain.split("."))) > 63)):
            return None
    key = email.lower()
    return None if key.endswith(_SPECIAL_TLDS) else key


def _fast_path(email: str) -> Address | None:
    key = fast_key(email)
    return None if key is None else Address(email, email, key)


def _slow_path(email: str, check_dns: bool) -> Address:
    from email_validator import EmailNotValidError, validate_email

    local, at, domain = email.rpartition("@")
    if at and not local.isascii():
        raise ValidationError(
            f"{email!r}: the part before the @ must be ASCII (non-ASCII local parts cannot be sent)"
        )
    try:
        result = validate_email(email, allow_smtputf8=False, check_deliverability=check_dns)
    except EmailNotValidError as err:
        raise ValidationError(f"{email!r} is not a valid email address: {err}") from None
    ascii_domain = result.ascii_domain
    if not ascii_domain:  # pragma: no cover - allow_smtputf8=False always gives one
        raise ValidationError(f"{email!r}: the domain has no ASCII form")
    return Address(email, f"{result.local_part}@{ascii_domain}",
                   f"{result.local_part.lower()}@{ascii_domain.lower()}")


def clean_text(value: str) -> tuple[str, bool]:
    """``value`` without control characters (each run becomes one space), trimmed, NFC; an RFC
    2047 encoded word that hides one is decoded first (``newsletter.headers.neutralise``: the one
    function every header value passes).

    Returns ``(text, changed)``; ``changed`` is true when control characters were removed, so
    callers can say so.
    """
    from newsletter.headers import neutralise

    return neutralise(value)


def has_control_chars(value: str) -> bool:
    from newsletter.headers import problem

    return problem(value) is not None
