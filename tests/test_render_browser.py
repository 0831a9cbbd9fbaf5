"""The rendered email in real headless Chromium (Debian's, through Playwright): no horizontal
scroll at 320 px, the 600 px column on desktop, dark mode, tap targets. Screenshots go to
test-artifacts/render/ for a human to look at."""

from __future__ import annotations

import shutil

import pytest

from newsletter.config import load_config
from newsletter.edition.source import load_edition
from newsletter.render.html import render_edition
from tests.conftest import REPO

pytestmark = pytest.mark.browser

ARTIFACTS = REPO / "test-artifacts" / "render"


@pytest.fixture
def email_file(project):
    (project / "editions").mkdir()
    path = shutil.copy(REPO / "editions" / "2026-11-24.md", project / "editions" / "2026-11-24.md")
    config = load_config()
    html = render_edition(load_edition(path, config=config), config).html
    out = project / "email.html"
    out.write_text(html, encoding="utf-8")
    return out


def _page(browser, email_file, width: int, scheme: str = "light"):
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page.goto(email_file.as_uri())
    return page


@pytest.mark.parametrize("width", [320, 375])
def test_no_horizontal_scroll_on_phones(browser, email_file, width):
    page = _page(browser, email_file, width)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    side = page.evaluate("document.querySelector('h1').getBoundingClientRect().left")
    assert side >= 16, "at least 16 px of side padding on phones"
    heights = page.evaluate("[...document.querySelectorAll('.nl-footer-links a')].map(a => a.getBoundingClientRect().height)")
    assert heights and min(heights) >= 44, "footer links are tap targets"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"email-{width}.png"), full_page=True)
    page.close()


def test_desktop_column_is_600px(browser, email_file):
    page = _page(browser, email_file, 1000)
    width = page.evaluate("document.querySelector('.nl-card').getBoundingClientRect().width")
    assert width == 600
    page.screenshot(path=str(ARTIFACTS / "email-desktop.png"), full_page=False)
    page.close()


def test_dark_mode_styles_apply(browser, email_file):
    page = _page(browser, email_file, 600, scheme="dark")
    body = page.evaluate("getComputedStyle(document.body).backgroundColor")
    text = page.evaluate("getComputedStyle(document.querySelector('.nl-lede p')).color")
    assert body == "rgb(13, 17, 23)" and text == "rgb(230, 237, 243)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "email-dark.png"), full_page=False)
    page.close()
