"""``newsletter.headers``: the one function every header value passes. Checked after RFC 2047
decoding, encoded by us, and decoded back by the ``email`` package to exactly the value."""

from __future__ import annotations

import email
import email.policy
import email.utils
import random
from email.header import decode_header, make_header

import pytest

from newsletter import headers
from newsletter.errors import ValidationError


@pytest.mark.parametrize("value", [
    "a\r\nb", "a\nb", "a\rb", "a\x00b", "a\x7fb", "a\x85b", "a\u2028b", "a\u2029b", "a\tb",
    "=?utf-8?q?a=0Ab?=", "=?utf-8?b?YQ1i?=", "=?iso-8859-1?q?a=0Db?=", "x=?utf-8?q?=0A?=y",
    "=?utf-8?q?=3D=3Futf-8=3Fq=3F=3D0A=3F=3D?=",  # a word that decodes into a word with a LF
    "=?utf-16?b?AAoAQQ==?=",
])
def test_control_characters_are_refused_after_decoding(value):
    with pytest.raises(ValidationError, match="Subject contains"):
        headers.check("Subject", value)
    cleaned, changed = headers.neutralise(value)
    assert changed and headers.problem(cleaned) is None


@pytest.mark.parametrize("value", ["plain", "=?utf-8?q?hello?=", "今日要闻", "a, b <c@d.e>", "x" * 2000,
                                   "word " * 300, "  spaced  out  ", "=?", "?=", "\u202eRTL", "🦹" * 100])
def test_values_round_trip_through_the_email_package(value):
    for name, encoded in (("Subject", headers.text("Subject", value, name_length=7)),
                          ("To", headers.mailbox("To", value, "a@example.com"))):
        raw = f"{name}: {encoded}\r\n\r\n".encode("ascii")
        assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        if name == "Subject":
            assert str(parsed["Subject"]).split() == value.split()
            if "  " not in value and value == value.strip():
                assert str(parsed["Subject"]) == value
        else:
            assert parsed["To"].addresses[0].addr_spec == "a@example.com"
            # RFC 2047 joins adjacent encoded words without the folding space (Python's new
            # parser keeps one): decode as the RFC says
            phrase = encoded.replace("\r\n ", " ").rpartition(" <")[0]
            if phrase.startswith('"'):
                phrase = email.utils.unquote(phrase).replace('\\"', '"').replace("\\\\", "\\")
                assert phrase == value
            else:
                assert str(make_header(decode_header(phrase))) == value


def test_random_strings_never_make_a_second_header():
    rng = random.Random(9)
    alphabet = "ab =?_:\r\n\t\"<>,@\\" + "".join(map(chr, range(0x80, 0xa0))) + "\u2028é日"
    for _ in range(2000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        try:
            encoded = headers.text("Subject", value, name_length=7)
        except ValidationError:
            assert headers.problem(value) is not None
            continue
        raw = f"Subject: {encoded}\r\nTo: a@example.com\r\n\r\nbody".encode("ascii")
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert list(parsed.keys()) == ["Subject", "To"]


@pytest.mark.parametrize("value", ["The day in AI " * 12 + "ends", "今日要闻 " * 30, "x" * 300])
def test_subjects_fold_under_78(value):
    encoded = headers.text("Subject", value, name_length=7)
    lines = f"Subject: {encoded}".split("\r\n")
    assert len(lines) > 1 and all(len(line) <= 78 for line in lines)


@pytest.mark.parametrize("value", ["a@b.c, d@e.f", "A <a@b.c> <d@e.f>", "<>", "A <not an address>", "ü@example.com",
                                   "a@b.c\r\nBcc: x@y.z", '"unclosed <a@b.c>'])
def test_one_mailbox_is_parsed_strictly(value):
    with pytest.raises(ValidationError, match="from"):
        headers.parse_mailbox("from", value)


def test_neutralised_reader_input_always_passes_the_check():
    rng = random.Random(2047)
    pieces = ["=?", "?=", "utf-8", "?q?", "?b?", "=0A", "=0D", "=3D", "=3F", "CgA=", "_", "\r", "\n", "\x00",
              "\u2028", "\x85", "a", " ", "é", "日", "?", "="]
    for _ in range(3000):
        value = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 24)))
        cleaned, _ = headers.neutralise(value)
        assert headers.problem(cleaned) is None, (value, cleaned)
        headers.phrase("To", cleaned)  # and it can be encoded
