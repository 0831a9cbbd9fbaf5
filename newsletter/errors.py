"""One root error for everything the user can get wrong or the world can refuse.

Each error explains itself in one line (``str(err)``); the CLI prints that line to stderr and exits
with ``err.exit_code``. Configuration errors are their own type so that no batch loop can swallow
them.
"""

from __future__ import annotations

from pathlib import Path


class NewsletterError(Exception):
    """Root error. ``location`` (a file, optionally with a line) prefixes the message."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line

    def __str__(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}: {self.message}"
        if self.file:
            return f"{self.file}: {self.message}"
        return f"error: {self.message}"


class ConfigError(NewsletterError):
    """The configuration is missing, unreadable or wrong: always stops the run."""


class EditionError(NewsletterError):
    """An edition source cannot be parsed (carries file and line)."""


class RenderError(NewsletterError):
    """A template failed to render (carries the template name)."""


class StoreError(NewsletterError):
    """The subscriber database refused an operation or is in an unusable state."""


class ValidationError(NewsletterError):
    """A value supplied by the user (address, name, list name, CSV row) is not acceptable."""


class UnstorableError(ValidationError, StoreError):
    """The database refused a value (not the database's fault: the input's): a NUL character,
    a lone surrogate, a number out of range, text too long for its column. A ``ValidationError``
    (the web answers 400, the CLI exits 2) and a ``StoreError`` (code that catches the
    database's refusals catches it too); nothing of the transaction is written."""


class TokenError(NewsletterError):
    """A reader-visible token is forged, tampered with, expired or of the wrong kind."""


class TransportError(NewsletterError):
    """A transport refused or failed a message.

    ``kind`` classifies it once, at the boundary: ``retryable`` (throttling, 5xx, network),
    ``permanent`` (this reader's address is rejected; the job goes on) or ``fatal`` (the job must
    stop: sending paused, quota exhausted, bad credentials, unverified sender). ``response`` keeps
    the provider's raw answer when there is one. ``throttled``: a retryable refusal that means
    "slower, please" (back-pressure: the send lowers its rate and retries without an attempt limit).
    """

    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    FATAL = "fatal"

    def __init__(self, message: str, *, kind: str, code: str | None = None, response: object = None,
                 throttled: bool = False):
        super().__init__(message)
        if kind not in (self.RETRYABLE, self.PERMANENT, self.FATAL):
            raise ValueError(f"unknown transport error kind {kind!r}")
        self.kind = kind
        self.throttled = throttled and kind == self.RETRYABLE
        self.code = code
        self.response = response
