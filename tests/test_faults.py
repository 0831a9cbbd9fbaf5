"""A full disk, for real: a small tmpfs mounted for the test (we run as root, as CI does), filled
up with a plain file, under an import, a send's outbox and a send's ledger. Each stop is one
line ("database or disk is full: … free space and run the same command again"), exit 2, the
database passes ``PRAGMA integrity_check`` and holds what it held before, the Maildir's tmp/ is
empty; after space is freed, the same command finishes the job."""

from __future__ import annotations

import mailbox
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLES

EDITION = "editions/2025-10-14.md"
SLUG = "2025-10-14"


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs; ``fill(leave)`` takes all of it but ``leave`` bytes; ``grow()`` frees it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        message = f"cannot mount a tmpfs to fill up ({done.stderr.strip()}): run the tests as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    class Disk:
        path = mount

        def fill(self, leave: int) -> None:
            stat = os.statvfs(mount)
            free = stat.f_bavail * stat.f_frsize
            with open(mount / "filler", "wb") as fh:
                fh.truncate(0)
                block = b"\0" * (1 << 20)
                left = free - leave
                while left > 0:
                    fh.write(block[:min(left, len(block))])
                    left -= len(block)

        def grow(self) -> None:
            (mount / "filler").unlink()

    try:
        yield Disk()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def newsletter(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=project, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1", **env))


def configure(project: Path, **paths: Path) -> None:
    toml = (project / "newsletter.toml").read_text(encoding="utf-8")
    lines = "".join(f'{key} = "{value}"\n' for key, value in paths.items())
    (project / "newsletter.toml").write_text(lines + toml, encoding="utf-8")


def readers_csv(path: Path, n: int, start: int = 0) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("email,name,city\n")
        for i in range(start, start + n):
            fh.write(f"reader{i:06d}@example.com,Reader number {i},Springfield {i % 97}\n")
    return path


def assert_one_line_disk_full(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if "disk is full" in l]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: database or disk is full: ")
    assert lines[0].endswith("free space and run the same command again")


def integrity(db: Path) -> list:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT email, name, status FROM subscribers ORDER BY id").fetchall()


def test_import_on_a_full_disk_writes_nothing_and_the_same_command_finishes_later(project, small_disk):
    db = small_disk.path / "subscribers.db"
    configure(project, database=db)
    assert newsletter(project, "lists", "create", "daily").returncode == 0
    first = newsletter(project, "subscribers", "import", str(readers_csv(project / "a.csv", 200)), "--list", "daily")
    assert first.returncode == 0, first.stderr
    before = integrity(db)
    big = readers_csv(project / "b.csv", 40000, start=200)
    with open(big, "a", encoding="utf-8") as fh:  # the first readers renamed: changed in the first chunk
        fh.writelines(f"reader{i:06d}@example.com,Renamed {i},Elsewhere\n" for i in range(100))
    for chunk in ("1000000", "500"):  # one transaction, then chunks of 500 addresses (journalled)
        small_disk.fill(leave=256 * 1024)
        result = newsletter(project, "subscribers", "import", str(big), "--list", "daily",
                            NEWSLETTER_IMPORT_CHUNK=chunk)
        assert_one_line_disk_full(result)
        small_disk.grow()
        assert newsletter(project, "subscribers", "count").returncode == 0  # (undoes what a full disk kept it from)
        assert integrity(db) == before, chunk  # nothing of the failed import
    again = newsletter(project, "subscribers", "import", str(big), "--list", "daily")
    assert again.returncode == 0, again.stderr
    assert len(integrity(db)) == 40200


@pytest.fixture
def edition(project) -> Path:
    (project / "editions").mkdir(exist_ok=True)
    shutil.copy(SAMPLES / "2025-10-14-ai-digest.md", project / EDITION)
    return project / EDITION


def ledger(db: Path) -> dict:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return dict(conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall())


def test_send_to_an_outbox_on_a_full_disk_stops_cleanly_and_resumes(project, edition, small_disk):
    configure(project, outbox_dir=small_disk.path / "outbox")
    newsletter(project, "lists", "create", "daily")
    assert newsletter(project, "subscribers", "import", str(readers_csv(project / "r.csv", 40)),
                      "--list", "daily").returncode == 0
    (small_disk.path / "outbox").mkdir()
    small_disk.fill(leave=600 * 1024)  # room for a few messages of ~60 KB, not 40
    result = newsletter(project, "send", EDITION, "--list", "daily", "--yes", "--concurrency", "4")
    assert_one_line_disk_full(result)
    box = small_disk.path / "outbox" / SLUG
    assert list((box / "tmp").iterdir()) == []  # no half-written message left behind
    written = len(list((box / "new").iterdir()))
    counts = ledger(project / "subscribers" / "subscribers.db")
    assert 0 < written < 40 and counts == {"sent": written, "pending": 40 - written}
    small_disk.grow()
    again = newsletter(project, "send", EDITION, "--list", "daily", "--yes")
    assert again.returncode == 0, again.stderr
    messages = mailbox.Maildir(box, create=False)
    recipients = sorted(m["To"] for m in messages)
    assert len(recipients) == len(set(recipients)) == 40
    assert list((box / "tmp").iterdir()) == []


def test_send_whose_ledger_is_on_a_full_disk_stops_before_sending(project, edition, small_disk):
    db = small_disk.path / "subscribers.db"
    configure(project, database=db)
    newsletter(project, "lists", "create", "daily")
    assert newsletter(project, "subscribers", "import", str(readers_csv(project / "r.csv", 30000)),
                      "--list", "daily").returncode == 0
    before = integrity(db)
    small_disk.fill(leave=64 * 1024)  # the 30,000 deliveries to freeze do not fit
    result = newsletter(project, "send", EDITION, "--list", "daily", "--yes")
    assert_one_line_disk_full(result)
    assert not (project / "outbox" / SLUG / "new").exists() or not list((project / "outbox" / SLUG / "new").iterdir())
    assert integrity(db) == before and ledger(db) == {}
    small_disk.grow()
    again = newsletter(project, "send", EDITION, "--list", "daily", "--yes")
    assert again.returncode == 0, again.stderr
    assert ledger(db) == {"sent": 30000}
