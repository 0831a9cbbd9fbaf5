"""A corpus of hostile names, titles, configuration values and CSV cells, pushed through the real
interfaces (the public subscribe form over HTTP, the CLI, a CSV import, a send to the outbox and to
the SES endpoint), asserting on the parsed MIME of what was sent: one ``To`` naming the reader, one
``Subject``, no header that was not ours, the body we wrote and nothing else.

Every value that reaches a header passes ``newsletter.headers``: control characters are refused or
neutralised *after* decoding RFC 2047 encoded words, and the value is encoded by us, so a mail
reader decodes it back to exactly what was written.
"""

from __future__ import annotations

import base64
import csv
import email
import email.policy
import io
import mailbox
import re
import shutil
import subprocess
import sys
from email.header import decode_header, make_header
from pathlib import Path

import httpx
import pytest

from conftest import SAMPLES
from fake_ses import FakeSes
from test_transport import smtp_server  # noqa: F401  (the aiosmtpd fixture)
from newsletter.config import load_config
from newsletter.headers import CONTROL_RE, decode_words
from newsletter.store import open_store

EDITION = "editions/2025-10-14.md"
SLUG = "2025-10-14"


def _b64word(text: str, charset: str = "utf-8") -> str:
    return f"=?{charset}?b?{base64.b64encode(text.encode(charset)).decode()}?="


# Display names a reader can type into the form, a CSV or `subscribers add --name`.
HOSTILE_NAMES = [
    "=?utf-8?q?Eve=0D=0ABcc:_evil@evil.com?=",                       # the case
    "=?UTF-8?Q?Eve=0D=0ASubject:_Free_money=0D=0A=0D=0A<h1>pwned</h1>?=",
    _b64word("Eve\r\nBcc: evil@evil.com"),
    _b64word("Eve\nBcc: evil@evil.com", "iso-8859-1"),
    "=?utf-8?q?Eve?= =?utf-8?q?=0A?=Bcc: evil@evil.com",           # split over two words
    "Eve=?utf-8?q?=0D=0A?=Bcc:evil@evil.com",                       # glued inside a word
    "=?utf-8*en?q?Eve=0ABcc:_evil@evil.com?=",                      # RFC 2231 language tag
    "=?x-unknown?q?Eve=0D=0ABcc:_evil@evil.com?=",                  # unknown charset
    "=?utf-8?q?=3D=3Futf-8=3Fq=3FEve=3D0D=3D0ABcc:_evil@evil.com=3F=3D?=",  # nested encoding
    "Eve\r\nBcc: evil@evil.com",
    "Eve\nBcc: evil@evil.com",
    "Eve\rBcc: evil@evil.com",
    "Eve\u2028Bcc: evil@evil.com",
    "Eve\x85Bcc: evil@evil.com",
    "Eve\x00Bcc: evil@evil.com",
    "Eve\tBcc: evil@evil.com",
    '"Eve" <evil@evil.com>, victim@example.com',
    "Eve <evil@evil.com>",
    "Eve, Bcc: evil@evil.com",
    "Subject: hijacked",
    'quote " and backslash \\ and (comment) and [brackets] and ;:@',
    "=?utf-8?q?not-an-encoded-word-with-no-end",
    "=?utf-8?b?!!!notbase64!!!?=",
    "?= =? =?? ??=",
    "\u202eevE (right-to-left override)",
    "𝕰𝖛𝖊 🦹 " * 20,                                                # long, astral plane
    "欧阳" * 99,                                                     # long CJK, at the 200 cap
    "x" * 200,                                                       # one unbreakable ASCII word
]

# Titles an editor can write: control characters after decoding are a `check` error.
HOSTILE_TITLES = [
    "=?utf-8?q?Today=0D=0ABcc:_evil@evil.com?=",
    _b64word("Today\r\nBcc: evil@evil.com"),
    "Today =?utf-8?q?=0A?=Bcc: evil@evil.com",
    "=?utf-8?q?=3D=3Futf-8=3Fq=3FX=3D0ABcc:_evil@evil.com=3F=3D?=",
    "=?utf-8?q?Today=E2=80=A8Bcc:_evil@evil.com?=",                 # U+2028 inside a word
]
# Odd but harmless titles: sent, and every mail reader shows them exactly as written (white
# space, a literal line separator included, is folded to single spaces by the edition parser).
ODD_TITLES = [
    "Today\u2028Bcc: evil@evil.com",
    "=?utf-8?q?looks_encoded?=",
    "Price: $5, <b>bold</b> & \"quotes\"",
    "今日要闻：=?utf-8?b?5L2g5aW9?= 与 AI",
    "A long subject " + "word " * 60,
    "Z" * 300,
]

