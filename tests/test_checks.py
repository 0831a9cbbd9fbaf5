"""Pre-send checks: each error and warning, with its line."""

from __future__ import annotations

from dataclasses import replace

import pytest

from newsletter.edition.checks import CLIP_BYTES, LARGE_BYTES, Level, check_edition, has_errors
from newsletter.config import load_config
from newsletter.edition.source import load_edition
from newsletter.render.html import render_edition
from tests.conftest import REPO

HEAD = "---\ntitle: {title}\ndate: 2025-01-02T08:00:00+00:00\n{extra}---\n"


def run(project, body: str, *, title: str = "A fine day", extra: str = "", config=None):
    path = project / "2025-01-02.md"
    path.write_text(HEAD.format(title=title, extra=extra) + body, encoding="utf-8")
    config = config or load_config()
    edition = load_edition(path, config=config)
    rendered = render_edition(edition, config)
    return check_edition(edition, rendered, config), edition, rendered


def codes(findings):
    return [(f.level.value, f.code, f.line) for f in findings]


ITEMS = "\n---\n\n1. [One](https://one.example/a)\n\n    Summary one.\n"


def test_clean_edition_has_no_findings(project):
    findings, *_ = run(project, "A lede sentence. More." + ITEMS)
    assert findings == [] and not has_errors(findings)


def test_example_edition_is_clean(project):
    config = load_config()
    edition = load_edition(REPO / "editions" / "2026-11-24.md", config=config)
    assert check_edition(edition, render_edition(edition, config), config) == []


def test_unsafe_and_relative_links_are_errors_with_lines(project):
    body = "Lede with [x](javascript:alert(1)).\n\n---\n\n1. [One](data:text/html,hi)\n\n    See [here](/local).\n"
    findings, *_ = run(project, body)
    assert codes(findings) == [("error", "unsafe-link", 5), ("error", "unsafe-link", 9), ("error", "unsafe-link", 9)]
    assert "javascript:alert(1)" in findings[0].message and has_errors(findings)


def test_raw_html_links_are_checked_too(project):
    findings, *_ = run(project, 'Lede <a href="vbscript:x">y</a>.' + ITEMS)
    assert ("error", "unsafe-link", 5) in codes(findings)


def test_http_link_is_a_warning(project):
    findings, *_ = run(project, "Lede [plain](http://old.example/)." + ITEMS)
    assert codes(findings) == [("warning", "insecure-link", 5)]
    assert not has_errors(findings)


def test_image_without_alt_is_an_error(project):
    findings, *_ = run(project, "Lede ![](https://img.example/a.png) and ![chart](https://img.example/b.png)." + ITEMS)
    assert codes(findings) == [("error", "image-alt", 5)]
    findings, *_ = run(project, 'Lede <img src="https://img.example/a.png">.' + ITEMS)
    assert [f.code for f in findings] == ["image-alt"]


def test_long_subject_and_missing_preheader(project):
    long = "A" * 79
    findings, *_ = run(project, "" + ITEMS, title=long)
    assert ("warning", "subject-long", 2) in codes(findings)
    assert ("warning", "no-preheader", None) in codes(findings)


def test_placeholder_text_is_a_warning(project):
    body = "TODO write the lede.\n\n---\n\n1. [TK](https://one.example/)\n\n    Lorem ipsum dolor.\n\n---\n\nA todo list is fine.\n"
    findings, *_ = run(project, body)
    assert codes(findings) == [("warning", "placeholder-text", 5), ("warning", "placeholder-text", 9),
                               ("warning", "placeholder-text", 9)]


def test_html_size_limits(project):
    findings, edition, rendered = run(project, "Lede." + ITEMS)
    big = replace(rendered, html=rendered.html + "x" * (CLIP_BYTES + 1))
    assert ("error", "html-too-large", None) in codes(check_edition(edition, big))
    large = replace(rendered, html="x" * (LARGE_BYTES + 1))
    assert [f.code for f in check_edition(edition, large)] == ["html-large"]


