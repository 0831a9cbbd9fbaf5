"""The readers' web app as deployed at scale: `newsletter serve --workers 2` (uvicorn's supervisor,
two worker processes accepting on one port) over real HTTP on 127.0.0.1, on PostgreSQL and, for
comparison, on SQLite. A limit of N is N across the workers; every one-click unsubscribe (RFC
8058 POST) that was answered 200 is stored, replays included. (The archive and feed pages read
the delivery ledger and are not tested here.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import free_port, wait_for_http
from newsletter.config import load_config, load_secret
from newsletter.store import open_store
from newsletter.store.models import MembershipStatus
from newsletter.tokens import make_token

WORKERS = 2
LIMIT = 20  # subscribe_per_ip_per_hour
FORM = {"content-type": "application/x-www-form-urlencoded"}


def _children(pid: int) -> list[int]:
    """The worker processes of the supervisor ``pid`` (multiprocessing's spawned children; its
    resource tracker, if any, is not a worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _uses_database(pid: int, backend: str, where: str) -> bool:
    """Whether worker ``pid`` has the database open: a TCP connection to the PostgreSQL port, or
    the SQLite file among its open files. Connections are opened on a worker's first request
    that needs them, so this says the worker served such requests."""
    if backend == "sqlite":
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == where:
                    return True
            except OSError:
                continue
        return False
    port = f"{int(where):04X}"
    inodes = _socket_inodes(pid)
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[2].rsplit(":", 1)[1] == port and fields[9] in inodes:
                return True
    return False


@pytest.fixture
def served(backend_project, backend, request):
    """`newsletter serve --workers 2` for the project (PostgreSQL through
    NEWSLETTER_DATABASE_URL, as a deployment sets it); yields ``(url, config, supervisor, db)``
    where ``db`` is what ``_uses_database`` looks for. Stopped with SIGTERM afterwards."""
    project = backend_project
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    toml = (project / "newsletter.toml").read_text(encoding="utf-8")
    toml = re.sub(r"(?m)^base_url = .*$", f'base_url = "{url}"', toml)
    toml += f"\n[web]\nsubscribe_per_ip_per_hour = {LIMIT}\n"
    (project / "newsletter.toml").write_text(toml, encoding="utf-8")
    config = load_config(project / "newsletter.toml")
    with open_store(config) as store:
        store.create_list("weekly", public=True)  # single opt-in: a sign-up is a row at once
        store.create_list("daily", public=True)
    if backend == "postgresql":
        db = os.environ["NEWSLETTER_DATABASE_URL"].rsplit(":", 1)[1].split("/", 1)[0]
    else:
        db = str((project / "subscribers" / "subscribers.db").resolve())
    env = {k: v for k, v in os.environ.items() if k != "NEWSLETTER_CONFIG"}
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "serve", "--port", str(port),
                             "--workers", str(WORKERS), "--no-access-log"],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        wait_for_http(url + "/healthz", timeout=60)
        deadline = time.monotonic() + 30
        while len(_children(proc.pid)) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.1)
        yield url, config, proc, db
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate(timeout=10)
        request.node.serve_log = err.decode(errors="replace")


def _spread(url: str, supervisor, backend: str, db: str) -> list[int]:
    """Concurrent page loads until every worker has served one (the kernel hands each new
    connection to one of the processes accepting on the port); returns the workers."""
    workers = _children(supervisor.pid)
    assert len(workers) == WORKERS, workers

    def load(_):
        with httpx.Client(base_url=url, timeout=30) as client:  # its own connection
            return client.get("/subscribe").status_code

    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(16) as pool:
        while not all(_uses_database(w, backend, db) for w in workers):
            assert time.monotonic() < deadline, "the requests never reached every worker"
            assert set(pool.map(load, range(32))) == {200}
    return workers


def test_the_rate_limit_is_one_count_across_worker_processes(served, backend):
    url, config, supervisor, db = served
    workers = _spread(url, supervisor, backend, db)

    def sign_up(i: int) -> int:
        with httpx.Client(base_url=url, timeout=30) as client:  # a new connection each: any worker
            return client.post("/subscribe", data={"email": f"p{i}@example.org", "list": "weekly"}).status_code

    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(sign_up, range(5 * LIMIT)))
    assert sorted(codes) == [200] * LIMIT + [429] * (4 * LIMIT), codes
    with open_store(config) as store:
        assert store.count_subscribers() == LIMIT  # exactly the allowed ones were recorded
    assert all(_uses_database(w, backend, db) for w in workers)
    assert _children(supervisor.pid) == workers  # no worker died and was replaced meanwhile


def test_every_answered_one_click_unsubscribe_is_stored(served, backend):
    url, config, supervisor, db = served
    _spread(url, supervisor, backend, db)
    secret = load_secret(config)
    readers = 60
    with open_store(config) as store:
        daily = store.get_list("daily")
        for i in range(readers):
            store.add_subscriber(f"r{i}@example.org", lists=["daily", "weekly"])
        subs = [store.get_subscriber(f"r{i}@example.org") for i in range(readers)]
    links = [f"/unsubscribe/{make_token(secret, 'unsubscribe', s.id, daily.id, uid=s.uid)}" for s in subs]

    def one_click(link: str) -> int:
        with httpx.Client(base_url=url, timeout=60) as client:
            return client.post(link, content="List-Unsubscribe=One-Click", headers=FORM).status_code

    # each link twice (mailbox providers retry): from other connections, so often other workers
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one_click, links + links[::-1]))
    assert codes == [200] * (2 * readers), codes
    with open_store(config) as store:
        for sub in subs:
            status = {m.list_name: m.status for m in store.memberships(sub.id)}
            assert status == {"daily": MembershipStatus.UNSUBSCRIBED, "weekly": MembershipStatus.ACTIVE}
        assert list(store.recipients("daily")) == []


def test_serve_with_workers_stops_them_all_on_sigterm(served):
    url, _, supervisor, _ = served
    workers = _children(supervisor.pid)
    assert len(workers) == WORKERS
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=2)


def test_a_database_it_cannot_reach_stops_serve_before_any_worker_starts(project, cli, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"postgresql://x@127.0.0.1:{free_port()}/gone")
    result = cli("serve", "--port", str(free_port()), "--workers", "2")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot connect to PostgreSQL database 'gone'" in result.stderr
    assert cli("serve", "--workers", "0").exit_code == 2  # at least one


def test_the_shared_socket_names_tcp_so_every_connection_gets_nodelay():
    """asyncio turns Nagle's algorithm off only for sockets whose protocol is IPPROTO_TCP; a
    socket made without it (as uvicorn's own --workers does) leaves every keep-alive answer
    waiting ~40 ms for the client's delayed ACK. The workers inherit this socket (pickled with
    its family, type and protocol) and so do the connections they accept."""
    import pickle
    import socket
    from multiprocessing.reduction import ForkingPickler

    from newsletter.cli.web import listen

    sock = listen("127.0.0.1", free_port())
    try:
        assert sock.proto == socket.IPPROTO_TCP
        rebuilt = pickle.loads(ForkingPickler.dumps(sock))
        try:
            assert rebuilt.proto == socket.IPPROTO_TCP
        finally:
            rebuilt.close()
    finally:
        sock.close()
