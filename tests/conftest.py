"""Shared fixtures: a temporary project, the CLI runner, and real local servers.

Servers are real processes or threads on 127.0.0.1, started and stopped here; nothing is mocked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO.parent / "shared" / "samples"

PROJECT_TOML = """\
name = "Test Daily"
from = "Test Daily <news@example.com>"
reply_to = "editor@example.com"
postal_address = "1 Example Street, Springfield"
base_url = "https://news.example.com"
lang = "en"
"""


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="Rewrite tests/golden/ from the current output (also: UPDATE_GOLDEN=1).")


@pytest.fixture
def update_golden(request) -> bool:
    """True when golden files should be rewritten rather than compared."""
    return bool(request.config.getoption("--update-golden") or os.environ.get("UPDATE_GOLDEN") == "1")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No test reads the developer's real settings or credentials."""
    for var in ("NEWSLETTER_DATABASE_URL", "NEWSLETTER_SECRET", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    # doctor's DNS lookups never leave the machine: off (tests that check DNS start
    # tests/dns_stub.py and point this at it)
    monkeypatch.setenv("NEWSLETTER_DNS_NAMESERVERS", "off")


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty newsletter project folder (with a config and a secret) as the current folder."""
    (tmp_path / "newsletter.toml").write_text(PROJECT_TOML, encoding="utf-8")
    (tmp_path / ".newsletter-secret").write_text("test-secret-" + "0" * 40 + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli():
    """Invoke the CLI in-process: ``cli("build", "editions/x.md")`` -> click Result."""
    from newsletter.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input, env=env, catch_exceptions=False)

    return invoke


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up within {timeout} s")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def moto_server():
    """A real moto server process on 127.0.0.1 (SES, SES v2, SQS, SNS); yields its URL."""
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/moto-api/data.json")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def moto(moto_server):
    """The moto server, reset to empty for this test."""
    req = urllib.request.Request(moto_server + "/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=5).read()
    return moto_server


@pytest.fixture
def web_server(project):
    """The readers' web app on uvicorn on a free 127.0.0.1 port (a thread), for the ``project``
    folder with ``base_url`` pointing at it. Call ``web_server(**web_settings)`` to start it
    (``[web]`` keys may be overridden); returns ``(base_url, config)``. Stopped after the test."""
    import re
    import threading

    import uvicorn

    from newsletter.config import load_config
    from newsletter.web import create_app

    servers = []

    def start(**web_settings):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        toml = (project / "newsletter.toml").read_text(encoding="utf-8")
        toml = re.sub(r'(?m)^base_url = .*$', f'base_url = "{url}"', toml)
        if web_settings:
            toml += "\n[web]\n" + "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}\n"
                                          for k, v in web_settings.items())
        (project / "newsletter.toml").write_text(toml, encoding="utf-8")
        config = load_config(project / "newsletter.toml")
        server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False, proxy_headers=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_for_http(url + "/healthz")
        return url, config

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


# -- PostgreSQL ---------------------------------------------------------------------------------
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server (Debian's binaries, a throw-away cluster in a temp folder on a
    free 127.0.0.1 port; tests/pg_support.py) for the whole session. Skipped when PostgreSQL is
    not installed, except under CI=true, where that is a failure."""
    from pg_support import PgServer, PgUnavailable

    try:
        server = PgServer.start()
    except PgUnavailable as err:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL is required in CI: {err}", pytrace=False)
        pytest.skip(f"PostgreSQL not available: {err}")
    try:
        # every store test starts from a copy of one migrated database (a file copy: fast)
        template = server.database()
        from newsletter.store import pg

        pg.connect(template).close()
        server.template = template.rsplit("/", 1)[1]
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server):
    """A fresh, migrated PostgreSQL database for this test; dropped afterwards."""
    url = pg_server.database(template=pg_server.template)
    yield url
    pg_server.drop(url)


@pytest.fixture
def pg_empty_url(pg_server):
    """A fresh, EMPTY PostgreSQL database (no tables yet: for migration tests)."""
    url = pg_server.database()
    yield url
    pg_server.drop(url)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Run the test once per store backend: ``"sqlite"`` or ``"postgresql"``."""
    return request.param


@pytest.fixture
def db_url(backend, tmp_path, request) -> str:
    """A database for the store on this test's backend: a SQLite file path or a fresh
    PostgreSQL database URL."""
    if backend == "sqlite":
        return str(tmp_path / "s.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def backend_project(project, backend, request, monkeypatch) -> Path:
    """``project`` whose database is on this test's backend (PostgreSQL through
    NEWSLETTER_DATABASE_URL, as a deployment would set it)."""
    if backend == "postgresql":
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", request.getfixturevalue("pg_url"))
    return project


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by Playwright (``executable_path``), one per test module.
    A missing browser is a failure to fix (`make system-deps` installs it), never a skip."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (`make system-deps`, as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