# CSV cells a spreadsheet would run (OWASP), as names and attribute values.
FORMULA_CELLS = ["=HYPERLINK(\"http://evil.example\",\"click\")", "+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0",
                 "-2+3", "=1+1", "'=already quoted", "''@twice"]

EDITION_HEADERS = {"From", "To", "Reply-To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
                   "List-Unsubscribe-Post", "MIME-Version", "Content-Type"}
TRANSACTIONAL_HEADERS = {"From", "To", "Reply-To", "Subject", "Date", "Message-ID", "Auto-Submitted",
                         "MIME-Version", "Content-Type"}


def assert_only_our_headers(raw: bytes, *, to: str, allowed: set[str]) -> email.message.EmailMessage:
    """One To (this reader, nobody else), one Subject, every header ours and once, text + HTML and
    nothing more, lines within RFC 5322's 998 octets. Returns the parsed message."""
    assert raw.isascii()
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]  # the outbox's Maildir stores LF
    assert all(len(line) <= 998 for line in head.split(b"\n"))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    names = [name for name, _ in msg.raw_items()]
    assert set(names) <= allowed, set(names) - allowed
    assert len(names) == len(set(names)), names
    assert msg.get_all("Bcc") is None and msg.get_all("Cc") is None
    assert len(msg.get_all("Subject")) == 1 and len(msg.get_all("To")) == 1
    addresses = msg["To"].addresses
    assert len(addresses) == 1 and addresses[0].addr_spec.lower() == to.lower()
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    for part in msg.iter_parts():
        assert {k for k, _ in part.raw_items()} <= {"Content-Type", "Content-Transfer-Encoding", "MIME-Version"}
    return msg


def decoded_phrase(raw: bytes, header: str) -> str:
    """The display name of ``header`` as RFC 2047 decodes it (adjacent words join)."""
    value = email.message_from_bytes(raw)[header]  # compat32: the raw text
    phrase = re.sub(r"\r?\n[ \t]", " ", value).rpartition(" <")[0]
    if phrase.startswith('"'):
        return email.utils.unquote(phrase).replace('\\"', '"').replace("\\\\", "\\")
    return str(make_header(decode_header(phrase)))


def decoded_subject(raw: bytes) -> str:
    value = re.sub(r"\r?\n[ \t]", " ", email.message_from_bytes(raw)["Subject"])
    return str(make_header(decode_header(value)))


def clean(stored: str) -> bool:
    """A stored name is clean: no control character, not even one hidden in encoded words."""
    return not CONTROL_RE.search(stored) and not CONTROL_RE.search(decode_words(stored))


def outbox(project: Path, slug: str = SLUG) -> list[bytes]:
    box = mailbox.Maildir(project / "outbox" / slug, factory=None, create=False)
    return [box.get_bytes(k) for k in box.keys()]


@pytest.fixture
def edition(project) -> Path:
    (project / "editions").mkdir(exist_ok=True)
    shutil.copy(SAMPLES / "2025-10-14-ai-digest.md", project / EDITION)
    return project / EDITION


def set_front_matter(path: Path, **values: str) -> None:
    text = path.read_text(encoding="utf-8")
    for key, value in values.items():
        line = f"{key}: {yaml_quote(value)}"
        if re.search(rf"(?m)^{key}:.*$", text):
            text = re.sub(rf"(?m)^{key}:.*$", lambda _: line, text, count=1)
        else:
            text = text.replace("---\n", f"---\n{line}\n", 1)
    path.write_text(text, encoding="utf-8")


def yaml_quote(value: str) -> str:
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in value) + '"'


# -- reader input over HTTP: the public form, the confirmation and welcome mail -----------------------

