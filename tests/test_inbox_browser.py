"""The seed edition in Debian's headless Chromium (Playwright, executable_path) at 320, 375 and
600 px, light and dark: computed colours of the muted lines, the essay frame and label, Outlook.com's
[data-ogsc]/[data-ogsb] dark mode, no horizontal overflow, and the masthead/h1 line breaking."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, SAMPLES
from newsletter.render.build import build_edition
from newsletter.config import load_config

pytestmark = pytest.mark.browser

ARTIFACTS = REPO / "test-artifacts" / "inbox"
WIDTHS = [320, 375, 600]

LIGHT = {"body": "rgb(244, 244, 245)", "text": "rgb(31, 35, 40)", "muted": "rgb(87, 96, 106)",
         "essay_bg": "rgb(246, 248, 250)", "essay_border": "rgb(208, 215, 222)", "label": "rgb(10, 88, 202)"}
DARK = {"body": "rgb(13, 17, 23)", "text": "rgb(230, 237, 243)", "muted": "rgb(157, 167, 179)",
        "essay_bg": "rgb(27, 34, 48)", "essay_border": "rgb(48, 54, 61)", "label": "rgb(121, 184, 255)"}

COLOURS_JS = """() => {
  const css = (el, p) => el ? getComputedStyle(el)[p] : null;
  const q = s => document.querySelector(s);
  const essayTd = q('.nl-essay > table > tbody > tr > td');
  return {
    body: css(document.body, 'backgroundColor'),
    text: css(q('.nl-lede p'), 'color'),
    muted: [...document.querySelectorAll('.nl-domain, .nl-categories, .nl-number')].map(e => css(e, 'color')),
    essay_bg: css(q('.nl-essay'), 'backgroundColor'),
    essay_border: [css(essayTd, 'borderLeftColor'), css(essayTd, 'borderRightColor'), css(essayTd, 'borderBottomColor')],
    essay_border_width: css(essayTd, 'borderLeftWidth'),
    label: css(q('.nl-essay-label'), 'color'),
  };
}"""


@pytest.fixture
def seed_email(project):
    """The seed edition with an essay that has no heading (so the default label shows)."""
    (project / "editions").mkdir()
    text = (SAMPLES / "2025-10-14-ai-digest.md").read_text(encoding="utf-8")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("## "))  # drop the essay heading
    path = project / "editions" / "2025-10-14.md"
    path.write_text(text, encoding="utf-8")
    config = load_config()
    # numbered as its first send will number it (drafts carry no number: issue 10)
    _, rendered, _ = build_edition(path, config)
    assert 'class="nl-essay-label"' in rendered.html and "第 1 期" in rendered.html
    out = project / "email.html"
    out.write_text(rendered.html, encoding="utf-8")
    return out


def _page(browser, path: Path, width: int, scheme: str):
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page.goto(path.as_uri())
    return page


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", WIDTHS)
def test_colours_and_no_overflow(browser, seed_email, width, scheme):
    page = _page(browser, seed_email, width, scheme)
    want = LIGHT if scheme == "light" else DARK
    got = page.evaluate(COLOURS_JS)
    assert got["body"] == want["body"]
    assert got["text"] == want["text"]
    assert got["muted"] and set(got["muted"]) == {want["muted"]}, "categories, domains, numbers stay muted"
    assert got["essay_bg"] == want["essay_bg"]
    assert set(got["essay_border"]) == {want["essay_border"]} and got["essay_border_width"] == "1px"
    assert got["label"] == want["label"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    overflowing = page.evaluate("""w => [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > w + 0.5 && getComputedStyle(e).display !== 'none'
                     && e.getBoundingClientRect().width > 0).map(e => e.tagName + '.' + e.className)""", width)
    assert overflowing == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"seed-{width}-{scheme}.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_outlook_com_dark_mode_attributes(browser, seed_email, width):
    """Outlook.com ignores prefers-color-scheme colours but marks what it darkens with
    data-ogsc (text) / data-ogsb (background) on an ancestor: our rules keyed on those apply."""
    page = _page(browser, seed_email, width, "light")
    page.evaluate("""() => { document.body.setAttribute('data-ogsc', '');
                             document.documentElement.setAttribute('data-ogsb', ''); }""")
    got = page.evaluate(COLOURS_JS)
    assert got["text"] == DARK["text"]
    assert set(got["muted"]) == {DARK["muted"]}
    assert got["essay_bg"] == DARK["essay_bg"]
    assert got["label"] == DARK["label"]
    card = page.evaluate("getComputedStyle(document.querySelector('.nl-card')).backgroundColor")
    assert card == "rgb(22, 27, 34)"
    page.close()


@pytest.mark.parametrize("width", [320, 375])
def test_masthead_units_and_the_h1_keep_together_on_phones(browser, seed_email, width):
    page = _page(browser, seed_email, width, "light")
    # each nowrap unit ("2025年10月14日 星期二", "第 1 期") sits on one line
    lines = page.evaluate("""() => [...document.querySelectorAll('.nl-masthead .nl-nowrap')].map(s => {
        const tops = new Set([...s.getClientRects()].map(r => Math.round(r.top))); return tops.size; })""")
    assert lines == [1, 1]
    # the h1's last line holds more than one character
    last_line = page.evaluate("""() => {
        const h1 = document.querySelector('h1'); const text = h1.firstChild; const n = text.length;
        const top = i => { const r = document.createRange(); r.setStart(text, i); r.setEnd(text, i + 1);
                           return Math.round(r.getBoundingClientRect().top); };
        const last = top(n - 1); let count = 0;
        for (let i = n - 1; i >= 0 && top(i) === last; i--) { if (text.data[i] !== '\\u2060') count++; }
        return count; }""")
    assert last_line >= 2
    if width == 320:
        size = page.evaluate("getComputedStyle(document.querySelector('h1')).fontSize")
        assert size == "21px", "the h1 is sized down under 360 px"
    page.close()


def test_the_essay_frame_is_visible_against_the_page_at_600px(browser, seed_email):
    page = _page(browser, seed_email, 1000, "light")
    frame = page.evaluate("""() => { const td = document.querySelector('.nl-essay > table > tbody > tr > td');
        const s = getComputedStyle(td);
        return [s.borderTopWidth, s.borderLeftWidth, s.borderRightWidth, s.borderBottomWidth, s.borderTopColor]; }""")
    assert frame == ["3px", "1px", "1px", "1px", "rgb(10, 88, 202)"]
    page.close()
