"""Ctrl-C during a send is a request to stop taken at a safe point (send/interrupts.py)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from newsletter.send.interrupts import ctrl_c_stops


def press_ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # the handler runs in the main thread at the next bytecode boundary


def test_the_first_ctrl_c_sets_stop_the_second_raises_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    stop = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_stops(stop) as ctrl_c:
            press_ctrl_c()
            assert stop.is_set() and ctrl_c.pressed  # no exception: the caller decides when
            press_ctrl_c()  # a second one forces
    assert signal.getsignal(signal.SIGINT) is before


def test_raise_if_pressed_is_the_safe_point():
    stop = threading.Event()
    with ctrl_c_stops(stop) as ctrl_c:
        ctrl_c.raise_if_pressed()  # nothing pressed: nothing raised
        press_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.raise_if_pressed()


def test_off_the_main_thread_nothing_changes():
    seen = []

    def work():
        with ctrl_c_stops(threading.Event()) as ctrl_c:
            seen.append((signal.getsignal(signal.SIGINT), ctrl_c.pressed))

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [(before, False)]


def test_a_handler_the_process_installed_itself_is_left_alone():
    """A --workers worker sets its own stop event on SIGINT and must go on returning normally."""
    mine = []
    before = signal.signal(signal.SIGINT, lambda *_: mine.append(1))
    try:
        with ctrl_c_stops(threading.Event()) as ctrl_c:
            press_ctrl_c()
            assert mine == [1] and not ctrl_c.pressed
    finally:
        signal.signal(signal.SIGINT, before)
