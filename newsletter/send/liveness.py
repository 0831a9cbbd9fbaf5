"""Is a process that registered itself (a send worker, an import) still there?

On this host the process itself is asked (its pid *and* its start time, so a reused pid does not
count); elsewhere only a heartbeat can tell. Pure but for reading /proc.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

# Seconds without a heartbeat after which a process on *another* host counts as gone (one on
# this host is asked directly). NEWSLETTER_STALE_AFTER overrides it (tests).
STALE_AFTER = float(os.environ.get("NEWSLETTER_STALE_AFTER") or 30.0)


def worker_alive(host: str, pid: int, key: str | None, heartbeat_at: float, *,
                 now: float | None = None, stale_after: float | None = None) -> bool:
    """Whether a registered worker may still be sending (pure but for looking at this host).

    On this host (same hostname, boot and pid namespace) the process itself is asked: alive
    while a process with that pid *and that start time* exists — stopped (SIGSTOP), swapping or
    busy, it still holds its messages, and a pid reused by another process does not count. Same
    hostname but another boot: it died with the reboot. Elsewhere (another host, another
    container): alive while its heartbeat is fresher than ``STALE_AFTER``; silent longer, its
    in-flight messages become unknown.
    """
    stale_after = STALE_AFTER if stale_after is None else stale_after
    now = time.time() if now is None else now
    if host == socket.gethostname():
        mine = process_key(os.getpid())
        if key and mine:
            boot, namespace, _ = key.split("/", 2)
            my_boot, my_namespace, _ = mine.split("/", 2)
            if boot != my_boot:
                return False  # this machine restarted since: the process is gone
            if namespace == my_namespace:
                return process_key(pid) == key
        elif key is None and mine is None:  # no /proc here: the pid is all there is
            return _pid_alive(pid) and now - heartbeat_at <= stale_after
    return now - heartbeat_at <= stale_after


def process_key(pid: int) -> str | None:
    """``boot_id/pid-namespace/start-time`` of process ``pid`` (Linux), None when it does not
    exist or this system has no /proc. Two processes never share one on a machine."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return None
    # field 22 (starttime, clock ticks after boot) counted after the ")" that ends the name,
    # which may itself hold spaces and parentheses
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent: gone
        return None
    return f"{boot}/{namespace}/{fields[19]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