def test_missing_postal_address_warns_and_stops_only_a_real_send(project):
    (project / "newsletter.toml").write_text('name = "X"\n', encoding="utf-8")
    findings, edition, rendered = run(project, "Lede." + ITEMS)
    assert [(f.level, f.code) for f in findings] == [(Level.WARNING, "missing-field")]
    assert "postal_address" in findings[0].message
    sending = check_edition(edition, rendered, load_config(), sending=True)
    assert [(f.level, f.code) for f in sending] == [(Level.ERROR, "missing-field")]


@pytest.mark.parametrize("title, caps", [
    ("2025.10.14 全球AI新闻速递", True), ("\"今日 AI 与 GPU 要闻\"", True), ("AI WEEKLY ROUNDUP", True),
    ("AI Daily · 2025.10.14 全球AI新闻速递", False), ("全球新闻速递第一期", False), ("OPENAI", False),
])
def test_subject_whose_latin_letters_are_all_capitals_is_a_warning(project, title, caps):
    findings, *_ = run(project, "Lede." + ITEMS, title=title)
    assert ("subject-all-caps" in [f.code for f in findings]) is caps
    assert not has_errors(findings)


def test_subject_template_gives_the_default_subject(project):
    (project / "newsletter.toml").write_text(
        'name = "AI Daily"\npostal_address = "1 Road"\nsubject_template = "{name} · {title}"\n', encoding="utf-8")
    findings, edition, rendered = run(project, "Lede." + ITEMS, title="2025.10.14 全球AI新闻速递")
    assert rendered.subject == "AI Daily · 2025.10.14 全球AI新闻速递"
    assert findings == []
    findings, edition, rendered = run(project, "Lede." + ITEMS, title="T", extra="subject: Mine\n")
    assert rendered.subject == "Mine"


@pytest.mark.parametrize("template", ["{nope}", "{title", "{title.__class__}", "{0}"])
def test_bad_subject_template_is_a_config_error(project, template):
    from newsletter.errors import ConfigError

    (project / "newsletter.toml").write_text(f'subject_template = "{template}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="subject_template"):
        load_config()


def test_skeleton_todo_and_example_link_are_errors_only_for_a_real_send(project):
    body = "TODO: the lede.\n\n---\n\n1. [TODO: title](https://example.com/)\n\n    Sum.\n"
    findings, edition, rendered = run(project, body)
    assert {(f.level.value, f.code) for f in findings} == {("warning", "placeholder-text"), ("warning", "skeleton-link")}
    sending = check_edition(edition, rendered, load_config(), sending=True)
    assert {(f.level.value, f.code) for f in sending} == {("error", "placeholder-text"), ("error", "skeleton-link")}


def test_raw_html_the_sanitiser_drops_is_a_warning_quoting_it(project):
    body = ("A lede with <b>bold</b> kept.\n\n---\n\n1. [Quotes & <angle> brackets](https://one.example/a)\n\n"
            "    Summary <!-- note --> with <blink>x</blink>.\n")
    findings, edition, rendered = run(project, body)
    dropped = [f for f in findings if f.code == "html-dropped"]
    assert [f.level.value for f in dropped] == ["warning"] * 4
    assert "'<angle>'" in dropped[0].message and r"\<angle\>" in dropped[0].message
    assert {f.line for f in dropped} == {edition.items[0].line}
    assert "<b>" not in " ".join(f.message for f in dropped)
    assert "&lt;angle&gt;" not in rendered.html  # what the warning says: it vanishes


def test_finding_format_and_dict():
    from newsletter.edition.checks import Finding

    f = Finding(Level.WARNING, "subject-long", "too long", 3)
    assert f.format("e.md") == "e.md:3: warning: too long [subject-long]"
    assert f.as_dict() == {"level": "warning", "code": "subject-long", "message": "too long", "line": 3, "file": None}


@pytest.mark.parametrize("word", ["todo", "tk"])
def test_lower_case_words_are_not_placeholders(project, word):
    findings, *_ = run(project, f"A {word} in running text." + ITEMS)
    assert findings == []
