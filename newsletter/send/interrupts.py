"""Ctrl-C during a send: a request to stop, taken at a safe point, never a cut in mid-call.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be. In the middle of a
database call that can leave the connection half-way through its protocol (psycopg waits for the
server in Python code: an interrupted pipeline leaves the connection unable to run the next
statement), so the send could no longer record the messages already in flight, and a clean stop
became an error. While a send runs, the first Ctrl-C therefore only sets the send's ``stop``
event: the job stops claiming, lets in-flight messages finish, records them, and then raises
``KeyboardInterrupt`` itself. A second Ctrl-C raises at once (a forced stop: the ledger stays
consistent, what was in flight is reported unknown). Off the main thread (where signals cannot
be handled), or where the process has its own SIGINT handler already (a ``--workers`` worker:
its handler sets the same stop event), nothing changes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class CtrlC:
    """Whether Ctrl-C was pressed while the ``ctrl_c_stops`` block ran."""

    pressed: bool = False

    def raise_if_pressed(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt


@contextmanager
def ctrl_c_stops(stop: threading.Event) -> Iterator[CtrlC]:
    """Inside: the first SIGINT sets ``stop`` (and ``pressed``); the next raises
    ``KeyboardInterrupt``. The previous handler is restored on the way out."""
    state = CtrlC()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield state  # off the main thread, or the process has its own handler (a --workers worker)
        return

    def handler(signum, frame):
        if state.pressed:
            raise KeyboardInterrupt
        state.pressed = True
        stop.set()

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main interpreter's main thread after all
        yield state
        return
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
