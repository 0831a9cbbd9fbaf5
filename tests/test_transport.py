"""Transports against real things: the outbox Maildir, SES through boto3 on a real moto server and
on the fault endpoint, SMTP on a real aiosmtpd server (plain, STARTTLS, AUTH)."""

from __future__ import annotations

import datetime as dt
import email
import email.utils
import ipaddress
import json
import mailbox
import urllib.request
from email import policy
from pathlib import Path

import boto3
import pytest

from newsletter.config import Config, SesConfig, SmtpConfig
from newsletter.errors import ConfigError, TransportError
from newsletter.send.message import MessageTemplate, SendContext, simple_message
from newsletter.render.rendered import RenderedEmail, placeholder
from newsletter.store.models import Recipient
from newsletter.send.transports import open_transport, send_limits
from newsletter.send.transports.outbox import OutboxTransport
from newsletter.send.transports.ses import SesTransport
from newsletter.send.transports.smtp import SmtpTransport
from conftest import free_port
from fake_ses import FakeSes

SECRET = b"s" * 32


def edition_message(config: Config, reader: Recipient, slug: str = "2025-10-14"):
    rendered = RenderedEmail(
        slug=slug, subject="AI 日报 2025-10-14", preheader="", lang="zh-CN",
        html=f"<p>你好 {placeholder('name', 'friend')}</p><a href=\"{placeholder('unsubscribe_url')}\">退订</a>",
        text=f"你好 {placeholder('name', 'friend')}\n退订: {placeholder('unsubscribe_url')}\n", web_url="")
    ctx = SendContext(config=config, secret=SECRET, list_id=1, list_name="daily")
    return MessageTemplate(rendered, ctx).render(reader)


READER = Recipient(11, "wei@example.com", "张伟", {})


# -- outbox -------------------------------------------------------------------------------------

def test_outbox_writes_a_maildir_per_edition(tmp_path):
    config = Config(root=tmp_path)
    transport = open_transport(config, "outbox")
    assert isinstance(transport, OutboxTransport)
    assert "nothing leaves this machine" in transport.describe()
    key = transport.send(edition_message(config, READER))
    box = mailbox.Maildir(tmp_path / "outbox" / "2025-10-14", factory=None, create=False)
    assert list(box.keys()) == [key]
    msg = email.message_from_bytes(box.get_bytes(key), policy=policy.default)
    assert msg["To"].addresses[0].display_name == "张伟"
    assert msg["Subject"] == "AI 日报 2025-10-14"
    assert not list((tmp_path / "outbox" / "2025-10-14" / "tmp").iterdir())


def test_outbox_transactional_mail_has_its_own_folder(tmp_path):
    config = Config(root=tmp_path)
    transport = open_transport(config, "outbox")
    transport.send(simple_message(config, to_email="a@example.com", subject="Confirm", text="hi"))
    assert len(list((tmp_path / "outbox" / "_transactional" / "new").iterdir())) == 1


def test_outbox_refuses_a_slug_that_is_not_a_folder_name(tmp_path):
    config = Config(root=tmp_path)
    message = edition_message(config, READER, slug="../../etc")
    with pytest.raises(TransportError) as err:
        open_transport(config, "outbox").send(message)
    assert err.value.kind == "fatal"


def test_unknown_transport_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        open_transport(Config(root=tmp_path), "pigeon")


# -- SES on moto ----------------------------------------------------------------------------------

def moto_raw_messages(moto: str) -> list[dict]:
    """What moto received (``/moto-api/data.json``): ``destinations``, ``id``, ``raw_data``, ``source``."""
    data = json.loads(urllib.request.urlopen(moto + "/moto-api/data.json", timeout=5).read())
    return data.get("ses", {}).get("RawMessage", [])


