"""Rendering: golden HTML and text, the email's promises (placeholders, dark mode, size), safety,
template overrides and template errors."""

from __future__ import annotations

import re
import shutil

import pytest

from newsletter.config import load_config
from newsletter.edition.source import load_edition
from newsletter.errors import RenderError
from newsletter.render.html import render_edition, render_mjml
from dataclasses import replace

from newsletter.render.rendered import PLACEHOLDER_RE
from tests.conftest import REPO

EXAMPLE = REPO / "editions" / "2026-11-24.md"
GOLDEN = REPO / "tests" / "golden"


@pytest.fixture
def example(project):
    """The example edition copied into the temp project (its number depends on its folder)."""
    (project / "editions").mkdir()
    path = project / "editions" / EXAMPLE.name
    shutil.copy(EXAMPLE, path)
    return path


@pytest.fixture
def rendered(example):
    config = load_config()
    edition = load_edition(example, config=config)
    assert edition.number is None  # drafts have no number: it is assigned at the first send
    return render_edition(replace(edition, number=1), config)


def _golden(name: str, actual: str, update: bool) -> None:
    path = GOLDEN / name
    if update:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8", newline="\n")
        return
    assert path.is_file(), f"{path} is missing: run pytest --update-golden once and review the diff"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{name} differs from the golden file; if intended, run pytest --update-golden"


def test_golden_html_and_text(rendered, update_golden):
    _golden("2026-11-24.html", rendered.html, update_golden)
    _golden("2026-11-24.txt", rendered.text, update_golden)


def test_rendering_is_deterministic(example):
    config = load_config()
    first = render_edition(load_edition(example, config=config), config)
    second = render_edition(load_edition(example, config=config), config)
    assert first == second


def test_html_promises(rendered):
    html = rendered.html
    assert html.startswith("<!doctype html>")
    assert '<html lang="zh-CN"' in html
    assert 'name="color-scheme" content="light dark"' in html
    assert 'name="supported-color-schemes"' in html
    assert "@media (prefers-color-scheme: dark)" in html
    assert re.search(r"@media only screen and \(max-width: ?480px\)[^}]*\{[^}]*!important", html), \
        "premailer must keep !important in the media queries"
    assert "PingFang SC" in html and "Noto Sans CJK SC" in html
    assert "font-size:17px" in html and "line-height:1.7" in html  # CJK body text
    assert "\u034f\u200c\u00a0" * 10 in html  # preheader padding (premailer writes the characters)
    assert "推理成本再降一半" in html.split("<div", 2)[1]  # preheader right after <body>
    assert html.count("<h1") == 1 and html.count('class="nl-item-title"') == 10
    assert 'role="presentation"' in html
    assert len(html.encode("utf-8")) <= 60 * 1024, "a 10-item edition should stay under 60 KB"
    assert "AI 基础设施" in html and "例子.测试" in html
    assert "1 Example Street, Springfield" in html  # postal address from the config
    assert "https://news.example.com/archive/2026-11-24" in html
    assert rendered.web_url == "https://news.example.com/archive/2026-11-24"
    # CSS was inlined by premailer, not only left in <style>
    assert re.search(r'<h1[^>]*style="[^"]*font-size:26px', html)


def test_placeholders_in_both_parts(rendered):
    for part in (rendered.html, rendered.text):
        keys = {m.group(1) for m in PLACEHOLDER_RE.finditer(part)}
        assert {"unsubscribe_url", "email"} <= keys
    assert "@@nl:preferences_url@@" in rendered.html
    assert 'href="@@nl:unsubscribe_url@@"' in rendered.html


def test_text_part(rendered):
    text = rendered.text
    lines = text.splitlines()
    assert lines[2] == "2026.11.24 AI 每日速递"
    assert "10. 教育机构试用 AI 助教，作业批改时间缩短一半" in text
    assert "    https://example.net/edu/ai-tutor-trial" in lines
    assert "**" not in text and "<" not in text
    assert "推理时代的三个问题" in text and "> 能力已经不是问题" in text
    assert "退订: @@nl:unsubscribe_url@@" in text
    assert text.endswith("1 Example Street, Springfield\n")


def _edition(project, body: str):
    path = project / "e.md"
    path.write_text("---\ntitle: Safety\ndate: 2025-01-02T08:00:00+00:00\n---\n" + body, encoding="utf-8")
    config = load_config()
    return load_edition(path, config=config), config


def test_unsafe_markup_never_reaches_the_html(project):
    edition, config = _edition(project, (
        "Lede [bad](javascript:alert(1)) <script>alert(2)</script> <b onclick=\"x()\">bold</b> "
        "<iframe src=\"https://evil.example\"></iframe>\n\n---\n\n"
        "1. [Item](javascript:alert(3))\n\n    Sum <img src=x onerror=alert(4)>.\n"))
    html = render_edition(edition, config).html
    assert "javascript:" not in html
    assert "<script>alert" not in html and "onclick" not in html and "onerror" not in html
    assert "<iframe" not in html
    assert "<strong>bold</strong>" in html or "<b>bold</b>" in html
    assert "Item" in html  # the title stays, without its link


def test_latin_text_wraps_at_72_and_uses_latin_type(project):
    words = " ".join(["lorem-free words"] * 30)
    edition, config = _edition(project, f"{words}\n\n---\n\n1. [A](https://a.example/x)\n\n    {words}\n")
    rendered = render_edition(edition, config)
    assert '<html lang="en"' in rendered.html and "line-height:1.5" in rendered.html
    assert max(len(line) for line in rendered.text.splitlines()) <= 72


def test_project_template_overrides_the_builtin_one(project, example):
    folder = project / "templates" / "email"
    folder.mkdir(parents=True)
    (folder / "footer.mjml.j2").write_text(
        '<mj-section><mj-column><mj-text>Custom footer <a href="{{ footer.unsubscribe_url }}">bye</a>'
        "</mj-text></mj-column></mj-section>\n", encoding="utf-8")
    config = load_config()
    html = render_edition(load_edition(example, config=config), config).html
    assert "Custom footer" in html and 'href="@@nl:unsubscribe_url@@"' in html
    assert "nl-item-title" in html  # the other partials are still the built-in ones


def test_broken_mjml_names_the_template(project, example):
    folder = project / "templates" / "email"
    folder.mkdir(parents=True)
    (folder / "base.mjml.j2").write_text("<mjml><mj-body><mj-section>", encoding="utf-8")
    config = load_config()
    with pytest.raises(RenderError) as info:
        render_edition(load_edition(example, config=config), config)
    assert str(folder / "base.mjml.j2") in str(info.value) and "MJML" in str(info.value)


def test_jinja_syntax_error_names_file_and_line(project, example):
    folder = project / "templates" / "email"
    folder.mkdir(parents=True)
    (folder / "item.mjml.j2").write_text("<mj-text>\n{% if %}\n</mj-text>\n", encoding="utf-8")
    config = load_config()
    with pytest.raises(RenderError) as info:
        render_mjml(load_edition(example, config=config), config)
    assert str(info.value).startswith(f"{folder / 'item.mjml.j2'}:2: template error")
