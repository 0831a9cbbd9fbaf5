"""Address validation: the fast path agrees with email-validator; SES's limits are enforced."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email

from newsletter.audience.addresses import address_hash, clean_text, fast_key, parse_address
from newsletter.errors import ValidationError

AGREEMENT = [
    "alice@example.com", "Alice.Smith@Example.COM", "a+tag@sub.example.co.uk",
    "o'brien@example.ie", "x_y-z@mail-server.example.org", "1@2.com", "a@b.c",
    "a..b@example.com", ".a@example.com", "a.@example.com", "a@-example.com",
    "a@example-.com", "a@example..com", "a@example.com.", "a@localhost", "a@example.local",
    "a@example.test", "a@xn--bcher-kva.de", "a@x--y.com", "a@123.456", "a@example.c0m",
    "a b@example.com", "a@exa mple.com", "a@@example.com", "@example.com", "a@",
    "x" * 64 + "@example.com", "x" * 65 + "@example.com",
    "a@" + "l" * 63 + ".com", "a@" + "l" * 64 + ".com",
    "a@" + ".".join(["abcdefghij"] * 24) + ".com",
    "{weird}|~!@example.com", "a/b=c?d^e`f@example.com",
    "a@foo.-bar.com", "a@foo-.bar.com",  # label edges the old fast path let through
]


def _reference(address: str) -> str | None:
    try:
        result = validate_email(address, allow_smtputf8=False, check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{result.local_part.lower()}@{result.ascii_domain.lower()}"


@pytest.mark.parametrize("address", AGREEMENT)
def test_fast_path_never_accepts_what_email_validator_refuses(address):
    fast = fast_key(address)
    reference = _reference(address)
    if fast is not None:  # the fast path may defer, but never disagree
        assert fast == reference
    if reference is None:
        with pytest.raises(ValidationError):
            parse_address(address)
    else:
        assert parse_address(address).key == reference


def test_address_is_trimmed_kept_as_entered_and_keyed_case_insensitively():
    address = parse_address("  Alice.Smith@Example.COM \t")
    assert address.email == "Alice.Smith@Example.COM"
    assert address.ascii_email == "Alice.Smith@Example.COM"
    assert address.key == "alice.smith@example.com"
    assert address.hash == address_hash("alice.smith@example.com")
    assert parse_address("ALICE.SMITH@example.com").key == address.key


def test_idn_domain_is_accepted_stored_as_entered_and_sent_as_ascii():
    address = parse_address("Jörg@Bücher.de".replace("ö", "o"))  # ASCII local, IDN domain
    assert address.email == "Jorg@Bücher.de"
    assert address.ascii_email == "Jorg@xn--bcher-kva.de"
    assert address.key == "jorg@xn--bcher-kva.de"
    # the same mailbox written with the ASCII domain is the same subscriber
    assert parse_address("jorg@XN--BCHER-KVA.DE").key == address.key


def test_non_ascii_local_part_is_refused_with_a_reason():
    with pytest.raises(ValidationError, match="before the @ must be ASCII"):
        parse_address("jörg@example.com")
    with pytest.raises(ValidationError, match="before the @ must be ASCII"):
        parse_address("用户@例子.中国")


@pytest.mark.parametrize("bad", ["", "   ", "no-at-sign", "two@@example.com", "a@b", "a@b.test"])
def test_invalid_addresses_raise_validation_error(bad):
    with pytest.raises(ValidationError):
        parse_address(bad)


def test_clean_text_strips_control_characters_and_says_so():
    assert clean_text("Ada Lovelace") == ("Ada Lovelace", False)
    assert clean_text("Ada\r\nBcc: evil@example.com") == ("Ada Bcc: evil@example.com", True)
    assert clean_text("tab\there\x00\x7f\u2028x") == ("tab here x", True)
    assert clean_text("  Zoë  ") == ("Zoë", False)
    assert clean_text("e\u0301") == ("\u00e9", False)  # NFC