def test_hostile_names_on_the_subscribe_form_send_only_our_headers(web_server):
    url, config = web_server(subscribe_per_ip_per_hour=1000, confirmations_per_address_per_day=10)
    with open_store(config) as store:
        store.create_list("daily", double_opt_in=True, public=True)
    client = httpx.Client(base_url=url, timeout=10)
    box = config.outbox_path / "_transactional" / "new"
    for number, name in enumerate(HOSTILE_NAMES):
        address = f"r{number}@example.org"
        answer = client.post("/subscribe", data={"email": address, "name": name, "list": "daily"})
        assert answer.status_code == 200, (name, answer.text)
        confirmation = _wait_for_mail(box, address, 1)[-1]
        msg = assert_only_our_headers(confirmation, to=address, allowed=TRANSACTIONAL_HEADERS)
        with open_store(config) as store:
            stored = store.get_subscriber(address).name
        assert clean(stored), (name, stored)
        if stored:
            assert decoded_phrase(confirmation, "To") == stored
        assert "<h1>" not in msg.get_body(("html",)).get_content()  # shown escaped, never as HTML
        link = re.search(r"(http://127\.0\.0\.1:\d+/confirm/[A-Za-z0-9_.=-]+)",
                         msg.get_body(("plain",)).get_content()).group(1)
        assert client.get(link.removeprefix(url)).status_code == 200
        welcome = _wait_for_mail(box, address, 2)[-1]
        assert_only_our_headers(welcome, to=address, allowed=TRANSACTIONAL_HEADERS)


def _wait_for_mail(folder: Path, address: str, count: int, timeout: float = 10.0) -> list[bytes]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = []
        for path in sorted(folder.glob("*"), key=lambda p: p.stat().st_mtime_ns) if folder.is_dir() else []:
            raw = path.read_bytes()
            to = email.message_from_bytes(raw, policy=email.policy.default)["To"]
            if to.addresses[0].addr_spec == address:
                found.append(raw)
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"no mail #{count} for {address}"
            return found
        time.sleep(0.05)


def test_preferences_form_stores_hostile_names_cleaned(web_server):
    url, config = web_server()
    with open_store(config) as store:
        store.create_list("daily", public=True)
        sub = store.add_subscriber("p@example.org", lists=["daily"]).subscriber
    from newsletter.config import load_secret
    from newsletter.tokens import make_token

    token = make_token(load_secret(config), "preferences", sub.id, 0, uid=sub.uid)
    client = httpx.Client(base_url=url, timeout=10)
    for name in HOSTILE_NAMES:
        answer = client.post(f"/preferences/{token}", data={"name": name, "list": "daily", "action": "save"})
        assert answer.status_code in (303, 400), name
        with open_store(config) as store:
            assert clean(store.get_subscriber("p@example.org").name), name


# -- reader input through the CLI and a CSV import, sent to the outbox ----------------------------------

def test_hostile_names_from_cli_and_csv_send_only_our_headers(project, edition, cli):
    assert cli("lists", "create", "daily").exit_code == 0
    expected = {}
    for number, name in enumerate(HOSTILE_NAMES):
        address = f"cli{number}@example.com"
        result = cli("subscribers", "add", address, "--name", name, "--list", "daily")
        assert result.exit_code == 0, (name, result.output)
        expected[address] = name
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["email", "name", "city"])
    for number, name in enumerate(HOSTILE_NAMES + FORMULA_CELLS):
        writer.writerow([f"csv{number}@example.com", name, FORMULA_CELLS[number % len(FORMULA_CELLS)]])
        expected[f"csv{number}@example.com"] = name
    (project / "readers.csv").write_text(rows.getvalue(), encoding="utf-8")
    result = cli("subscribers", "import", "readers.csv", "--list", "daily")
    assert result.exit_code == 0, result.output

    with open_store(load_config()) as store:
        stored = {a: store.get_subscriber(a).name for a in expected}
    assert all(clean(n) for n in stored.values()), stored

    result = cli("send", EDITION, "--list", "daily", "--yes")
    assert result.exit_code == 0, result.output
    sent = outbox(project)
    assert len(sent) == len(expected)
    for raw in sent:
        to = email.message_from_bytes(raw, policy=email.policy.default)["To"].addresses[0].addr_spec
        assert_only_our_headers(raw, to=to, allowed=EDITION_HEADERS)
        if stored[to]:
            assert decoded_phrase(raw, "To") == stored[to]
        assert decoded_subject(raw) == "2025.10.14 全球AI新闻速递"


