"""The transport interface: a finished message in, a provider message id out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsletter.send.transports import SendLimits


@dataclass(frozen=True)
class OutgoingMessage:
    """A complete RFC 5322 message and its envelope."""

    sender: str  # envelope sender (bare address)
    recipients: tuple[str, ...]  # envelope recipients (bare addresses, ASCII domains)
    raw: bytes  # the whole message, CRLF line ends
    slug: str = ""  # the edition it belongs to ("" for transactional mail)


class Transport(ABC):
    name: str = ""

    @abstractmethod
    def send(self, message: OutgoingMessage) -> str:
        """Deliver one message; return the provider's message id. Raises ``TransportError``."""

    def describe(self) -> str:
        """One line saying where messages will go."""
        return self.name

    def limits(self) -> SendLimits | None:
        """The provider's sending limits; None when it has none. Raises ``TransportError``."""
        return None

    def close(self) -> None:
        """Release connections. Safe to call more than once."""

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
