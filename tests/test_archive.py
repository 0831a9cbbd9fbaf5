"""The public archive: web versions of sent editions (no personal data, no live token), the
index, the Atom feed, and `archive build` writing the same as static files."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import httpx
import pytest

from newsletter.config import load_config
from newsletter.edition.source import load_edition
from newsletter.render.html import render_edition
from newsletter.store import open_store

# every test here runs on both engines (SQLite, and a real PostgreSQL server)
pytestmark = pytest.mark.usefixtures("backend_project")

ATOM = "{http://www.w3.org/2005/Atom}"

EDITION = """\
---
title: "{title}"
date: {date}T08:00:00+00:00
---

A short lede with **bold** words, dear @@nl:name@@.

---

1.  [First story](https://example.org/one)

    The first summary, with **emphasis** & an ampersand.

2.  [Second story](https://example.net/two)

    The second summary.

---

## An essay

The essay paragraph.
"""


def write_edition(project, date: str, title: str) -> str:
    folder = project / "editions"
    folder.mkdir(exist_ok=True)
    (folder / f"{date}.md").write_text(EDITION.format(title=title, date=date), encoding="utf-8")
    return date


def record_send(config, slug: str, path=None, essay=None) -> None:
    """Send ``slug`` (``editions/<slug>.md`` or ``path``) to the 'daily' list as `send` does:
    snapshot and recipients frozen, each reader's message written to the outbox."""
    from newsletter.audience.segments import make_audience
    from newsletter.send.job import SendJob, SendOptions, prepare_send

    with open_store(config) as store:
        if store.get_list("daily") is None:
            store.create_list("daily", public=True)
        if store.get_subscriber("reader@example.org") is None:
            store.add_subscriber("reader@example.org", name="Ada Secret", lists=["daily"])
    audience = make_audience(["daily"])
    prepared = prepare_send(config, path or config.editions_path / f"{slug}.md", audience, essay=essay)
    job = SendJob(config, prepared, audience, SendOptions(transport="outbox"))
    try:
        report = job.run()
    finally:
        job.close()
    assert report.finished and report.progress.sent >= 1


def assert_not_personal(html: str) -> None:
    assert "@@nl:" not in html
    assert "reader@example.org" not in html and "Ada Secret" not in html
    assert not re.search(r"/(unsubscribe|preferences)/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", html)  # no live token


@pytest.fixture
def archive_site(web_server, project):
    def start():
        url, config = web_server()
        return url, config, httpx.Client(base_url=url, timeout=30)
    return start


def test_only_sent_editions_are_listed_and_served(archive_site, project):
    url, config, client = archive_site()
    write_edition(project, "2026-11-20", "Older edition")
    write_edition(project, "2026-11-21", "Newer edition")
    write_edition(project, "2026-11-22", "Draft edition")
    record_send(config, "2026-11-20")
    record_send(config, "2026-11-21")

    index = client.get("/archive")
    assert index.status_code == 200 and '<html lang="en">' in index.text
    assert index.text.index("Newer edition") < index.text.index("Older edition")  # newest first
    assert "Draft edition" not in index.text
    assert client.get("/archive/2026-11-22").status_code == 404  # not sent: not public


def test_web_version_has_no_personal_data_and_no_live_token(archive_site, project):
    url, config, client = archive_site()
    write_edition(project, "2026-11-20", "Web version test")
    record_send(config, "2026-11-20")

    page = client.get("/archive/2026-11-20")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Web version test" in page.text and "First story" in page.text
    assert_not_personal(page.text)
    assert "dear reader" in page.text  # the name placeholder became the neutral fallback
    assert f'href="{url}/unsubscribe"' in page.text  # a page explaining to use the email's link
    explained = client.get("/unsubscribe")
    assert "link at the bottom" in explained.text
    # the personal email for the same edition does carry tokens: the web version is different
    rendered = render_edition(load_edition(project / "editions/2026-11-20.md", config=config), config)
    assert "@@nl:unsubscribe_url@@" in rendered.html


def test_atom_feed(archive_site, project):
    url, config, client = archive_site()
    write_edition(project, "2026-11-20", "Feed one")
    write_edition(project, "2026-11-21", "Feed two & more")
    record_send(config, "2026-11-20")
    record_send(config, "2026-11-21")

    feed = client.get("/feed.xml")
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(feed.content)
    assert root.tag == f"{ATOM}feed"
    entries = root.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}title") for e in entries] == ["Feed two & more", "Feed one"]
    link = entries[0].find(f"{ATOM}link").get("href")
    assert link == f"{url}/archive/2026-11-21"
    assert client.get(link).status_code == 200
    content = entries[0].findtext(f"{ATOM}content")
    assert "First story" in content
    assert_not_personal(feed.text)
    assert_not_personal(content)


def test_bad_slugs_are_not_found(archive_site):
    _, _, client = archive_site()
    for path in ("/archive/..%2Fnewsletter.toml", "/archive/.secret", "/archive/nothing"):
        assert client.get(path).status_code == 404


def test_archive_build_writes_the_same_static_files(archive_site, project, cli, tmp_path):
    url, config, client = archive_site()
    write_edition(project, "2026-11-20", "Static one")
    write_edition(project, "2026-11-21", "Never sent")
    record_send(config, "2026-11-20")

    out = tmp_path / "site"
    result = cli("archive", "build", "-o", out)
    assert result.exit_code == 0, result.output
    assert (out / "archive" / "2026-11-20" / "index.html").read_text(encoding="utf-8") == client.get("/archive/2026-11-20").text
    assert (out / "archive" / "2026-11-20.html").is_file()
    assert not (out / "archive" / "2026-11-21").exists()
    index = (out / "archive" / "index.html").read_text(encoding="utf-8")
    assert "Static one" in index and "Never sent" not in index
    assert ET.fromstring((out / "feed.xml").read_bytes()).find(f"{ATOM}entry") is not None
    assert "link at the bottom" in (out / "unsubscribe" / "index.html").read_text(encoding="utf-8")
    assert_not_personal((out / "archive" / "2026-11-20" / "index.html").read_text(encoding="utf-8"))


def test_archive_build_with_nothing_sent(project, cli, tmp_path):
    result = cli("archive", "build", "-o", tmp_path / "empty")
    assert result.exit_code == 0
    assert "No editions yet." in (tmp_path / "empty" / "archive" / "index.html").read_text(encoding="utf-8")


def test_archive_build_into_an_unwritable_place_is_one_line_and_exit_2(project, cli, tmp_path):
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    result = cli("archive", "build", "-o", tmp_path / "file" / "site")
    assert result.exit_code == 2
    assert "cannot write" in result.output and "Traceback" not in result.output


def test_chinese_newsletter_archive(archive_site, project):
    toml = (project / "newsletter.toml").read_text(encoding="utf-8").replace('lang = "en"', 'lang = "zh-CN"')
    (project / "newsletter.toml").write_text(toml, encoding="utf-8")
    url, config, client = archive_site()
    assert load_config(project / "newsletter.toml").lang == "zh-CN"
    write_edition(project, "2026-11-20", "中文标题")
    record_send(config, "2026-11-20")
    index = client.get("/archive")
    assert '<html lang="zh-CN">' in index.text and "往期" in index.text and "中文标题" in index.text
    assert_not_personal(client.get("/archive/2026-11-20").text)
