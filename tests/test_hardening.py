"""Issue 9, items 2, 4 and 9, through the real interfaces: identities never reused (HTTP against
links taken from a real send, and a database migrated from schema 4), redirects under base_url
(HTTP with a forged Host), and the bad-input list (the CLI, in a subprocess where a crash must
fail the test instead of killing pytest): one line, exit 2, never a traceback or a crash."""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import httpx
import pytest

from conftest import REPO, SAMPLES, free_port, wait_for_http
from newsletter.config import load_config, load_secret
from newsletter.store import db, open_store
from newsletter.tokens import make_token

EDITION = "editions/2025-10-14.md"
SLUG = "2025-10-14"
NL = [sys.executable, "-m", "newsletter"]


def run(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120, user=None) -> subprocess.CompletedProcess:
    return subprocess.run([*NL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, user=user)


def one_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The command failed with ``code`` and said why in one line, without a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def edition(project) -> Path:
    (project / "editions").mkdir(exist_ok=True)
    shutil.copy(SAMPLES / "2025-10-14-ai-digest.md", project / EDITION)
    return project / EDITION


def links_of(project: Path, address: str) -> dict[str, str]:
    box = mailbox.Maildir(project / "outbox" / SLUG, factory=None, create=False)
    for key in box.keys():
        msg = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
        if msg["To"].addresses[0].addr_spec == address:
            text = msg.get_body(("plain",)).get_content()
            return {kind: re.search(rf"(http://127\.0\.0\.1:\d+/{kind}/[A-Za-z0-9_.-]+)", text).group(1)
                    for kind in ("unsubscribe", "preferences")}
    raise AssertionError(f"no message to {address}")


# -- item 2: identities are never reused -----------------------------------------------------------

def test_an_erased_readers_links_never_open_the_next_readers_data(project, edition, cli, web_server):
    url, config = web_server()
    cli("lists", "create", "daily")
    cli("subscribers", "add", "first@example.com", "--name", "First", "--list", "daily")
    cli("subscribers", "add", "erased@example.com", "--name", "Erased", "--list", "daily")
    assert cli("send", EDITION, "--list", "daily", "--yes").exit_code == 0
    old = links_of(project, "erased@example.com")
    client = httpx.Client(timeout=10)
    assert client.get(old["preferences"]).status_code == 200  # the link works while the reader exists

    with open_store(config) as store:
        erased_id = store.get_subscriber("erased@example.com").id
    assert cli("subscribers", "erase", "erased@example.com").exit_code == 0
    assert cli("subscribers", "add", "newcomer@example.com", "--name", "Newcomer Secret",
               "--list", "daily").exit_code == 0
    with open_store(config) as store:
        newcomer = store.get_subscriber("newcomer@example.com")
    assert newcomer.id > erased_id  # the largest id was erased, and still it is not given again

    for answer in (client.get(old["preferences"]), client.get(old["preferences"] + "/data.json"),
                   client.post(old["preferences"], data={"name": "pwned", "action": "save"}),
                   client.post(old["preferences"], data={"action": "unsubscribe-all"}),
                   client.get(old["unsubscribe"]),
                   client.post(old["unsubscribe"], content="List-Unsubscribe=One-Click",
                               headers={"content-type": "application/x-www-form-urlencoded"})):
        assert "newcomer" not in answer.text.lower() and "Newcomer Secret" not in answer.text
        assert answer.status_code in (200, 400)
    assert client.get(old["preferences"]).status_code == 400
    assert client.get(old["preferences"] + "/data.json").status_code == 400
    with open_store(config) as store:
        after = store.get_subscriber("newcomer@example.com")
        assert after.name == "Newcomer Secret" and after.status.value == "active"
        assert [m.status.value for m in store.memberships(after.id)] == ["active"]


def _schema_4_database(path: Path) -> None:
    """A database as the program before migration 005 left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    for version, name, sql in db.migrations():
        if version > 4:
            break
        for statement in db._statements(sql):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    now = "2026-01-01T00:00:00Z"
    conn.execute("INSERT INTO lists (id, name, created_at, public) VALUES (1, 'daily', ?, 1)", (now,))
    for sid in (1, 2, 3):
        conn.execute("INSERT INTO subscribers (id, email, email_key, name, status, created_at) "
                     "VALUES (?, ?, ?, ?, 'active', ?)", (sid, f"old{sid}@example.com", f"old{sid}@example.com",
                                                          f"Old {sid}", now))
        conn.execute("INSERT INTO memberships (subscriber_id, list_id, status, created_at) "
                     "VALUES (?, 1, 'active', ?)", (sid, now))
    conn.execute("INSERT INTO sends (id, slug, list_name, subject, transport, created_at) "
                 "VALUES (1, 'x', 'daily', 's', 'outbox', ?)", (now,))
    conn.execute("INSERT INTO deliveries (send_id, subscriber_id, email, state, updated_at) "
                 "VALUES (1, 2, 'old2@example.com', 'sent', ?)", (now,))
    conn.execute("DELETE FROM subscribers WHERE id = 3")  # erased before the upgrade
    conn.close()


def test_migration_005_gives_existing_readers_an_identity_and_keeps_their_old_links(project, web_server):
    url, config = web_server()
    path = Path(config.database_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    _schema_4_database(path)
    secret = load_secret(config)
    legacy = {sid: make_token(secret, "preferences", sid, 0, uid="") for sid in (1, 2, 3)}

    with open_store(config) as store:  # opening migrates
        assert db.schema_version(store.conn) == db.latest_version()
        old1, old2 = store.get_subscriber("old1@example.com"), store.get_subscriber("old2@example.com")
        assert (old1.id, old2.id) == (1, 2) and old1.legacy_tokens and re.fullmatch(r"[0-9a-f]{32}", old1.uid)
        assert old1.uid != old2.uid
        assert [m.list_name for m in store.memberships(2)] == ["daily"]
        assert store.conn.execute("SELECT subscriber_id FROM deliveries").fetchone()[0] == 2
        assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store.conn.execute("PRAGMA foreign_key_check").fetchall() == []
        newcomer = store.add_subscriber("new@example.com", name="New", lists=["daily"]).subscriber
        assert not newcomer.legacy_tokens
    client = httpx.Client(base_url=url, timeout=10)
    # links in mail sent before the upgrade keep working for the readers they were made for …
    assert client.get(f"/preferences/{legacy[1]}").status_code == 200
    assert "old2@example.com" in client.get(f"/preferences/{legacy[2]}").text
    # … but a pre-upgrade link of the erased id 3 never names whoever holds that id now
    if newcomer.id == 3:
        assert client.get(f"/preferences/{legacy[3]}").status_code == 400
    assert client.get(f"/preferences/{make_token(secret, 'preferences', newcomer.id, 0, uid='')}").status_code == 400
    good = make_token(secret, "preferences", newcomer.id, 0, uid=newcomer.uid)
    assert client.get(f"/preferences/{good}").status_code == 200
    forged_uid = make_token(secret, "preferences", old1.id, 0, uid=newcomer.uid)
    assert client.get(f"/preferences/{forged_uid}").status_code == 400
    # deleting a subscriber cascades as before (foreign keys survived the rebuild)
    with open_store(config) as store:
        store.erase("old1@example.com")
        assert store.conn.execute("SELECT count(*) FROM memberships WHERE subscriber_id = 1").fetchone()[0] == 0


def test_migrations_may_have_gaps(tmp_path):
    steps = db.migrations()
    numbers = [v for v, _, _ in steps]
    assert numbers == sorted(set(numbers)) and db.latest_version() == numbers[-1]


# -- item 4: redirects under base_url, never the Host header ----------------------------------------

def test_trailing_slash_redirect_ignores_the_host_header(web_server):
    url, config = web_server()
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5) as conn:
        conn.sendall(b"GET /subscribe/?x=1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 307")
    location = re.search(r"(?im)^location: (.*)$", head).group(1).strip()
    assert location == f"{url}/subscribe?x=1"
    for path in ("/archive/", "/feed.xml/", "/healthz/"):
        answer = httpx.get(url + path, headers={"Host": "evil.example"}, follow_redirects=False, timeout=5)
        assert answer.status_code == 307 and answer.headers["location"] == url + path.rstrip("/")
    assert httpx.get(url + "/nothing/", headers={"Host": "evil.example"}, timeout=5).status_code == 404


# -- item 9: bad input is one line and exit 2 -----------------------------------------------------

@pytest.mark.parametrize("date,why", [
    ("2025-02-30T08:00:00+08:00", "day is out of range"),
    ("2025-02-10T25:00:00+08:00", "hour must be in 0..23"),
    ("2025-02-10T08:00:00+24:00", "offset"),
    ("0000-01-01T08:00:00+00:00", "year 0 is out of range"),
    ("2025-13-01T08:00:00+00:00", "month must be in 1..12"),
    ("2025-02-10T08:61:00+08:00", "minute must be in 0..59"),
    ("[2025]", "must be text"),
])
def test_dates_that_look_right_but_are_not(project, date, why):
    (project / "editions").mkdir()
    (project / "editions" / "d.md").write_text(f"---\ntitle: T\ndate: {date}\n---\n\nLede.\n", encoding="utf-8")
    line = one_line(run("check", "editions/d.md", cwd=project))
    assert line.startswith("editions/d.md:3: ") and why in line


def test_non_text_title_duplicate_keys_and_item_numbering(project):
    (project / "editions").mkdir()
    page = project / "editions" / "d.md"
    page.write_text("---\ntitle: [a, b]\ndate: 2025-02-10T08:00:00+08:00\n---\n\nLede.\n", encoding="utf-8")
    assert "editions/d.md:2: title must be text, not a YAML list" in one_line(run("check", "editions/d.md", cwd=project))
    page.write_text("---\ntitle: A\ndate: 2025-02-10T08:00:00+08:00\nsubject: {x: 1}\n---\n\nLede.\n", encoding="utf-8")
    assert "subject must be text, not a YAML mapping" in one_line(run("check", "editions/d.md", cwd=project))
    page.write_text("---\ntitle: A\ndate: 2025-02-10T08:00:00+08:00\ntitle: B\n---\n\nLede.\n", encoding="utf-8")
    line = one_line(run("check", "editions/d.md", cwd=project))
    assert line.startswith("editions/d.md:4: ") and "duplicate front-matter key 'title' on lines 2 and 4" in line
    page.write_text("---\ntitle: A\ndate: 2025-02-10T08:00:00+08:00\n---\n\nLede.\n\n---\n\n"
                    "1. [One](https://example.com/1)\n\n   S.\n\n3. [Two](https://example.com/2)\n\n   S.\n\n"
                    "7. [Three](https://example.com/3)\n\n   S.\n", encoding="utf-8")
    result = run("check", "editions/d.md", cwd=project)
    assert result.returncode == 0 and "warning: items are numbered 1, 3, 7" in result.stdout + result.stderr
    page.write_text(page.read_text().replace("3. [Two]", "1. [Two]").replace("7. [Three]", "1. [Three]")
                    .replace("1. [One]", "1. [One]"), encoding="utf-8")
    result = run("check", "editions/d.md", cwd=project)
    assert "item-numbering" not in result.stdout + result.stderr  # `1.` everywhere is Markdown's way


def test_raw_html_image_alt_is_read(project):
    (project / "editions").mkdir()
    page = project / "editions" / "d.md"
    page.write_text("---\ntitle: A\ndate: 2025-02-10T08:00:00+08:00\n---\n\n"
                    "Chart: <img alt=\"Sales by month\" src=\"https://example.com/a.png\"> and "
                    "<img alt=chart src=https://example.com/b.png>.\n", encoding="utf-8")
    result = run("check", "editions/d.md", cwd=project)
    assert result.returncode == 0 and "image-alt" not in result.stdout + result.stderr, result.stdout
    page.write_text(page.read_text().replace('alt="Sales by month" ', ""), encoding="utf-8")
    result = run("check", "editions/d.md", cwd=project)
    assert result.returncode == 1 and "image without alt text: https://example.com/a.png" in result.stdout


DEEP = "*" * 20000 + "a" + "*" * 20000


@pytest.mark.parametrize("where", ["lede", "item", "essay", "raw html"])
def test_deep_nesting_never_crashes_the_process(project, where):
    body = {"lede": DEEP,
            "item": "Lede.\n\n---\n\n1. [T](https://example.com/t)\n\n   " + DEEP,
            "essay": "Lede.\n\n---\n\n1. [T](https://example.com/t)\n\n   S.\n\n---\n\n## Essay\n\n" + DEEP,
            "raw html": "<span>" * 20000 + "a" + "</span>" * 20000}[where]
    (project / "editions").mkdir()
    (project / "editions" / "d.md").write_text(f"---\ntitle: T\ndate: 2025-02-10T08:00:00+08:00\n---\n\n{body}\n",
                                               encoding="utf-8")
    for command in (["check", "editions/d.md"], ["build", "editions/d.md"]):
        result = run(*command, cwd=project)
        assert result.returncode != -11 and result.returncode != 139, "mjml crashed the process"
        line = one_line(result)
        assert re.match(r"editions/d\.md:\d+: formatting nested \d+ levels deep", line), line


def test_long_names_are_capped_and_the_to_line_stays_within_998_octets(project, edition, cli):
    cli("lists", "create", "daily")
    result = run("subscribers", "add", "long@example.com", "--name", "N" * 5000, "--list", "daily", cwd=project)
    assert "at most 200" in one_line(result)
    (project / "long.csv").write_text("email,name\nlong@example.com," + "名" * 5000 + "\n"
                                      "wide@example.com," + "W" * 5000 + "\n", encoding="utf-8")
    assert run("subscribers", "import", "long.csv", "--list", "daily", cwd=project).returncode == 0
    with open_store(load_config()) as store:
        assert len(store.get_subscriber("long@example.com").name) == 200
    assert cli("send", EDITION, "--list", "daily", "--yes").exit_code == 0
    box = mailbox.Maildir(project / "outbox" / SLUG, factory=None, create=False)
    for key in box.keys():
        raw = box.get_bytes(key)
        head = raw.split(b"\n\n", 1)[0]
        assert max(len(line) for line in head.split(b"\n")) <= 998


def test_binary_csv_is_not_text(project, cli):
    cli("lists", "create", "daily")
    (project / "book.xlsx.csv").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 40)
    (project / "zeros.csv").write_bytes(b"\x00" * 4096)
    (project / "utf16.csv").write_bytes("email\na@example.com\n".encode("utf-16"))
    assert "is not a text file (a zip file" in one_line(run("subscribers", "import", "book.xlsx.csv", "--list", "daily", cwd=project))
    assert "zeros.csv: is not a text file" in one_line(run("subscribers", "import", "zeros.csv", "--list", "daily", cwd=project))
    assert "is UTF-16 text" in one_line(run("subscribers", "import", "utf16.csv", "--list", "daily", cwd=project))


def test_secret_file_that_is_a_folder_or_a_link_loop(project):
    (project / ".newsletter-secret").unlink()
    (project / ".newsletter-secret").mkdir()
    assert "secret_file is a folder" in one_line(run("serve", "--port", str(free_port()), cwd=project))
    (project / ".newsletter-secret").rmdir()
    os.symlink("loop-b", project / "loop-a")
    os.symlink("loop-a", project / "loop-b")
    toml = project / "newsletter.toml"
    toml.write_text('secret_file = "loop-a"\n' + toml.read_text(), encoding="utf-8")
    assert "symbolic link that leads nowhere" in one_line(run("serve", "--port", str(free_port()), cwd=project))


def test_serve_on_a_busy_port_is_one_line_and_exit_2(project):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line(run("serve", "--port", str(port), cwd=project))
    assert f"cannot listen on 127.0.0.1:{port}" in line and "already in use" in line


def test_serve_without_a_secret_creates_it(project):
    (project / ".newsletter-secret").unlink()
    port = free_port()
    proc = subprocess.Popen([*NL, "serve", "--port", str(port), "--no-access-log"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        secret = project / ".newsletter-secret"
        assert secret.is_file() and secret.stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "created a new signing secret" in err


@pytest.mark.parametrize("table,key,value", [
    ("send", "concurrency", "100000"), ("send", "concurrency", "0"), ("send", "rate", "-1"), ("send", "rate", "nan"),
    ("smtp", "port", "70000"), ("smtp", "port", "0"), ("web", "subscribe_per_ip_per_hour", "-5"),
    ("web", "confirm_ttl_hours", "-1"), ("events", "soft_bounce_limit", "-1"), ("events", "soft_bounce_window_days", "0"),
    ("", "base_url", '"javascript:alert(1)"'), ("", "base_url", '"https://x.example/a>,<https://evil.example"'),
    ("", "base_url", '"ftp://x.example"'), ("", "base_url", '"https://"'), ("", "lang", '"en\\" onload=\\"x"'),
    ("", "name", '""'),
])
def test_config_values_out_of_range_are_one_line_errors(project, table, key, value):
    toml = project / "newsletter.toml"
    text = re.sub(rf"(?m)^{key} = .*\n", "", toml.read_text()) if not table else toml.read_text()
    text = (f"{key} = {value}\n" + text) if not table else text + f"\n[{table}]\n{key} = {value}\n"
    toml.write_text(text, encoding="utf-8")
    line = one_line(run("subscribers", "ls", cwd=project))
    assert line.startswith(str(toml.name)) or str(toml) in line
    assert (f"{table}.{key}" if table else key) in line


def _unprivileged() -> tuple[int | None, list[str], dict]:
    """``(user, interpreter, env)`` to run the CLI without root's power to write anywhere: as
    ``nobody`` when we are root (with Debian's python3 of the same version when ours lives in a
    folder ``nobody`` cannot enter), else as ourselves."""
    import pwd
    import site

    if os.geteuid() != 0:
        return None, [sys.executable], {}
    python = sys.executable
    try:
        usable = subprocess.run([python, "-c", "0"], user=pwd.getpwnam("nobody").pw_uid,
                                capture_output=True).returncode == 0
    except OSError:
        usable = False
    env = {}
    if not usable:
        python = "/usr/bin/python3"
        version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                 text=True).stdout.strip() if os.path.exists(python) else ""
        if version != str(sys.version_info[:2]):
            if os.environ.get("CI"):
                pytest.fail("no interpreter the unprivileged user can run")
            pytest.skip("no interpreter the unprivileged user can run")
        env = {"PYTHONPATH": os.pathsep.join([*site.getsitepackages(), str(REPO)])}
    return pwd.getpwnam("nobody").pw_uid, [python], env


def test_read_only_database_folder_is_named(project, cli, tmp_path_factory):
    """Run as an unprivileged user (root writes anywhere): the folder is made read-only."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="nl-ro-"))
    try:
        (folder / "proj").mkdir()
        shutil.copy(project / "newsletter.toml", folder / "proj")
        shutil.copy(project / ".newsletter-secret", folder / "proj")
        (folder / "proj" / "subscribers").mkdir()
        run("lists", "create", "daily", cwd=folder / "proj")
        user, python, env = _unprivileged()
        if user is not None:
            for path in [folder, *folder.rglob("*")]:
                os.chown(path, user, -1)
        os.chmod(folder, 0o755)
        os.chmod(folder / "proj", 0o755)
        os.chmod(folder / "proj" / ".newsletter-secret", 0o644)
        os.chmod(folder / "proj" / "subscribers", 0o555)
        result = subprocess.run([*python, "-m", "newsletter", "subscribers", "add", "a@example.com", "--list", "daily"],
                                cwd=folder / "proj", capture_output=True, text=True, timeout=60, user=user,
                                env={**os.environ, **env})
        line = one_line(result)
        assert f"{folder / 'proj' / 'subscribers'}" in line and "read-only" in line, line
    finally:
        os.chmod(folder / "proj" / "subscribers", 0o755)
        shutil.rmtree(folder, ignore_errors=True)


def test_edition_lang_must_be_a_language_tag(project):
    (project / "editions").mkdir()
    (project / "editions" / "d.md").write_text("---\ntitle: T\ndate: 2025-02-10T08:00:00+08:00\n"
                                               "lang: 'en\" onload=\"x'\n---\n\nLede.\n", encoding="utf-8")
    assert "editions/d.md:4: lang " in one_line(run("check", "editions/d.md", cwd=project))


def test_list_ids_are_never_reused(project, cli):
    cli("lists", "create", "first")
    cli("lists", "create", "gone")
    with open_store(load_config()) as store:
        gone = store.get_list("gone").id
    assert cli("lists", "rm", "gone", "--yes").exit_code == 0
    cli("lists", "create", "newer")
    with open_store(load_config()) as store:
        assert store.get_list("newer").id > gone
