"""The live preview over real HTTP on 127.0.0.1, and its reload when the edition changes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from newsletter.config import load_config
from newsletter.render.preview import Preview, PreviewServer
from tests.conftest import REPO, free_port, wait_for_http

EXAMPLE = REPO / "editions" / "2026-11-24.md"


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode("utf-8")


@pytest.fixture
def server(project):
    (project / "editions").mkdir()
    path = shutil.copy(EXAMPLE, project / "editions" / EXAMPLE.name)
    srv = PreviewServer(Preview(path, load_config()))
    srv.start()
    yield srv, path
    srv.stop()


def wait_for_version(url: str, above: int, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(get(url + "version"))
        if state["version"] > above:
            return state
        time.sleep(0.1)
    raise AssertionError("the preview did not rebuild after the edition changed")


def test_page_shows_both_widths_text_findings_and_inbox_line(server):
    srv, _ = server
    page = get(srv.url)
    assert srv.url.startswith("http://127.0.0.1:")
    assert 'width="640"' in page and 'width="375"' in page
    assert "2026.11.24 AI 每日速递" in page and "推理成本再降一半" in page  # subject + preheader
    assert "no problems found" in page
    assert "教育机构试用 AI 助教" in page  # the text part
    assert "new EventSource" in page
    email = get(srv.url + "email.html")
    assert email.startswith("<!doctype html>") and "@@nl:" not in email and "reader@example.com" in email
    assert "@@nl:" not in get(srv.url + "email.txt")


def test_reloads_when_the_edition_changes(server):
    srv, path = server
    before = json.loads(get(srv.url + "version"))["version"]
    with urllib.request.urlopen(srv.url + "events", timeout=20) as stream:
        first = stream.readline().decode().strip()
        assert first == f"data: {before}"
        stream.readline()
        time.sleep(0.3)  # let the watcher settle before the edit
        text = path.read_text(encoding="utf-8").replace("明天见。", "明天见。TODO 补一句。")
        path.write_text(text, encoding="utf-8")
        line = stream.readline().decode().strip()
        while line.startswith(":") or not line:
            line = stream.readline().decode().strip()
        assert line.startswith("data: ") and int(line.split()[1]) > before
    page = get(srv.url)
    assert "placeholder text left in" in page


def test_broken_edition_shows_the_error_and_recovers(server):
    srv, path = server
    good = path.read_text(encoding="utf-8")
    version = json.loads(get(srv.url + "version"))["version"]
    path.write_text("no front matter\n", encoding="utf-8")
    state = wait_for_version(srv.url, version)
    assert "no front matter" in state["error"]
    assert "no front matter" in get(srv.url)
    path.write_text(good, encoding="utf-8")
    state = wait_for_version(srv.url, state["version"])
    assert state["error"] == ""


def test_an_edit_made_before_the_watcher_started_is_still_picked_up(project):
    # The race CI hit: an edit in the moment between the first build and the watcher being in place.
    (project / "editions").mkdir()
    path = shutil.copy(EXAMPLE, project / "editions" / EXAMPLE.name)
    srv = PreviewServer(Preview(path, load_config()))
    version = srv.preview.state.version
    path.write_text("no front matter\n", encoding="utf-8")
    srv.start()
    try:
        state = wait_for_version(srv.url, version, timeout=5)
        assert "no front matter" in state["error"]
    finally:
        srv.stop()


def test_a_template_override_made_before_the_watcher_started_is_still_picked_up(project):
    (project / "editions").mkdir()
    path = shutil.copy(EXAMPLE, project / "editions" / EXAMPLE.name)
    srv = PreviewServer(Preview(path, load_config()))
    version = srv.preview.state.version
    folder = project / "templates" / "email"
    folder.mkdir(parents=True)
    (folder / "footer.mjml.j2").write_text(
        "<mj-section><mj-column><mj-text>Early footer</mj-text></mj-column></mj-section>\n", encoding="utf-8")
    srv.start()
    try:
        wait_for_version(srv.url, version, timeout=5)
        assert "Early footer" in get(srv.url + "email.html")
    finally:
        srv.stop()


def test_preview_command_serves_and_stops_on_ctrl_c(project):
    (project / "editions").mkdir()
    path = shutil.copy(EXAMPLE, project / "editions" / EXAMPLE.name)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "preview", str(path), "--port", str(port)],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ))
    try:
        wait_for_http(f"http://127.0.0.1:{port}/version")
        assert "2026.11.24 AI 每日速递" in get(f"http://127.0.0.1:{port}/")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert f"http://127.0.0.1:{port}/" in err.decode() and "Traceback" not in err.decode()


def test_a_new_template_override_is_picked_up(server, project):
    srv, _ = server
    version = json.loads(get(srv.url + "version"))["version"]
    folder = project / "templates" / "email"
    folder.mkdir(parents=True, exist_ok=True)
    time.sleep(0.3)
    (folder / "footer.mjml.j2").write_text(
        "<mj-section><mj-column><mj-text>Overridden footer</mj-text></mj-column></mj-section>\n", encoding="utf-8")
    wait_for_version(srv.url, version)
    deadline = time.monotonic() + 10
    while "Overridden footer" not in get(srv.url + "email.html") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Overridden footer" in get(srv.url + "email.html")
