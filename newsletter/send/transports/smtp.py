"""SMTP through smtplib: STARTTLS, implicit TLS or plain, with optional authentication.

Works for the SES SMTP interface and for local mail catchers. Each sending thread keeps its own
connection (``threading.local``) and reuses it; a dropped connection is reopened on the next
message. Replies are classified once, here: 4xx and network trouble are retryable, a refused
recipient or a 5xx for the message is permanent for this reader, a refused sender, failed
authentication or a TLS failure stops the job.
"""

from __future__ import annotations

import smtplib
import ssl
import threading

from newsletter.config import SmtpConfig
from newsletter.errors import TransportError
from newsletter.send.transports.base import OutgoingMessage, Transport


class SmtpTransport(Transport):
    name = "smtp"

    def __init__(self, config: SmtpConfig):
        self.config = config
        self._local = threading.local()
        self._all: list[smtplib.SMTP] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        c = self.config
        return f"smtp ({c.host}:{c.port}, {c.security}{', as ' + c.username if c.username else ''})"

    def send(self, message: OutgoingMessage) -> str:
        try:
            conn = self._connection()
            reply = _deliver(conn, message)
        except TransportError:
            raise
        except OSError as err:  # smtplib.SMTPException and ssl.SSLError are OSErrors too
            self._drop()
            raise classify(err) from err
        words = reply.split()
        # Postfix "Ok: queued as 4XyZ", SES "Ok 0100...": the last word is the provider's id.
        return words[-1] if len(words) > 1 else _message_id(message.raw) or reply

    def _connection(self) -> smtplib.SMTP:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = self._open()
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def _open(self) -> smtplib.SMTP:
        c = self.config
        context = ssl.create_default_context()
        if c.security == "ssl":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=context)
        else:
            conn = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
        conn.ehlo()
        if c.security == "starttls":
            conn.starttls(context=context)
            conn.ehlo()
        if c.username:
            conn.login(c.username, c.password)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()
        self._local = threading.local()


def _deliver(conn: smtplib.SMTP, message: OutgoingMessage) -> str:
    """MAIL, RCPT, DATA by hand: ``sendmail`` hides the DATA reply, which carries the id."""
    conn.ehlo_or_helo_if_needed()
    code, reply = conn.mail(message.sender)
    if code != 250:
        conn.rset()
        raise smtplib.SMTPSenderRefused(code, reply, message.sender)
    for rcpt in message.recipients:
        code, reply = conn.rcpt(rcpt)
        if code not in (250, 251):
            conn.rset()
            raise smtplib.SMTPRecipientsRefused({rcpt: (code, reply)})
    code, reply = conn.data(message.raw)
    if code != 250:
        conn.rset()
        raise smtplib.SMTPDataError(code, reply)
    return reply.decode("utf-8", "replace")


def _message_id(raw: bytes) -> str:
    head = raw[: raw.find(b"\r\n\r\n")]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode("ascii", "replace")
    return ""


def _throttled(err: smtplib.SMTPResponseException) -> bool:
    """A 4xx that asks us to slow down (SES SMTP: "454 Throttling failure: Maximum sending rate
    exceeded.")."""
    lowered = _text(err).lower()
    return 400 <= err.smtp_code < 500 and ("throttl" in lowered or "rate exceeded" in lowered
                                            or "too many" in lowered)


def classify(err: Exception) -> TransportError:
    """The one place an smtplib/socket error becomes a classified ``TransportError``."""
    R, P, F = TransportError.RETRYABLE, TransportError.PERMANENT, TransportError.FATAL
    if isinstance(err, smtplib.SMTPAuthenticationError):
        return TransportError(f"SMTP: authentication failed ({_text(err)}); check [smtp] username and "
                              "the password variable", kind=F, code=str(err.smtp_code))
    if isinstance(err, smtplib.SMTPSenderRefused):
        kind = R if 400 <= err.smtp_code < 500 and not _quota(err) else F
        return TransportError(f"SMTP: sender {err.sender} refused: {err.smtp_code} {_text(err)}",
                              kind=kind, code=str(err.smtp_code), throttled=_throttled(err))
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        rcpt, (code, reply) = next(iter(err.recipients.items()))
        kind = R if 400 <= code < 500 else P
        return TransportError(f"SMTP: recipient {rcpt} refused: {code} {reply.decode('utf-8', 'replace')}",
                              kind=kind, code=str(code))
    if isinstance(err, smtplib.SMTPResponseException):
        if _quota(err) or "paused" in _text(err).lower():
            kind = F
        else:
            kind = R if 400 <= err.smtp_code < 500 else P
        return TransportError(f"SMTP: {err.smtp_code} {_text(err)}", kind=kind, code=str(err.smtp_code),
                              throttled=_throttled(err))
    if isinstance(err, smtplib.SMTPNotSupportedError):
        return TransportError(f"SMTP: {err} (check [smtp] security)", kind=F, code="NotSupported")
    if isinstance(err, ssl.SSLError):
        return TransportError(f"SMTP: TLS failed: {err} (check [smtp] security and port)", kind=F, code="TLS")
    if isinstance(err, (smtplib.SMTPServerDisconnected, OSError)):
        return TransportError(f"SMTP: connection problem: {err}", kind=R, code=type(err).__name__)
    return TransportError(f"SMTP: {err}", kind=F, code=type(err).__name__)


def _text(err: smtplib.SMTPResponseException) -> str:
    msg = err.smtp_error
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)


def _quota(err: smtplib.SMTPResponseException) -> bool:
    return "daily message quota" in _text(err).lower()