def test_hostile_names_through_ses(project, edition, cli):
    server = FakeSes().start()
    try:
        with open(project / "newsletter.toml", "a", encoding="utf-8") as fh:
            fh.write(f'\n[ses]\nendpoint_url = "{server.url}"\nregion = "us-east-1"\n')
        assert cli("lists", "create", "daily").exit_code == 0
        for number, name in enumerate(HOSTILE_NAMES):
            assert cli("subscribers", "add", f"ses{number}@example.com", "--name", name, "--list", "daily").exit_code == 0
        result = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes")
        assert result.exit_code == 0, result.output
        assert len(server.messages) == len(HOSTILE_NAMES)
        for message in server.messages:
            (to,) = message["to"]
            assert_only_our_headers(message["raw"].encode("ascii"), to=to, allowed=EDITION_HEADERS)
    finally:
        server.stop()


def test_hostile_names_through_smtp(project, edition, cli, smtp_server):
    controller, handler = smtp_server
    with open(project / "newsletter.toml", "a", encoding="utf-8") as fh:
        fh.write(f'\n[smtp]\nhost = "127.0.0.1"\nport = {controller.port}\nsecurity = "none"\n')
    assert cli("lists", "create", "daily").exit_code == 0
    for number, name in enumerate(HOSTILE_NAMES):
        assert cli("subscribers", "add", f"smtp{number}@example.com", "--name", name, "--list", "daily").exit_code == 0
    result = cli("send", EDITION, "--list", "daily", "--transport", "smtp", "--yes")
    assert result.exit_code == 0, result.output
    assert len(handler.envelopes) == len(HOSTILE_NAMES)
    for envelope in handler.envelopes:
        (to,) = envelope.rcpt_tos
        assert envelope.mail_from == "news@example.com"
        assert_only_our_headers(envelope.original_content, to=to, allowed=EDITION_HEADERS)


# -- editor input: titles and subjects -------------------------------------------------------------------

@pytest.mark.parametrize("key", ["title", "subject"])
@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_hostile_title_is_a_check_error_naming_the_field_and_never_sent(project, edition, cli, key, title):
    set_front_matter(edition, **{key: title})
    result = cli("check", EDITION)
    assert result.exit_code == 1, result.output
    assert re.search(rf"{EDITION}:\d+: error: {key} contains .* \[header-value\]", result.output), result.output
    cli("lists", "create", "daily")
    cli("subscribers", "add", "a@example.com", "--list", "daily")
    result = cli("send", EDITION, "--list", "daily", "--yes")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert not (project / "outbox" / SLUG).exists() or outbox(project) == []


@pytest.mark.parametrize("title", ODD_TITLES)
def test_odd_titles_reach_the_reader_exactly_as_written(project, edition, cli, title):
    set_front_matter(edition, title=title)
    cli("lists", "create", "daily")
    cli("subscribers", "add", "a@example.com", "--name", "Ada", "--list", "daily")
    result = cli("send", EDITION, "--list", "daily", "--yes")
    assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
    (raw,) = outbox(project)
    assert_only_our_headers(raw, to="a@example.com", allowed=EDITION_HEADERS)
    assert decoded_subject(raw) == " ".join(title.split())


# -- configuration: name, from, reply_to --------------------------------------------------------------

HOSTILE_CONFIG = [
    ("name", "=?utf-8?q?Daily=0D=0AX-Evil:_1?="),
    ("name", "Daily\u2028X-Evil: 1"),
    ("from", "=?utf-8?q?Daily=0D=0ABcc:_evil@evil.com?= <news@example.com>"),
    ("from", "news@example.com, evil@evil.com"),
    ("from", "Daily <news@example.com> <evil@evil.com>"),
    ("from", "not an address"),
    ("reply_to", "=?utf-8?q?Ed=0D=0ABcc:_evil@evil.com?= <editor@example.com>"),
    ("reply_to", "editor@example.com\\r\\nBcc: evil@evil.com"),
    ("reply_to", "=?utf-8?q?a=0D=0A?=@example.com"),
]


@pytest.mark.parametrize("key,value", HOSTILE_CONFIG)
def test_hostile_config_values_are_one_line_errors_before_anything_is_sent(project, edition, cli, key, value):
    toml = (project / "newsletter.toml").read_text(encoding="utf-8")
    toml = re.sub(rf"(?m)^{key} = .*$", lambda _: f'{key} = "{value}"', toml)
    (project / "newsletter.toml").write_text(toml, encoding="utf-8")
    for args in (("check", EDITION), ("send", EDITION, "--list", "daily", "--yes"), ("sends", "ls")):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and key in lines[0] and "newsletter.toml" in lines[0], result.output
    assert not (project / "subscribers" / "subscribers.db").exists() or _no_sends(project)


