"""`send --workers N`: N real sending processes share one send through the ledger, against the
fake SES endpoint (and the outbox): each reader exactly once, the summary for the whole send, a
worker killed with SIGKILL leaves only its own unknowns, Ctrl-C stops them all, and the total
rate (measured from the endpoint's timestamps) stays within --rate. The sharing tests run on both
engines (SQLite and a real PostgreSQL server), and on PostgreSQL separate `send` commands — one
of them on "another host" (its own UTS namespace and hostname) — join one send."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.store.ledger import Ledger
from newsletter.store import open_store
from test_send import EDITION, SLUG, add_readers, edition, fake_ses, ledger_counts, outbox_messages, per_reader  # noqa: F401
from test_send import wait_for as send_wait_for

COMMAND = [sys.executable, "-m", "newsletter", "send", EDITION, "--list", "daily", "--yes"]


def run(project: Path, *extra: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *extra], cwd=project, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def spawn(project: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*COMMAND, *extra], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def summary(output: str) -> dict[str, int]:
    found = re.search(rf"{SLUG}: sent (\d+), failed (\d+), skipped (\d+)", output)
    assert found, output
    return dict(zip(("sent", "failed", "skipped"), map(int, found.groups())))


def workers_of(send_ref: str = SLUG) -> list[dict]:
    with Ledger.open(load_config()) as ledger:
        send = ledger.find_send(send_ref)
        return [dict(r) for r in ledger.conn.execute("SELECT * FROM send_workers WHERE send_id = ?", (send.id,))]


def wait_for(condition, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """``test_send.wait_for`` with more time: N processes start before the condition can hold."""
    send_wait_for(condition, proc, timeout)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
def test_workers_send_each_reader_exactly_once(backend_project, edition, fake_ses, workers):
    project = backend_project
    readers = add_readers(300)
    with open_store(load_config()) as store:  # left before the send: never frozen into it
        store.unsubscribe(store.get_subscriber("reader0007@example.com").id)
    # ~2 s of sending even with 4 workers × 4 threads: every worker has started (a cold start is
    # ~1 s on a busy 2-core machine) before the work runs out, so each must get a share.
    fake_ses.configure(latency=0.1, reject=["reader0011@example.com"])
    result = run(project, "--transport", "ses", "--workers", str(workers), "--concurrency", "4")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output  # one reader was rejected: exit 1, as one process would give
    assert f"workers:    {workers} processes" in output and "Traceback" not in output
    expected = {r: 1 for r in readers if r not in ("reader0007@example.com", "reader0011@example.com")}
    assert per_reader(fake_ses) == expected
    assert summary(output) == {"sent": 298, "failed": 1, "skipped": 0}
    assert "failed: reader0011@example.com" in output
    assert ledger_counts() == {"sent": 298, "failed": 1}
    rows = workers_of()
    assert len(rows) == workers and all(r["stopped_at"] for r in rows)
    assert len({r["pid"] for r in rows}) == workers  # really N processes
    sent_by = _sent_per_worker()
    assert len(sent_by) == workers and all(n > 0 for n in sent_by.values()), sent_by  # all did share it
    again = run(project, "--transport", "ses", "--workers", str(workers))  # only the failed one is left
    assert "already received this edition: 298" in again.stderr and "recipients: 1" in again.stderr, again.stderr
    assert again.returncode == 1 and sum(per_reader(fake_ses).values()) == 298


def _sent_per_worker() -> dict[str, int]:
    with Ledger.open(load_config()) as ledger:
        send = ledger.find_send(SLUG)
        return {r[0]: r[1] for r in ledger.conn.execute(
            "SELECT claimed_by, COUNT(*) FROM deliveries WHERE send_id = ? AND state = 'sent' GROUP BY claimed_by",
            (send.id,))}


@pytest.mark.slow
def test_workers_to_the_outbox(backend_project, edition):
    project = backend_project
    readers = add_readers(120)
    result = run(project, "--workers", "3")
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout) == {"sent": 120, "failed": 0, "skipped": 0}
    got = sorted(m["To"].addresses[0].addr_spec for m in outbox_messages(project))
    assert got == readers  # each exactly once in the one Maildir
    assert ledger_counts() == {"sent": 120}


@pytest.mark.slow
def test_a_killed_worker_leaves_only_its_unknowns(backend_project, edition, fake_ses):
    project = backend_project
    readers = add_readers(240)
    fake_ses.configure(latency=0.02)
    proc = spawn(project, "--transport", "ses", "--workers", "3", "--rate", "60", "--concurrency", "4")
    try:
        wait_for(lambda: fake_ses.accepted >= 40 and len(_live_pids()) == 3, proc)
        victim = _live_pids()[0]
        os.kill(victim, signal.SIGKILL)
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    with Ledger.open(load_config()) as ledger:
        send = ledger.find_send(SLUG)
        unknown_rows = ledger.deliveries(send.id, states=["sending"], limit=1000)
        unknown = {r["email"] for r in unknown_rows}
        holders = {r[0] for r in ledger.conn.execute(
            "SELECT DISTINCT claimed_by FROM deliveries WHERE send_id = ? AND state = 'sending'", (send.id,))}
        assert ledger.unknown(send.id) == len(unknown)
    assert all(h.split(":")[1] == str(victim) for h in holders), holders  # only the dead one's
    assert f"(pid {victim}) died (killed by signal 9); the others go on" in output, output
    assert proc.returncode == (1 if unknown else 0), output
    if unknown:
        assert f"{len(unknown)} message(s) unknown" in output
    assert len(unknown) <= 16  # at most its in-flight window
    got = per_reader(fake_ses)
    for reader in readers:
        if reader in unknown:
            assert got[reader] <= 1  # may or may not have left before the kill
        else:
            assert got[reader] == 1, reader
    counts = ledger_counts()
    assert counts.get("sent", 0) + len(unknown) == 240
    rerun = run(project, "--transport", "ses", "--workers", "2", "--retry-unknown")
    assert rerun.returncode == 0, rerun.stderr
    if unknown:
        assert f"unknown:    {len(unknown)} message(s)" in rerun.stderr
        assert summary(rerun.stdout)["sent"] == len(unknown)
    got = per_reader(fake_ses)
    assert all(got[r] >= 1 for r in readers) and ledger_counts() == {"sent": 240}
    assert {r for r, n in got.items() if n > 1} <= unknown  # duplicates only among the unknowns


def _live_pids() -> list[int]:
    from newsletter.send.liveness import process_key

    try:
        rows = workers_of()
    except Exception:
        return []
    return [r["pid"] for r in rows if r["stopped_at"] is None and process_key(r["pid"]) == r["process_key"]]


@pytest.mark.slow
def test_ctrl_c_in_the_parent_stops_every_worker_cleanly(project, edition, fake_ses):
    readers = add_readers(200)
    fake_ses.configure(latency=0.02)
    proc = spawn(project, "--transport", "ses", "--workers", "2", "--rate", "40", "--concurrency", "4")
    wait_for(lambda: fake_ses.accepted >= 15 and len(_live_pids()) == 2, proc)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    counts = ledger_counts()
    assert "sending" not in counts  # their in-flight messages finished and were recorded
    assert counts["sent"] == fake_ses.accepted == summary(output)["sent"]
    assert all(r["stopped_at"] for r in workers_of()) and not _live_pids()
    result = run(project, "--transport", "ses", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert per_reader(fake_ses) == {r: 1 for r in readers}


@pytest.mark.slow
def test_the_total_rate_stays_within_the_rate_asked(project, edition, fake_ses):
    """Four workers at --rate 50, and a fifth process joining the same send from another
    "terminal" halfway: in no one-second window does the endpoint see more than 50 (+ one slot
    per process, the bucket's burst)."""
    readers = add_readers(400)
    rate = 50
    fake_ses.configure(latency=0.003)
    proc = spawn(project, "--transport", "ses", "--workers", "4", "--rate", str(rate), "--concurrency", "4")
    try:
        wait_for(lambda: fake_ses.accepted >= 150, proc)
        joined = run(project, "--transport", "ses", "--rate", str(rate), "--concurrency", "4")
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and joined.returncode == 0, output + joined.stderr
    assert per_reader(fake_ses) == {r: 1 for r in readers}
    theirs = summary(joined.stdout)["sent"]
    assert 0 < theirs < 400  # the joined process did its part
    # the parent's summary is the whole send's, as far as recorded when its workers were done
    # (the other process may still have had a few in flight then)
    assert 400 - theirs <= summary(output)["sent"] <= 400
    stamps = sorted(m["at"] for m in fake_ses.messages)
    worst, j = 0, 0
    for i, start in enumerate(stamps):  # the busiest one-second window
        while stamps[j] < start - 1.0:
            j += 1
        worst = max(worst, i - j + 1)
    overall = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    print(f"busiest second: {worst} messages; overall {overall:.1f}/s (asked {rate}/s)")
    assert worst <= rate + 5, worst
    assert overall <= rate * 1.02
    assert overall >= rate * 0.6  # and the share is used: the workers do not starve each other


@pytest.mark.slow
def test_a_fatal_stop_in_one_worker_stops_them_all_with_exit_2(project, edition, fake_ses):
    readers = add_readers(200)
    fake_ses.configure(latency=0.005, pause_after=30)
    result = run(project, "--transport", "ses", "--workers", "2", "--concurrency", "2")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "AccountSendingPausedException" in output and "run the same command again" in output
    assert "Traceback" not in output and "died" not in output
    assert "sending" not in ledger_counts()  # nothing left in flight: all resumable
    assert all(r["stopped_at"] for r in workers_of())
    fake_ses.configure(pause_after=None)
    resumed = run(project, "--transport", "ses", "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert per_reader(fake_ses) == {r: 1 for r in readers}


@pytest.mark.slow
def test_workers_stop_cleanly_when_their_parent_is_killed(project, edition, fake_ses):
    readers = add_readers(200)
    fake_ses.configure(latency=0.02)
    proc = spawn(project, "--transport", "ses", "--workers", "2", "--rate", "40", "--concurrency", "4")
    wait_for(lambda: fake_ses.accepted >= 15 and len(_live_pids()) == 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 30
    while _live_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _live_pids() and all(r["stopped_at"] for r in workers_of())
    assert "sending" not in ledger_counts()  # what they held was finished and recorded
    assert ledger_counts()["sent"] == fake_ses.accepted
    result = run(project, "--transport", "ses", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert per_reader(fake_ses) == {r: 1 for r in readers}


# -- several send commands (several machines) on one PostgreSQL send --------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 4])
@pytest.mark.parametrize("backend", ["postgresql"])
def test_send_commands_started_at_once_share_one_send(backend_project, edition, fake_ses, processes):
    """N separate `send` commands (as on N machines) started at the same moment: one creates the
    send, the others join it; each reader gets exactly one message, and every process sent some."""
    project = backend_project
    readers = add_readers(300)
    fake_ses.configure(latency=0.05)
    procs = [spawn(project, "--transport", "ses", "--concurrency", "4") for _ in range(processes)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=180)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(p.returncode == 0 for p in procs), outputs
    assert per_reader(fake_ses) == {r: 1 for r in readers}
    assert ledger_counts() == {"sent": 300}
    sent_by = _sent_per_worker()
    assert len(sent_by) == processes and all(n > 0 for n in sent_by.values()), sent_by
    with Ledger.open(load_config()) as ledger:  # one send, not N
        assert len(ledger.sends()) == 1


def _other_host(command: list[str]) -> list[str] | None:
    """``command`` run in a new UTS namespace whose hostname is another machine's; None where
    this system does not allow it (no CAP_SYS_ADMIN)."""
    import shutil

    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run([unshare, "--uts", "sh", "-c", "hostname second-host.example && hostname"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "second-host.example":
        return None
    import shlex

    return [unshare, "--uts", "sh", "-c", "hostname second-host.example && exec " + shlex.join(command)]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_worker_on_another_host_that_dies_is_unknown_by_its_heartbeat(backend_project, edition, fake_ses,
                                                                      monkeypatch):
    """A send command on a second machine (another hostname) joins the send on PostgreSQL and is
    killed with SIGKILL: no process can ask that host about it, so once its heartbeat is older
    than STALE_AFTER (by the database's clock) its in-flight rows are unknown; the rerun reports
    exactly those and, asked, sends them again."""
    project = backend_project
    from newsletter.send import liveness

    monkeypatch.setenv("NEWSLETTER_STALE_AFTER", "3")  # the send processes'
    monkeypatch.setattr(liveness, "STALE_AFTER", 3.0)  # this one's
    readers = add_readers(200)
    fake_ses.configure(latency=0.05)
    remote = _other_host([*COMMAND, "--transport", "ses", "--rate", "30", "--concurrency", "4"])
    if remote is None:
        pytest.skip("this system does not allow a new UTS namespace (unshare --uts) to play another host")
    local = spawn(project, "--transport", "ses", "--rate", "30", "--concurrency", "4")
    far = subprocess.Popen(remote, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        def far_holds_rows() -> bool:
            rows = [r for r in _workers_rows() if r["host"] == "second-host.example"]
            return bool(rows) and _held_by(rows[0]["id"]) > 0
        wait_for(far_holds_rows, far)
        far_worker = next(r for r in _workers_rows() if r["host"] == "second-host.example")
        os.kill(far.pid, signal.SIGKILL)
        far.wait(10)
        output = local.communicate(timeout=180)[0]
    finally:
        for proc in (local, far):
            if proc.poll() is None:
                proc.kill()
    held = _held_by(far_worker["id"])
    assert local.returncode in (0, 1), output
    time.sleep(3.5)  # the far worker's heartbeat is now stale by the server's clock
    with Ledger.open(load_config()) as ledger:
        send = ledger.find_send(SLUG)
        assert ledger.unknown(send.id) == held
        assert far_worker["id"] not in ledger.live_workers(send.id)
    rerun = run(project, "--transport", "ses", "--retry-unknown")
    assert rerun.returncode == 0, rerun.stderr
    if held:
        assert f"unknown:    {held} message(s)" in rerun.stderr, rerun.stderr
    got = per_reader(fake_ses)
    assert all(got[r] >= 1 for r in readers) and ledger_counts() == {"sent": 200}


def _workers_rows() -> list[dict]:
    try:
        return workers_of()
    except Exception:  # the send is not created yet
        return []


def _held_by(worker: str) -> int:
    with Ledger.open(load_config()) as ledger:
        return ledger.conn.execute("SELECT count(*) FROM deliveries WHERE claimed_by = ? AND state = 'sending'",
                                   (worker,)).fetchone()[0]
