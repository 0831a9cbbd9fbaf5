"""The local outbox: each message becomes a file in a Maildir, openable by any mail client.

Messages of an edition go to ``outbox/<slug>/``, transactional mail to ``outbox/_transactional/``.
A file is written under ``tmp/`` and renamed into ``new/`` (the Maildir protocol), so a reader of
the folder never sees half a message. Nothing leaves the machine.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import socket
import time
from pathlib import Path

from newsletter.errors import TransportError
from newsletter.send.transports.base import OutgoingMessage, Transport

TRANSACTIONAL = "_transactional"
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # no space, quota, file-size limit
_SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class OutboxTransport(Transport):
    name = "outbox"

    def __init__(self, root: Path):
        self.root = Path(root)
        self._ready: set[Path] = set()
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    def describe(self) -> str:
        return f"outbox (a local Maildir under {self.root}; nothing leaves this machine)"

    def folder(self, slug: str) -> Path:
        """The Maildir for an edition (``""``: transactional mail)."""
        if slug and not _SLUG_RE.fullmatch(slug):
            raise TransportError(f"edition slug {slug!r} cannot name an outbox folder", kind=TransportError.FATAL)
        return self.root / (slug or TRANSACTIONAL)

    def send(self, message: OutgoingMessage) -> str:
        """Write the message; its Maildir file name is the "provider message id"."""
        folder = self.folder(message.slug)
        key = f"{time.time_ns() // 1000}.P{os.getpid()}Q{secrets.token_hex(6)}.{self._host}"
        tmp = folder / "tmp" / key
        try:
            self._prepare(folder)
            with open(tmp, "xb") as fh:
                # Maildir files hold local line ends; every mail client reads them.
                fh.write(message.raw.replace(b"\r\n", b"\n"))
            os.replace(tmp, folder / "new" / key)
        except OSError as err:
            try:  # never leave half a message in tmp/
                tmp.unlink()
            except OSError:
                pass
            if err.errno in _FULL:
                raise TransportError(f"database or disk is full: cannot write to the outbox {folder} "
                                     f"({err.strerror}): free space and run the same command again",
                                     kind=TransportError.FATAL, code="DiskFull") from err
            raise TransportError(f"cannot write to the outbox {folder}: {err.strerror or err}",
                                 kind=TransportError.FATAL, code="OSError") from err
        return key

    def _prepare(self, folder: Path) -> None:
        if folder in self._ready:
            return
        for sub in ("tmp", "new", "cur"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        self._ready.add(folder)
