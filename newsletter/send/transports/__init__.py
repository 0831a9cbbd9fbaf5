"""Transports: where finished messages go (local outbox, Amazon SES, SMTP).

``open_transport(config, name)`` is the one way callers get one. Every transport raises only
``TransportError`` (classified retryable / permanent / fatal) from ``send``. ``limits()`` gives
the provider's sending limits (SES has some; the others answer None) and ``describe()`` one line
for the person about to send.
"""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.config import TRANSPORTS, Config
from newsletter.errors import ConfigError
from newsletter.send.transports.base import OutgoingMessage, Transport

__all__ = ["OutgoingMessage", "SendLimits", "Transport", "open_transport", "send_limits"]


@dataclass(frozen=True)
class SendLimits:
    """A provider's limits: messages per second, and per rolling 24 hours (None = unlimited)."""

    max_rate: float | None
    max_24h: int | None
    sent_24h: int = 0

    @property
    def remaining_24h(self) -> int | None:
        return None if self.max_24h is None else max(0, self.max_24h - self.sent_24h)


def open_transport(config: Config, name: str | None = None, *, concurrency: int | None = None) -> Transport:
    """The transport ``name`` (default: the configured one), ready to send.

    ``concurrency`` sizes connection pools for that many sending threads. ``ConfigError`` for an
    unknown name.
    """
    name = name or config.transport
    if name == "outbox":
        from newsletter.send.transports.outbox import OutboxTransport

        return OutboxTransport(config.outbox_path)
    if name == "ses":
        from newsletter.send.transports.ses import SesTransport

        return SesTransport(config.ses, pool_size=concurrency or config.send.concurrency)
    if name == "smtp":
        from newsletter.send.transports.smtp import SmtpTransport

        return SmtpTransport(config.smtp)
    raise ConfigError(f"unknown transport {name!r} (expected one of {', '.join(TRANSPORTS)})")


def send_limits(transport: Transport) -> SendLimits | None:
    """The transport's provider limits, or None when it has none."""
    return transport.limits()


def describe(transport: Transport) -> str:
    """One line saying where messages will go."""
    return transport.describe()