def test_ses_through_moto_sends_raw_and_reads_quota(moto):
    boto3.client("ses", region_name="us-east-1", endpoint_url=moto).verify_email_identity(
        EmailAddress="news@example.com")
    config = Config(root=Path("/tmp"), from_="AI Daily <news@example.com>", ses=SesConfig(endpoint_url=moto))
    transport = open_transport(config, "ses")
    assert isinstance(transport, SesTransport)
    limits = send_limits(transport)
    assert limits.max_rate == 1.0 and limits.max_24h == 200 and limits.remaining_24h == 200
    message_id = transport.send(edition_message(config, READER))
    assert message_id
    [received] = moto_raw_messages(moto)
    assert received["id"] == message_id and received["source"] == "news@example.com"
    # moto's Raw send adds the To header's address to the Destination we gave: two entries, one reader
    assert {email.utils.parseaddr(d)[1] for d in received["destinations"]} == {"wei@example.com"}
    msg = email.message_from_string(received["raw_data"], policy=policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["To"].addresses[0].display_name == "张伟"
    quota = boto3.client("ses", region_name="us-east-1", endpoint_url=moto).get_send_quota()
    assert quota["SentLast24Hours"] == len(received["destinations"])


def test_ses_unverified_sender_is_fatal(moto):
    config = Config(root=Path("/tmp"), from_="AI Daily <news@example.com>", ses=SesConfig(endpoint_url=moto))
    with pytest.raises(TransportError) as err:
        open_transport(config, "ses").send(edition_message(config, READER))
    assert err.value.kind == "fatal" and "verify the sender" in str(err.value)


# -- SES on the fault endpoint --------------------------------------------------------------------

@pytest.fixture
def fake_ses():
    server = FakeSes().start()
    yield server
    server.stop()


@pytest.mark.parametrize("fault,kind", [
    ("throttle", "retryable"), ("5xx", "retryable"), ("503", "retryable"), ("reject", "permanent"),
    ("paused", "fatal"), ("quota", "fatal"), ("unverified", "fatal"), ("credentials", "fatal"),
])
def test_ses_errors_are_classified_once(fake_ses, fault, kind):
    config = Config(root=Path("/tmp"), ses=SesConfig(endpoint_url=fake_ses.url))
    transport = open_transport(config, "ses")
    fake_ses.configure(queue=[fault])
    with pytest.raises(TransportError) as err:
        transport.send(edition_message(config, READER))
    assert err.value.kind == kind
    assert err.value.throttled == (fault == "throttle")  # only "slower, please" is back-pressure
    assert err.value.response is not None  # the provider's raw answer is kept
    assert transport.send(edition_message(config, READER)).startswith("fake-")


def test_smtp_throttling_replies_are_back_pressure():
    import smtplib

    from newsletter.send.transports.smtp import classify

    ses_smtp = classify(smtplib.SMTPSenderRefused(454, b"Throttling failure: Maximum sending rate exceeded.",
                                                  "news@example.com"))
    assert ses_smtp.kind == "retryable" and ses_smtp.throttled
    busy = classify(smtplib.SMTPResponseException(421, b"4.7.0 Too many messages, slow down"))
    assert busy.kind == "retryable" and busy.throttled
    other = classify(smtplib.SMTPResponseException(451, b"4.3.0 Local error in processing"))
    assert other.kind == "retryable" and not other.throttled


def test_ses_connection_refused_is_retryable():
    config = Config(root=Path("/tmp"), ses=SesConfig(endpoint_url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(TransportError) as err:
        open_transport(config, "ses").send(edition_message(config, READER))
    assert err.value.kind == "retryable"


def test_ses_sends_tags_and_configuration_set(fake_ses):
    config = Config(root=Path("/tmp"), ses=SesConfig(endpoint_url=fake_ses.url, configuration_set="events"))
    open_transport(config, "ses").send(edition_message(config, READER))
    sent = fake_ses.messages[0]
    assert sent["to"] == ["wei@example.com"]
    assert sent["tags"] == [{"Name": "edition", "Value": "2025-10-14"}]
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in sent["raw"]


# -- SMTP on aiosmtpd -----------------------------------------------------------------------------

class Collector:
    """aiosmtpd handler: keeps envelopes; refuses some recipients on demand."""

    def __init__(self):
        self.envelopes = []
        self.rcpt_codes: dict[str, str] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_codes:
            return self.rcpt_codes[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return f"250 Ok: queued as Q{len(self.envelopes)}"


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def smtp_server(tmp_path, monkeypatch):
    """A real aiosmtpd server on 127.0.0.1 offering STARTTLS and AUTH (user "news", "s3cret")."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts our self-signed cert

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"news" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    handler = Collector()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            authenticator=authenticator, auth_require_tls=False, auth_required=False)
    controller.start()
    yield controller, handler
    controller.stop()


def smtp_config(controller, **kw) -> SmtpConfig:
    return SmtpConfig(**{"host": "127.0.0.1", "port": controller.port, "security": "none",
                         "password_env": "TEST_SMTP_PASSWORD", "timeout": 5.0, **kw})


def test_smtp_delivers_over_starttls_with_auth(smtp_server, monkeypatch, tmp_path):
    controller, handler = smtp_server
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret")
    config = Config(root=tmp_path, smtp=smtp_config(controller, security="starttls", username="news"))
    with open_transport(config, "smtp") as transport:
        assert isinstance(transport, SmtpTransport)
        first = transport.send(edition_message(config, READER))
        second = transport.send(edition_message(config, Recipient(12, "ada@example.com", "Ada", {})))
    assert (first, second) == ("Q1", "Q2")  # the id from the server's "queued as" reply
    assert [e.rcpt_tos for e in handler.envelopes] == [["wei@example.com"], ["ada@example.com"]]
    msg = email.message_from_bytes(handler.envelopes[0].original_content, policy=policy.default)
    assert msg["To"].addresses[0].display_name == "张伟"
    assert "退订" in msg.get_body(("plain",)).get_content()


def test_smtp_refusals_are_classified(smtp_server, tmp_path):
    controller, handler = smtp_server
    handler.rcpt_codes = {"gone@example.com": "550 5.1.1 No such user", "busy@example.com": "451 4.3.0 Try later"}
    config = Config(root=tmp_path, smtp=smtp_config(controller))
    transport = open_transport(config, "smtp")
    with pytest.raises(TransportError) as err:
        transport.send(edition_message(config, Recipient(1, "gone@example.com", "", {})))
    assert err.value.kind == "permanent" and "550" in str(err.value)
    with pytest.raises(TransportError) as err:
        transport.send(edition_message(config, Recipient(2, "busy@example.com", "", {})))
    assert err.value.kind == "retryable"
    assert transport.send(edition_message(config, READER))  # the connection is still usable
    transport.close()


def test_smtp_bad_password_is_fatal(smtp_server, monkeypatch, tmp_path):
    controller, _ = smtp_server
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
    config = Config(root=tmp_path, smtp=smtp_config(controller, username="news"))
    with pytest.raises(TransportError) as err:
        open_transport(config, "smtp").send(edition_message(config, READER))
    assert err.value.kind == "fatal" and "authentication failed" in str(err.value), str(err.value)


def test_smtp_server_down_is_retryable(tmp_path):
    config = Config(root=tmp_path, smtp=SmtpConfig(host="127.0.0.1", port=free_port(), security="none", timeout=2.0))
    with pytest.raises(TransportError) as err:
        open_transport(config, "smtp").send(edition_message(config, READER))
    assert err.value.kind == "retryable"
