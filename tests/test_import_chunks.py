"""Large imports in chunks (each its own short transaction, journalled): the same result as one
transaction, all-or-nothing through a SIGKILL (undone by the next command), consent kept by the
undo, and no send freezes a list an import is still writing. Real SQLite files, the real CLI."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SAMPLES
from newsletter.config import load_config
from newsletter.audience.importer import import_csv
from newsletter.store import open_store, sqlite_import


def state(db: Path) -> list:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        subs = conn.execute("SELECT email_key, email, name, attributes, status, confirmed_at IS NULL, "
                            "unsubscribed_at IS NULL FROM subscribers ORDER BY email_key").fetchall()
        members = conn.execute("SELECT s.email_key, l.name, m.status FROM memberships m JOIN subscribers s "
                               "ON s.id = m.subscriber_id JOIN lists l ON l.id = m.list_id ORDER BY 1, 2").fetchall()
        supp = conn.execute("SELECT email_hash, reason FROM suppressions ORDER BY 1").fetchall()
        journal = conn.execute("SELECT count(*) FROM imports").fetchone()[0] + \
            conn.execute("SELECT count(*) FROM import_undo").fetchone()[0]
    return [subs, members, supp, journal]


def messy_csv(path: Path, n: int, seed: int) -> Path:
    rnd = random.Random(seed)
    statuses = ["active"] * 12 + ["unsubscribed", "bounced", "complained", "unconfirmed"]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("email,name,status,city\n")
        for _ in range(n):
            i = rnd.randrange(n // 2)  # duplicates, in any case
            local = f"User{i}" if rnd.random() < 0.2 else f"user{i}"
            fh.write(f"{local}@example.com,{rnd.choice(['', f'Name {i}'])},{rnd.choice(statuses)},"
                     f"{rnd.choice(['', 'Paris', 'Lyon'])}\n")
    return path


def populate(db: Path, tmp: Path) -> None:
    with open_store(str(db)) as store:
        store.create_list("daily")
        store.create_list("other")
        import_csv(store, messy_csv(tmp / "first.csv", 1500, seed=1), list_name="daily")
        store.suppress("user7@example.com", "manual")
        store.unsubscribe(store.get_subscriber("user11@example.com").id, store.get_list("daily").id)
        store.add_subscriber("user12@example.com", lists=["other"])


def test_chunked_import_equals_one_transaction(tmp_path, monkeypatch):
    second = messy_csv(tmp_path / "second.csv", 3000, seed=2)
    results = []
    for chunk in (10**9, 97):
        db = tmp_path / f"c{chunk}.db"
        populate(db, tmp_path)
        monkeypatch.setattr(sqlite_import, "CHUNK", chunk)
        with open_store(str(db)) as store:
            summary = import_csv(store, second, list_name="daily")
        results.append((state(db), summary.as_dict()))
    assert results[0] == results[1]
    assert results[1][0][3] == 0  # the journal is gone


def cli(project: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "newsletter", *args], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, **env))


def subscribers_now(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("SELECT count(*) FROM subscribers").fetchone()[0]


def start_chunked_import(project: Path, rows: int) -> tuple[subprocess.Popen, Path]:
    big = project / "big.csv"
    with open(big, "w", encoding="utf-8") as fh:
        fh.write("email,name\n")
        for i in range(rows):
            fh.write(f"bulk{i:06d}@example.com,Bulk {i}\n")
        for i in range(0, 200, 2):  # existing readers too: their names change
            fh.write(f"reader{i}@example.org,Renamed {i}\n")
    proc = cli(project, "subscribers", "import", str(big), "--list", "daily", NEWSLETTER_IMPORT_CHUNK="500")
    db = project / "subscribers" / "subscribers.db"
    deadline = time.monotonic() + 120
    while subscribers_now(db) < 3200:  # a few chunks are committed
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc, db


@pytest.fixture
def readers(project):
    config = load_config()
    with open_store(config) as store:
        store.create_list("daily")
        store.import_rows(((f"reader{i}@example.org", i + 2, f"reader{i}@example.org", f"R {i}", "{}", "active")
                           for i in range(200)), list_name="daily")
    return project


@pytest.mark.slow
def test_sigkill_during_a_chunked_import_is_undone_by_the_next_command(readers):
    project = readers
    db = project / "subscribers" / "subscribers.db"
    before = state(db)
    proc, db = start_chunked_import(project, 250000)  # long enough to be still running at the kill
    # a reader unsubscribes (one-click, the store's call) while the import runs
    with open_store(load_config()) as store:
        reader = store.get_subscriber("reader3@example.org")
        store.unsubscribe(reader.id, store.get_list("daily").id)
    assert proc.poll() is None, "the import finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state(db)[3] > 0  # the journal of the dead import is there
    counted = cli(project, "subscribers", "count", "--list", "daily")
    out = counted.communicate(timeout=60)[0]
    again = cli(project, "subscribers", "import", str(project / "none.csv"), "--list", "daily")
    again.communicate(timeout=60)  # (a missing file: an error, but recovery ran first)
    after = state(db)
    assert after[3] == 0
    expected = [list(before[0]), [m if m[0] != "reader3@example.org" else (m[0], m[1], "unsubscribed")
                                  for m in before[1]], before[2], 0]
    assert after == expected, out  # all of the import undone; the unsubscribe made meanwhile kept


@pytest.mark.slow
def test_no_send_while_an_import_is_still_writing_the_list(readers):
    project = readers
    (project / "editions").mkdir()
    shutil.copy(SAMPLES / "2025-10-14-ai-digest.md", project / "editions" / "2025-10-14.md")
    proc, db = start_chunked_import(project, 250000)  # long enough to be still running at the kill
    proc.send_signal(signal.SIGSTOP)  # paused, not gone: its import is still in progress
    try:
        send = cli(project, "send", "editions/2025-10-14.md", "--list", "daily", "--yes")
        out = send.communicate(timeout=120)[0]
        assert send.returncode == 2, out
        assert "an import into list 'daily' is still running" in out and "Traceback" not in out
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    send = cli(project, "send", "editions/2025-10-14.md", "--list", "daily", "--yes")
    out = send.communicate(timeout=300)[0]
    assert send.returncode == 0, out  # the dead import was undone first: the 200 readers, as before
    assert "sent 200," in out
