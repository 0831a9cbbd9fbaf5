"""A reader's whole journey in real headless Chromium (Debian's package, driven by Playwright):
subscribe → confirm from the outbox email → receive an edition from a real `newsletter send`
→ follow its unsubscribe link → unsubscribe. A screenshot of each page goes to test-artifacts/."""

from __future__ import annotations

import email
import email.policy
import re
import time
from pathlib import Path

import pytest

from newsletter.store import open_store
from newsletter.store.models import MembershipStatus

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"

EDITION = """\
---
title: "Browser Daily, 23 November"
date: 2026-11-23T07:00:00+00:00
---

Today's lede for **you**.

---

1.  [A story worth reading](https://example.org/story)

    Its summary.

---

## Essay

A closing thought.
"""


@pytest.fixture
def chromium(browser):
    """The shared headless Chromium (conftest ``browser``)."""
    return browser


def outbox_messages(folder: Path, address: str, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        found = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                 for p in sorted(folder.glob("new/*"))] if folder.is_dir() else []
        found = [m for m in found if address in str(m["To"])]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def plain(msg) -> str:
    return msg.get_body(preferencelist=("plain",)).get_content()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_subscribe_confirm_receive_unsubscribe(web_server, project, cli, chromium):
    url, config = web_server()
    with open_store(config) as store:
        store.create_list("daily", description="The morning edition", double_opt_in=True, public=True)
    reader = "browser.reader@example.org"
    page = chromium.new_page(locale="en-US", viewport={"width": 390, "height": 844})  # a phone

    # 1. subscribe with the form
    page.goto(f"{url}/subscribe")
    assert page.locator("html").get_attribute("lang") == "en"
    shot(page, "1-subscribe-form")
    page.get_by_label("Email address").fill(reader)
    page.get_by_label("Name (optional)").fill("Brow Ser")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Check your inbox").is_visible()
    shot(page, "2-check-inbox")

    # 2. confirm with the link from the email in the outbox
    [confirmation] = outbox_messages(config.outbox_path / "_transactional", reader)
    confirm_url = re.search(r"(http://127\.0\.0\.1:\d+/confirm/\S+)", plain(confirmation)).group(1)
    page.goto(confirm_url)
    assert page.get_by_role("heading", name="Subscription confirmed").is_visible()
    shot(page, "3-confirmed")

    # 3. a real send of an edition to the list, through the outbox transport
    (project / "editions").mkdir(exist_ok=True)
    (project / "editions" / "2026-11-23.md").write_text(EDITION, encoding="utf-8")
    result = cli("send", "editions/2026-11-23.md", "--list", "daily", "--yes")
    assert result.exit_code == 0, result.output
    [edition] = outbox_messages(config.outbox_path / "2026-11-23", reader)
    assert "List-Unsubscribe=One-Click" in str(edition["List-Unsubscribe-Post"])
    header_url = re.search(r"<(http[^>]+/unsubscribe/[^>]+)>", str(edition["List-Unsubscribe"])).group(1)
    html = edition.get_body(preferencelist=("html",)).get_content()
    page.set_content(html)
    shot(page, "4-edition-email")

    # 4. the unsubscribe link in the email: a page with one button; opening it changes nothing
    page.get_by_role("link", name=re.compile("unsubscribe", re.I)).first.click()
    page.wait_for_load_state()
    assert page.url == header_url
    assert page.get_by_role("heading", name="Unsubscribe").is_visible()
    shot(page, "5-unsubscribe-page")
    assert _status(config, reader) == MembershipStatus.ACTIVE

    # the preferences page from there shows the list, ticked, and the name
    page.get_by_role("link", name="Change your preferences instead").click()
    page.wait_for_load_state()
    assert page.get_by_role("checkbox", name=re.compile("daily")).is_checked()
    assert page.get_by_label("Name").input_value() == "Brow Ser"
    shot(page, "5b-preferences")
    page.go_back()
    page.wait_for_load_state()

    # 5. the button unsubscribes
    page.get_by_role("button", name="Unsubscribe").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="You are unsubscribed").is_visible()
    shot(page, "6-unsubscribed")
    assert _status(config, reader) == MembershipStatus.UNSUBSCRIBED

    # 6. the web version of the edition, as any visitor sees it
    page.goto(f"{url}/archive/2026-11-23")
    assert "Browser Daily" in page.title() or page.get_by_text("A story worth reading").is_visible()
    assert reader not in page.content()
    shot(page, "7-web-version")

    # 7. a Chinese-speaking visitor gets the pages in Chinese (Accept-Language from the locale)
    zh = chromium.new_page(locale="zh-CN", viewport={"width": 390, "height": 844})
    zh.goto(f"{url}/subscribe")
    assert zh.locator("html").get_attribute("lang") == "zh-CN"
    assert zh.get_by_label("电子邮件地址").is_visible()
    shot(zh, "8-subscribe-zh")


def _status(config, address: str):
    with open_store(config) as store:
        sub = store.get_subscriber(address)
        return next(m.status for m in store.memberships(sub.id) if m.list_name == "daily")