def _no_sends(project: Path) -> bool:
    import sqlite3

    with sqlite3.connect(project / "subscribers" / "subscribers.db") as conn:
        try:
            return conn.execute("SELECT count(*) FROM sends").fetchone()[0] == 0
        except sqlite3.OperationalError:
            return True


def test_odd_config_values_are_encoded_and_read_back_as_written(project, edition, cli):
    name = 'AI "Daily", <News> =?utf-8?q?x?= 日报'
    toml = (project / "newsletter.toml").read_text(encoding="utf-8")
    toml = re.sub(r"(?m)^name = .*$", lambda _: f"name = {yaml_quote(name)}", toml)
    toml = re.sub(r"(?m)^from = .*$", lambda _: 'from = "\\"News, Inc.\\" <news@example.com>"', toml)
    toml = re.sub(r"(?m)^reply_to = .*$", lambda _: 'reply_to = "=?utf-8?q?Ed?= <editor@example.com>"', toml)
    (project / "newsletter.toml").write_text(toml, encoding="utf-8")
    cli("lists", "create", "daily")
    cli("subscribers", "add", "a@example.com", "--list", "daily")
    result = cli("send", EDITION, "--list", "daily", "--yes")
    assert result.exit_code == 0, result.output
    (raw,) = outbox(project)
    msg = assert_only_our_headers(raw, to="a@example.com", allowed=EDITION_HEADERS)
    assert decoded_phrase(raw, "List-Id") == name
    assert decoded_phrase(raw, "From") == "News, Inc."
    assert decoded_phrase(raw, "Reply-To") == "=?utf-8?q?Ed?="
    assert msg["From"].addresses[0].addr_spec == "news@example.com"


# -- CSV cells: export neutralises formulas, the import of our export undoes it ----------------------

def test_csv_export_neutralises_formulas_and_round_trips(project, cli):
    cli("lists", "create", "daily")
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["email", "name", "=city", "note"])
    for number, cell in enumerate(FORMULA_CELLS + ["\t=tab", "plain", "-"]):
        writer.writerow([f"{'-' if number == 1 else ''}x{number}@example.com", cell, cell, f"@{number}"])
    (project / "in.csv").write_text(rows.getvalue(), encoding="utf-8")
    assert cli("subscribers", "import", "in.csv", "--list", "daily").exit_code == 0
    assert cli("subscribers", "export", "--list", "daily", "-o", "out.csv").exit_code == 0
    exported = list(csv.reader((project / "out.csv").open(encoding="utf-8")))
    for row in exported:
        for cell in row:
            assert not cell or cell[0] not in "=+-@\t\r", (row, cell)  # nothing a spreadsheet runs
    with open_store(load_config()) as store:
        before = sorted((s.email, s.name, s.attributes) for s in store.iter_subscribers())
    assert any(n.startswith("=") for _, n, _ in before) and any(e.startswith("-") for e, _, _ in before)
    # the export imports back to the same state, in a fresh project
    fresh = project / "fresh"
    fresh.mkdir()
    (fresh / "newsletter.toml").write_text((project / "newsletter.toml").read_text(), encoding="utf-8")
    shutil.copy(project / ".newsletter-secret", fresh)
    shutil.copy(project / "out.csv", fresh)
    result = subprocess.run([sys.executable, "-m", "newsletter", "lists", "create", "daily"], cwd=fresh,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, "-m", "newsletter", "subscribers", "import", "out.csv", "--list",
                             "daily"], cwd=fresh, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with open_store(load_config(fresh / "newsletter.toml")) as store:
        after = sorted((s.email, s.name, s.attributes) for s in store.iter_subscribers())
    assert after == before


def test_init_writes_a_from_that_parses_and_refuses_a_hostile_name(tmp_path, cli):
    result = cli("init", str(tmp_path / "odd"), "--name", 'AI "Daily", <News>', "--postal-address", "1 St")
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "odd" / "newsletter.toml")
    from newsletter.send.message import from_address

    assert from_address(config) == ('AI "Daily", <News>', "news@example.com") and config.name == 'AI "Daily", <News>'
    for name in ("=?utf-8?q?Daily=0D=0ABcc:_evil@evil.com?=", "Daily\nBcc: evil@evil.com", "  "):
        result = cli("init", str(tmp_path / "bad"), "--name", name)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / "bad" / "newsletter.toml").exists()
